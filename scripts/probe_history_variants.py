"""Probe history-branch variants on tiny-recall in a differentiable quadratic reference.

Not the engine: each layer's window attention and history are written as explicit [T, T] weights, so a
variant costs a few lines. `--variant plain` is DESIGN.md section 3 (it reproduces the engine's seeded
numbers in docs/calibration.md: 95.8% in window, 0% at 2W); `norm` shares one softmax normaliser
between the window and the history (LoLCATs): y_t = (sum_win exp(q.k/sqrt(D)) v + sum_hist a_tj v) /
(sum_win exp(q.k/sqrt(D)) + sum_hist a_tj), a_tj = exp(s_h) decay(t, j) dt_j phi_q(q_t).phi_k(k_j);
`sepnorm` normalises the history readout alone and adds it through the gate. Feature maps phi:
`softmax` / `hedgehog` (softmax of a learned identity-initialised map, Hedgehog adds softmax(-Wx)),
`performer` (learned positive random features, unbiased for exp(q.k/sqrt(D)) at init), `exact`
(exp(q.k/sqrt(D)) itself: no fixed-size state, the ceiling a feature map approximates). Trains only
the branch (dt, A, gate, feature maps, log scale s_h) on layer-wise output distillation (`layer`),
Hedgehog's attention-weight cross-entropy against full attention (`attn`, norm only), the full
model's next-token distribution (`kl`) or the next-token loss (`task`), then prints top-1 recall on
the repeated block in window (0.25W) and at 2W, and (norm) where layer weights go at 2W.
docs/calibration.md records the rows.
"""
import argparse
import math
import time

import torch
import torch.nn.functional as F
from torch import nn

from hybench.engine import build_model, resolve_model
from hybench.engine.calibration import CalibrationSpec, calibration_batch, teacher_layers, _qkv, seeded_branches
from hybench.engine.model_config import TRAINED_PRESET_WINDOWS
from hybench.workers.recall import distance_tokens, recall_sequence


class FMBranch(nn.Module):
    """A variant's history parameters: the engine branch's dt/A/gate plus feature maps W_q, W_k
    ([heads, F, D], identity-initialised; random for performer) and a log scale s_h per head."""

    def __init__(self, base, heads, kv, dim, feat, fmap, prerope=False):
        super().__init__()
        self.prerope = prerope
        self.base = base  # dt_proj, dt_bias, A_log
        self.fmap = fmap
        eye = torch.zeros(feat, dim)
        eye[:min(feat, dim), :min(feat, dim)] = torch.eye(min(feat, dim))
        if feat > dim:
            eye[dim:] = torch.randn(feat - dim, dim) / math.sqrt(dim)
        self.wq = nn.Parameter(eye.repeat(heads, 1, 1).clone())
        self.wk = nn.Parameter(eye.repeat(kv, 1, 1).clone())
        self.log_scale = nn.Parameter(torch.zeros(heads))
        if fmap == "performer":
            self.wq = nn.Parameter(torch.randn(heads, feat, dim))
            self.wk = nn.Parameter(self.wq.detach()[:kv].clone())

    def open_history(self):
        with torch.no_grad():  # no decay, dt ~ 1: the history starts as (approximate) far attention
            self.base.A_log.fill_(-10.0)
            self.base.dt_bias.fill_(0.5413)  # softplus^-1(1)
            self.base.dt_proj.weight.zero_()

    def phi(self, x, w):  # x [B,L,H,D] w [H,F,D]
        if self.fmap == "performer":
            x = x * x.shape[-1] ** -0.25
        z = torch.einsum("blhd,hfd->blhf", x, w)
        if self.fmap == "softmax":
            return torch.softmax(z, -1)
        if self.fmap == "hedgehog":
            return torch.cat([torch.softmax(z, -1), torch.softmax(-z, -1)], -1)
        if self.fmap == "performer":  # exp(w.x - |x|^2/2)/sqrt(F): unbiased for exp(q.k) at init
            return torch.exp(z - x.pow(2).sum(-1, keepdim=True) / 2) / math.sqrt(z.shape[-1])
        raise ValueError(f"unknown feature map {self.fmap!r}")


def layer_out(attn, br, h, q, k, v, W, variant, weights=False):
    """The layer's output after o_proj; with `weights` (norm only) also its weights over keys [B, H, T, J]."""
    B, L, H, D = q.shape
    pos = torch.arange(L)
    diff = pos[:, None] - pos[None, :]
    win = (diff >= 0) & (diff < W)
    hist = diff >= W
    s = torch.einsum("bthd,bjhd->bhtj", q, k) * attn.scale
    s = s.masked_fill(~win, float("-inf"))
    lse = torch.logsumexp(s, -1)  # [B,H,T]
    p = torch.exp(s - lse[..., None])
    o_win = torch.einsum("bhtj,bjhd->bthd", p, v)
    base = br.base
    dt = base.dt(h.reshape(B * L, -1)).view(B, L, -1)  # [B,L,Hkv]
    logdec = torch.cumsum(dt * base.A, 1)  # [B,L,H]
    dec = logdec.transpose(1, 2)[:, :, :, None] - logdec.transpose(1, 2)[:, :, None, :]  # [B,H,T,J]
    w = torch.exp(dec.clamp(max=0)) * dt.transpose(1, 2)[:, :, None, :]
    if variant == "sliding":
        return attn.o_proj(o_win.flatten(2))
    if variant == "plain":
        sc = torch.einsum("bthd,bjhd->bhtj", q, k) * w * hist
        y = torch.einsum("bhtj,bjhd->bthd", sc, v)
        return attn.o_proj((o_win + torch.sigmoid(base.gate)[None, None, :, None] * y).flatten(2))
    if br.fmap == "exact":
        kern = torch.exp(torch.einsum("bthd,bjhd->bhtj", q, k) * attn.scale)
    else:
        if br.prerope:  # phi of q and k before RoPE: content only, the same at every distance
            raw = attn.qkv_proj(h)
            rq, rk = raw[..., :attn.q_size], raw[..., attn.q_size:attn.q_size + attn.kv_size]
            fq = br.phi(rq.unflatten(-1, (-1, attn.head_dim)), br.wq)
            fk = br.phi(rk.unflatten(-1, (-1, attn.head_dim)), br.wk)
        else:
            fq, fk = br.phi(q, br.wq), br.phi(k, br.wk)
        kern = torch.einsum("bthf,bjhf->bhtj", fq, fk)
    a = kern * w * hist * torch.exp(br.log_scale)[None, :, None, None]
    if variant == "norm":  # window and history share one normaliser
        a = a * torch.exp(-lse)[..., None]
        num = o_win + torch.einsum("bhtj,bjhd->bthd", a, v)
        den = 1 + a.sum(-1).transpose(1, 2)[..., None]
        out = attn.o_proj((num / den).flatten(2))
        return (out, (p + a) / den.permute(0, 2, 1, 3)) if weights else out
    if variant == "sepnorm":  # normalised history readout, gated add
        y = torch.einsum("bhtj,bjhd->bthd", a, v) / (a.sum(-1).transpose(1, 2)[..., None] + 1e-6)
        return attn.o_proj((o_win + torch.sigmoid(base.gate)[None, None, :, None] * y).flatten(2))

def forward_logits(model, brs, ids, W, variant, full=False, only=None):
    """Logits [B, T, vocab] of the model with every layer's variant (only layer `only` when given, the
    others sliding), or of full attention."""
    cos, sin = model.model.rope.lookup(torch.arange(ids.shape[1]), torch.float32)
    x, residual = model.model.embed_tokens(ids), None
    for index, (layer, br) in enumerate(zip(model.model.layers, brs)):
        flat = x.reshape(-1, x.shape[-1])
        if residual is None: h, residual = layer.input_layernorm(flat), flat
        else: h, residual = layer.input_layernorm(flat, residual)
        h = h.view_as(x)
        q, k, v = _qkv(layer.self_attn, h, cos, sin)
        kind = "sliding" if only is not None and index != only and not full else variant
        out = layer_out(layer.self_attn, br, h, q, k, v, 10**9 if full else W, kind)
        h2, residual = layer.post_attention_layernorm(out.reshape(-1, x.shape[-1]), residual)
        x = layer.mlp(h2).view_as(x)
    return model.lm_head(model.model.norm(x.reshape(-1, x.shape[-1]), residual)[0]).view(*ids.shape, -1)

@torch.no_grad()
def report_weights(model, brs, W, variant):
    """Per layer on 2W recall sequences: full attention's weight on the key it copies from (its argmax)
    at the scored positions, the variant's weight on that key, and the variant's total history weight."""
    c = model.config
    seqs = [recall_sequence(c.vocab_size, 256, 16, distance_tokens(2.0, W), seed=1000 + s) for s in range(16)]
    ids = torch.tensor([s.tokens for s in seqs])
    L = ids.shape[1]
    causal = torch.ones(L, L, dtype=torch.bool).tril()
    pos = torch.tensor(list(seqs[0].scored_positions))
    far = (pos[:, None] - torch.arange(L)[None]) >= W
    for li, ((h, q, k, v, _), br, attn) in enumerate(zip(teacher_layers(model, ids), brs, model.attention_layers)):
        _, got = layer_out(attn, br, h, q, k, v, W, variant, weights=True)
        scores = torch.einsum("bthd,bjhd->bhtj", q, k) * attn.scale
        full = torch.softmax(scores.masked_fill(~causal, float("-inf")), -1)[:, :, pos]
        src = full.argmax(-1, keepdim=True)
        print(f"layer {li}: full@source {full.gather(-1, src).mean():.3f} variant@source "
              f"{got[:, :, pos].gather(-1, src).mean():.3f} variant history mass {(got[:, :, pos] * far).sum(-1).mean():.3f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", default="norm", choices=("plain", "norm", "sepnorm"),
                    help="combination rule of window and history (see above)")
    ap.add_argument("--fmap", default="softmax", choices=("softmax", "hedgehog", "performer", "exact"),
                    help="feature map phi of the norm/sepnorm history kernel")
    ap.add_argument("--feat", type=int, default=32, help="feature dimension F of phi")
    ap.add_argument("--steps", type=int, default=100, help="Adam steps (each on a fresh batch)")
    ap.add_argument("--loss", default="layer", choices=("layer", "attn", "kl", "task"), help="training loss")
    ap.add_argument("--lr", type=float, default=3e-2, help="Adam learning rate")
    ap.add_argument("--batch", type=int, default=8, help="sequences of 256 tokens per step")
    ap.add_argument("--prerope", action="store_true", help="feature maps read q and k before RoPE")
    ap.add_argument("--only-layer", type=int, default=None, help="score with the variant in this layer only, the others sliding")
    ap.add_argument("--scale-init", type=float, default=0.0, help="initial log scale s_h of the history kernel")
    ap.add_argument("--init", default="open", choices=("open", "seeded"), help="open: no decay, dt ~ 1; seeded: the engine's seeded dt/A")
    a = ap.parse_args()
    if a.loss == "attn" and a.variant != "norm":
        ap.error("--loss attn needs --variant norm (the weights it compares are the shared normaliser's)")
    torch.manual_seed(0)
    torch.set_num_threads(1)
    W = TRAINED_PRESET_WINDOWS["tiny-recall"]
    model = build_model(resolve_model("tiny-recall"), torch.device("cpu"), torch.float32, 257, seed=0)
    for p in model.parameters():
        p.requires_grad_(False)
    c = model.config
    brs = [FMBranch(b, c.num_heads, c.num_kv_heads, c.head_dim, a.feat, a.fmap, a.prerope) for b in seeded_branches(model, 0)]
    for b in brs:
        b.log_scale.data.fill_(a.scale_init)
        if a.init == "open":
            b.open_history()
    params = [p for b in brs for p in b.parameters()]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=a.lr)
    spec = CalibrationSpec(window=W, batch=a.batch)
    g = torch.Generator().manual_seed(0)
    t0 = time.monotonic()
    curve = []
    for step in range(a.steps):
        ids = calibration_batch(c.vocab_size, spec, g)
        if a.loss == "layer":
            losses = []
            for (h, q, k, v, tgt), br, attn in zip(teacher_layers(model, ids), brs, model.attention_layers):
                out = layer_out(attn, br, h, q, k, v, W, a.variant)
                err = (out - tgt)[:, W:].pow(2).sum(-1) / tgt[:, W:].pow(2).sum(-1)
                losses.append(err.mean())
            loss = torch.stack(losses).mean()
        elif a.loss == "attn":  # Hedgehog: cross-entropy of the layer's weights against full attention's
            losses = []
            for (h, q, k, v, tgt), br, attn in zip(teacher_layers(model, ids), brs, model.attention_layers):
                _, got = layer_out(attn, br, h, q, k, v, W, a.variant, weights=True)
                L = ids.shape[1]
                causal = torch.ones(L, L, dtype=torch.bool).tril()
                full = torch.softmax((torch.einsum("bthd,bjhd->bhtj", q, k) * attn.scale).masked_fill(~causal, float("-inf")), -1)
                losses.append(-(full * torch.log(got + 1e-9))[:, :, W:].sum(-1).mean())
            loss = torch.stack(losses).mean()
        elif a.loss == "kl":
            with torch.no_grad():
                tl = forward_logits(model, brs, ids, W, a.variant, full=True).log_softmax(-1)
            sl = forward_logits(model, brs, ids, W, a.variant).log_softmax(-1)
            loss = F.kl_div(sl[:, W:], tl[:, W:], log_target=True, reduction="batchmean") / (ids.shape[1] - W)
        elif a.loss == "task":
            lg = forward_logits(model, brs, ids, W, a.variant)
            loss = F.cross_entropy(lg[:, W:-1].flatten(0, 1), ids[:, W + 1:].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
        curve.append(loss.item())
        if step % 20 == 0:
            print(step, f"{loss.item():.4f}", f"{time.monotonic() - t0:.0f}s", flush=True)
    wall = time.monotonic() - t0
    with torch.no_grad():
        res = {}
        for mult in (0.25, 2.0):
            seqs = [recall_sequence(c.vocab_size, 256, 16, distance_tokens(mult, W), seed=1000 + s) for s in range(16)]
            ids = torch.tensor([s.tokens for s in seqs])
            for name, kw in (("full", dict(full=True)), ("cal", {})):
                lg = forward_logits(model, brs, ids, W, a.variant, only=a.only_layer, **kw)
                acc = []
                for i, s in enumerate(seqs):
                    pos = torch.tensor(list(s.scored_positions))
                    acc.append((lg[i, pos - 1].argmax(-1) == ids[i, pos]).float().mean())
                res[(mult, name)] = torch.stack(acc).mean().item()
    if a.variant == "norm":
        report_weights(model, brs, W, a.variant)
    print(vars(a), f"wall {wall:.0f}s loss {curve[0]:.4f}->{curve[-1]:.4f}",
          " ".join(f"{m}W {n} {v*100:.1f}" for (m, n), v in res.items()))


if __name__ == "__main__":
    main()
