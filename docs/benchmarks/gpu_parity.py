"""Parity of every fast GPU backend against the PyTorch reference, on fresh random inputs.

Run on a CUDA machine: `python docs/benchmarks/gpu_parity.py`. Prints one line per case with the
relative error (max |fast - ref| / max |ref|) and exits non-zero if any case is at or over 1e-2.
Cases cover windows (1, 2, 127, full), GQA ratios (1, 4, 8) and lengths that are not multiples of
any kernel block size, in bf16.
"""
from __future__ import annotations

import sys

import torch

from hybench.engine.context import DecodeMeta, PrefillMeta
from hybench.engine.history import HistoryBranch
from hybench.engine.kernels import (
    ReferenceAttention,
    ReferenceSSM,
    decode_triton,
    flash_attn_pkg,
    flash_torch,
    mamba_triton,
)
from hybench.engine.kv_cache import LayerCache

LIMIT = 1e-2
DEV = torch.device("cuda")
BF16 = torch.bfloat16


def rel_err(fast: torch.Tensor, ref: torch.Tensor) -> float:
    return ((fast.float() - ref.float()).abs().max() / ref.float().abs().max().clamp(min=1e-6)).item()


def prefill_meta(q_lens: list[int], ctx_lens: list[int]) -> PrefillMeta:
    cu_q, cu_k = [0], [0]
    for n, c in zip(q_lens, ctx_lens):
        cu_q.append(cu_q[-1] + n)
        cu_k.append(cu_k[-1] + n + c)
    t = lambda xs: torch.tensor(xs, dtype=torch.int32, device=DEV)  # noqa: E731
    empty = torch.empty(0, dtype=torch.long, device=DEV)
    return PrefillMeta(t(cu_q), t(cu_k), cu_q, cu_k, max(q_lens), max(b - a for a, b in zip(cu_k, cu_k[1:])),
                       empty, empty, empty, empty, empty, torch.zeros(len(q_lens), dtype=torch.long, device=DEV),
                       torch.zeros(len(q_lens), dtype=torch.bool, device=DEV), empty)


def attention_cases(results: list) -> None:
    ref = ReferenceAttention()
    prefill_backends = [flash_torch.TorchFlashAttention()]
    if flash_attn_pkg.available(DEV):
        prefill_backends.append(flash_attn_pkg.FlashAttnPackage())
    decode_backends = prefill_backends + ([decode_triton.SplitKVAttention(prefill_backends[0])]
                                          if decode_triton.available(DEV, 64) else [])
    d = 64
    for heads, kv_heads in ((8, 8), (8, 2), (32, 4)):
        for window in (1, 2, 127, None):
            q_lens, ctx_lens = [1, 77, 300, 513], [0, 200, 0, 1000]
            meta = prefill_meta(q_lens, ctx_lens)
            n, m = meta.cu_seqlens_q_host[-1], meta.cu_seqlens_k_host[-1]
            q = torch.randn(n, heads, d, device=DEV, dtype=BF16)
            k = torch.randn(m, kv_heads, d, device=DEV, dtype=BF16)
            v = torch.randn(m, kv_heads, d, device=DEV, dtype=BF16)
            want = ref.prefill(q, k, v, meta, window, d**-0.5)
            for backend in prefill_backends:
                err = rel_err(backend.prefill(q, k, v, meta, window, d**-0.5), want)
                results.append((f"{backend.name} prefill H={heads} Hkv={kv_heads} W={window}", err))
        rows, cap = 9, 1037
        cache = LayerCache(torch.randn(rows, cap, kv_heads, d, device=DEV, dtype=BF16),
                           torch.randn(rows, cap, kv_heads, d, device=DEV, dtype=BF16), None, None)
        sel = torch.tensor([7, 0, 3, 8, 2], device=DEV)
        pos = torch.tensor([0, 1036, 499, 2000, 999], device=DEV)
        used = torch.clamp(pos + 1, max=cap).to(torch.int32)
        starts = torch.cat([sel * cap, sel[-1:] * cap + cap]).to(torch.int32)
        meta = DecodeMeta(sel, sel * cap + pos % cap, torch.zeros(5, dtype=torch.long, device=DEV), used, starts,
                          torch.arange(6, dtype=torch.int32, device=DEV) * (heads // kv_heads))
        q = torch.randn(5, heads, d, device=DEV, dtype=BF16)
        k_new = torch.randn(5, kv_heads, d, device=DEV, dtype=BF16)
        v_new = torch.randn(5, kv_heads, d, device=DEV, dtype=BF16)
        history = (torch.randn(5, heads, d, device=DEV, dtype=BF16), torch.randn(heads, device=DEV))
        want = ref.decode(q, k_new, v_new, clone(cache), meta, d**-0.5, history)
        for backend in decode_backends:
            err = rel_err(backend.decode(q, k_new, v_new, clone(cache), meta, d**-0.5, history), want)
            results.append((f"{backend.name} decode H={heads} Hkv={kv_heads} rows out of order", err))


def clone(cache: LayerCache) -> LayerCache:
    return LayerCache(*(None if t is None else t.clone() for t in (cache.k, cache.v, cache.dt, cache.state)))


def ssm_cases(results: list) -> None:
    fast, ref = mamba_triton.MambaTritonSSM(), ReferenceSSM()
    step_backends = [fast] + ([decode_triton.FusedStepSSM(fast)] if decode_triton.available(DEV, 64) else [])
    d = 64
    for heads, kv_heads in ((8, 8), (8, 2), (32, 4)):
        q_lens = [5, 300, 1000]
        meta = prefill_meta(q_lens, [0, 0, 0])
        n = sum(q_lens)
        x = torch.randn(n, kv_heads, d, device=DEV, dtype=BF16)
        b = torch.randn(n, kv_heads, d, device=DEV, dtype=BF16) * 0.3
        c = torch.randn(n, heads, d, device=DEV, dtype=BF16) * 0.3
        dt = torch.rand(n, kv_heads, device=DEV) * 0.1
        a = -torch.rand(kv_heads, device=DEV) * 4 - 0.5
        init = torch.randn(3, kv_heads, d, d, device=DEV)
        y_fast, s_fast = fast.scan(x, b, c, dt, a, meta, init)
        y_ref, s_ref = ref.scan(x, b, c, dt, a, meta, init)
        results.append((f"ssd scan          H={heads} Hkv={kv_heads} y", rel_err(y_fast, y_ref)))
        results.append((f"ssd scan          H={heads} Hkv={kv_heads} final state", rel_err(s_fast, s_ref)))
        cap, window = 40, 40
        cache = LayerCache(torch.randn(6, cap, kv_heads, d, device=DEV, dtype=BF16),
                           torch.randn(6, cap, kv_heads, d, device=DEV, dtype=BF16),
                           torch.rand(6, cap, kv_heads, device=DEV) * 0.1, torch.randn(6, kv_heads, d, d, device=DEV))
        rows, pos = torch.tensor([4, 1, 5], device=DEV), torch.tensor([45, 3, 40], device=DEV)
        meta = DecodeMeta(rows, rows * cap + pos % cap, (pos >= window).long(), None, None, None)
        history = HistoryBranch(2048, heads, kv_heads, BF16).to(DEV)
        history.init_seeded(torch.Generator().manual_seed(heads))
        hidden = torch.randn(3, 2048, device=DEV, dtype=BF16)
        ref_cache = clone(cache)
        y_ref = ref.step(ref_cache, meta, history, hidden, c[:3])
        for backend in step_backends:
            got = clone(cache)
            y = backend.step(got, meta, history, hidden, c[:3])
            name = f"{backend.name} step H={heads} Hkv={kv_heads}"
            results.append((f"{name} y", rel_err(y, y_ref)))
            results.append((f"{name} state pool", rel_err(got.state, ref_cache.state)))
            results.append((f"{name} dt ring", rel_err(got.dt, ref_cache.dt)))


def fused_cases(results: list) -> None:
    from hybench.engine.kernels import fused

    for n in (1, 37, 4099):
        x = torch.randn(n, 2048, device=DEV, dtype=BF16)
        res = torch.randn(n, 2048, device=DEV, dtype=BF16)
        w = torch.randn(2048, device=DEV, dtype=BF16)
        results.append((f"fused rms_norm N={n}", rel_err(fused.rms_norm(x, w, 1e-5), fused.rms_norm_ref(x, w, 1e-5))))
        got, ref = fused.add_rms_norm(x, res, w, 1e-5), fused.add_rms_norm_ref(x, res, w, 1e-5)
        results.append((f"fused add_rms_norm N={n}", max(rel_err(got[0], ref[0]), rel_err(got[1], ref[1]))))
        qk = torch.randn(n, 40, 64, device=DEV, dtype=BF16)
        cos, sin = torch.randn(n, 64, device=DEV, dtype=BF16), torch.randn(n, 64, device=DEV, dtype=BF16)
        results.append((f"fused rotary N={n}", rel_err(fused.rotary(qk, cos, sin), fused.rotary_ref(qk, cos, sin))))
        gu = torch.randn(n, 2 * 8192, device=DEV, dtype=BF16)
        results.append((f"fused silu_mul N={n}", rel_err(fused.silu_mul(gu), fused.silu_mul_ref(gu))))


def main() -> int:
    torch.manual_seed(0)
    results: list[tuple[str, float]] = []
    backends = ["fused (torch.compile)"]
    fused_cases(results)
    if flash_torch.available(DEV):
        attention_cases(results)
        backends.append(flash_torch.TorchFlashAttention.name)
        if flash_attn_pkg.available(DEV):
            backends.append(flash_attn_pkg.FlashAttnPackage.name)
    if mamba_triton.available(DEV):
        ssm_cases(results)
        backends.append(mamba_triton.MambaTritonSSM.name)
    if decode_triton.available(DEV, 64):
        backends.append("triton decode (split-KV attention, fused history step)")
    print(f"fast backends checked: {', '.join(backends) or 'none'}")
    print(f"| case | rel. error | < {LIMIT} |\n|---|---|---|")
    for name, err in results:
        print(f"| {name} | {err:.2e} | {'yes' if err < LIMIT else 'NO'} |")
    return 0 if results and all(err < LIMIT for _, err in results) else 1


if __name__ == "__main__":
    sys.exit(main())
