#!/usr/bin/env bash
# The whole GPU check in one command (about 3 minutes on an H100): checks every fast kernel
# against the PyTorch reference (gpu_parity.py), then times every section of gpu_bench.py (decode
# against the roofline with both decode kernel sets, their profiles, prefill MFU, Hugging Face,
# concurrency, 32k inputs). Writes $OUT/gpu_parity.md, $OUT/gpu_bench.md and $OUT/gpu_all_log.txt;
# exits non-zero if a parity case fails or a step does not finish. Arguments go to gpu_bench.py
# (e.g. --sections decode,prefill).
#
# With hybench installed (docs/benchmarks/README.md), from the repo root: bash docs/benchmarks/gpu_all.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/gpu_all}
mkdir -p "$OUT"
[ $# -gt 0 ] || set -- --sections decode,prefill,profile,profile64,hf,concurrency,long

main() {
  local t0=$SECONDS rc=0
  echo "== machine"
  python3 -c "import hybench" || { echo "hybench is not installed: see docs/benchmarks/README.md"; return 1; }
  git rev-parse --short HEAD 2>/dev/null
  nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader
  echo "== parity"
  python3 docs/benchmarks/gpu_parity.py > "$OUT/gpu_parity.md"
  local parity=$?
  grep -v "| yes |" "$OUT/gpu_parity.md"
  echo "$(grep -c "| yes |" "$OUT/gpu_parity.md") cases under the limit, exit code $parity"
  [ "$parity" = 0 ] || rc=1
  echo "== benchmark"
  python3 docs/benchmarks/gpu_bench.py --out "$OUT" "$@" || rc=1
  echo "gpu_all: $((SECONDS - t0)) s, exit code $rc"
  return $rc
}

main "$@" 2>&1 | tee "$OUT/gpu_all_log.txt"
exit "${PIPESTATUS[0]}"
