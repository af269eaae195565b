"""Reference attention: SDPA with an explicit mask. The oracle every fast backend is tested against.

Window convention (pinned by tests): W keys per query including itself, so query at position t
sees keys t-W+1..t (flash-attn ``window_size=(W-1, 0)``; mask ``0 <= q - k < W``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def window_mask(q_positions: torch.Tensor, k_positions: torch.Tensor, window: int | None) -> torch.Tensor:
    """Boolean [len(q), len(k)] mask: True where the query may attend to the key."""
    delta = q_positions[:, None] - k_positions[None, :]
    visible = delta >= 0
    if window is not None:
        visible &= delta < window
    return visible


def prefill_attention_ref(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens_q: list[int],
    cu_seqlens_k: list[int],
    window: int | None,
    scale: float,
) -> torch.Tensor:
    """Packed varlen causal attention, queries aligned to the end of their keys (bottom-right).

    q: [N, H, D]; k, v: [M, Hkv, D]; sequence i owns q[cu_q[i]:cu_q[i+1]], k[cu_k[i]:cu_k[i+1]].
    """
    out = torch.empty_like(q)
    group = q.shape[1] // k.shape[1]
    for i in range(len(cu_seqlens_q) - 1):
        q0, q1, k0, k1 = cu_seqlens_q[i], cu_seqlens_q[i + 1], cu_seqlens_k[i], cu_seqlens_k[i + 1]
        n, m = q1 - q0, k1 - k0
        mask = window_mask(torch.arange(m - n, m, device=q.device), torch.arange(m, device=q.device), window)
        qi = q[q0:q1].transpose(0, 1)
        ki = k[k0:k1].repeat_interleave(group, dim=1).transpose(0, 1)
        vi = v[k0:k1].repeat_interleave(group, dim=1).transpose(0, 1)
        out[q0:q1] = F.scaled_dot_product_attention(qi, ki, vi, attn_mask=mask, scale=scale).transpose(0, 1)
    return out


def decode_attention_ref(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    rows: torch.Tensor,
    used: torch.Tensor,
    scale: float,
) -> torch.Tensor:
    """One query per sequence over the first `used` slots of its cache row.

    q: [B, H, D]; k_cache, v_cache: [rows, C, Hkv, D]; rows, used: [B]. Slot order does not
    matter (RoPE is already in the keys), so a ring buffer needs no mask beyond `used`.
    """
    group = q.shape[1] // k_cache.shape[2]
    k = k_cache[rows].repeat_interleave(group, dim=2).transpose(1, 2)  # [B, H, C, D]
    v = v_cache[rows].repeat_interleave(group, dim=2).transpose(1, 2)
    mask = torch.arange(k.shape[2], device=q.device)[None, :] < used[:, None]  # [B, C]
    out = F.scaled_dot_product_attention(q[:, :, None, :], k, v, attn_mask=mask[:, None, None, :], scale=scale)
    return out[:, :, 0, :]
