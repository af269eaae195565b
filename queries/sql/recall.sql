-- Recall (--task recall) per cell (model, window, history-branch init, input length, config) and distance between a block and its repeat, in units of W: requests, tokens scored, top-1 accuracy and mean NLL per token, each with its 95% interval over requests; ok jobs only.
WITH ok_jobs AS (
    SELECT job_id, any_value(ssm_init) AS ssm_init, any_value(vocab_size) AS vocab_size
    FROM jobs
    WHERE status = 'ok' AND task = 'recall'
    GROUP BY job_id
),
per_request AS (
    SELECT model, "window", ssm_init, input_len, config, distance_w, distance, job_id, request_id, vocab_size,
        sum(tokens) AS tokens, sum(nll_sum) AS nll_sum, sum(correct) AS correct
    FROM quality JOIN ok_jobs USING (job_id)
    WHERE task = 'recall'
    GROUP BY ALL
),
by_cell AS (
    SELECT model, "window", ssm_init, input_len, config, distance_w, distance,
        count(*) AS requests, sum(tokens)::BIGINT AS tokens,
        sum(correct) / sum(tokens) AS accuracy,
        sum(correct) / sum(tokens) - mean_ci_half(count(*), stddev_samp(correct / tokens)) AS accuracy_ci_low,
        sum(correct) / sum(tokens) + mean_ci_half(count(*), stddev_samp(correct / tokens)) AS accuracy_ci_high,
        sum(nll_sum) / sum(tokens) AS nll_mean,
        sum(nll_sum) / sum(tokens) - mean_ci_half(count(*), stddev_samp(nll_sum / tokens)) AS nll_ci_low,
        sum(nll_sum) / sum(tokens) + mean_ci_half(count(*), stddev_samp(nll_sum / tokens)) AS nll_ci_high,
        max(vocab_size) AS vocab_size  -- chance is 1 / vocab_size (null in stores older than the column)
    FROM per_request
    GROUP BY ALL
)
SELECT * FROM by_cell
ORDER BY model, "window", ssm_init, input_len, list_position(['full', 'sliding', 'hybrid'], config), config, distance_w
