-- Totals of the selection: jobs by status and requests measured (warmup and failed jobs' requests left out) and warmup requests.
SELECT sum(jobs) AS jobs, sum(ok) AS ok, sum(oom) AS oom, sum(error) AS error, sum(incomplete) AS incomplete,
    sum(requests) AS measured_requests,
    (SELECT count(*) FROM requests WHERE warmup) AS warmup_requests
FROM cells
