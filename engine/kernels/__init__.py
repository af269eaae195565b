"""Kernel backends behind one interface (DESIGN.md section 7).

The attention layer calls `AttentionBackend.prefill/decode` and the history branch calls
`SSMBackend.scan/step`; which implementation runs is chosen once per engine, from what the device
offers, and recorded in every job row. The pure-PyTorch references run everywhere and are the
oracle the fast backends are tested against.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import torch

from hybench.engine.context import DecodeMeta, PrefillMeta
from hybench.engine.kernels.attention_ref import decode_attention_ref, prefill_attention_ref
from hybench.engine.kernels.compile_caches import pin_triton_caches
from hybench.engine.kernels.fused import gated_add
from hybench.engine.kernels.ssd_ref import (
    ssd_readout_ref,
    ssd_scan_chunked_ref,
    ssd_state_update_ref,
)
from hybench.engine.kernels.varlen import scan_in_groups
from hybench.engine.kv_cache import LayerCache

if TYPE_CHECKING:  # history imports the fused ops of this package
    from hybench.engine.history import HistoryBranch

# Every kernel module's import runs this package first; torch.compile and mamba-ssm build kernels later.
pin_triton_caches()


class AttentionBackend(Protocol):
    name: str

    def prefill(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, meta: PrefillMeta,
                window: int | None, scale: float) -> torch.Tensor: ...

    def decode(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cache: LayerCache, meta: DecodeMeta,
               scale: float, history: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """Store this step's k, v in `meta.slots`, then attend over each row's `used` slots; with
        history = (y, gate logits), return attention + sigmoid(gate) * y (the hybrid layer's mix)."""


class SSMBackend(Protocol):
    name: str

    def scan(self, x: torch.Tensor, b: torch.Tensor, c: torch.Tensor, dt: torch.Tensor, a: torch.Tensor,
             meta: PrefillMeta, initial_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...

    def step(self, cache: LayerCache, meta: DecodeMeta, history: HistoryBranch, x: torch.Tensor,
             q: torch.Tensor) -> torch.Tensor:
        """Absorb the token each row's slot holds where `meta.evict` (it leaves the window now) into
        the row's state (its key through `history.map_keys`), store this step's dt (`history.dt(x)`,
        x the layer input) in the slot, and return y = S q [B, H, D] (q already mapped by the caller).
        Runs before `AttentionBackend.decode` overwrites the slot's key and value."""


class ReferenceAttention:
    """SDPA with an explicit mask, one sequence at a time for prefill."""

    name = "sdpa-ref"

    def prefill(self, q, k, v, meta, window, scale):
        return prefill_attention_ref(q, k, v, meta.cu_seqlens_q_host, meta.cu_seqlens_k_host, window, scale)

    def decode(self, q, k, v, cache, meta, scale, history=None):
        cache.write_kv(meta.slots, k, v)
        out = decode_attention_ref(q, cache.k, cache.v, meta.rows, meta.used, scale)
        return out if history is None else gated_add(out, *history)


class ReferenceSSM:
    """Chunked PyTorch scan (padded groups of sequences, one sequence at a time within a group) for
    prefill; one batched state update per decode step."""

    name = "torch-ref"

    def scan(self, x, b, c, dt, a, meta, initial_states):
        def scan_batch(xs, bs, cs, dts, init):
            outs = [ssd_scan_chunked_ref(*row, a, state) for *row, state in zip(xs, bs, cs, dts, init)]
            return torch.stack([y for y, _ in outs]), torch.stack([s for _, s in outs])

        return scan_in_groups(scan_batch, x, b, c, dt, meta.cu_seqlens_q_host, initial_states)

    def step(self, cache, meta, history, x, q):
        k_old, v_old, dt_old = cache.leaving(meta.slots, meta.evict)
        new = ssd_state_update_ref(cache.state[meta.rows], v_old, history.map_keys(k_old), dt_old, history.A)
        cache.state[meta.rows] = new
        cache.write_dt(meta.slots, history.dt(x))
        return ssd_readout_ref(new, q)


def select_backends(device: torch.device, head_dim: int) -> tuple[AttentionBackend, SSMBackend]:
    """The fastest implementations this device offers (the references on CPU). Decode runs on
    hybench's Triton kernels where they fit (split-KV attention, the fused history step); prefill
    on FlashAttention-2 (the flash-attn package if installed, else PyTorch's bundled copy) and
    mamba-ssm's chunk scan."""
    from hybench.engine.kernels import decode_triton, flash_attn_pkg, flash_torch, mamba_triton

    attn: AttentionBackend = ReferenceAttention()
    if flash_attn_pkg.available(device):
        attn = flash_attn_pkg.FlashAttnPackage()
    elif flash_torch.available(device):
        attn = flash_torch.TorchFlashAttention()
    ssm: SSMBackend = mamba_triton.MambaTritonSSM() if mamba_triton.available(device) else ReferenceSSM()
    if decode_triton.available(device, head_dim):
        attn, ssm = decode_triton.SplitKVAttention(attn), decode_triton.FusedStepSSM(ssm)
    return attn, ssm
