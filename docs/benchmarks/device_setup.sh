# Source on the GPU machine from the repo root: installs the project and the wheels carried in
# .whl/ (mamba-ssm as a Triton-only build from its sdist) under /tmp/site, and puts it on PYTHONPATH.
set -e
# Python found no bytecode for the device image's packages: every process compiled about 2,300 modules
# from source (the cProfile runs of docs/benchmarks/warmup_probe.sh). Keep the first process's bytecode
# in a writable folder for the next ones (Ray's workers inherit this too).
export PYTHONPYCACHEPREFIX=${PYTHONPYCACHEPREFIX:-/tmp/pycache}
unset PYTHONDONTWRITEBYTECODE
export PYTHONUNBUFFERED=1 MAMBA_SKIP_CUDA_BUILD=TRUE MAMBA_FORCE_BUILD=TRUE
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-cache-dir --target /tmp/site .whl/mamba_ssm-*.tar.gz
python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-cache-dir --target /tmp/site .
export PYTHONPATH=/tmp/site
set +e
