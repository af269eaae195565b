-- Every job that did not end ok, with the first line of its error.
SELECT model, engine, "window", output_len,
    coalesce(enable_prefix_caching, false) AS enable_prefix_caching, coalesce(request_rate, 'inf'::DOUBLE) AS request_rate,
    concurrency_limit, dataset_sha256, input_len, config, status,
    split_part(error, chr(10), 1) AS error, job_id, sweep_id, device_name, started_at
FROM jobs
WHERE status IS DISTINCT FROM 'ok'
ORDER BY model, engine, "window", output_len, enable_prefix_caching, request_rate, concurrency_limit, dataset_sha256, input_len, list_position(['full', 'sliding', 'hybrid'], config), config, job_id
