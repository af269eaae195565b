-- Where and with what the jobs ran: device, driver, torch, Ray and project versions, host, with job counts and times.
SELECT device_name, driver_version, torch_version, ray_version, project_version, hostname,
    count(*) AS jobs, min(started_at) AS first_started, max(started_at) AS last_started
FROM jobs
GROUP BY ALL
ORDER BY first_started, device_name
