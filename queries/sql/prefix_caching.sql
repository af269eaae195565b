-- Prefix caching per config, input length and workload: TTFT mean/P50/P99 and throughput with caching beside without (ratios with / without), the share of prompt tokens served from the cache, requests that hit it, and the memory its entries held (GiB).
SELECT c.model, c.engine, c."window", c.output_len, c.request_rate, c.concurrency_limit, c.dataset_sha256,
    c.input_len, c.config, c.status, b.status AS status_without,
    c.ttft_mean_ms AS ttft_mean_ms_with, b.ttft_mean_ms AS ttft_mean_ms_without,
    c.ttft_p50_ms AS ttft_p50_ms_with, b.ttft_p50_ms AS ttft_p50_ms_without,
    c.ttft_p50_ms / nullif(b.ttft_p50_ms, 0) AS ttft_p50_ratio,
    c.ttft_p99_ms AS ttft_p99_ms_with, b.ttft_p99_ms AS ttft_p99_ms_without,
    c.ttft_p99_ms / nullif(b.ttft_p99_ms, 0) AS ttft_p99_ratio,
    c.throughput_tok_s AS throughput_tok_s_with, b.throughput_tok_s AS throughput_tok_s_without,
    c.throughput_tok_s / nullif(b.throughput_tok_s, 0) AS throughput_ratio,
    c.prefix_cache_hit_rate, c.prefix_cache_hits, c.prefix_cache_gib
FROM cells c
LEFT JOIN cells b ON NOT b.enable_prefix_caching AND b.config = c.config AND b.model = c.model
    AND b.engine = c.engine AND b."window" = c."window" AND b.output_len = c.output_len AND b.input_len = c.input_len
    AND b.request_rate = c.request_rate AND b.concurrency_limit IS NOT DISTINCT FROM c.concurrency_limit
    AND b.dataset_sha256 IS NOT DISTINCT FROM c.dataset_sha256
WHERE c.enable_prefix_caching
ORDER BY c.model, c.engine, c."window", c.output_len, c.request_rate, c.concurrency_limit, c.dataset_sha256,
    c.input_len, list_position(['full', 'sliding', 'hybrid'], c.config), c.config
