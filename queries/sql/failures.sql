-- Every job that did not end ok, with the first line of its error.
SELECT model, engine, "window", output_len, input_len, config, status,
    split_part(error, chr(10), 1) AS error, job_id, sweep_id, device_name, started_at
FROM jobs
WHERE status IS DISTINCT FROM 'ok'
ORDER BY model, engine, "window", output_len, input_len, list_position(['full', 'sliding', 'hybrid'], config), config, job_id
