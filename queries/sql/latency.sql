-- Latency per cell over requests (ms): TTFT first (it varies under chunked prefill), then end-to-end mean, P50, P90 and P99, each beside how many requests and distinct values stand behind its percentiles (offline, an iteration's requests finish together: E2E then describes when the batch completes; use --request-rate for latency under load).
SELECT model, engine, "window", output_len, enable_prefix_caching, request_rate, concurrency_limit, dataset_sha256, input_len, config, status,
    requests, ttft_distinct, ttft_p50_ms, ttft_p99_ms,
    e2e_distinct, latency_mean_ms, latency_p50_ms, latency_p90_ms, latency_p99_ms
FROM cells
ORDER BY model, engine, "window", output_len, enable_prefix_caching, request_rate, concurrency_limit, dataset_sha256, input_len, list_position(['full', 'sliding', 'hybrid'], config), config
