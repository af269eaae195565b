#!/usr/bin/env bash
# One `hybench sweep` in local mode on 1 GPU and on all N GPUs of this host (Llama presets,
# dummy weights): wall-time speed-up against the 0.85 x N target, one actor pinned per GPU (each
# GPU's memory used by exactly one actor process, sampled with nvidia-smi while the N-GPU sweep runs),
# and per-job output throughput of the two runs side by side, with each GPU's SM clock, power and
# utilisation sampled alike during both runs. Writes $OUT/multi_gpu_results.md, the
# jobs rows of both runs (jobs_<model>.parquet), the nvidia-smi samples and the whole log.
#
# The jobs: one config, one window, one input length, and one job per seed (--seed 1,...,8 fans out),
# so the 4N (here 8) jobs have the same shapes and the same work (every request generates exactly
# --output-len tokens); only the random prompts and dummy weights differ. A calibration job first
# (seed 0, on GPU 0) fills the Triton and torch.compile disk caches, so that neither measured sweep
# pays for them, and times one iteration: the sweeps then run as many iterations as make a job last
# about TARGET_JOB_S seconds. A sweep also pays a fixed cost F that does not shrink with the GPU count
# (Ray and actor start, each actor's first-job warm-up: about 30 s on the H100 host), so 4N jobs of J
# seconds scale by (F + 4N J) / (F + 4J): at N = 2, 0.85 x N needs J of about 20 s or more.
#
# With hybench installed (docs/benchmarks/README.md), from the repo root: bash docs/benchmarks/multi_gpu_sweep.sh
# A CPU smoke test of the whole script (fake GPUs through RAY_OVERRIDE_RESOURCES, the tiny preset; an
# nvidia-smi on PATH, if any, is still sampled):
#   FAKE_GPUS=2 MODELS=tiny-llama NUM_PROMPTS=2 INPUT_LEN=64 WINDOW=16 OUTPUT_LEN=8 \
#   ITERS=1 OUT=/tmp/mg bash docs/benchmarks/multi_gpu_sweep.sh
set -uo pipefail
T0=$(date +%s)
cd "$(dirname "$0")/../.."

# NVLink multicast stays off in every process started from here: Ray's raylet and workers inherit this
# environment, and the driver also passes these three to its actors (workers/actor.py FORWARDED_ENV).
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export PYTHONUNBUFFERED=1 RAY_USAGE_STATS_ENABLED=0
# Where the installed packages have no bytecode (a read-only site-packages), every process compiles
# about 2,300 modules from source (docs/benchmarks/warmup_probe.sh). Keep the first process's bytecode
# in a writable folder for the next ones (Ray's workers inherit this too).
export PYTHONPYCACHEPREFIX=${PYTHONPYCACHEPREFIX:-/tmp/pycache}
unset PYTHONDONTWRITEBYTECODE

OUT=${OUT:-/tmp/multi_gpu_out}
WORK=${WORK:-/tmp/multi_gpu}
PY=${PYTHON:-python3}
MODELS=${MODELS:-meta-llama/Llama-3.2-1B}
CONFIG=${CONFIG:-hybrid}
WINDOW=${WINDOW:-1024}
INPUT_LEN=${INPUT_LEN:-2048}
OUTPUT_LEN=${OUTPUT_LEN:-128}
WARMUP=${WARMUP:-1}
SEEDS=${SEEDS:-}  # default: 4N seeds, 1..4N
TARGET_JOB_S=${TARGET_JOB_S:-20}
DEADLINE_S=${DEADLINE_S:-540}  # the whole script; a model starts only with MIN_LEFT_S left
MIN_LEFT_S=${MIN_LEFT_S:-240}
LOAD_FORMAT=${LOAD_FORMAT:-dummy}
ORDER=${ORDER:-1,N}  # which sweep runs first: 1,N or N,1 (run both to tell the run order from the GPU count)

mkdir -p "$OUT" && rm -rf "$WORK" && mkdir -p "$WORK" || exit 1
left() { echo $((DEADLINE_S - ($(date +%s) - T0))); }
now() { date +%s.%N; }
since() { awk -v a="$(now)" -v b="$1" 'BEGIN { printf "%.2f", a - b }'; }

main() {
$PY -c "import hybench" || { echo "hybench is not installed: see docs/benchmarks/README.md"; return 1; }

echo "== machine"
if [ -n "${FAKE_GPUS:-}" ]; then
  NGPU=$FAKE_GPUS
  echo "fake GPUs: $NGPU (RAY_OVERRIDE_RESOURCES; the engine runs on CPU)"
fi
if command -v nvidia-smi > /dev/null; then
  nvidia-smi || return 1
  nvidia-smi topo -m
  [ -n "${FAKE_GPUS:-}" ] || NGPU=$(nvidia-smi --query-gpu=index --format=csv,noheader | wc -l)
  nvidia-smi --query-gpu=index,uuid,name --format=csv,noheader > "$WORK/gpus.csv"
fi
$PY - <<'PY' || return 1
import importlib.metadata as md, os, sys, torch
print("python", sys.version.split()[0], "| torch", torch.__version__, "| cuda devices", torch.cuda.device_count())
for name in ("ray", "pyarrow", "duckdb", "mamba-ssm", "triton", "transformers", "hybench"):
    try:
        print(f"  {name} {md.version(name)}")
    except md.PackageNotFoundError:
        print(f"  {name}: not installed")
print("  " + " ".join(f"{k}={os.environ.get(k)}" for k in
                      ("NCCL_NVLS_ENABLE", "TORCH_SYMM_MEM_DISABLE_MULTICAST", "NVSHMEM_DISABLE_NVLS")))
PY
if [ "$NGPU" -lt 2 ]; then echo "needs at least 2 GPUs, found $NGPU"; return 1; fi
[ -n "$SEEDS" ] || SEEDS=$(seq -s, 1 $((4 * NGPU)))

# Pins a run to the first n GPUs: CUDA_VISIBLE_DEVICES on a GPU machine, Ray's resource override with fake ones.
pin() {
  if [ -n "${FAKE_GPUS:-}" ]; then echo "RAY_OVERRIDE_RESOURCES={\"GPU\":$1}"
  else echo "CUDA_VISIBLE_DEVICES=$(seq -s, 0 $(($1 - 1)))"; fi
}

smi_sampler() {  # every second: which process holds memory on which GPU (epoch s, pid, MiB, uuid, name) to $1,
  # and each GPU's SM clock, power and utilisation (epoch s, index, MHz, W, %) to $2
  while true; do
    t=$(date +%s.%N)
    nvidia-smi --query-compute-apps=pid,used_memory,gpu_uuid,process_name --format=csv,noheader,nounits \
      | sed "s/^/$t, /" >> "$1"
    nvidia-smi --query-gpu=index,clocks.sm,power.draw,utilization.gpu --format=csv,noheader,nounits \
      | sed "s/^/$t, /" >> "$2"
    sleep 1
  done
}

for MODEL in $MODELS; do
  tag=$(basename "$MODEL")
  dir=$WORK/$tag
  mkdir -p "$dir"
  if [ "$(left)" -lt "$MIN_LEFT_S" ]; then
    echo "== $MODEL: skipped, $(left) s left of DEADLINE_S=$DEADLINE_S (MIN_LEFT_S=$MIN_LEFT_S)"
    echo "skipped: $(left) s left" > "$dir/skipped"
    continue
  fi
  case $MODEL in
    *8B*|*7B*) prompts=${NUM_PROMPTS:-32} ;;
    *) prompts=${NUM_PROMPTS:-100} ;;
  esac
  job=(--load-format "$LOAD_FORMAT" --input-lengths "$INPUT_LEN" --num-prompts "$prompts" --output-len "$OUTPUT_LEN"
       --num-warmup-iters "$WARMUP" --no-progress)

  echo "== $MODEL: calibration job (seed 0, 1 GPU): fills the kernel caches, times an iteration"
  t=$(now)
  env $(pin 1) $PY -m hybench.orchestrator.cli bench --model "$MODEL" --config "$CONFIG" \
    --sliding-window-override "$WINDOW" "${job[@]}" --num-benchmark-iters 2 --seed 0 --output-dir "$dir/calibration" \
    || { echo "calibration job failed"; continue; }
  per_iter=$($PY -c "import pyarrow.parquet as pq, sys
r = pq.read_table(sys.argv[1], partitioning=None).to_pylist()[0]
print(r['elapsed_s'] / r['num_benchmark_iters'] if r['status'] == 'ok' else 'x')" "$dir/calibration/jobs")
  [ "$per_iter" != x ] || { echo "calibration job did not end ok"; continue; }
  iters=${ITERS:-$($PY -c "import sys; print(max(2, min(60, round($TARGET_JOB_S / $per_iter) - $WARMUP)))")}
  echo "calibration: $(since "$t") s in all, $(printf %.2f "$per_iter") s per iteration" \
       "-> $WARMUP warmup + $iters measured iterations per job"

  sweep=(sweep --models "$MODEL" --configs "$CONFIG" --windows "$WINDOW" "${job[@]}" --num-benchmark-iters "$iters" --repeats 1
         --seed "$SEEDS" --no-report)
  printf "n\twall_s\trc\n" > "$dir/runs.tsv"
  for n in $(echo "$ORDER" | sed "s/N/$NGPU/" | tr , ' '); do
    budget=$(( $(left) - 30 ))
    # The 1-GPU sweep takes about two thirds of the time both take: budget whichever runs first so.
    if [ "${ORDER%%,*}" = 1 ] && [ "$n" = 1 ]; then budget=$(( budget * 2 / 3 )); fi
    if [ "${ORDER%%,*}" = N ] && [ "$n" != 1 ]; then budget=$(( budget / 3 )); fi
    if [ "$budget" -lt 30 ]; then echo "== $MODEL on $n GPU(s): skipped, no time left"; continue; fi
    echo "== $MODEL on $n GPU(s): $(pin "$n"), timeout ${budget} s"
    spid=
    # Both runs are sampled alike (the sampler itself keeps the GPUs awake); the placement check reads
    # the N-GPU run's smi.csv.
    smi=$dir/smi.csv; [ "$n" = 1 ] && smi=$dir/smi_n1.csv
    if command -v nvidia-smi > /dev/null; then smi_sampler "$smi" "$dir/clocks_n$n.csv" & spid=$!; fi
    t=$(now)
    env $(pin "$n") timeout -s INT -k 20 "$budget" $PY -m hybench.orchestrator.cli "${sweep[@]}" --results "$dir/n$n" \
      2>&1 | tee "$dir/sweep_n$n.log"
    rc=${PIPESTATUS[0]}
    wall=$(since "$t")
    [ -n "$spid" ] && { kill "$spid"; wait "$spid" 2>/dev/null; }
    printf "%s\t%s\t%s\n" "$n" "$wall" "$rc" >> "$dir/runs.tsv"
    echo "wall ${wall} s, exit code $rc"
  done
done

echo "== report"
$PY docs/benchmarks/multi_gpu_report.py "$WORK" "$OUT" --config "$CONFIG" --window "$WINDOW" --input-len "$INPUT_LEN" \
  --output-len "$OUTPUT_LEN" && cat "$OUT/multi_gpu_results.md"
echo "script: $(( $(date +%s) - T0 )) s"
}

main 2>&1 | tee "$OUT/multi_gpu_log.txt"
exit "${PIPESTATUS[0]}"
