-- Token latencies per cell: TTFT and TPOT mean and percentiles over requests, ITL percentiles over every generated token, and P50/P99 of the engine-side queueing before the first prefill (ms).
SELECT model, engine, "window", output_len, enable_prefix_caching, request_rate, concurrency_limit, dataset_sha256, input_len, config, status,
    ttft_mean_ms, ttft_p50_ms, ttft_p90_ms, ttft_p99_ms,
    tpot_mean_ms, tpot_p50_ms, tpot_p90_ms, tpot_p99_ms,
    itl_p50_ms, itl_p90_ms, itl_p99_ms, queue_p50_ms, queue_p99_ms
FROM cells
ORDER BY model, engine, "window", output_len, enable_prefix_caching, request_rate, concurrency_limit, dataset_sha256, input_len, list_position(['full', 'sliding', 'hybrid'], config), config
