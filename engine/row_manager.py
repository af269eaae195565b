"""RowManager: hands out KV-cache rows to sequences and tracks analytic KV use (plain Python).

A row holds one sequence's cache (a ring of W slots for windowed configs), so a sequence is
admitted only when a row is free, and its row is free again the moment it finishes.
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
        self.peak_rows = 0
        self.peak_bytes = 0

    @property
    def num_free(self) -> int:
        return len(self._free)

    def allocate(self, seq: Sequence) -> None:
        if not self._free:
            raise RuntimeError("allocate() called with no free row; the scheduler must check num_free")
        seq.row = self._free.pop()
        self._holders[seq.row] = seq
        self.peak_rows = max(self.peak_rows, len(self._holders))

    def free(self, seq: Sequence) -> None:
        del self._holders[seq.row]
        self._free.append(seq.row)
        seq.row = None

    def used_bytes(self) -> int:
        """Analytic bytes the running sequences hold now (kv + history state + dt ring)."""
        return sum(self.memory.sequence_bytes(seq.num_cached) for seq in self._holders.values())

    def record_peak(self) -> None:
        self.peak_bytes = max(self.peak_bytes, self.used_bytes())
