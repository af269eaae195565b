# Source on the GPU machine from the repo root: installs the project and the wheels carried in
# .whl/ (mamba-ssm as a Triton-only build from its sdist) under /tmp/site, and puts it on PYTHONPATH.
set -e
export PYTHONUNBUFFERED=1 MAMBA_SKIP_CUDA_BUILD=TRUE MAMBA_FORCE_BUILD=TRUE
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-cache-dir --target /tmp/site .whl/mamba_ssm-*.tar.gz
python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-cache-dir --target /tmp/site .
export PYTHONPATH=/tmp/site
set +e
