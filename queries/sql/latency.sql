-- End-to-end latency per cell: mean, P50, P90 and P99 over requests (ms).
SELECT model, engine, "window", output_len, enable_prefix_caching, request_rate, concurrency_limit, dataset_sha256, input_len, config, status,
    requests, latency_mean_ms, latency_p50_ms, latency_p90_ms, latency_p99_ms
FROM cells
ORDER BY model, engine, "window", output_len, enable_prefix_caching, request_rate, concurrency_limit, dataset_sha256, input_len, list_position(['full', 'sliding', 'hybrid'], config), config
