#!/usr/bin/env bash
# Prefix caching on the GPU: a shared-prefix workload (Llama-3.2-1B preset, dummy weights, bf16) with
# and without --enable-prefix-caching in every config; prints TTFT, throughput and hit rate.
# Run from the repo root with hybench installed (docs/benchmarks/README.md).
set -euo pipefail
out=${OUT:-/tmp}/prefix
mkdir -p "$out"
python3 -m hybench.orchestrator.cli data --tokenizer meta-llama/Llama-3.2-1B --input-lengths 2048 \
    --num-prompts 64 --pattern shared_prefix --prefix-ratio 0.75 --num-prefixes 4 --output-file "$out/sp.json"
for config in full sliding hybrid; do
  for caching in "" --enable-prefix-caching; do
    python3 -m hybench.orchestrator.cli bench --model meta-llama/Llama-3.2-1B --load-format dummy \
        --config $config --sliding-window-override 512 --dataset "$out/sp.json" --input-lengths 2048 \
        --num-prompts 64 --output-len 64 --num-warmup-iters 1 --num-benchmark-iters 2 \
        --output-dir "$out/results" --no-progress $caching | tail -n +3 | head -n 1
  done
done
python3 - "$out/results" <<'PY'
import sys
import numpy as np
import pyarrow.parquet as pq
jobs = pq.read_table(f"{sys.argv[1]}/jobs", partitioning=None).to_pylist()
reqs = pq.read_table(f"{sys.argv[1]}/requests", partitioning=None).to_pylist()
print("| config | prefix caching | TTFT P50 ms | TTFT P99 ms | output tok/s | hit rate | cache GiB |")
print("|---|---|---|---|---|---|---|")
for j in sorted(jobs, key=lambda j: (["full", "sliding", "hybrid"].index(j["config"]), j["enable_prefix_caching"])):
    ttft = [r["ttft_ms"] for r in reqs if r["job_id"] == j["job_id"] and not r["warmup"]]
    print(f"| {j['config']} | {'on' if j['enable_prefix_caching'] else 'off'} | {np.percentile(ttft, 50):.0f} | "
          f"{np.percentile(ttft, 99):.0f} | {j['output_tok_s']:.0f} | {j['prefix_cache_hit_rate'] or 0:.2f} | "
          f"{j['prefix_cache_gib'] or 0:.2f} |")
PY
