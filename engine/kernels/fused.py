"""Small fused element-wise ops of the decoder: (residual add +) RMSNorm, rotary embedding, SiLU-mul,
the history branch's softplus and gated mix.

At decode a step is hundreds of tiny kernels whose launch and tail cost, not their bytes, set the
step time; fusing each of these chains into one kernel is what brings decode near the bandwidth
roofline (gpt-fast compiles the whole step for the same reason). Each op has a plain PyTorch `_ref`
with Hugging Face's exact math, used on CPU and as the test oracle; on CUDA the same function is
compiled by TorchInductor into one Triton kernel (dynamic in the token dimension).
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F


def rms_norm_ref(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    dtype = x.dtype
    x = x.float()
    return weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)).to(dtype)


def add_rms_norm_ref(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor,
                     eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(norm(x + residual), x + residual): the residual add fused into the next norm."""
    residual = x + residual
    return rms_norm_ref(residual, weight, eps), residual


def rotary_ref(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: [N, heads, D]; cos, sin: [N, D] (neox layout: halves rotated)."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos[:, None, :] + rotated * sin[:, None, :]


def silu_mul_ref(gate_up: torch.Tensor) -> torch.Tensor:
    gate, up = gate_up.chunk(2, dim=-1)
    return F.silu(gate) * up


def softplus_add_ref(x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """softplus(x + bias) in fp32: the history branch's step sizes from its projection."""
    return F.softplus(x.float() + bias)


def gated_add_ref(window_out: torch.Tensor, history_out: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
    """The hybrid layer's mix: window_out + sigmoid(gate) * history_out ([N, H, D], gate logits [H])."""
    g = torch.sigmoid(gate).to(window_out.dtype)[None, :, None]
    return window_out + g * history_out.to(window_out.dtype)


@functools.cache
def _compiled(fn):
    return torch.compile(fn, dynamic=True)


def _dispatch(ref):
    @functools.wraps(ref)
    def op(*args, **kwargs):
        if torch.compiler.is_compiling():  # inside a compiled decode step: let its graph fuse it
            return ref(*args, **kwargs)
        if args[0].is_cuda:
            return _compiled(ref)(*args, **kwargs)
        return ref(*args, **kwargs)

    op.__name__ = ref.__name__.removesuffix("_ref")
    return op


rms_norm = _dispatch(rms_norm_ref)
add_rms_norm = _dispatch(add_rms_norm_ref)
rotary = _dispatch(rotary_ref)
silu_mul = _dispatch(silu_mul_ref)
softplus_add = _dispatch(softplus_add_ref)
gated_add = _dispatch(gated_add_ref)
