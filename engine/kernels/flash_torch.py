"""Attention on PyTorch's bundled FlashAttention-2 (`aten._flash_attention_forward`).

Prefill: packed varlen, causal (bottom-right aligned), `window_size_left = W - 1` for windowed
configs. Decode: one query per sequence straight over the cache rows, without gathering them:
`cu_seqlens_k[b] = row_b * C` is where row b starts in the flat cache and `seqused_k[b]` how many
of its slots hold tokens (with `seqused_k`, FlashAttention reads only the start offset of each
sequence, so rows may come in any order). A ring row needs no window mask: it only ever holds
the window.
"""
from __future__ import annotations

import torch

from hybench.engine.context import DecodeMeta, PrefillMeta
from hybench.engine.kernels.fused import gated_add
from hybench.engine.kv_cache import LayerCache


def available(device: torch.device) -> bool:
    if device.type != "cuda" or not hasattr(torch.ops.aten, "_flash_attention_forward"):
        return False
    return torch.cuda.get_device_capability(device) >= (8, 0)


def _flash(q, k, v, cu_q, cu_k, max_q, max_k, causal, scale, window_left, seqused_k=None):
    out = torch.ops.aten._flash_attention_forward(
        q, k, v, cu_q, cu_k, max_q, max_k, 0.0, causal, False,
        scale=scale, window_size_left=window_left, window_size_right=0 if causal else -1, seqused_k=seqused_k,
    )
    return out[0]


class TorchFlashAttention:
    name = "torch-flash2"

    def prefill(self, q, k, v, meta: PrefillMeta, window: int | None, scale: float) -> torch.Tensor:
        return _flash(q, k, v, meta.cu_seqlens_q, meta.cu_seqlens_k, meta.max_seqlen_q, meta.max_seqlen_k,
                      True, scale, -1 if window is None else window - 1)

    def decode(self, q, k, v, cache: LayerCache, meta: DecodeMeta, scale: float, history=None) -> torch.Tensor:
        cache.write_kv(meta.slots, k, v)
        k_cache, v_cache = cache.k, cache.v
        # GQA packing: the G query heads that share a KV head become G query rows of that head, so
        # each KV head's keys are read once per sequence instead of once per query head.
        batch, heads, dim = q.shape
        kv_heads = k_cache.shape[2]
        group = heads // kv_heads
        packed = q.view(batch, kv_heads, group, dim).transpose(1, 2).reshape(batch * group, kv_heads, dim)
        out = _flash(packed, k_cache.view(-1, kv_heads, dim), v_cache.view(-1, kv_heads, dim), meta.query_starts,
                     meta.row_starts, group, k_cache.shape[1], False,
                     scale, -1, seqused_k=meta.used)
        out = out.view(batch, group, kv_heads, dim).transpose(1, 2).reshape(batch, heads, dim)
        return out if history is None else gated_add(out, *history)
