-- Memory per cell (GiB): weights, SSM parameters, KV pool, KV, SSM state and KV + state + dt ring in use at peak (analytic), activation peak (GPU) and CUDA graph pool, measured torch peak and NVML (GPU) or the worker's peak RSS (CPU), prefix-cache entries, how many sequences the KV budget could hold and how many ran at once.
SELECT model, engine, "window", output_len, enable_prefix_caching, request_rate, concurrency_limit, dataset_sha256, input_len, config, status,
    model_gib, ssm_param_gib, kv_pool_gib, kv_used_gib, ssm_state_gib, kv_state_used_gib, activation_peak_gib, graph_pool_gib,
    peak_torch_gib, nvml_used_gib, peak_rss_gib, prefix_cache_gib, kv_capacity_seqs, max_running, kv_capacity_tokens
FROM cells
ORDER BY model, engine, "window", output_len, enable_prefix_caching, request_rate, concurrency_limit, dataset_sha256, input_len, list_position(['full', 'sliding', 'hybrid'], config), config
