"""Arrow schemas of the four result tables (DESIGN.md section 5): the contract readers rely on.

Columns may be added at the end in later versions; readers use ``union_by_name`` so old and new
files mix. Times are monotonic nanoseconds (for differences) plus one epoch time per row.
"""
from __future__ import annotations

import pyarrow as pa

# The per-iteration figures (the iterations table) whose spread the jobs row summarises.
ITERATION_METRICS = ("throughput_tok_s", "output_tok_s", "requests_per_s", "ttft_p50_ms", "ttft_p99_ms",
                     "tpot_p50_ms", "tpot_p99_ms", "e2e_p50_ms", "e2e_p99_ms")

_JOB_KEY = [
    ("job_id", pa.string()),
    ("sweep_id", pa.string()),
    ("model", pa.string()),
    ("config", pa.string()),
    ("window", pa.int64()),
    ("engine", pa.string()),
    ("input_len", pa.int64()),
    ("output_len", pa.int64()),
]

REQUESTS_SCHEMA = pa.schema(
    _JOB_KEY
    + [
        ("iteration", pa.int64()),
        ("warmup", pa.bool_()),
        ("request_id", pa.int64()),
        ("prompt_tokens", pa.int64()),
        ("output_tokens", pa.int64()),
        ("arrival_ns", pa.int64()),
        ("first_token_ns", pa.int64()),
        ("finish_ns", pa.int64()),
        ("arrival_unix_s", pa.float64()),
        ("ttft_ms", pa.float64()),
        ("tpot_ms", pa.float64()),
        ("e2e_ms", pa.float64()),
        ("itl_ms", pa.list_(pa.float64())),
        ("itl_min_ms", pa.float64()),
        ("itl_mean_ms", pa.float64()),
        ("itl_max_ms", pa.float64()),
        # Waits before the first prefill (arrivals.py); both are part of ttft_ms.
        ("queue_ms", pa.float64()),  # arrival until the engine step that began its prefill
        ("client_queue_ms", pa.float64()),  # arrival until the client submitted it (--max-concurrency)
    ]
)

JOBS_SCHEMA = pa.schema(
    _JOB_KEY
    + [
        ("num_prompts", pa.int64()),
        ("status", pa.string()),  # ok | oom | error
        ("error", pa.string()),
        ("elapsed_s", pa.float64()),
        ("throughput_tok_s", pa.float64()),
        ("output_tok_s", pa.float64()),
        ("requests_per_s", pa.float64()),
        ("latency_mean_ms", pa.float64()),
        ("latency_p50_ms", pa.float64()),
        ("latency_p90_ms", pa.float64()),
        ("latency_p99_ms", pa.float64()),
        ("model_gib", pa.float64()),
        ("ssm_param_gib", pa.float64()),
        ("kv_pool_gib", pa.float64()),
        ("kv_used_gib", pa.float64()),
        ("ssm_state_gib", pa.float64()),
        ("peak_torch_gib", pa.float64()),
        ("nvml_used_gib", pa.float64()),
        ("kv_capacity_seqs", pa.int64()),  # sequences of the longest request the KV budget could hold (before --max-num-seqs)
        ("decode_mbu", pa.float64()),
        ("prefill_mfu", pa.float64()),
        ("attn_backend", pa.string()),
        ("ssm_backend", pa.string()),
        ("device_name", pa.string()),
        ("torch_version", pa.string()),
        ("project_version", pa.string()),
        ("started_at", pa.timestamp("us", tz="UTC")),
        # Beyond the contract: what else a reader needs to trust or reproduce the numbers.
        ("finished_at", pa.timestamp("us", tz="UTC")),
        ("seed", pa.int64()),
        ("dtype", pa.string()),
        ("load_format", pa.string()),
        ("ssm_init", pa.string()),  # none | seeded | calibrated:<sha12>: how the history-branch parameters were set
        ("num_warmup_iters", pa.int64()),
        ("num_benchmark_iters", pa.int64()),
        ("kv_capacity_tokens", pa.int64()),
        ("max_running", pa.int64()),  # sequences that ran at once at most (measured iterations)
        ("decode_bw_gbs", pa.float64()),  # achieved decode bandwidth, GB/s
        ("prefill_tflops", pa.float64()),  # achieved prefill TFLOP/s
        ("peak_bw_gbs", pa.float64()),  # what MBU is measured against
        ("peak_tflops", pa.float64()),  # what MFU is measured against
        ("activation_peak_gib", pa.float64()),  # profiled prefill peak, left out of the KV pool; null on CPU
        ("graph_pool_gib", pa.float64()),  # memory the decode CUDA graphs hold
        ("driver_version", pa.string()),
        ("ray_version", pa.string()),
        ("hostname", pa.string()),
        # The workload: how requests arrive and where the prompts come from.
        ("request_rate", pa.float64()),  # Poisson arrivals per second; inf = offline (all at once)
        ("concurrency_limit", pa.int64()),  # --max-concurrency; null = none (kv_capacity_seqs above is the KV budget's)
        ("dataset", pa.string()),  # path of the --dataset file; null = seeded random prompts
        ("dataset_sha256", pa.string()),  # hash of its token ids, part of the job id
        ("enable_prefix_caching", pa.bool_()),
        ("prefix_cache_hit_rate", pa.float64()),  # share of prompt tokens served from the prefix cache
        ("prefix_cache_hits", pa.int64()),  # requests that started from a cached prefix
        ("prefix_cache_gib", pa.float64()),  # memory the cache's entries held at most
        # Where it ran: the worker process and its GPU (which GPU of a multi-GPU host ran which job).
        ("worker_pid", pa.int64()),
        ("cuda_visible_devices", pa.string()),  # as Ray set it for the actor; null when unset
        ("gpu_uuid", pa.string()),  # GPU-<uuid>, as nvidia-smi names the device; null on CPU
        # KV + SSM state + dt ring held at once at most (analytic), as README's memory formula counts them.
        ("kv_state_used_gib", pa.float64()),
        ("peak_rss_gib", pa.float64()),  # the worker process's peak resident memory so far (CPU jobs' measured memory)
        # The measured iterations as samples: their count, then mean, sample standard deviation and 95%
        # interval of the mean (Student t, n - 1 degrees of freedom; null with one iteration) per metric.
        ("iterations_n", pa.int64()),
    ]
    + [(f"{metric}_{stat}", pa.float64()) for metric in ITERATION_METRICS for stat in ("mean", "sd", "ci_low", "ci_high")]
    + [
        # The task: throughput (the benchmark above) or a quality job (perplexity, recall; rows in `quality`).
        ("task", pa.string()),  # null in stores written before quality jobs existed: throughput
        ("scored_tok_s", pa.float64()),  # quality jobs: tokens teacher-forced through the engine per second
        ("nll_mean", pa.float64()),  # quality jobs: mean NLL over every row of the quality table (per token)
        ("top1_accuracy", pa.float64()),  # quality jobs: share of those tokens the model predicted top-1
        ("eval_text", pa.string()),  # path of the --eval-text file (perplexity); its sha256 is in the job id
        ("eval_text_sha256", pa.string()),
        ("history_weights", pa.string()),  # path of the --history-weights file; its hash is in ssm_init
        ("vocab_size", pa.int64()),  # the model's: a uniform guess scores ln(vocab_size) nats, chance 1/vocab_size
    ]
    + [("repeat", pa.int64())]  # which run of an identical job (sweep --repeats), 0 for the first
)

# One row per iteration (warmup flagged): the job's figures over that iteration's requests alone.
ITERATIONS_SCHEMA = pa.schema(
    _JOB_KEY
    + [
        ("iteration", pa.int64()),
        ("warmup", pa.bool_()),
        ("requests", pa.int64()),
        ("elapsed_s", pa.float64()),
    ]
    + [(metric, pa.float64()) for metric in ITERATION_METRICS]
)

# Quality jobs (--task perplexity | recall): one row per request and position bucket (perplexity) or
# per request and recall distance (recall). Sums, not means, so that any re-aggregation is exact.
QUALITY_SCHEMA = pa.schema(
    _JOB_KEY
    + [
        ("task", pa.string()),  # perplexity | recall
        ("request_id", pa.int64()),  # the sequence's index in the job
        ("bucket_start", pa.int64()),  # perplexity: positions [start, end) of the predicted tokens; null for recall
        ("bucket_end", pa.int64()),
        ("bucket_start_w", pa.float64()),  # the same edges in units of the window W
        ("bucket_end_w", pa.float64()),
        ("distance", pa.int64()),  # recall: filler tokens between the block and its repeat; null for perplexity
        ("distance_w", pa.float64()),  # the same in units of W
        ("tokens", pa.int64()),  # tokens scored in this row
        ("nll_sum", pa.float64()),  # their summed negative log-likelihood, natural log
        ("correct", pa.int64()),  # of them, how many were the model's top-1 prediction
    ]
)

SCHEMAS = {"requests": REQUESTS_SCHEMA, "iterations": ITERATIONS_SCHEMA, "quality": QUALITY_SCHEMA,
           "jobs": JOBS_SCHEMA}


def to_table(name: str, rows: list[dict]) -> pa.Table:
    """Rows (dicts keyed by column) to a table of the named schema; missing columns are null."""
    schema = SCHEMAS[name]
    columns = {field.name: [row.get(field.name) for row in rows] for field in schema}
    return pa.table(columns, schema=schema)


def result_tables(requests: list[dict], iterations: list[dict], jobs: list[dict],
                  quality: list[dict] = ()) -> dict[str, pa.Table]:
    """One attempt's rows as the tables ResultStore.write_result writes together (every table, empty
    ones too, so that readers pair them by attempt whatever the task)."""
    return {"requests": to_table("requests", requests), "iterations": to_table("iterations", iterations),
            "quality": to_table("quality", list(quality)), "jobs": to_table("jobs", jobs)}
