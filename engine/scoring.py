"""Teacher-forced scoring: the negative log-likelihood and top-1 hit of every token of a sequence.

Sequences go through the engine's own scheduler and chunked prefill, so full, sliding and hybrid are
scored by exactly the forward pass they are benchmarked with (windowed K/V ring, history state
carried from chunk to chunk), and a prefill step never holds more than the engine's token budget
(`max_num_batched_tokens`). The logits of one step are formed a slice of rows at a time and reduced
to two numbers per token at once, so a 32k-token sequence never has its logits in memory whole.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from hybench.engine.errors import EngineConfigError
from hybench.engine.llm_engine import LLMEngine, StepRecord
from hybench.engine.sequence import SamplingParams

LOGIT_ROWS = 1024  # rows of logits formed at once: 1024 x a 128k vocabulary is 0.5 GB in fp32


@dataclass(frozen=True, slots=True)
class TokenScores:
    """Entry t scores token t + 1 given tokens 0..t (a sequence of L tokens has L - 1 entries); entries
    outside the positions asked for are NaN (nll) and False (correct)."""

    nll: torch.Tensor  # [L - 1] float32, natural log
    correct: torch.Tensor  # [L - 1] bool: the most likely token was the true one

    def at(self, positions: range | list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """(nll, correct) of the tokens at these positions (each >= 1)."""
        index = torch.as_tensor(list(positions), dtype=torch.long) - 1
        return self.nll[index], self.correct[index]


def _score_rows(model, hidden: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    nll, correct = [], []
    for start in range(0, hidden.shape[0], LOGIT_ROWS):
        logits = model.lm_head(hidden[start:start + LOGIT_ROWS]).float()
        wanted = targets[start:start + LOGIT_ROWS]
        nll.append(torch.logsumexp(logits, -1) - logits.gather(1, wanted[:, None]).squeeze(1))
        correct.append(logits.argmax(-1) == wanted)
    return torch.cat(nll), torch.cat(correct)


@torch.inference_mode()
def score_sequences(engine: LLMEngine, sequences: list[list[int]],
                    positions: list[range] | None = None) -> list[TokenScores]:
    """Teacher-forced scores of the tokens of each sequence (each at least 2 tokens long) at
    `positions[i]` (default: every position from 1), under the engine's attention config. Only those
    rows go through the LM head: a task that scores a few tokens of a long sequence (recall) costs
    one prefill, not a prefill plus the vocabulary projection of every position. Each prefill step is
    timed into `engine.steps` like a benchmark step."""
    if engine.prefix_cache is not None:
        raise EngineConfigError("teacher-forced scoring needs every position computed: turn prefix caching off")
    if any(len(tokens) < 2 for tokens in sequences):
        raise EngineConfigError("a scored sequence needs at least 2 tokens")
    positions = positions or [range(1, len(tokens)) for tokens in sequences]
    if any(r and (r[0] < 1 or r[-1] >= len(tokens) or r.step != 1) for r, tokens in zip(positions, sequences)):
        raise EngineConfigError("scored positions must be a contiguous range within 1..L-1 of their sequence")
    model, runner, scheduler = engine.model, engine.runner, engine.scheduler
    device = engine.config.device
    wanted_of, nll_of, hit_of = {}, {}, {}
    for tokens, wanted in zip(sequences, positions):  # one sampled token ends each request right after its prompt
        rid = engine.add_request(tokens, SamplingParams(1)).request_id
        wanted_of[rid] = wanted
        nll_of[rid] = torch.full((len(tokens) - 1,), float("nan"))
        hit_of[rid] = torch.zeros(len(tokens) - 1, dtype=torch.bool)
    while scheduler.has_work:
        batch = scheduler.schedule()
        work = engine.cost.prefill_flops([(s.num_cached, n) for s, n in zip(batch.seqs, batch.num_new)])
        start_ns = time.monotonic_ns()
        runner.copy_rows(batch.restores)
        ids, ctx = runner.prepare_prefill(batch)
        hidden = model.model(ids, ctx)
        rows, targets, spans, last_rows = [], [], [], []
        offset = 0
        for seq, n in zip(batch.seqs, batch.num_new):
            # Row offset + i predicts the token at position num_cached + i + 1.
            wanted = wanted_of[seq.request_id]
            lo = max(seq.num_cached + 1, wanted.start)
            hi = min(seq.num_cached + n + 1, wanted.stop)
            if lo < hi:
                rows.append(torch.arange(offset + lo - seq.num_cached - 1, offset + hi - seq.num_cached - 1))
                targets.append(torch.tensor(seq.prompt[lo:hi], dtype=torch.long))
                spans.append((seq.request_id, lo, hi))
            last_rows.append(offset + n - 1)
            offset += n
        if rows:
            nll, correct = _score_rows(model, hidden[torch.cat(rows).to(device)], torch.cat(targets).to(device))
            nll, correct = nll.cpu(), correct.cpu()  # reading back synchronises the device before the clock
        sampled = [i for i in range(len(batch.seqs)) if batch.completes_prompt(i)]
        tokens = model.lm_head(hidden[[last_rows[i] for i in sampled]]).argmax(-1).tolist() if sampled else []
        if device.type == "cuda":  # a step with no scored row and no sampled token reads nothing back
            torch.cuda.synchronize(device)
        now = time.monotonic_ns()
        engine.steps.append(StepRecord(True, len(batch.seqs), batch.num_tokens, now - start_ns, work))
        offset = 0
        for rid, lo, hi in spans:
            nll_of[rid][lo - 1:hi - 1] = nll[offset:offset + hi - lo]
            hit_of[rid][lo - 1:hi - 1] = correct[offset:offset + hi - lo]
            offset += hi - lo
        scheduler.postprocess(batch, tokens, now)
        runner.copy_rows(batch.snapshots)
    return [TokenScores(nll_of[rid], hit_of[rid]) for rid in wanted_of]
