"""Continuous-batching scheduler (plain Python, no tensors).

Each step is either a prefill step or a decode step. Prefill goes first: sequences part-way
through their prompt continue, then waiting requests are admitted while a cache row is free and
fewer than max_num_seqs run; every prefill step stays within the token budget, so long prompts
are prefilled in chunks. Otherwise every decoding sequence advances one token. A finished
sequence's row is freed before the next step.
With a prefix cache, an admitted request starts from the longest cached prefix of its prompt (the
batch lists the row copies to make first), and its prefill is cut at the block boundary where its
own snapshot is taken (the batch lists those copies too, to make after the step).
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from hybench.engine.prefix_cache import PrefixCache, prefix_hashes
from hybench.engine.row_manager import RowManager
from hybench.engine.sequence import Sequence, Status


@dataclass(slots=True)
class ScheduledBatch:
    is_prefill: bool
    seqs: list[Sequence]
    num_new: list[int]  # tokens each sequence feeds this step
    restores: list[tuple[int, int, int]] = field(default_factory=list)  # (from row, to row, tokens) before the step
    snapshots: list[tuple[int, int, int]] = field(default_factory=list)  # (from row, to row, tokens) after it

    def completes_prompt(self, i: int) -> bool:
        """Whether sequence i samples a token this step (decode, or the last chunk of a prompt)."""
        seq = self.seqs[i]
        return not self.is_prefill or seq.num_cached + self.num_new[i] == seq.prompt_len

    @property
    def num_tokens(self) -> int:
        return sum(self.num_new)


class Scheduler:
    def __init__(self, rows: RowManager, max_num_seqs: int, max_num_batched_tokens: int,
                 prefix_cache: PrefixCache | None = None) -> None:
        self.rows = rows
        self.prefix_cache = prefix_cache
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []

    def add(self, seq: Sequence) -> None:
        if self.prefix_cache is not None:
            seq.prefix_hashes = prefix_hashes(seq.prompt, self.prefix_cache.block_size)
            self.prefix_cache.register(seq.prefix_hashes)
        self.waiting.append(seq)

    @property
    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def _has_row(self) -> bool:
        return self.rows.num_free > 0 or (self.prefix_cache is not None and self.prefix_cache.evict_one())

    @staticmethod
    def _chunk(seq: Sequence, budget: int) -> int:
        n = min(seq.prompt_len - seq.num_cached, budget)
        if seq.snapshot_at > seq.num_cached:  # stop at the snapshot boundary
            n = min(n, seq.snapshot_at - seq.num_cached)
        return n

    def schedule(self) -> ScheduledBatch:
        budget = self.max_num_batched_tokens
        seqs, chunks, restores = [], [], []
        for seq in self.running:
            if seq.status is Status.PREFILLING and budget > 0:
                n = self._chunk(seq, budget)
                seqs.append(seq)
                chunks.append(n)
                budget -= n
        deferred = []
        while self.waiting and budget > 0 and len(self.running) < self.max_num_seqs and self._has_row():
            seq = self.waiting.popleft()
            if self.prefix_cache is not None and self.prefix_cache.should_wait(seq.prefix_hashes):
                deferred.append(seq)
                continue
            self.rows.allocate(seq)
            seq.status = Status.PREFILLING
            self.running.append(seq)
            if self.prefix_cache is not None:
                entry, seq.snapshot_at = self.prefix_cache.admit(seq.prefix_hashes, seq.prompt_len)
                if entry is not None:
                    restores.append((entry.row, seq.row, entry.length))
                    seq.num_cached = entry.length
            n = self._chunk(seq, budget)
            seqs.append(seq)
            chunks.append(n)
            budget -= n
        self.waiting.extendleft(reversed(deferred))  # they keep their place in the queue
        if seqs:
            return ScheduledBatch(True, seqs, chunks, restores)
        decoding = [seq for seq in self.running if seq.status is Status.DECODING]
        return ScheduledBatch(False, decoding, [1] * len(decoding))

    def postprocess(self, batch: ScheduledBatch, tokens: list[int], now_ns: int) -> list[Sequence]:
        """Advance the batch by its step; `tokens` holds one sampled token per sequence that
        completed its prompt or decoded. Returns the sequences that finished."""
        sampled = iter(tokens)
        for i, seq in enumerate(batch.seqs):
            samples = batch.completes_prompt(i)
            seq.num_cached += batch.num_new[i]
            if seq.snapshot_at and seq.num_cached == seq.snapshot_at:
                row = self.prefix_cache.insert(seq.prefix_hashes, seq.snapshot_at)
                if row is not None:
                    batch.snapshots.append((seq.row, row, seq.snapshot_at))
                seq.snapshot_at = 0
            if samples:
                seq.output.append(next(sampled))
                seq.token_ns.append(now_ns)
                seq.status = Status.DECODING
        self.rows.record_peak()
        finished = [seq for seq in batch.seqs if seq.status is Status.DECODING and seq.is_finished]
        for seq in finished:
            if self.prefix_cache is not None:
                self.prefix_cache.unregister(seq.prefix_hashes)
            seq.status = Status.FINISHED
            self.rows.free(seq)
            self.running.remove(seq)
        return finished
