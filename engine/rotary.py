"""Rotary position embedding (neox layout, as Hugging Face Llama), incl. Llama-3 frequency scaling."""
from __future__ import annotations

import math

import torch
from torch import nn

from hybench.engine.model_config import ModelConfig


def rope_inv_freq(config: ModelConfig) -> torch.Tensor:
    dim = config.head_dim
    inv_freq = 1.0 / (config.rope_theta ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    scaling = config.rope_scaling
    rope_type = scaling.get("rope_type", "default")
    if rope_type == "linear":
        return inv_freq / float(scaling["factor"])
    if rope_type == "llama3":
        return _llama3_inv_freq(inv_freq, scaling)
    return inv_freq


def _llama3_inv_freq(inv_freq: torch.Tensor, scaling: dict) -> torch.Tensor:
    """Llama 3.1's long-context rule: keep high frequencies, divide low ones by `factor`,
    interpolate smoothly in between."""
    factor = float(scaling["factor"])
    low, high = float(scaling["low_freq_factor"]), float(scaling["high_freq_factor"])
    old_len = float(scaling["original_max_position_embeddings"])
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > old_len / low, inv_freq / factor, inv_freq)
    smooth = (old_len / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    is_medium = (wavelen >= old_len / high) & (wavelen <= old_len / low)
    return torch.where(is_medium, smoothed, scaled)


class RotaryEmbedding(nn.Module):
    """Precomputed cos/sin table for positions 0..max_positions-1, applied by position index."""

    def __init__(self, config: ModelConfig, max_positions: int) -> None:
        super().__init__()
        self.config, self.max_positions = config, max_positions
        self.build(torch.get_default_device())

    def build(self, device: torch.device) -> None:
        """(Re)compute the table on `device` in fp32 (also after the model left the meta device)."""
        inv_freq = rope_inv_freq(self.config).to(device)
        freqs = torch.arange(self.max_positions, dtype=torch.float32, device=device)[:, None] * inv_freq[None, :]
        emb = torch.cat((freqs, freqs), dim=-1)
        self.register_buffer("cos", emb.cos(), persistent=False)
        self.register_buffer("sin", emb.sin(), persistent=False)

    def lookup(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin rows [N, D] for these positions, once per step for every layer."""
        return self.cos[positions].to(dtype), self.sin[positions].to(dtype)
