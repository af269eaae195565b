-- Hardware use per cell: decode bandwidth and MBU, prefill TFLOP/s and MFU, the peaks they are measured against, and the kernels that ran.
SELECT model, engine, "window", output_len, enable_prefix_caching, request_rate, concurrency_limit, dataset_sha256, input_len, config, status,
    decode_bw_gbs, peak_bw_gbs, decode_mbu, prefill_tflops, peak_tflops, prefill_mfu, attn_backend, ssm_backend
FROM cells
ORDER BY model, engine, "window", output_len, enable_prefix_caching, request_rate, concurrency_limit, dataset_sha256, input_len, list_position(['full', 'sliding', 'hybrid'], config), config
