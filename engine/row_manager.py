"""RowManager: hands out KV-cache rows and tracks analytic KV use (plain Python).

A row holds one sequence's cache (a ring of W slots for windowed configs), so a sequence is
admitted only when a row is free, and its row is free again the moment it finishes. The prefix
cache keeps its entries in rows too, taken and returned through the same free list.
"""
from __future__ import annotations

from hybench.engine.memory import SequenceMemory
from hybench.engine.sequence import Sequence


class RowManager:
    def __init__(self, num_rows: int, memory: SequenceMemory) -> None:
        self.num_rows = num_rows
        self.memory = memory
        self._free = list(range(num_rows - 1, -1, -1))
        self._holders: dict[int, Sequence] = {}
        self.peak_rows = 0  # sequences running at once
        self.peak_bytes = 0  # their kv + history state + dt ring
        self.peak_kv_bytes = 0  # their K and V alone

    @property
    def num_free(self) -> int:
        return len(self._free)

    def take(self) -> int:
        if not self._free:
            raise RuntimeError("no free row; the scheduler must check num_free first")
        return self._free.pop()

    def give_back(self, row: int) -> None:
        self._free.append(row)

    def allocate(self, seq: Sequence) -> None:
        seq.row = self.take()
        self._holders[seq.row] = seq
        self.peak_rows = max(self.peak_rows, len(self._holders))

    def free(self, seq: Sequence) -> None:
        del self._holders[seq.row]
        self.give_back(seq.row)
        seq.row = None

    def used_bytes(self) -> tuple[int, int]:
        """Analytic bytes the running sequences hold now: (kv + history state + dt ring, kv alone)."""
        return self.memory.held_bytes(seq.num_cached for seq in self._holders.values())

    def reset_peaks(self) -> None:
        """Restart the peak trackers from what is held now (after warmup, so peaks describe what follows)."""
        self.peak_rows = len(self._holders)
        self.peak_bytes = self.peak_kv_bytes = 0
        self.record_peak()

    def record_peak(self) -> None:
        total, kv = self.used_bytes()
        self.peak_bytes = max(self.peak_bytes, total)
        self.peak_kv_bytes = max(self.peak_kv_bytes, kv)
