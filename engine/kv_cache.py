"""KVCache: the tensors that hold every running sequence's keys, values and history state.

One row per sequence slot, C = kv_capacity slots per row: a ring of W slots for sliding and
hybrid (token t lives in slot t % W, so the cache never holds more than W tokens of a sequence),
max_model_len slots for full. Rows are handed out by the RowManager; this module only owns memory.
Tensors are zero-filled so that masked or not-yet-written slots are finite.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from hybench.engine.config import EngineConfig
from hybench.engine.memory import STATE_DTYPE


@dataclass(slots=True)
class LayerCache:
    k: torch.Tensor  # [rows, C, Hkv, D]
    v: torch.Tensor  # [rows, C, Hkv, D]
    dt: torch.Tensor | None  # [rows, C, Hkv] fp32, hybrid only
    state: torch.Tensor | None  # [rows, Hkv, D, D] fp32, hybrid only

    def write_kv(self, slots: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
        """Store one token's key and value per slot (slots index the flat [rows * C] view)."""
        self.k.view(-1, *self.k.shape[2:])[slots] = k
        self.v.view(-1, *self.v.shape[2:])[slots] = v

    def write_dt(self, slots: torch.Tensor, dt: torch.Tensor) -> None:
        """Store one token's history step sizes [Hkv] per slot, beside its key and value."""
        self.dt.view(-1, self.dt.shape[-1])[slots] = dt

    def leaving(self, slots: torch.Tensor, evict: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(k, v, dt) held in `slots` before they are overwritten: the tokens leaving the window.
        dt is 0 where `evict` is 0, which leaves a state unchanged (decay 1, nothing added)."""
        flat = -1, *self.k.shape[2:]
        dt = torch.where(evict[:, None] != 0, self.dt.view(-1, self.dt.shape[-1])[slots], 0.0)
        return self.k.view(flat)[slots], self.v.view(flat)[slots], dt


class KVCache:
    def __init__(self, config: EngineConfig, num_rows: int) -> None:
        m = config.model
        cap, heads, dim = config.kv_capacity, m.num_kv_heads, m.head_dim
        kw = {"device": config.device}
        self.num_rows = num_rows
        self.capacity = cap
        self.kv = torch.zeros((2, m.num_layers, num_rows, cap, heads, dim), dtype=config.dtype, **kw)
        hybrid = config.attention == "hybrid"
        self.dt_ring = torch.zeros((m.num_layers, num_rows, cap, heads), dtype=STATE_DTYPE, **kw) if hybrid else None
        self.history_state = (
            torch.zeros((m.num_layers, num_rows, heads, dim, dim), dtype=STATE_DTYPE, **kw) if hybrid else None
        )
        self.layers = [
            LayerCache(
                k=self.kv[0, i],
                v=self.kv[1, i],
                dt=None if self.dt_ring is None else self.dt_ring[i],
                state=None if self.history_state is None else self.history_state[i],
            )
            for i in range(m.num_layers)
        ]

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for t in (self.kv, self.dt_ring, self.history_state) if t is not None)

    @property
    def state_nbytes(self) -> int:
        return 0 if self.history_state is None else self.history_state.nbytes
