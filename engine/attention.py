"""The attention layer in its three configurations (DESIGN.md section 3).

full:    causal attention over every cached token.
sliding: causal attention over the last W tokens (the cache row is a ring of W slots).
hybrid:  sliding + the history branch over every token that left the window.
The pretrained weights are the same in all three; the configuration only changes what is cached
and read. The kernels come from the backends in `engine.kernels`.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from hybench.engine.context import DecodeMeta, PrefillMeta, StepContext
from hybench.engine.history import HistoryBranch
from hybench.engine.kernels import AttentionBackend, SSMBackend
from hybench.engine.kernels.fused import rotary
from hybench.engine.kv_cache import LayerCache
from hybench.engine.model_config import ModelConfig
from hybench.engine.rotary import RotaryEmbedding


@dataclass(frozen=True, slots=True)
class AttentionLayout:
    kind: str  # full | sliding | hybrid
    window: int | None  # None for full
    attn: AttentionBackend
    ssm: SSMBackend


class Attention(nn.Module):
    def __init__(self, config: ModelConfig, rope: RotaryEmbedding) -> None:
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim = config.num_heads, config.num_kv_heads, config.head_dim
        self.q_size = self.num_heads * self.head_dim
        self.kv_size = self.num_kv_heads * self.head_dim
        self.scale = self.head_dim**-0.5
        self.qkv_proj = nn.Linear(config.hidden_size, self.q_size + 2 * self.kv_size, bias=config.qkv_bias)
        self.o_proj = nn.Linear(self.q_size, config.hidden_size, bias=config.o_bias)
        self.rope = rope
        self.history: HistoryBranch | None = None
        self.layout: AttentionLayout | None = None
        self.cache: LayerCache | None = None

    def forward(self, x: torch.Tensor, ctx: StepContext, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        qkv = self.qkv_proj(x)
        # q and k are adjacent in the fused projection: rotate both with one kernel.
        qk = rotary(qkv[:, : self.q_size + self.kv_size].view(-1, self.num_heads + self.num_kv_heads, self.head_dim),
                    cos, sin)
        q, k = qk.split([self.num_heads, self.num_kv_heads], dim=1)
        v = qkv[:, self.q_size + self.kv_size:].view(-1, self.num_kv_heads, self.head_dim)
        if ctx.prefill is not None:
            out = self._prefill(q, k, v, None if self.history is None else self.history.dt(x), ctx.prefill)
        else:
            out = self._decode(q, k, v, x, ctx.decode)
        return self.o_proj(out.flatten(1))

    def _prefill(self, q, k, v, dt, meta: PrefillMeta) -> torch.Tensor:
        cache, layout = self.cache, self.layout
        k_slots = cache.k.view(-1, self.num_kv_heads, self.head_dim)
        v_slots = cache.v.view(-1, self.num_kv_heads, self.head_dim)
        # Assemble each sequence's keys: its cached context, then the chunk; one zero row at the
        # end stands for "no token left the window yet" in the history streams.
        total = meta.ctx_dst.numel() + k.shape[0]
        k_all = _assemble(k_slots, k, meta, total)
        v_all = _assemble(v_slots, v, meta, total)
        out = layout.attn.prefill(q, k_all[:total], v_all[:total], meta, layout.window, self.scale)
        if self.history is not None:
            dt_all = _assemble(cache.dt.view(-1, self.num_kv_heads), dt, meta, total)
            init = torch.where(meta.has_state[:, None, None, None], cache.state[meta.rows], 0.0)
            branch = self.history
            y, final = layout.ssm.scan(v_all[meta.hist_src], branch.map_keys(k_all[meta.hist_src]),
                                       branch.map_queries(q), dt_all[meta.hist_src], branch.A, meta, init)
            cache.state[meta.rows] = final
            out = self.history.mix(out, y)
            cache.write_dt(meta.write_dst, dt[meta.write_src])
        # Write after reading: the chunk may overwrite ring slots that held its own context.
        cache.write_kv(meta.write_dst, k[meta.write_src], v[meta.write_src])
        return out

    def _decode(self, q, k, v, x, meta: DecodeMeta) -> torch.Tensor:
        cache, layout = self.cache, self.layout
        # The history step reads the slot's old token (leaving the window) before attention's
        # write replaces it with this step's key and value.
        history = None
        if self.history is not None:
            history = layout.ssm.step(cache, meta, self.history, x, self.history.map_queries(q)), self.history.gate
        return layout.attn.decode(q, k, v, cache, meta, self.scale, history)


def _assemble(cached: torch.Tensor, new: torch.Tensor, meta: PrefillMeta, total: int) -> torch.Tensor:
    buf = new.new_zeros((total + 1, *new.shape[1:]))
    buf[meta.ctx_dst] = cached[meta.ctx_src].to(new.dtype)
    buf[meta.new_dst] = new
    return buf
