-- Memory per cell (GiB): weights, SSM parameters, KV pool, KV and SSM state in use at peak (analytic), activation peak and CUDA graph pool, measured torch peak and NVML, prefix-cache entries, and how many sequences fit.
SELECT model, engine, "window", output_len, enable_prefix_caching, request_rate, concurrency_limit, dataset_sha256, input_len, config, status,
    model_gib, ssm_param_gib, kv_pool_gib, kv_used_gib, ssm_state_gib, activation_peak_gib, graph_pool_gib,
    peak_torch_gib, nvml_used_gib, prefix_cache_gib, max_concurrency, kv_capacity_tokens
FROM cells
ORDER BY model, engine, "window", output_len, enable_prefix_caching, request_rate, concurrency_limit, dataset_sha256, input_len, list_position(['full', 'sliding', 'hybrid'], config), config
