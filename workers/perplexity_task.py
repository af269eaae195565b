"""--task perplexity: teacher-forced NLL of sequences cut from --eval-text, per position bucket.

Buckets are relative to the window W, where sliding and hybrid start to differ from full: positions
[0, W), [W, 2W), [2W, 4W), [4W, 8W), ... of the predicted token. A row holds one request's token count,
summed NLL and top-1 hits in one bucket, so any re-aggregation (per bucket, per job, over several
buckets) is exact: perplexity = exp(sum nll_sum / sum tokens).
"""
from __future__ import annotations

from hybench.engine import ResolvedModel
from hybench.engine.scoring import TokenScores
from hybench.workers.eval_text import text_sequences
from hybench.workers.job_spec import JobSpec
from hybench.workers.quality_job import QualityWork


def position_buckets(window: int, length: int) -> list[tuple[int, int]]:
    """Bucket edges [start, end) in positions, 0, W, 2W, 4W, ..., up to the first edge >= `length`."""
    edges = [0, window]
    while edges[-1] < length:
        edges.append(edges[-1] * 2)
    return list(zip(edges, edges[1:]))


def bucket_rows(scores: TokenScores, window: int) -> list[dict]:
    """One sequence's rows: each bucket holding scored positions (position t >= 1 predicts token t)."""
    length = len(scores.nll) + 1
    rows = []
    for start, end in position_buckets(window, length):
        first, last = max(start, 1), min(end, length)
        if first >= last:
            continue
        nll, correct = scores.at(range(first, last))
        rows.append({"bucket_start": start, "bucket_end": end, "bucket_start_w": start / window,
                     "bucket_end_w": end / window, "tokens": last - first, "nll_sum": nll.double().sum().item(),
                     "correct": int(correct.sum().item())})
    return rows


def perplexity_work(spec: JobSpec, resolved: ResolvedModel) -> QualityWork:
    """The job's sequences from its text; raises EvalTextError for a text that cannot serve it."""
    sequences = text_sequences(spec.eval_text, spec.model, resolved.config.vocab_size, spec.input_len,
                               spec.num_prompts)

    def rows(scores: list[TokenScores]) -> list[dict]:
        return [{"task": "perplexity", "request_id": i} | row
                for i, s in enumerate(scores) for row in bucket_rows(s, spec.window)]

    return QualityWork(lambda: (sequences, None), rows)  # the text bounds them; cut when checked
