"""The hybrid layer's history branch: a gated linear recurrence over tokens that left the window.

DESIGN.md section 3. When token j leaves the window (at query position j + W), its cached key and
value are absorbed: S <- exp(dt_j A) S + dt_j v_j k_j^T, with dt_j = softplus(w . x_j + b) > 0 from
token j's layer input (kept in a ring beside its KV entry) and A = -exp(A_log) < 0, both per KV
head. The dt projection runs in the model's dtype like every other projection (an fp32 matmul with
N = Hkv is a slow cuBLAS path on GPUs); its bias, the recurrence and the state stay fp32. Query t
reads y_t = S q_t (q after RoPE, as attention sees it) and the layer adds
sigmoid(gate) * y_t per query head. One state per KV head; query heads of a group share it.
Parameters are fp32 and, for pretrained checkpoints, initialised from a seed (Mamba-2's ranges).

`hybench calibrate --maps` adds learned maps for the keys the branch absorbs and the queries that read
it (k_j -> M_k k_j, q_t -> M_q q_t, one D x D pair per KV head, on the rotated q and k the cache holds),
identity at first, so that an untrained branch is still exactly the recurrence above. A branch without
maps (seeded, or calibrated without them) skips them entirely.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from hybench.engine.kernels.fused import gated_add, softplus_add

GATE_INIT = -4.0  # sigmoid(-4) ~ 0.018: the branch starts as a small correction to the window


class HistoryBranch(nn.Module):
    def __init__(self, hidden_size: int, num_heads: int, num_kv_heads: int, dtype: torch.dtype) -> None:
        super().__init__()
        self.dt_proj = nn.Linear(hidden_size, num_kv_heads, bias=False, dtype=dtype)
        self.dt_bias = nn.Parameter(torch.zeros(num_kv_heads, dtype=torch.float32))
        self.A_log = nn.Parameter(torch.zeros(num_kv_heads, dtype=torch.float32))
        self.gate = nn.Parameter(torch.zeros(num_heads, dtype=torch.float32))
        self.register_parameter("k_map", None)  # [Hkv, D, D] once enable_maps ran
        self.register_parameter("q_map", None)

    def enable_maps(self, head_dim: int) -> None:
        """Identity key and query maps, to be trained (or loaded): the branch's output is unchanged."""
        eye = torch.eye(head_dim, dtype=torch.float32, device=self.A_log.device).expand(self.A_log.numel(), -1, -1)
        self.k_map = nn.Parameter(eye.clone())
        self.q_map = nn.Parameter(eye.clone())

    def map_keys(self, k: torch.Tensor) -> torch.Tensor:
        """[..., Hkv, D] keys as the branch absorbs them."""
        if self.k_map is None:
            return k
        return torch.einsum("...hd,hed->...he", k.float(), self.k_map).to(k.dtype)

    def map_queries(self, q: torch.Tensor) -> torch.Tensor:
        """[..., H, D] queries as they read the state: each query head through its KV head's map."""
        if self.q_map is None:
            return q
        kv_heads, dim = self.q_map.shape[0], q.shape[-1]
        grouped = q.float().reshape(*q.shape[:-2], kv_heads, -1, dim)
        return torch.einsum("...kgd,ked->...kge", grouped, self.q_map).reshape(q.shape).to(q.dtype)

    @torch.no_grad()
    def init_seeded(self, generator: torch.Generator) -> None:
        """Deterministic init: A in [1, 16], dt in [1e-3, 1e-1] at zero input (as Mamba-2),
        small dt projection, gate at GATE_INIT."""
        dev = self.A_log.device

        def uniform(n: int, lo: float, hi: float) -> torch.Tensor:
            return (torch.rand(n, generator=generator) * (hi - lo) + lo).to(dev)

        heads = self.A_log.numel()
        self.A_log.copy_(torch.log(uniform(heads, 1.0, 16.0)))
        dt = torch.exp(uniform(heads, math.log(1e-3), math.log(1e-1)))
        self.dt_bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus
        std = 1.0 / math.sqrt(self.dt_proj.in_features)
        self.dt_proj.weight.copy_((torch.randn(self.dt_proj.weight.shape, generator=generator) * std * 0.1).to(dev))
        self.gate.fill_(GATE_INIT)

    def dt(self, x: torch.Tensor) -> torch.Tensor:
        """[N, hidden] layer input -> [N, Hkv] fp32 step sizes, all > 0."""
        return softplus_add(self.dt_proj(x), self.dt_bias)

    @property
    def A(self) -> torch.Tensor:
        return -torch.exp(self.A_log)

    def mix(self, window_out: torch.Tensor, history_out: torch.Tensor) -> torch.Tensor:
        return gated_add(window_out, history_out, self.gate)

    @property
    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())
