"""Kernel backends behind one interface (DESIGN.md section 7).

The attention layer calls `AttentionBackend.prefill/decode` and the history branch calls
`SSMBackend.scan/step`; which implementation runs is chosen once per engine, from what the device
offers, and recorded in every job row. The pure-PyTorch references run everywhere and are the
oracle the fast backends are tested against.
"""
from __future__ import annotations

from typing import Protocol

import torch

from hybench.engine.context import DecodeMeta, PrefillMeta
from hybench.engine.kernels.attention_ref import decode_attention_ref, prefill_attention_ref
from hybench.engine.kernels.ssd_ref import (
    ssd_readout_ref,
    ssd_scan_chunked_ref,
    ssd_state_update_ref,
)


class AttentionBackend(Protocol):
    name: str

    def prefill(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, meta: PrefillMeta,
                window: int | None, scale: float) -> torch.Tensor: ...

    def decode(self, q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, meta: DecodeMeta,
               scale: float) -> torch.Tensor: ...


class SSMBackend(Protocol):
    name: str

    def scan(self, x: torch.Tensor, b: torch.Tensor, c: torch.Tensor, dt: torch.Tensor, a: torch.Tensor,
             meta: PrefillMeta, initial_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...

    def step(self, states: torch.Tensor, rows: torch.Tensor, x: torch.Tensor, b: torch.Tensor,
             dt: torch.Tensor, a: torch.Tensor, c: torch.Tensor) -> torch.Tensor: ...


class ReferenceAttention:
    """SDPA with an explicit mask, one sequence at a time for prefill."""

    name = "sdpa-ref"

    def prefill(self, q, k, v, meta, window, scale):
        return prefill_attention_ref(q, k, v, meta.cu_seqlens_q_host, meta.cu_seqlens_k_host, window, scale)

    def decode(self, q, k_cache, v_cache, meta, scale):
        return decode_attention_ref(q, k_cache, v_cache, meta.rows, meta.used, scale)


class ReferenceSSM:
    """Chunked PyTorch scan per sequence for prefill; one batched state update per decode step."""

    name = "torch-ref"

    def scan(self, x, b, c, dt, a, meta, initial_states):
        ys, finals = [], []
        cu = meta.cu_seqlens_q_host
        for i in range(len(cu) - 1):
            sl = slice(cu[i], cu[i + 1])
            y, final = ssd_scan_chunked_ref(x[sl], b[sl], c[sl], dt[sl], a, initial_states[i])
            ys.append(y)
            finals.append(final)
        return torch.cat(ys), torch.stack(finals)

    def step(self, states, rows, x, b, dt, a, c):
        new = ssd_state_update_ref(states[rows], x, b, dt, a)
        states[rows] = new
        return ssd_readout_ref(new, c)


def select_backends(device: torch.device) -> tuple[AttentionBackend, SSMBackend]:
    """The fastest implementations this device offers (the references on CPU)."""
    from hybench.engine.kernels import flash_torch, mamba_triton

    attn: AttentionBackend = flash_torch.TorchFlashAttention() if flash_torch.available(device) else ReferenceAttention()
    ssm: SSMBackend = mamba_triton.MambaTritonSSM() if mamba_triton.available(device) else ReferenceSSM()
    return attn, ssm
