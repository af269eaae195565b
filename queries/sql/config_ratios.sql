-- Sliding and hybrid against full, and hybrid against sliding, at each input length and workload: ratios of KV memory (SSM state and dt ring included), sequences that fit, throughput, latency and throughput per GiB; throughput and latency ratios as the ratio of the two sides' geometric means over their samples (the centre of the interval; the ratio of the cells' pooled figures where there are none) with the 95% interval (Welch on the logs of each side's samples: its jobs where a cell has two or more, else its job's iterations; NULL where a side has fewer than 2 samples).
WITH pairs (config, baseline) AS (VALUES ('sliding', 'full'), ('hybrid', 'full'), ('hybrid', 'sliding'))
SELECT c.model, c.engine, c."window", c.output_len,
    c.enable_prefix_caching, c.request_rate, c.concurrency_limit, c.dataset_sha256,
    c.input_len, p.config, p.baseline,
    c.status, b.status AS baseline_status, c.iterations, b.iterations AS baseline_iterations,
    c.samples, b.samples AS baseline_samples,
    -- Stores older than kv_state_used_gib: KV plus SSM state, without the dt ring.
    coalesce(c.kv_state_used_gib, c.kv_used_gib + coalesce(c.ssm_state_gib, 0)) AS kv_state_gib,
    coalesce(b.kv_state_used_gib, b.kv_used_gib + coalesce(b.ssm_state_gib, 0)) AS baseline_kv_state_gib,
    kv_state_gib / nullif(baseline_kv_state_gib, 0) AS kv_ratio,
    c.kv_capacity_seqs / nullif(b.kv_capacity_seqs, 0) AS concurrency_ratio,
    coalesce(exp(c.throughput_tok_s_log_mean - b.throughput_tok_s_log_mean), c.throughput_tok_s / nullif(b.throughput_tok_s, 0)) AS throughput_ratio,
    ratio_ci_low(c.samples, c.throughput_tok_s_log_mean, c.throughput_tok_s_log_var, b.samples, b.throughput_tok_s_log_mean, b.throughput_tok_s_log_var) AS throughput_ratio_ci_low,
    ratio_ci_high(c.samples, c.throughput_tok_s_log_mean, c.throughput_tok_s_log_var, b.samples, b.throughput_tok_s_log_mean, b.throughput_tok_s_log_var) AS throughput_ratio_ci_high,
    coalesce(exp(c.e2e_p50_ms_log_mean - b.e2e_p50_ms_log_mean), c.latency_p50_ms / nullif(b.latency_p50_ms, 0)) AS p50_ratio,
    ratio_ci_low(c.samples, c.e2e_p50_ms_log_mean, c.e2e_p50_ms_log_var, b.samples, b.e2e_p50_ms_log_mean, b.e2e_p50_ms_log_var) AS p50_ratio_ci_low,
    ratio_ci_high(c.samples, c.e2e_p50_ms_log_mean, c.e2e_p50_ms_log_var, b.samples, b.e2e_p50_ms_log_mean, b.e2e_p50_ms_log_var) AS p50_ratio_ci_high,
    coalesce(exp(c.e2e_p99_ms_log_mean - b.e2e_p99_ms_log_mean), c.latency_p99_ms / nullif(b.latency_p99_ms, 0)) AS p99_ratio,
    ratio_ci_low(c.samples, c.e2e_p99_ms_log_mean, c.e2e_p99_ms_log_var, b.samples, b.e2e_p99_ms_log_mean, b.e2e_p99_ms_log_var) AS p99_ratio_ci_low,
    ratio_ci_high(c.samples, c.e2e_p99_ms_log_mean, c.e2e_p99_ms_log_var, b.samples, b.e2e_p99_ms_log_mean, b.e2e_p99_ms_log_var) AS p99_ratio_ci_high,
    c.tok_s_per_gib / nullif(b.tok_s_per_gib, 0) AS per_gib_ratio
FROM pairs p
JOIN cells c ON c.config = p.config
JOIN cells b ON b.config = p.baseline AND b.model = c.model AND b.engine = c.engine
    AND b.output_len = c.output_len AND b.input_len = c.input_len
    -- The same workload: caching and rate are never null in cells; no limit and no dataset are.
    AND b.enable_prefix_caching = c.enable_prefix_caching AND b.request_rate = c.request_rate
    AND b.concurrency_limit IS NOT DISTINCT FROM c.concurrency_limit
    AND b.dataset_sha256 IS NOT DISTINCT FROM c.dataset_sha256
    -- Full attention ignores the window, so a sweep runs it under one window: it is the baseline of
    -- every window (the same window's full run first, where there is one).
    AND (b."window" = c."window" OR p.baseline = 'full')
QUALIFY row_number() OVER (PARTITION BY p.config, p.baseline, c.model, c.engine, c."window", c.output_len,
                                        c.enable_prefix_caching, c.request_rate, c.concurrency_limit, c.dataset_sha256,
                                        c.input_len
                           ORDER BY b."window" <> c."window", b."window") = 1
ORDER BY c.model, c.engine, c."window", c.output_len, c.enable_prefix_caching, c.request_rate, c.concurrency_limit,
    c.dataset_sha256, p.config, p.baseline, c.input_len
