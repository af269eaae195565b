"""An independent dense reference of DESIGN.md section 3, in float64, over a whole sequence.

Attention is an explicit masked softmax; the history branch is the literal token-by-token rule:
before query t, absorb token t-W (if any) into S, then y_t = S q_t, output + sigmoid(g) * y_t.
It shares only the weights (and the RoPE table, checked against transformers elsewhere).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from hybench.engine.llama import LlamaForCausalLM


@torch.no_grad()
def reference_logits(model: LlamaForCausalLM, tokens: list[int], kind: str, window: int | None) -> torch.Tensor:
    cfg = model.config
    h, hkv, d = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    t_len = len(tokens)
    pos = torch.arange(t_len)
    x = model.model.embed_tokens.weight.double()[torch.tensor(tokens)]
    for layer in model.model.layers:
        attn = layer.self_attn
        a_in = _rms(x, layer.input_layernorm)
        qkv = a_in @ attn.qkv_proj.weight.double().T
        if attn.qkv_proj.bias is not None:
            qkv = qkv + attn.qkv_proj.bias.double()
        q, k, v = qkv.split([h * d, hkv * d, hkv * d], dim=-1)
        q, k = _rope(attn, pos, q.view(t_len, h, d), k.view(t_len, hkv, d))
        v = v.view(t_len, hkv, d)
        kx, vx = k.repeat_interleave(h // hkv, 1), v.repeat_interleave(h // hkv, 1)
        scores = torch.einsum("qhd,khd->hqk", q, kx) * d**-0.5
        delta = pos[:, None] - pos[None, :]
        visible = (delta >= 0) & ((delta < window) if kind != "full" else True)
        probs = torch.softmax(scores.masked_fill(~visible, float("-inf")), dim=-1)
        out = torch.einsum("hqk,khd->qhd", probs, vx)
        if kind == "hybrid":
            out = out + torch.sigmoid(attn.history.gate.double())[None, :, None] * _history(attn, a_in, q, k, v, window)
        x = x + out.reshape(t_len, h * d) @ attn.o_proj.weight.double().T
        m_in = _rms(x, layer.post_attention_layernorm)
        gate, up = (m_in @ layer.mlp.gate_up_proj.weight.double().T).chunk(2, dim=-1)
        x = x + (F.silu(gate) * up) @ layer.mlp.down_proj.weight.double().T
    x = _rms(x, model.model.norm)
    return (x @ model.lm_head.weight.double().T).float()


def _rms(x, norm):
    return norm.weight.double() * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + norm.eps)


def _rope(attn, pos, q, k):
    cos, sin = attn.rope.cos[pos].double()[:, None], attn.rope.sin[pos].double()[:, None]

    def rot(t):
        half = t.shape[-1] // 2
        return torch.cat((-t[..., half:], t[..., :half]), dim=-1)

    return q * cos + rot(q) * sin, k * cos + rot(k) * sin


def _history(attn, a_in, q, k, v, window):
    branch = attn.history
    dt = F.softplus(a_in @ branch.dt_proj.weight.double().T + branch.dt_bias.double())  # [T, Hkv]
    a = -torch.exp(branch.A_log.double())
    hkv, d = k.shape[1], k.shape[2]
    group = q.shape[1] // hkv
    state = torch.zeros(hkv, d, d, dtype=torch.float64)  # [Hkv, Dv, Dk]
    ys = []
    for t in range(q.shape[0]):
        j = t - window  # the token that leaves the window when query t arrives
        if j >= 0:
            state = torch.exp(dt[j] * a)[:, None, None] * state + dt[j][:, None, None] * torch.einsum(
                "gp,gn->gpn", v[j], k[j])
        ys.append(torch.einsum("gpn,ghn->ghp", state, q[t].view(hkv, group, d)).reshape(-1, d))
    return torch.stack(ys)
