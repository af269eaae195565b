-- Perplexity (--task perplexity) per cell (model, window, text, history-branch init, input length, config) and position bucket [start, end) in units of W: requests, tokens, mean NLL per token with its 95% interval over requests, perplexity and top-1 accuracy; ok jobs only.
WITH ok_jobs AS (
    SELECT job_id, any_value(ssm_init) AS ssm_init, any_value(vocab_size) AS vocab_size, any_value(eval_text_sha256) AS eval_text_sha256
    FROM jobs
    WHERE status = 'ok' AND task = 'perplexity'
    GROUP BY job_id
),
per_request AS (  -- one value per request and bucket, whatever rows it was written in
    SELECT model, "window", eval_text_sha256, ssm_init, input_len, config, bucket_start_w, bucket_end_w, job_id, request_id, vocab_size,
        sum(tokens) AS tokens, sum(nll_sum) AS nll_sum, sum(correct) AS correct
    FROM quality JOIN ok_jobs USING (job_id)
    WHERE task = 'perplexity'
    GROUP BY ALL
),
by_cell AS (
    SELECT model, "window", eval_text_sha256, ssm_init, input_len, config, bucket_start_w, bucket_end_w,
        count(*) AS requests, sum(tokens)::BIGINT AS tokens,
        sum(nll_sum) / sum(tokens) AS nll_mean,
        sum(nll_sum) / sum(tokens) - mean_ci_half(count(*), stddev_samp(nll_sum / tokens)) AS nll_ci_low,
        sum(nll_sum) / sum(tokens) + mean_ci_half(count(*), stddev_samp(nll_sum / tokens)) AS nll_ci_high,
        exp(sum(nll_sum) / sum(tokens)) AS perplexity,
        sum(correct) / sum(tokens) AS accuracy,
        max(vocab_size) AS vocab_size  -- a uniform guess scores ln(vocab_size) nats (null in older stores)
    FROM per_request
    GROUP BY ALL
)
SELECT * FROM by_cell
ORDER BY model, "window", eval_text_sha256, ssm_init, input_len, list_position(['full', 'sliding', 'hybrid'], config), config, bucket_start_w
