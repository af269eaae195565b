"""Decode in Triton: split-KV attention straight over the cache rows, and the history branch's step
fused into one pass over the state.

Split-KV (flash-decoding): one program per (sequence, KV head) leaves most of an H100 idle at small
batch while it walks the context; PyTorch's bundled FlashAttention-2 decode does that (26 us per
layer for 1024 keys at batch 1). Here each row is cut into splits of `split_len` slots, a program
per (sequence, KV head, split) computes the partial output and log-sum-exp of the group's G query
heads, and a second kernel combines the splits (and, in hybrid, adds the gated history read-out).
Slot order does not matter (RoPE is in the keys), so a row is just its first `used` slots, ring or not.

History step: one program per (sequence, KV head) reads the token leaving the window from its cache
slot, updates the fp32 state in place (S <- exp(dt A) S + dt v k^T), reads it out for the group's
query heads (y = S q), and computes this step's dt from the layer input (softplus(w . x + b)) and
stores it in the slot: the reference's dt projection, gathers, update, read-out and write in one kernel.

Each op has a PyTorch reference in `engine.kernels` (ReferenceAttention.decode, ReferenceSSM.step);
tests run these kernels against them in Triton's interpreter on CPU, docs/benchmarks/gpu_parity.py
on the GPU.
"""
from __future__ import annotations

import functools

import torch

from hybench.engine.context import DecodeMeta
from hybench.engine.kv_cache import LayerCache

try:
    import triton
    import triton.language as tl
except ImportError:  # the CPU install has no Triton; `available` says so
    triton = None

BLOCK_N = 64  # keys per inner iteration of a split
PROGRAMS_PER_SM = 4  # split until batch x KV heads x splits fills the GPU this many programs deep


def available(device: torch.device, head_dim: int) -> bool:
    """Triton present, a CUDA device, and a head size the kernels tile (a power of two >= 16)."""
    return triton is not None and device.type == "cuda" and head_dim >= 16 and head_dim & (head_dim - 1) == 0


@functools.cache
def _sm_count(device: torch.device) -> int:
    return torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 1


def split_len_for(batch: int, kv_heads: int, capacity: int, sm_count: int) -> int:
    """Slots per split: as many splits as keep the GPU full, never shorter than one key block.
    Static for a given batch size and cache, so a CUDA graph captures one grid per bucket."""
    want = max(1, PROGRAMS_PER_SM * sm_count // (batch * kv_heads))
    per_split = -(-capacity // want)
    return max(BLOCK_N, -(-per_split // BLOCK_N) * BLOCK_N)


if triton is not None:
    _TL_DTYPES = {torch.bfloat16: tl.bfloat16, torch.float16: tl.float16}

    @triton.jit
    def _write_kv_kernel(K_NEW, V_NEW, K_FLAT, V_FLAT, SLOTS, stride_kb, stride_kh, stride_vb, stride_vh,
                         stride_cs, stride_ch, D: tl.constexpr):
        b = tl.program_id(0)
        h = tl.program_id(1)
        slot = tl.load(SLOTS + b)
        d = tl.arange(0, D)
        dst = slot * stride_cs + h * stride_ch + d
        tl.store(K_FLAT + dst, tl.load(K_NEW + b * stride_kb + h * stride_kh + d))
        tl.store(V_FLAT + dst, tl.load(V_NEW + b * stride_vb + h * stride_vh + d))

    @triton.jit
    def _split_kv_kernel(Q, K, V, ROWS, USED, O_PART, LSE_PART, Y, GATE, scale_log2,
                         stride_qb, stride_qh, stride_kr, stride_ks, stride_kh,
                         stride_ob, stride_oh, stride_os, stride_lb, stride_lh, stride_yb, stride_yh,
                         ONE_SPLIT: tl.constexpr, HAS_Y: tl.constexpr,
                         G: tl.constexpr, BLOCK_G: tl.constexpr, D: tl.constexpr, SPLIT_LEN: tl.constexpr,
                         BLOCK: tl.constexpr, DOT_DTYPE: tl.constexpr, PRECISION: tl.constexpr):
        b = tl.program_id(0)
        kvh = tl.program_id(1)
        split = tl.program_id(2)
        row = tl.load(ROWS + b).to(tl.int64)
        used = tl.load(USED + b)
        start = split * SPLIT_LEN
        end = tl.minimum(start + SPLIT_LEN, used)
        g = tl.arange(0, BLOCK_G)
        d = tl.arange(0, D)
        heads = kvh * G + g
        q = tl.load(Q + b * stride_qb + heads[:, None] * stride_qh + d[None, :], mask=(g < G)[:, None], other=0.0)
        q = q.to(DOT_DTYPE)
        m = tl.full([BLOCK_G], float("-inf"), tl.float32)
        l = tl.zeros([BLOCK_G], tl.float32)
        acc = tl.zeros([BLOCK_G, D], tl.float32)
        k_row = K + row * stride_kr + kvh * stride_kh
        v_row = V + row * stride_kr + kvh * stride_kh
        n0 = start
        while n0 < end:  # a while loop: Triton's interpreter (CPU tests) cannot range over loaded bounds
            n = n0 + tl.arange(0, BLOCK)
            valid = n < end
            k = tl.load(k_row + n[:, None] * stride_ks + d[None, :], mask=valid[:, None], other=0.0)
            s = tl.dot(q, tl.trans(k.to(DOT_DTYPE)), input_precision=PRECISION) * scale_log2
            s = tl.where(valid[None, :], s, float("-inf"))
            m_new = tl.maximum(m, tl.max(s, 1))
            p = tl.exp2(s - m_new[:, None])
            alpha = tl.exp2(m - m_new)
            v = tl.load(v_row + n[:, None] * stride_ks + d[None, :], mask=valid[:, None], other=0.0)
            acc = acc * alpha[:, None] + tl.dot(p.to(DOT_DTYPE), v.to(DOT_DTYPE), input_precision=PRECISION)
            l = l * alpha + tl.sum(p, 1)
            m = m_new
            n0 += BLOCK
        nonempty = l > 0
        out = acc / tl.where(nonempty, l, 1.0)[:, None]
        lse = tl.where(nonempty, m + tl.log2(tl.where(nonempty, l, 1.0)), float("-inf"))
        o_ptr = O_PART + b * stride_ob + heads[:, None] * stride_oh + split * stride_os + d[None, :]
        if ONE_SPLIT:  # the split is the whole row: O_PART is the output, in q's dtype
            if HAS_Y:
                gate = tl.sigmoid(tl.load(GATE + heads, mask=g < G, other=0.0).to(tl.float32))
                y = tl.load(Y + b * stride_yb + heads[:, None] * stride_yh + d[None, :], mask=(g < G)[:, None],
                            other=0.0)
                out += gate[:, None] * y.to(tl.float32)
            tl.store(o_ptr, out.to(O_PART.dtype.element_ty), mask=(g < G)[:, None])
        else:
            tl.store(o_ptr, out, mask=(g < G)[:, None])
            tl.store(LSE_PART + b * stride_lb + heads * stride_lh + split, lse, mask=g < G)

    @triton.jit
    def _combine_kernel(O_PART, LSE_PART, OUT, Y, GATE, stride_ob, stride_oh, stride_os, stride_lb, stride_lh,
                        stride_outb, stride_outh, stride_yb, stride_yh,
                        NUM_SPLITS: tl.constexpr, BLOCK_S: tl.constexpr, D: tl.constexpr, HAS_Y: tl.constexpr):
        b = tl.program_id(0)
        h = tl.program_id(1)
        s = tl.arange(0, BLOCK_S)
        d = tl.arange(0, D)
        lse = tl.load(LSE_PART + b * stride_lb + h * stride_lh + s, mask=s < NUM_SPLITS, other=float("-inf"))
        top = tl.max(lse, 0)
        live = lse > float("-inf")
        w = tl.where(live, tl.exp2(tl.where(live, lse - top, 0.0)), 0.0)
        o = tl.load(O_PART + b * stride_ob + h * stride_oh + s[:, None] * stride_os + d[None, :],
                    mask=live[:, None], other=0.0)
        total = tl.sum(w, 0)
        out = tl.sum(o * w[:, None], 0) / tl.where(total > 0, total, 1.0)
        if HAS_Y:
            gate = tl.sigmoid(tl.load(GATE + h).to(tl.float32))
            out += gate * tl.load(Y + b * stride_yb + h * stride_yh + d).to(tl.float32)
        tl.store(OUT + b * stride_outb + h * stride_outh + d, out.to(OUT.dtype.element_ty))

    @triton.jit
    def _history_step_kernel(STATE, ROWS, SLOTS, EVICT, K_FLAT, V_FLAT, DT_FLAT, X, W, BIAS, A_LOG, Q, Y,
                             stride_sr, stride_sh, stride_cs, stride_ch, stride_dts, stride_xb, stride_wh,
                             stride_qb, stride_qh, stride_yb, stride_yh,
                             G: tl.constexpr, D: tl.constexpr, HIDDEN: tl.constexpr, BLOCK_H: tl.constexpr):
        b = tl.program_id(0)
        kvh = tl.program_id(1)
        row = tl.load(ROWS + b).to(tl.int64)
        slot = tl.load(SLOTS + b)
        evict = tl.load(EVICT + b)
        # This token's step size: softplus(w . x + bias), the projection accumulated in fp32.
        acc = tl.zeros([BLOCK_H], tl.float32)
        for h0 in range(0, HIDDEN, BLOCK_H):
            h = h0 + tl.arange(0, BLOCK_H)
            xh = tl.load(X + b * stride_xb + h, mask=h < HIDDEN, other=0.0).to(tl.float32)
            acc += xh * tl.load(W + kvh * stride_wh + h, mask=h < HIDDEN, other=0.0).to(tl.float32)
        z = tl.sum(acc, 0) + tl.load(BIAS + kvh)
        u = tl.exp(tl.minimum(z, 20.0))
        w1 = 1.0 + u
        log1p_u = tl.where(w1 == 1.0, u, tl.log(w1) * u / tl.where(w1 == 1.0, 1.0, w1 - 1.0))  # log1p, tiny u too
        dt_new = tl.where(z > 20.0, z, log1p_u)  # torch's softplus (threshold 20)
        a = -tl.exp(tl.load(A_LOG + kvh))
        p = tl.arange(0, D)  # value index (state rows)
        n = tl.arange(0, D)  # key index (state columns)
        k_old = tl.load(K_FLAT + slot * stride_cs + kvh * stride_ch + n).to(tl.float32)
        v_old = tl.load(V_FLAT + slot * stride_cs + kvh * stride_ch + p).to(tl.float32)
        dt_old = tl.load(DT_FLAT + slot * stride_dts + kvh)
        dt_old = tl.where(evict != 0, dt_old, 0.0)
        s_ptr = STATE + row * stride_sr + kvh * stride_sh + p[:, None] * D + n[None, :]
        state = tl.load(s_ptr) * tl.exp(dt_old * a) + dt_old * v_old[:, None] * k_old[None, :]
        tl.store(s_ptr, state)
        tl.store(DT_FLAT + slot * stride_dts + kvh, dt_new)
        for r in tl.static_range(G):
            head = kvh * G + r
            q = tl.load(Q + b * stride_qb + head * stride_qh + n).to(tl.float32)
            y = tl.sum(state * q[None, :], 1)
            tl.store(Y + b * stride_yb + head * stride_yh + p, y.to(Y.dtype.element_ty))


def write_kv(cache: LayerCache, slots: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    """k, v: [B, Hkv, D] -> cache slots; one kernel for both."""
    batch, kv_heads, dim = k.shape
    k_flat, v_flat = cache.k.view(-1, kv_heads, dim), cache.v.view(-1, kv_heads, dim)
    assert k.stride(-1) == 1 and v.stride(-1) == 1
    _write_kv_kernel[(batch, kv_heads)](k, v, k_flat, v_flat, slots, k.stride(0), k.stride(1), v.stride(0),
                                        v.stride(1), k_flat.stride(0), k_flat.stride(1), D=dim)


def split_kv_decode(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, rows: torch.Tensor,
                    used: torch.Tensor, scale: float, split_len: int | None = None,
                    history: torch.Tensor | None = None, gate: torch.Tensor | None = None) -> torch.Tensor:
    """q: [B, H, D]; caches [rows, C, Hkv, D]; rows, used: [B]. Returns [B, H, D] in q's dtype,
    plus sigmoid(gate[h]) * history[b, h] when a history read-out [B, H, D] is given."""
    batch, heads, dim = q.shape
    capacity, kv_heads = k_cache.shape[1], k_cache.shape[2]
    group = heads // kv_heads
    split_len = split_len or split_len_for(batch, kv_heads, capacity, _sm_count(q.device))
    splits = -(-capacity // split_len)
    assert q.stride(-1) == 1
    out = torch.empty((batch, heads, dim), dtype=q.dtype, device=q.device)
    # One split writes the output itself; several write fp32 partials for the combine kernel.
    o_part = out[:, :, None] if splits == 1 else torch.empty((batch, heads, splits, dim), dtype=torch.float32,
                                                              device=q.device)
    lse = torch.empty((batch, heads, splits), dtype=torch.float32, device=q.device)
    y = history if history is not None else out
    gate = gate if gate is not None else lse
    # Tensor-core dots in the cache's dtype; fp32 (exact) in Triton's interpreter, whose 16-bit dot is wrong.
    dot_dtype = tl.float32 if q.dtype == torch.float32 or not q.is_cuda else _TL_DTYPES[q.dtype]
    _split_kv_kernel[(batch, kv_heads, splits)](
        q, k_cache, v_cache, rows, used, o_part, lse, y, gate, scale * 1.4426950408889634,
        q.stride(0), q.stride(1), k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        o_part.stride(0), o_part.stride(1), o_part.stride(2), lse.stride(0), lse.stride(1), y.stride(0), y.stride(1),
        ONE_SPLIT=splits == 1, HAS_Y=history is not None, G=group, BLOCK_G=max(16, triton.next_power_of_2(group)),
        D=dim, SPLIT_LEN=split_len, BLOCK=BLOCK_N,
        DOT_DTYPE=dot_dtype, PRECISION="ieee" if dot_dtype == tl.float32 else "tf32",
    )
    if splits == 1:
        return out
    _combine_kernel[(batch, heads)](
        o_part, lse, out, y, gate, o_part.stride(0), o_part.stride(1),
        o_part.stride(2), lse.stride(0), lse.stride(1), out.stride(0), out.stride(1), y.stride(0), y.stride(1),
        NUM_SPLITS=splits, BLOCK_S=triton.next_power_of_2(splits), D=dim, HAS_Y=history is not None,
    )
    return out


def history_step(cache: LayerCache, meta: DecodeMeta, history, x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """The SSMBackend.step contract (engine.kernels) in one kernel, dt projection included; the state
    is updated in place."""
    batch, heads, dim = q.shape
    kv_heads = cache.k.shape[2]
    k_flat, v_flat = cache.k.view(-1, kv_heads, dim), cache.v.view(-1, kv_heads, dim)
    dt_flat = cache.dt.view(-1, kv_heads)
    weight, hidden = history.dt_proj.weight, x.shape[1]
    assert q.stride(-1) == 1 and x.stride(-1) == 1 and weight.stride(-1) == 1
    y = torch.empty((batch, heads, dim), dtype=q.dtype, device=q.device)
    state = cache.state
    _history_step_kernel[(batch, kv_heads)](
        state, meta.rows, meta.slots, meta.evict, k_flat, v_flat, dt_flat, x, weight, history.dt_bias,
        history.A_log, q, y, state.stride(0), state.stride(1), k_flat.stride(0), k_flat.stride(1),
        dt_flat.stride(0), x.stride(0), weight.stride(0), q.stride(0), q.stride(1), y.stride(0), y.stride(1),
        G=heads // kv_heads, D=dim, HIDDEN=hidden, BLOCK_H=min(1024, triton.next_power_of_2(hidden)),
        num_warps=4 if dim <= 64 else 8,
    )
    return y


class SplitKVAttention:
    """Prefill from the backend it wraps (FlashAttention-2 varlen); decode on the kernels above."""

    def __init__(self, prefill_backend) -> None:
        self._prefill = prefill_backend
        self.name = f"{prefill_backend.name}+triton-splitkv"

    def prefill(self, q, k, v, meta, window, scale):
        return self._prefill.prefill(q, k, v, meta, window, scale)

    def decode(self, q, k, v, cache, meta, scale, history=None):
        write_kv(cache, meta.slots, k, v)
        y, gate = history if history is not None else (None, None)
        return split_kv_decode(q, cache.k, cache.v, meta.rows, meta.used, scale, history=y, gate=gate)


class FusedStepSSM:
    """The chunk scan from the backend it wraps (mamba-ssm); the decode step on `history_step`."""

    def __init__(self, scan_backend) -> None:
        self._scan = scan_backend
        self.name = f"{scan_backend.name}+triton-step"

    def scan(self, x, b, c, dt, a, meta, initial_states):
        return self._scan.scan(x, b, c, dt, a, meta, initial_states)

    def step(self, cache, meta, history, x, q):
        if history.k_map is not None:  # the fused kernel reads keys from the cache as they are
            return self._scan.step(cache, meta, history, x, q)
        return history_step(cache, meta, history, x, q)
