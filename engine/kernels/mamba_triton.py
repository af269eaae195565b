"""The history branch on mamba-ssm's Triton kernels: `mamba_chunk_scan_combined` for prefill and
`selective_state_update` for decode.

A Triton-only install (built with MAMBA_SKIP_CUDA_BUILD=TRUE) works: mamba_ssm/__init__ imports
the CUDA extension, so the package is registered without running its __init__ and only the
Triton modules are imported.
Mapping (DESIGN.md section 3): x = v, B = k, C = q, dstate = head_dim. The chunk scan wants one C
per head, so prefill runs with heads = query heads (v, k, dt, A and the state expanded from the KV
heads), on the step's sequences in padded groups (engine.kernels.varlen); decode keeps one state
per KV head, updates it in place in the pool through `state_batch_indices`, and reads it out per
query head with one batched matmul.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
import types

import torch

from hybench.engine.context import PrefillMeta
from hybench.engine.kernels.varlen import scan_in_groups

CHUNK_SIZE = 256


def _load() -> tuple | None:
    try:
        if "mamba_ssm" not in sys.modules:
            spec = importlib.util.find_spec("mamba_ssm")
            if spec is None or not spec.submodule_search_locations:
                return None
            package = types.ModuleType("mamba_ssm")
            package.__path__ = list(spec.submodule_search_locations)
            sys.modules["mamba_ssm"] = package
        scan = importlib.import_module("mamba_ssm.ops.triton.ssd_combined").mamba_chunk_scan_combined
        update = importlib.import_module("mamba_ssm.ops.triton.selective_state_update").selective_state_update
        return scan, update
    except Exception:  # noqa: BLE001 - any import failure means the backend is absent
        return None


def available(device: torch.device) -> bool:
    return device.type == "cuda" and _load() is not None


class MambaTritonSSM:
    name = "mamba-ssm-triton"

    def __init__(self) -> None:
        self._scan, self._update = _load()

    def scan(self, x, b, c, dt, a, meta: PrefillMeta, initial_states):
        rep = c.shape[1] // x.shape[1]
        a_h = a.repeat_interleave(rep)

        def scan_batch(xs, bs, cs, dts, init):  # one kernel call per group of sequences
            y, final = self._scan(xs.repeat_interleave(rep, dim=2).to(cs.dtype),
                                  dts.repeat_interleave(rep, dim=2).float(), a_h,
                                  bs.repeat_interleave(rep, dim=2).to(cs.dtype), cs, CHUNK_SIZE,
                                  initial_states=init.repeat_interleave(rep, dim=1).float(), return_final_states=True)
            return y, final[:, ::rep]  # heads of a group hold the same state

        return scan_in_groups(scan_batch, x, b, c, dt, meta.cu_seqlens_q_host, initial_states)

    def step(self, cache, meta, history, x, q):
        k_old, v_old, dt_old = cache.leaving(meta.slots, meta.evict)
        k_old = history.map_keys(k_old)
        states, rows = cache.state, meta.rows
        groups, dim = v_old.shape[1], v_old.shape[2]
        zeros = torch.zeros(groups, dim, device=q.device, dtype=torch.float32)
        # C = B is a placeholder: the kernel's per-group read-out cannot serve GQA, done below instead.
        self._update(
            states, v_old, dt_old[:, :, None].expand(-1, -1, dim), history.A[:, None, None].expand(groups, dim, dim),
            k_old, k_old, D=zeros, dt_bias=zeros, state_batch_indices=rows.to(torch.int32),
        )
        cache.write_dt(meta.slots, history.dt(x))
        cg = q.float().view(q.shape[0], groups, -1, q.shape[2])  # [B, G, R, N]
        y = torch.matmul(cg, states[rows].transpose(-1, -2))  # [B, G, R, P]
        return y.view(q.shape[0], -1, dim).to(q.dtype)
