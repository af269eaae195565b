-- Memory efficiency per cell: throughput per GiB the job needed (weights + SSM parameters + KV and SSM state in use at peak).
SELECT model, engine, "window", output_len, enable_prefix_caching, request_rate, concurrency_limit, dataset_sha256, input_len, config, status,
    throughput_tok_s, needed_gib, tok_s_per_gib
FROM cells
ORDER BY model, engine, "window", output_len, enable_prefix_caching, request_rate, concurrency_limit, dataset_sha256, input_len, list_position(['full', 'sliding', 'hybrid'], config), config
