# Source on the GPU machine from the repo root: installs the project and the wheels carried in
# .whl/ (mamba-ssm as a Triton-only build from its sdist) under /tmp/site, and puts it on PYTHONPATH.
# .whl/ (git-ignored, about 55 MB: under the 64 MiB a device call carries) was made with
#   MAMBA_SKIP_CUDA_BUILD=TRUE MAMBA_FORCE_BUILD=TRUE pip download --no-deps --no-binary :all: \
#     --no-build-isolation -d .whl mamba-ssm==2.3.2.post1       # in a venv with torch and wheel
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 -d .whl einops==0.8.2 pyarrow==26.0.1 tqdm==4.70.1
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
