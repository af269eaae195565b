"""Continuous-batching scheduler (plain Python, no tensors).

Each step is either a prefill step or a decode step. Prefill goes first: sequences part-way
through their prompt continue, then waiting requests are admitted while a cache row is free and
fewer than max_num_seqs run; every prefill step stays within the token budget, so long prompts
are prefilled in chunks. Otherwise every decoding sequence advances one token. A finished
sequence's row is freed before the next step.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from hybench.engine.row_manager import RowManager
from hybench.engine.sequence import Sequence, Status


@dataclass(slots=True)
class ScheduledBatch:
    is_prefill: bool
    seqs: list[Sequence]
    num_new: list[int]  # tokens each sequence feeds this step

    def completes_prompt(self, i: int) -> bool:
        """Whether sequence i samples a token this step (decode, or the last chunk of a prompt)."""
        seq = self.seqs[i]
        return not self.is_prefill or seq.num_cached + self.num_new[i] == seq.prompt_len

    @property
    def num_tokens(self) -> int:
        return sum(self.num_new)


class Scheduler:
    def __init__(self, rows: RowManager, max_num_seqs: int, max_num_batched_tokens: int) -> None:
        self.rows = rows
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    @property
    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def schedule(self) -> ScheduledBatch:
        budget = self.max_num_batched_tokens
        seqs, chunks = [], []
        for seq in self.running:
            if seq.status is Status.PREFILLING and budget > 0:
                n = min(seq.prompt_len - seq.num_cached, budget)
                seqs.append(seq)
                chunks.append(n)
                budget -= n
        while (self.waiting and budget > 0 and self.rows.num_free > 0
               and len(self.running) < self.max_num_seqs):
            seq = self.waiting.popleft()
            self.rows.allocate(seq)
            seq.status = Status.PREFILLING
            self.running.append(seq)
            n = min(seq.prompt_len, budget)
            seqs.append(seq)
            chunks.append(n)
            budget -= n
        if seqs:
            return ScheduledBatch(True, seqs, chunks)
        decoding = [seq for seq in self.running if seq.status is Status.DECODING]
        return ScheduledBatch(False, decoding, [1] * len(decoding))

    def postprocess(self, batch: ScheduledBatch, tokens: list[int], now_ns: int) -> list[Sequence]:
        """Advance the batch by its step; `tokens` holds one sampled token per sequence that
        completed its prompt or decoded. Returns the sequences that finished."""
        sampled = iter(tokens)
        for i, seq in enumerate(batch.seqs):
            samples = batch.completes_prompt(i)
            seq.num_cached += batch.num_new[i]
            if samples:
                seq.output.append(next(sampled))
                seq.token_ns.append(now_ns)
                seq.status = Status.DECODING
        self.rows.record_peak()
        finished = [seq for seq in batch.seqs if seq.status is Status.DECODING and seq.is_finished]
        for seq in finished:
            seq.status = Status.FINISHED
            self.rows.free(seq)
            self.running.remove(seq)
        return finished
