#!/usr/bin/env bash
# Why an actor's first job is slow, and slower when two actors start at once: times one
# `hybench bench` job in a fresh process with warm disk caches, alone and as two processes at once
# (one per GPU), under cProfile, and prints where the time went. On a host with 2 GPUs and hybench
# installed (docs/benchmarks/README.md): OUT=/tmp/probe bash docs/benchmarks/warmup_probe.sh
# Its findings, 2026-11-25 (before commit d47ce92 pinned the Triton cache folder): multi_gpu_results.md.
set -uo pipefail
cd "$(dirname "$0")/../.."
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/probe}
mkdir -p "$OUT"
python3 -c "import hybench" || { echo "hybench is not installed: see docs/benchmarks/README.md"; exit 1; }
job() {  # $1 = GPU, $2 = tag, rest = extra env
  local gpu=$1 tag=$2; shift 2
  env CUDA_VISIBLE_DEVICES=$gpu OMP_NUM_THREADS=1 "$@" python3 -m cProfile -o "$OUT/$tag.prof" -m hybench.orchestrator.cli bench \
    --model meta-llama/Llama-3.2-1B --config hybrid --sliding-window-override 1024 --load-format dummy \
    --input-lengths 2048 --num-prompts 100 --output-len 128 --num-warmup-iters 1 --num-benchmark-iters 1 \
    --seed 3 --no-progress --output-dir "$OUT/res_$tag" > "$OUT/$tag.log" 2>&1
}
t() { local s=$(date +%s.%N); "$@"; awk -v a="$(date +%s.%N)" -v b="$s" 'BEGIN { printf "%.1f", a - b }'; }
echo "cold (fills the caches): $(t job 0 cold) s"
echo "warm, alone:             $(t job 0 solo) s"
s=$(date +%s.%N); job 0 pair0 & job 1 pair1 & wait
echo "warm, two at once:       $(awk -v a="$(date +%s.%N)" -v b="$s" 'BEGIN { printf "%.1f", a - b }') s"
s=$(date +%s.%N); job 0 ct0 TORCHINDUCTOR_COMPILE_THREADS=1 & job 1 ct1 TORCHINDUCTOR_COMPILE_THREADS=1 & wait
echo "two at once, TORCHINDUCTOR_COMPILE_THREADS=1: $(awk -v a="$(date +%s.%N)" -v b="$s" 'BEGIN { printf "%.1f", a - b }') s"
python3 - "$OUT" <<'PY'
import os, pstats, sys
for tag in ("solo", "pair0", "ct0"):
    st = pstats.Stats(f"{sys.argv[1]}/{tag}.prof")
    with open(f"{sys.argv[1]}/{tag}.txt", "w") as f:
        pstats.Stats(f"{sys.argv[1]}/{tag}.prof", stream=f).sort_stats("cumulative").print_stats(120)
    rows = sorted(st.stats.items(), key=lambda kv: -kv[1][3])
    print(f"\n== {tag}: top cumulative (s, calls, function)")
    shown = 0
    for (file, line, fn), (cc, nc, tt, ct, callers) in rows:
        if ct < 0.5:
            break
        where = "/".join(file.split("/")[-2:])
        print(f"{ct:7.2f} {nc:7d} {where}:{line} {fn}"[:150])
        shown += 1
        if shown >= 40:
            break
PY
