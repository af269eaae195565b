"""--task recall: NLL and top-1 accuracy on a random block repeated d tokens later (workers/recall.py),
for each filler distance d of DISTANCE_MULTIPLES windows that fits the input length.

No tokenizer and no data: the sequences are seeded token ids, so recall runs on any checkpoint. A row
holds one request's scored tokens (the repeat's b - 1 predictable ones), summed NLL and top-1 hits at
one distance.
"""
from __future__ import annotations

import functools

from hybench.engine import ResolvedModel
from hybench.engine.scoring import TokenScores
from hybench.workers.job_spec import JobSpec
from hybench.workers.quality_job import QualityWork
from hybench.workers.recall import (DISTANCE_MULTIPLES, RecallInputError, RecallSequence, distance_tokens,
                                    distances_that_fit, recall_sequence)

BLOCK_LEN = 16  # tokens of the repeated block (tiny-recall was measured with 16)
# A recall job holds its sequences while it runs, so their total is bounded: 2^25 tokens are 256
# sequences of 32k at each of 4 distances.
MAX_RECALL_TOKENS = 2**25


def recall_work(spec: JobSpec, resolved: ResolvedModel) -> QualityWork:
    """`num_prompts` seeded sequences per distance that fits, built when the job runs; raises
    RecallInputError when none fits or they are too many to hold."""
    fitting = distances_that_fit(spec.window, spec.input_len, BLOCK_LEN)
    if not fitting:
        shortest = min(DISTANCE_MULTIPLES)
        tokens = distance_tokens(shortest, spec.window)
        raise RecallInputError(
            f"no recall distance fits: a block of {BLOCK_LEN} tokens repeated {shortest:g}W = {tokens} tokens later "
            f"needs an input of at least {2 * BLOCK_LEN + tokens} tokens, the input length is {spec.input_len} "
            f"(raise --input-lengths or lower the window)")
    total = spec.num_prompts * len(fitting) * spec.input_len
    if total > MAX_RECALL_TOKENS:
        raise RecallInputError(
            f"--num-prompts {spec.num_prompts}: a recall job of {spec.num_prompts} sequences at each of "
            f"{len(fitting)} distances, {spec.input_len} tokens each, would score {total:,} tokens, more than "
            f"{MAX_RECALL_TOKENS:,} in one job (lower --num-prompts)")

    @functools.cache
    def cases() -> list[tuple[float, int, RecallSequence]]:
        return [(multiple, i, recall_sequence(resolved.config.vocab_size, spec.input_len, BLOCK_LEN, distance,
                                              seed=spec.seed * spec.num_prompts + i))
                for multiple, distance in fitting for i in range(spec.num_prompts)]

    def rows(scores: list[TokenScores]) -> list[dict]:
        out = []
        for (multiple, i, seq), score in zip(cases(), scores):
            nll, correct = score.at(seq.scored_positions)
            out.append({"task": "recall", "request_id": i, "distance": seq.distance, "distance_w": multiple,
                        "tokens": len(nll), "nll_sum": nll.double().sum().item(), "correct": int(correct.sum().item())})
        return out

    def build() -> tuple[list[list[int]], list[range]]:
        return [seq.tokens for _, _, seq in cases()], [seq.scored_positions for _, _, seq in cases()]

    return QualityWork(build, rows)
