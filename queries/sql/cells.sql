-- Every metric of each cell of throughput jobs (model, engine, window, output length, workload: prefix caching, request rate, concurrency limit, dataset; config, input length) over the measured requests of its ok jobs; the other queries select from it.
WITH
workload_jobs AS (  -- the workload columns define a job too; a store older than them reads as caching off, offline
    SELECT * REPLACE (coalesce(enable_prefix_caching, false) AS enable_prefix_caching,
                      coalesce(request_rate, 'inf'::DOUBLE) AS request_rate)
    FROM jobs
    WHERE coalesce(task, 'throughput') = 'throughput'  -- quality jobs have their own queries (perplexity, recall)
),
ok_jobs AS (  -- the requests table does not carry the workload: it comes from the job's row
    SELECT job_id, any_value(enable_prefix_caching) AS enable_prefix_caching, any_value(request_rate) AS request_rate,
        any_value(concurrency_limit) AS concurrency_limit, any_value(dataset_sha256) AS dataset_sha256
    FROM workload_jobs
    WHERE status = 'ok'
    GROUP BY job_id
),
measured AS (  -- warmup left out; requests of jobs that did not end ok are left out too (their jobs are counted)
    SELECT requests.*, ok_jobs.* EXCLUDE (job_id)
    FROM requests JOIN ok_jobs USING (job_id)
    WHERE NOT coalesce(warmup, false)
),
job_rows AS (  -- every job, plus jobs that wrote requests but never their jobs row (interrupted; workload unknown, so the defaults)
    SELECT *, job_id IN (SELECT job_id FROM measured) AS has_requests
    FROM workload_jobs
    UNION ALL BY NAME
    SELECT DISTINCT job_id, sweep_id, model, engine, "window", output_len, false AS enable_prefix_caching,
        'inf'::DOUBLE AS request_rate, config, input_len, 'incomplete' AS status
    FROM requests
    WHERE job_id NOT IN (SELECT job_id FROM jobs)
),
job_cells AS (
    SELECT model, engine, "window", output_len, enable_prefix_caching, request_rate, concurrency_limit, dataset_sha256, config, input_len,
        count(*) AS jobs,
        count(*) FILTER (status = 'ok') AS ok,
        count(*) FILTER (status = 'oom') AS oom,
        count(*) FILTER (status = 'incomplete') AS incomplete,
        string_agg(DISTINCT sweep_id, ',' ORDER BY sweep_id) AS sweeps,
        sum(elapsed_s) FILTER (has_requests) AS elapsed_s,
        -- The mean over the cell's ok jobs (usually one); counts take the smallest.
        avg(model_gib) FILTER (status = 'ok') AS model_gib,
        avg(ssm_param_gib) FILTER (status = 'ok') AS ssm_param_gib,
        avg(kv_pool_gib) FILTER (status = 'ok') AS kv_pool_gib,
        avg(kv_used_gib) FILTER (status = 'ok') AS kv_used_gib,
        avg(ssm_state_gib) FILTER (status = 'ok') AS ssm_state_gib,
        avg(peak_torch_gib) FILTER (status = 'ok') AS peak_torch_gib,
        avg(nvml_used_gib) FILTER (status = 'ok') AS nvml_used_gib,
        avg(activation_peak_gib) FILTER (status = 'ok') AS activation_peak_gib,
        avg(graph_pool_gib) FILTER (status = 'ok') AS graph_pool_gib,
        avg(prefix_cache_gib) FILTER (status = 'ok') AS prefix_cache_gib,
        avg(prefix_cache_hit_rate) FILTER (status = 'ok') AS prefix_cache_hit_rate,
        avg(prefix_cache_hits) FILTER (status = 'ok') AS prefix_cache_hits,
        avg(kv_state_used_gib) FILTER (status = 'ok') AS kv_state_used_gib,
        max(peak_rss_gib) FILTER (status = 'ok') AS peak_rss_gib,
        min(kv_capacity_seqs) FILTER (status = 'ok') AS kv_capacity_seqs,
        max(max_running) FILTER (status = 'ok') AS max_running,
        min(kv_capacity_tokens) FILTER (status = 'ok') AS kv_capacity_tokens,
        avg(decode_mbu) FILTER (status = 'ok') AS decode_mbu,
        avg(prefill_mfu) FILTER (status = 'ok') AS prefill_mfu,
        avg(decode_bw_gbs) FILTER (status = 'ok') AS decode_bw_gbs,
        avg(prefill_tflops) FILTER (status = 'ok') AS prefill_tflops,
        avg(peak_bw_gbs) FILTER (status = 'ok') AS peak_bw_gbs,
        avg(peak_tflops) FILTER (status = 'ok') AS peak_tflops,
        string_agg(DISTINCT attn_backend, ',' ORDER BY attn_backend) FILTER (status = 'ok') AS attn_backend,
        string_agg(DISTINCT ssm_backend, ',' ORDER BY ssm_backend) FILTER (status = 'ok') AS ssm_backend
    FROM job_rows
    GROUP BY ALL
),
request_cells AS (
    SELECT model, engine, "window", output_len, enable_prefix_caching, request_rate, concurrency_limit, dataset_sha256, config, input_len,
        count(*) AS requests,
        -- How many distinct values stand behind the percentiles: in offline mode the requests of an
        -- iteration finish together, so E2E percentiles describe when the batch completes.
        count(DISTINCT e2e_ms) AS e2e_distinct,
        count(DISTINCT ttft_ms) AS ttft_distinct,
        sum(prompt_tokens + output_tokens) AS tokens,
        sum(output_tokens) AS generated_tokens,
        avg(e2e_ms) AS latency_mean_ms,
        quantile_cont(e2e_ms, 0.50) AS latency_p50_ms,
        quantile_cont(e2e_ms, 0.90) AS latency_p90_ms,
        quantile_cont(e2e_ms, 0.99) AS latency_p99_ms,
        avg(ttft_ms) AS ttft_mean_ms,
        quantile_cont(ttft_ms, 0.50) AS ttft_p50_ms,
        quantile_cont(ttft_ms, 0.90) AS ttft_p90_ms,
        quantile_cont(ttft_ms, 0.99) AS ttft_p99_ms,
        avg(tpot_ms) AS tpot_mean_ms,
        quantile_cont(tpot_ms, 0.50) AS tpot_p50_ms,
        quantile_cont(tpot_ms, 0.90) AS tpot_p90_ms,
        quantile_cont(tpot_ms, 0.99) AS tpot_p99_ms,
        quantile_cont(queue_ms, 0.50) AS queue_p50_ms,  -- engine-side wait before the first prefill
        quantile_cont(queue_ms, 0.99) AS queue_p99_ms
    FROM measured
    GROUP BY ALL
),
token_cells AS (  -- inter-token latencies: every gap of every measured request
    SELECT model, engine, "window", output_len, enable_prefix_caching, request_rate, concurrency_limit, dataset_sha256, config, input_len,
        quantile_cont(itl, 0.50) AS itl_p50_ms,
        quantile_cont(itl, 0.90) AS itl_p90_ms,
        quantile_cont(itl, 0.99) AS itl_p99_ms
    FROM (SELECT model, engine, "window", output_len, enable_prefix_caching, request_rate, concurrency_limit, dataset_sha256, config, input_len, unnest(itl_ms) AS itl FROM measured)
    GROUP BY ALL
),
job_logs AS (  -- per ok job: its measured iterations, and the mean and variance of their logs
    SELECT model, engine, "window", output_len, enable_prefix_caching, request_rate, concurrency_limit, dataset_sha256, config, input_len, job_id,
        count(*) AS job_iterations,
        avg(ln(throughput_tok_s)) AS throughput_tok_s_lm, var_samp(ln(throughput_tok_s)) AS throughput_tok_s_lv,
        avg(ln(output_tok_s)) AS output_tok_s_lm, var_samp(ln(output_tok_s)) AS output_tok_s_lv,
        avg(ln(e2e_p50_ms)) AS e2e_p50_ms_lm, var_samp(ln(e2e_p50_ms)) AS e2e_p50_ms_lv,
        avg(ln(e2e_p99_ms)) AS e2e_p99_ms_lm, var_samp(ln(e2e_p99_ms)) AS e2e_p99_ms_lv,
        avg(ln(ttft_p50_ms)) AS ttft_p50_ms_lm, var_samp(ln(ttft_p50_ms)) AS ttft_p50_ms_lv,
        avg(ln(ttft_p99_ms)) AS ttft_p99_ms_lm, var_samp(ln(ttft_p99_ms)) AS ttft_p99_ms_lv,
        avg(ln(tpot_p50_ms)) AS tpot_p50_ms_lm, var_samp(ln(tpot_p50_ms)) AS tpot_p50_ms_lv
    FROM iterations JOIN ok_jobs USING (job_id)
    WHERE NOT coalesce(warmup, false)
    GROUP BY ALL
),
iteration_cells AS (  -- the samples behind every interval: the cell's jobs (the mean log of each) where it has two
    -- or more (sweep --repeats: jobs spread over the sweep, so their spread holds the variation between jobs),
    -- else its one job's iterations
    SELECT model, engine, "window", output_len, enable_prefix_caching, request_rate, concurrency_limit, dataset_sha256, config, input_len,
        sum(job_iterations)::BIGINT AS iterations,
        if(count(*) >= 2, count(*), sum(job_iterations))::BIGINT AS samples,
        if(count(*) >= 2, avg(throughput_tok_s_lm), any_value(throughput_tok_s_lm)) AS throughput_tok_s_log_mean,
        if(count(*) >= 2, var_samp(throughput_tok_s_lm), any_value(throughput_tok_s_lv)) AS throughput_tok_s_log_var,
        if(count(*) >= 2, avg(output_tok_s_lm), any_value(output_tok_s_lm)) AS output_tok_s_log_mean,
        if(count(*) >= 2, var_samp(output_tok_s_lm), any_value(output_tok_s_lv)) AS output_tok_s_log_var,
        if(count(*) >= 2, avg(e2e_p50_ms_lm), any_value(e2e_p50_ms_lm)) AS e2e_p50_ms_log_mean,
        if(count(*) >= 2, var_samp(e2e_p50_ms_lm), any_value(e2e_p50_ms_lv)) AS e2e_p50_ms_log_var,
        if(count(*) >= 2, avg(e2e_p99_ms_lm), any_value(e2e_p99_ms_lm)) AS e2e_p99_ms_log_mean,
        if(count(*) >= 2, var_samp(e2e_p99_ms_lm), any_value(e2e_p99_ms_lv)) AS e2e_p99_ms_log_var,
        if(count(*) >= 2, avg(ttft_p50_ms_lm), any_value(ttft_p50_ms_lm)) AS ttft_p50_ms_log_mean,
        if(count(*) >= 2, var_samp(ttft_p50_ms_lm), any_value(ttft_p50_ms_lv)) AS ttft_p50_ms_log_var,
        if(count(*) >= 2, avg(ttft_p99_ms_lm), any_value(ttft_p99_ms_lm)) AS ttft_p99_ms_log_mean,
        if(count(*) >= 2, var_samp(ttft_p99_ms_lm), any_value(ttft_p99_ms_lv)) AS ttft_p99_ms_log_var,
        if(count(*) >= 2, avg(tpot_p50_ms_lm), any_value(tpot_p50_ms_lm)) AS tpot_p50_ms_log_mean,
        if(count(*) >= 2, var_samp(tpot_p50_ms_lm), any_value(tpot_p50_ms_lv)) AS tpot_p50_ms_log_var
    FROM job_logs
    GROUP BY ALL
),
iteration_spread AS (  -- mean and standard deviation over every measured iteration of the cell
    SELECT model, engine, "window", output_len, enable_prefix_caching, request_rate, concurrency_limit, dataset_sha256, config, input_len,
        avg(throughput_tok_s) AS throughput_tok_s_iter_mean, stddev_samp(throughput_tok_s) AS throughput_tok_s_iter_sd,
        avg(output_tok_s) AS output_tok_s_iter_mean, stddev_samp(output_tok_s) AS output_tok_s_iter_sd,
        avg(e2e_p50_ms) AS e2e_p50_ms_iter_mean, stddev_samp(e2e_p50_ms) AS e2e_p50_ms_iter_sd,
        avg(e2e_p99_ms) AS e2e_p99_ms_iter_mean, stddev_samp(e2e_p99_ms) AS e2e_p99_ms_iter_sd,
        avg(ttft_p50_ms) AS ttft_p50_ms_iter_mean, stddev_samp(ttft_p50_ms) AS ttft_p50_ms_iter_sd,
        avg(ttft_p99_ms) AS ttft_p99_ms_iter_mean, stddev_samp(ttft_p99_ms) AS ttft_p99_ms_iter_sd,
        avg(tpot_p50_ms) AS tpot_p50_ms_iter_mean, stddev_samp(tpot_p50_ms) AS tpot_p50_ms_iter_sd
    FROM iterations JOIN ok_jobs USING (job_id)
    WHERE NOT coalesce(warmup, false)
    GROUP BY ALL
),
totals AS (  -- one row per cell; grouping, unlike a join, keeps cells whose key holds a NULL
    SELECT model, engine, "window", output_len, enable_prefix_caching, request_rate, concurrency_limit, dataset_sha256, config, input_len,
        max(COLUMNS(* EXCLUDE (model, engine, "window", output_len, enable_prefix_caching, request_rate, concurrency_limit, dataset_sha256, config, input_len)))
    FROM (FROM job_cells UNION ALL BY NAME FROM request_cells UNION ALL BY NAME FROM token_cells
          UNION ALL BY NAME FROM iteration_cells UNION ALL BY NAME FROM iteration_spread)
    GROUP BY ALL
)
SELECT * EXCLUDE (requests, tokens, generated_tokens, iterations, samples),
    coalesce(iterations, 0) AS iterations,
    coalesce(samples, 0) AS samples,
    jobs - ok - oom - incomplete AS error,  -- status error, or any status this version does not know
    CASE
        WHEN ok = jobs THEN 'ok'
        WHEN oom = jobs THEN 'oom'
        WHEN incomplete = jobs THEN 'incomplete'
        WHEN ok + oom + incomplete = 0 THEN 'error'
        ELSE concat_ws(', ', if(ok > 0, ok || ' ok', NULL), if(oom > 0, oom || ' oom', NULL),
                       if(jobs - ok - oom - incomplete > 0, (jobs - ok - oom - incomplete) || ' error', NULL),
                       if(incomplete > 0, incomplete || ' incomplete', NULL))
    END AS status,
    coalesce(requests, 0) AS requests,
    tokens / nullif(elapsed_s, 0) AS throughput_tok_s,
    -- 95% interval of the samples' geometric mean (t-interval on their logs: positive, like the ratio
    -- intervals); NULL with fewer than 2 samples. The figures' error bars.
    exp(throughput_tok_s_log_mean - mean_ci_half(samples, sqrt(throughput_tok_s_log_var))) AS throughput_ci_low,
    exp(throughput_tok_s_log_mean + mean_ci_half(samples, sqrt(throughput_tok_s_log_var))) AS throughput_ci_high,
    exp(e2e_p99_ms_log_mean - mean_ci_half(samples, sqrt(e2e_p99_ms_log_var))) AS latency_p99_ci_low,
    exp(e2e_p99_ms_log_mean + mean_ci_half(samples, sqrt(e2e_p99_ms_log_var))) AS latency_p99_ci_high,
    exp(e2e_p50_ms_log_mean - mean_ci_half(samples, sqrt(e2e_p50_ms_log_var))) AS latency_p50_ci_low,
    exp(e2e_p50_ms_log_mean + mean_ci_half(samples, sqrt(e2e_p50_ms_log_var))) AS latency_p50_ci_high,
    generated_tokens / nullif(elapsed_s, 0) AS output_tok_s,
    requests / nullif(elapsed_s, 0) AS requests_per_s,
    -- What the job needed: weights, history-branch parameters, KV in use at peak, SSM state.
    model_gib + coalesce(ssm_param_gib, 0) + kv_used_gib + coalesce(ssm_state_gib, 0) AS needed_gib,
    tokens / nullif(elapsed_s, 0)
        / nullif(model_gib + coalesce(ssm_param_gib, 0) + kv_used_gib + coalesce(ssm_state_gib, 0), 0) AS tok_s_per_gib
FROM totals