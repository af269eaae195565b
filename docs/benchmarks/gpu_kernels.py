"""Kernel-level timings behind the decode step: what the split-KV attention and the batch-1 matmuls
achieve in bytes per second, with the variants that were tried.

    python docs/benchmarks/gpu_kernels.py      (on a CUDA machine; prints markdown tables)

Times are CUDA-event medians over 50 launches after warm-up (triton.testing.do_bench).
"""
from __future__ import annotations

import sys

import torch
import triton
import triton.language as tl
from triton.testing import do_bench

from hybench.engine.kernels import decode_triton

DEV = torch.device("cuda")
BF16 = torch.bfloat16


@triton.jit
def _gemv_kernel(X, W, Y, M, N, K, stride_xm, stride_wn, stride_ym,
                 BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """y[m, n] = sum_k x[m, k] w[n, k], one program per BLOCK_N outputs, all M rows at once."""
    pid = tl.program_id(0)
    n = pid * BLOCK_N + tl.arange(0, BLOCK_N)
    m = tl.arange(0, BLOCK_M)
    acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    for k0 in range(0, K, BLOCK_K):
        k = k0 + tl.arange(0, BLOCK_K)
        w = tl.load(W + n[:, None] * stride_wn + k[None, :], mask=(n < N)[:, None], other=0.0)
        x = tl.load(X + m[:, None] * stride_xm + k[None, :], mask=(m < M)[:, None], other=0.0)
        acc += tl.dot(x, tl.trans(w))
    tl.store(Y + m[:, None] * stride_ym + n[None, :], acc.to(Y.dtype.element_ty), mask=(m < M)[:, None] & (n < N)[None, :])


def triton_gemv(x, w, block_n, block_k, warps, stages):
    m, k = x.shape
    n = w.shape[0]
    y = torch.empty((m, n), dtype=x.dtype, device=x.device)
    _gemv_kernel[(triton.cdiv(n, block_n),)](x, w, y, m, n, k, x.stride(0), w.stride(0), y.stride(0),
                                             BLOCK_M=16, BLOCK_N=block_n, BLOCK_K=block_k,
                                             num_warps=warps, num_stages=stages)
    return y


def matmuls() -> None:
    print("\n### Batch-1 projections of Llama-3.2-1B: bytes of the weight / time\n")
    print("| shape (out x in) | F.linear GB/s | x @ W^T stored K-major GB/s | best Triton GEMV GB/s (config) |")
    print("|---|---|---|---|")
    for n, k in ((3072, 2048), (2048, 2048), (16384, 2048), (2048, 8192), (128256, 2048)):
        w = torch.randn(n, k, device=DEV, dtype=BF16)
        wt = w.t().contiguous()
        x = torch.randn(1, k, device=DEV, dtype=BF16)
        nbytes = w.nbytes
        lin = nbytes / do_bench(lambda: torch.nn.functional.linear(x, w)) / 1e6
        kmaj = nbytes / do_bench(lambda: x @ wt) / 1e6
        best, cfg = 0.0, None
        ref = torch.nn.functional.linear(x, w).float()
        for block_n in (16, 32, 64):
            for block_k in (128, 256, 512):
                for warps in (4, 8):
                    for stages in (3, 4):
                        try:
                            got = triton_gemv(x, w, block_n, block_k, warps, stages)
                        except Exception:  # noqa: BLE001 - a config that does not fit is skipped
                            continue
                        if (got.float() - ref).abs().max() > 1e-1 * ref.abs().max():
                            continue
                        gbs = nbytes / do_bench(lambda: triton_gemv(x, w, block_n, block_k, warps, stages)) / 1e6
                        if gbs > best:
                            best, cfg = gbs, (block_n, block_k, warps, stages)
        print(f"| {n} x {k} | {lin:.0f} | {kmaj:.0f} | {best:.0f} {cfg} |")


def split_kv() -> None:
    print("\n### Split-KV decode attention (Llama-3.2-1B layer: 32 query / 8 KV heads, D 64): KV bytes / time\n")
    print("| batch | keys | capacity | split_len | splits | us | GB/s |\n|---|---|---|---|---|---|---|")
    for batch, used, cap in ((1, 1024, 1120), (64, 4096, 4192), (64, 512, 512), (256, 2048, 2048)):
        kc = torch.randn(batch, cap, 8, 64, device=DEV, dtype=BF16)
        vc = torch.randn_like(kc)
        q = torch.randn(batch, 32, 64, device=DEV, dtype=BF16)
        rows = torch.arange(batch, device=DEV)
        used_t = torch.full((batch,), used, dtype=torch.int32, device=DEV)
        nbytes = 2 * batch * used * 8 * 64 * 2
        auto = decode_triton.split_len_for(batch, 8, cap, torch.cuda.get_device_properties(DEV).multi_processor_count)
        for split_len in sorted({auto, 64, 256, 1024, cap + (-cap) % 64}):
            ms = do_bench(lambda: decode_triton.split_kv_decode(q, kc, vc, rows, used_t, 0.125, split_len))
            tag = " (auto)" if split_len == auto else ""
            print(f"| {batch} | {used} | {cap} | {split_len}{tag} | {-(-cap // split_len)} | {ms * 1e3:.1f} | "
                  f"{nbytes / ms / 1e6:.0f} |")


def main() -> int:
    print(f"# Kernel timings: {torch.cuda.get_device_name(DEV)}, torch {torch.__version__}, triton {triton.__version__}")
    split_kv()
    matmuls()
    return 0


if __name__ == "__main__":
    sys.exit(main())
