"""The flash-attn package backend's wiring (window_size, cu_seqlens, cache_batch_idx, cache_seqlens,
the K/V write before the read) against the reference attention, on CPU: the package itself needs a
GPU, so a stand-in module computes what flash-attn's docstrings say its two functions compute."""
from __future__ import annotations

import sys
import types

import pytest
import torch

from hybench.engine.context import DecodeMeta, PrefillMeta
from hybench.engine.kernels import ReferenceAttention, flash_attn_pkg
from hybench.engine.kv_cache import LayerCache


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, visible: torch.Tensor, scale: float) -> torch.Tensor:
    """q [n, H, D], k and v [m, Hkv, D] (GQA: query head h reads KV head h // (H / Hkv)), visible [n, m]."""
    group = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(group, dim=1).float(), v.repeat_interleave(group, dim=1).float()
    scores = torch.einsum("nhd,mhd->hnm", q.float(), k) * scale
    weights = scores.masked_fill(~visible, float("-inf")).softmax(dim=-1)
    return torch.einsum("hnm,mhd->nhd", weights, v).to(q.dtype)


def flash_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p=0.0,
                           softmax_scale=None, causal=False, window_size=(-1, -1)):
    """Query i of a sequence with n queries and m keys sees keys j with
    i + m - n - left <= j <= i + m - n + right (causal: right = 0; -1: unbounded)."""
    assert cu_seqlens_q.dtype == cu_seqlens_k.dtype == torch.int32
    left, right = window_size
    right = 0 if causal else right
    out = torch.empty_like(q)
    bounds = zip(cu_seqlens_q.tolist(), cu_seqlens_q.tolist()[1:], cu_seqlens_k.tolist(), cu_seqlens_k.tolist()[1:])
    for q0, q1, k0, k1 in bounds:
        n, m = q1 - q0, k1 - k0
        assert n <= max_seqlen_q and m <= max_seqlen_k
        delta = torch.arange(m)[None, :] - (torch.arange(n)[:, None] + m - n)  # key minus the query's own place
        visible = torch.ones(n, m, dtype=torch.bool)
        if left >= 0:
            visible &= delta >= -left
        if right >= 0:
            visible &= delta <= right
        out[q0:q1] = _attend(q[q0:q1], k[k0:k1], v[k0:k1], visible, softmax_scale)
    return out


def flash_attn_with_kvcache(q, k_cache, v_cache, k=None, v=None, cache_seqlens=None, cache_batch_idx=None,
                            softmax_scale=None, causal=False, window_size=(-1, -1)):
    """q [B, 1, H, D]; sequence b reads the first cache_seqlens[b] slots of row cache_batch_idx[b]."""
    assert k is None and v is None and q.shape[1] == 1 and window_size == (-1, -1)
    assert cache_seqlens.dtype == cache_batch_idx.dtype == torch.int32
    out = torch.empty_like(q)
    for b, (row, used) in enumerate(zip(cache_batch_idx.tolist(), cache_seqlens.tolist())):
        out[b] = _attend(q[b], k_cache[row, :used], v_cache[row, :used], torch.ones(1, used, dtype=torch.bool),
                         softmax_scale)
    return out


@pytest.fixture
def backend(monkeypatch) -> flash_attn_pkg.FlashAttnPackage:
    stand_in = types.ModuleType("flash_attn")
    stand_in.flash_attn_varlen_func = flash_attn_varlen_func
    stand_in.flash_attn_with_kvcache = flash_attn_with_kvcache
    monkeypatch.setitem(sys.modules, "flash_attn", stand_in)
    return flash_attn_pkg.FlashAttnPackage()


def prefill_meta(q_lens: list[int], ctx_lens: list[int]) -> PrefillMeta:
    """Only what attention reads: each sequence's chunk and its assembled keys (context + chunk)."""
    cu_q, cu_k = [0], [0]
    for n, c in zip(q_lens, ctx_lens):
        cu_q.append(cu_q[-1] + n)
        cu_k.append(cu_k[-1] + c + n)
    empty = torch.empty(0, dtype=torch.long)
    return PrefillMeta(torch.tensor(cu_q, dtype=torch.int32), torch.tensor(cu_k, dtype=torch.int32), cu_q, cu_k,
                       max(q_lens), max(c + n for n, c in zip(q_lens, ctx_lens)), *[empty] * 8)


@pytest.mark.parametrize("heads, kv_heads", [(4, 4), (8, 2)])
@pytest.mark.parametrize("window", [1, 2, 5, None])
def test_prefill_matches_the_reference(backend, heads, kv_heads, window):
    meta = prefill_meta([1, 7, 12, 3], [0, 9, 0, 4])
    gen = torch.Generator().manual_seed(heads + (window or 0))
    q = torch.randn(meta.cu_seqlens_q_host[-1], heads, 16, generator=gen)
    k = torch.randn(meta.cu_seqlens_k_host[-1], kv_heads, 16, generator=gen)
    v = torch.randn(meta.cu_seqlens_k_host[-1], kv_heads, 16, generator=gen)
    got = backend.prefill(q, k, v, meta, window, 0.25)
    want = ReferenceAttention().prefill(q, k, v, meta, window, 0.25)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("history", [False, True])
def test_decode_over_ring_rows_out_of_order_matches_the_reference(backend, history):
    """Rows in any order, one row's ring wrapped (position 13 of a 6-slot ring writes slot 1): the new
    key and value land in their slots, and each sequence reads exactly its row's filled slots."""
    rows_total, cap, heads, kv_heads, dim = 5, 6, 8, 2, 16
    gen = torch.Generator().manual_seed(7)
    cache = LayerCache(torch.randn(rows_total, cap, kv_heads, dim, generator=gen),
                       torch.randn(rows_total, cap, kv_heads, dim, generator=gen), None, None)
    rows, pos = torch.tensor([3, 0, 4]), torch.tensor([13, 0, 2])
    meta = DecodeMeta(rows=rows, slots=rows * cap + pos % cap, evict=(pos >= cap).long(),
                      used=torch.clamp(pos + 1, max=cap).to(torch.int32), row_starts=None, query_starts=None)
    q = torch.randn(3, heads, dim, generator=gen)
    k_new, v_new = torch.randn(3, kv_heads, dim, generator=gen), torch.randn(3, kv_heads, dim, generator=gen)
    mix = (torch.randn(3, heads, dim, generator=gen), torch.randn(heads, generator=gen)) if history else None
    ref_cache = LayerCache(cache.k.clone(), cache.v.clone(), None, None)
    got = backend.decode(q, k_new, v_new, cache, meta, 0.25, mix)
    want = ReferenceAttention().decode(q, k_new, v_new, ref_cache, meta, 0.25, mix)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(cache.k, ref_cache.k)
    torch.testing.assert_close(cache.v, ref_cache.v)


def test_unavailable_without_a_gpu_or_the_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "flash_attn", None)  # import fails, as when not installed
    assert flash_attn_pkg._load() is None
    assert not flash_attn_pkg.available(torch.device("cpu"))
