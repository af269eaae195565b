"""What one engine step must move and compute, for bandwidth (MBU) and FLOP (MFU) figures.

Decode is bound by bytes read: every weight once per step, plus each sequence's cached K/V and
history state. Prefill is bound by FLOPs: 2 per weight per token, plus attention's QK^T and PV.
"""
from __future__ import annotations

from dataclasses import dataclass

from hybench.engine.memory import SequenceMemory
from hybench.engine.model_config import ModelConfig


@dataclass(frozen=True, slots=True)
class StepCost:
    model: ModelConfig
    memory: SequenceMemory
    weight_bytes: int  # bytes of every weight read once per step (lm_head included)
    matmul_params: int  # weights that take part in a matmul per token

    def decode_bytes(self, context_lens: list[int]) -> int:
        """Weights + every sequence's K/V (up to its kept tokens) + history state read and written."""
        m = self.memory
        kv = m.held_bytes(context_lens)[1]
        return self.weight_bytes + kv + len(context_lens) * (2 * m.state_bytes() + m.dt_ring_bytes(1))

    def prefill_flops(self, chunks: list[tuple[int, int]]) -> float:
        """chunks: (tokens cached before the chunk, chunk tokens) per sequence."""
        cfg, window = self.model, self.memory.window
        keys = sum(_keys_seen(start + 1, start + n, window) for start, n in chunks)
        per_key = 4 * cfg.num_heads * cfg.head_dim * cfg.num_layers  # QK^T and PV, 2 FLOPs each
        tokens = sum(n for _, n in chunks)
        return 2.0 * self.matmul_params * tokens + per_key * keys


def _keys_seen(first: int, last: int, window: int | None) -> int:
    """sum of min(u, window) for u = first..last: keys attended by queries at positions first-1..last-1."""
    if last < first:
        return 0
    cap = last if window is None else window
    top = min(last, cap)
    below = (first + top) * (top - first + 1) // 2 if first <= top else 0
    return below + max(0, last - max(first, cap + 1) + 1) * cap
