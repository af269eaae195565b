-- Job status per cell: how many jobs ended ok, out of memory, with an error, or never wrote their jobs row; and their sweeps.
SELECT model, engine, "window", output_len, enable_prefix_caching, request_rate, concurrency_limit, dataset_sha256, input_len, config, status,
    jobs, ok, oom, error, incomplete, sweeps
FROM cells
ORDER BY model, engine, "window", output_len, enable_prefix_caching, request_rate, concurrency_limit, dataset_sha256, input_len, list_position(['full', 'sliding', 'hybrid'], config), config
