-- Throughput per cell: (prompt + output) tokens/s, output tokens/s and requests/s over the ok jobs' measured wall time.
SELECT model, engine, "window", output_len, enable_prefix_caching, request_rate, concurrency_limit, dataset_sha256, input_len, config, status,
    requests, elapsed_s, throughput_tok_s, output_tok_s, requests_per_s
FROM cells
ORDER BY model, engine, "window", output_len, enable_prefix_caching, request_rate, concurrency_limit, dataset_sha256, input_len, list_position(['full', 'sliding', 'hybrid'], config), config
