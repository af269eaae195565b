"""Attention on the flash-attn 2 package, the first choice where it is installed (DESIGN.md section 7).

Prefill: `flash_attn_varlen_func` over the packed chunks, causal (bottom-right aligned, as in every
backend), `window_size=(W - 1, 0)` for windowed configs. Decode: `flash_attn_with_kvcache` straight
over the cache: `cache_batch_idx` picks each sequence's row and `cache_seqlens` how many of its slots
hold tokens. This step's key and value are stored first through `LayerCache.write_kv` rather than
the kernel's own append, which writes at position `cache_seqlens` and knows nothing of the ring's
wrap-around. A ring row needs no window mask: it only ever holds the window.

flash-attn is built from source (its wheels are per CUDA/torch pair): `pip install flash-attn
--no-build-isolation`, about 20 minutes for sm_90. Without it, PyTorch's bundled FlashAttention-2
(`flash_torch`) serves.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable

import torch

from hybench.engine.context import DecodeMeta, PrefillMeta
from hybench.engine.kernels.fused import gated_add
from hybench.engine.kv_cache import LayerCache


def _load() -> tuple[Callable, Callable] | None:
    """(flash_attn_varlen_func, flash_attn_with_kvcache), or None where the package is missing or
    its CUDA extension does not load (built for another torch)."""
    try:
        module = importlib.import_module("flash_attn")
        return module.flash_attn_varlen_func, module.flash_attn_with_kvcache
    except Exception:  # noqa: BLE001 - any import failure means the backend is absent
        return None


def available(device: torch.device) -> bool:
    return device.type == "cuda" and torch.cuda.get_device_capability(device) >= (8, 0) and _load() is not None


def _window(window: int | None) -> tuple[int, int]:
    """flash-attn's (left, right): W keys per query including itself; (-1, -1) is unbounded."""
    return (-1, -1) if window is None else (window - 1, 0)


class FlashAttnPackage:
    name = "flash-attn2"

    def __init__(self) -> None:
        self._varlen, self._with_kvcache = _load()

    def prefill(self, q, k, v, meta: PrefillMeta, window: int | None, scale: float) -> torch.Tensor:
        return self._varlen(q, k, v, meta.cu_seqlens_q, meta.cu_seqlens_k, meta.max_seqlen_q, meta.max_seqlen_k,
                            softmax_scale=scale, causal=True, window_size=_window(window))

    def decode(self, q, k, v, cache: LayerCache, meta: DecodeMeta, scale: float, history=None) -> torch.Tensor:
        cache.write_kv(meta.slots, k, v)
        out = self._with_kvcache(q[:, None], cache.k, cache.v, cache_seqlens=meta.used,
                                 cache_batch_idx=meta.rows.to(torch.int32), softmax_scale=scale)[:, 0]
        return out if history is None else gated_add(out, *history)
