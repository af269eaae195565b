"""Analytic memory accounting (DESIGN.md section 4): bytes one sequence costs in each config.

These formulas size the KV pool, decide how many sequences run at once, and are reported beside
the measured numbers; a test checks they equal the bytes the KV cache really allocates.
"""
from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

import torch

from hybench.engine.config import EngineConfig
from hybench.engine.errors import EngineConfigError
from hybench.engine.model_config import ModelConfig

GIB = 1024**3
STATE_DTYPE = torch.float32  # the SSM state and dt ring stay in fp32 whatever the model dtype


@dataclass(frozen=True, slots=True)
class SequenceMemory:
    """Per-sequence byte costs of one engine configuration."""

    num_layers: int
    kv_heads: int
    head_dim: int
    kv_elem_bytes: int
    window: int | None  # None for full attention
    has_history: bool

    @classmethod
    def of(cls, config: EngineConfig) -> "SequenceMemory":
        m = config.model
        return cls(
            num_layers=m.num_layers,
            kv_heads=m.num_kv_heads,
            head_dim=m.head_dim,
            kv_elem_bytes=torch.empty((), dtype=config.dtype).element_size(),
            window=config.window if config.windowed else None,
            has_history=config.attention == "hybrid",
        )

    def kv_tokens(self, tokens: int) -> int:
        return tokens if self.window is None else min(tokens, self.window)

    def kv_bytes(self, tokens: int) -> int:
        """K and V of every layer: 2 * Hkv * D * elem * kept tokens, per layer."""
        return self.num_layers * 2 * self.kv_heads * self.head_dim * self.kv_elem_bytes * self.kv_tokens(tokens)

    def state_bytes(self) -> int:
        """History state S (one Dv x Dk matrix per KV head), fp32, constant in sequence length."""
        if not self.has_history:
            return 0
        return self.num_layers * self.kv_heads * self.head_dim * self.head_dim * STATE_DTYPE.itemsize

    def dt_ring_bytes(self, tokens: int) -> int:
        """dt of every token still in the window, kept to absorb it when it leaves."""
        if not self.has_history:
            return 0
        return self.num_layers * self.kv_heads * STATE_DTYPE.itemsize * self.kv_tokens(tokens)

    def sequence_bytes(self, tokens: int) -> int:
        return self.kv_bytes(tokens) + self.state_bytes() + self.dt_ring_bytes(tokens)

    def held_bytes(self, token_counts: Iterable[int]) -> tuple[int, int]:
        """(all bytes, K/V bytes) of sequences holding these token counts: the sums of
        `sequence_bytes` and `kv_bytes` in one pass, cheap enough for every engine step."""
        counts = list(token_counts)
        kept = sum(map(self.kv_tokens, counts))
        kv = self.kv_bytes(1) * kept
        return kv + len(counts) * self.state_bytes() + self.dt_ring_bytes(1) * kept, kv


def device_memory_bytes(device: torch.device) -> int:
    """All the memory a job on `device` could use: the GPU's, or the machine's RAM for the CPU."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_fits(model: ModelConfig, dtype: torch.dtype, device: torch.device, memory: SequenceMemory,
               tokens: int) -> None:
    """Refuse, before anything is allocated, a job whose weights and one sequence's KV and state of
    `tokens` tokens exceed the device's whole memory: it could only fail in the allocator."""
    weight_bytes = model.num_params * torch.empty((), dtype=dtype).element_size()
    sequence_bytes = memory.sequence_bytes(tokens)
    total = device_memory_bytes(device)
    if weight_bytes + sequence_bytes > total:
        raise EngineConfigError(
            f"{model.name}: the weights ({weight_bytes / GIB:.3g} GiB in {str(dtype).removeprefix('torch.')}) and "
            f"one sequence's KV ({sequence_bytes / GIB:.3g} GiB for {tokens} tokens) exceed the {total / GIB:.3g} "
            f"GiB of {device.type} memory (config.json: vocab_size {model.vocab_size}, hidden_size "
            f"{model.hidden_size}, intermediate_size {model.intermediate_size}, num_hidden_layers {model.num_layers})")
