"""Reference history-branch recurrence (Mamba-2 / SSD form) in pure PyTorch.

Per KV head g:  S <- exp(dt * A[g]) * S + dt * x B^T   (S: [P, N] = [Dv, Dk], x = v, B = k)
and per query head r of the group:  y = S C[r]  (C = q).
One state per KV head is enough because x, B, dt and A are per KV head; each query head of the
group contracts the shared state with its own q. `ssd_scan_sequential_ref` is the token-by-token
oracle; `ssd_scan_chunked_ref` is the same recurrence in chunks (the form the kernels compute).
"""
from __future__ import annotations

import torch

CHUNK = 64


def _grouped(c: torch.Tensor, groups: int) -> torch.Tensor:
    """[T, H, N] query-head tensor -> [T, G, R, N] with R = H // G heads per KV head."""
    return c.reshape(c.shape[0], groups, c.shape[1] // groups, c.shape[2])


def ssd_scan_sequential_ref(x, b, c, dt, a, state):
    """x: [T, G, P], b: [T, G, N], c: [T, H, N], dt: [T, G], a: [G], state: [G, P, N].
    Returns y [T, H, P] and the final state."""
    groups = x.shape[1]
    cg = _grouped(c, groups)
    s = state.clone()
    ys = []
    for t in range(x.shape[0]):
        s = torch.exp(dt[t] * a)[:, None, None] * s + dt[t][:, None, None] * x[t][:, :, None] * b[t][:, None, :]
        ys.append(torch.einsum("gpn,grn->grp", s, cg[t]))
    y = torch.stack(ys) if ys else x.new_zeros((0, groups, cg.shape[2], x.shape[2]))
    return y.reshape(x.shape[0], -1, x.shape[2]), s


def ssd_scan_chunked_ref(x, b, c, dt, a, state, chunk: int = CHUNK):
    """Same contract as `ssd_scan_sequential_ref`, computed chunk by chunk in fp32."""
    out_dtype = c.dtype
    x, b, dt, a, s = x.float(), b.float(), dt.float(), a.float(), state.float()
    groups = x.shape[1]
    cg = _grouped(c.float(), groups)
    ys = []
    for start in range(0, x.shape[0], chunk):
        xs, bs, cs, dts = (t[start:start + chunk] for t in (x, b, cg, dt))
        log_decay = torch.cumsum(dts * a, dim=0)  # [L, G], inclusive, <= 0
        # decay[t, j] = exp(sum_{j<i<=t} dt_i A) for j <= t, else 0
        diff = log_decay[:, None, :] - log_decay[None, :, :]  # [L, L, G]
        causal = torch.ones(diff.shape[:2], dtype=torch.bool, device=x.device).tril()
        decay = torch.where(causal[:, :, None], torch.exp(diff.clamp(max=0)), 0.0)
        scores = torch.einsum("tgrn,jgn->tjgr", cs, bs) * (decay * dts[None, :, :])[..., None]
        y = torch.einsum("tjgr,jgp->tgrp", scores, xs)
        y += torch.einsum("gpn,tgrn->tgrp", s, cs) * torch.exp(log_decay)[:, :, None, None]
        ys.append(y)
        tail = torch.exp(log_decay[-1][None, :] - log_decay) * dts  # [L, G]
        s = torch.exp(log_decay[-1])[:, None, None] * s + torch.einsum("jg,jgp,jgn->gpn", tail, xs, bs)
    y = torch.cat(ys) if ys else x.new_zeros((0, groups, cg.shape[2], x.shape[2]))
    return y.reshape(x.shape[0], -1, x.shape[2]).to(out_dtype), s


def ssd_state_update_ref(state, x, b, dt, a):
    """One step for a batch: state [B, G, P, N], x [B, G, P], b [B, G, N], dt [B, G].
    Returns the new state (fp32)."""
    state = state.float()
    decay = torch.exp(dt.float() * a.float())[:, :, None, None]
    return decay * state + (dt.float()[:, :, None, None] * x.float()[:, :, :, None] * b.float()[:, :, None, :])


def ssd_readout_ref(state, c):
    """y[b, h] = S[b, kv(h)] @ c[b, h]; state [B, G, P, N], c [B, H, N] -> [B, H, P]."""
    groups = state.shape[1]
    cg = c.float().reshape(c.shape[0], groups, -1, c.shape[2])
    y = torch.einsum("bgpn,bgrn->bgrp", state, cg)
    return y.reshape(c.shape[0], -1, state.shape[2]).to(c.dtype)
