#!/usr/bin/env bash
# The original suite's runner on `hybench sweep`: every config of one model, with the suite's defaults.
#   scripts/run_hybrid_benchmark.sh [MODEL] [RESULTS_DIR] [more hybench sweep flags...]
#   INPUT_LENGTHS="256,512,1024" NUM_PROMPTS=20 scripts/run_hybrid_benchmark.sh
# Other settings from the environment: OUTPUT_LEN, WINDOWS (sliding window(s) of sliding and
# hybrid), NUM_WARMUP_ITERS, NUM_BENCHMARK_ITERS, LOAD_FORMAT (dummy: random weights, no download),
# REPEATS (runs of each job, spread over the sweep; default 1, as the original suite ran each once:
# 3 gives intervals that hold the variation between jobs).
# Re-running resumes: jobs already in RESULTS_DIR are skipped. The report lands in RESULTS_DIR/plots.
set -euo pipefail

model="${1:-meta-llama/Llama-3.2-1B}"
results="${2:-./results}"
shift $(( $# < 2 ? $# : 2 ))

# hybench on PATH, else the one `make demo` installed in the repo's .venv (no activation needed).
hybench="$(command -v hybench || true)"
if [[ -z "$hybench" ]]; then
    hybench="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/.venv/bin/hybench"
    [[ -x "$hybench" ]] || { echo "run_hybrid_benchmark.sh: hybench is not on PATH and $hybench does not exist (run make install)" >&2; exit 2; }
fi

exec "$hybench" sweep \
    --models "$model" \
    --configs full,sliding,hybrid \
    --windows "${WINDOWS:-2048}" \
    --input-lengths "${INPUT_LENGTHS:-512,1024,2048,4096}" \
    --num-prompts "${NUM_PROMPTS:-100}" \
    --output-len "${OUTPUT_LEN:-128}" \
    --num-warmup-iters "${NUM_WARMUP_ITERS:-3}" \
    --num-benchmark-iters "${NUM_BENCHMARK_ITERS:-10}" \
    --repeats "${REPEATS:-1}" \
    --load-format "${LOAD_FORMAT:-auto}" \
    --results "$results" \
    "$@"
