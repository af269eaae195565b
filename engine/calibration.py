"""Calibrating the hybrid layer's history branch by layer-wise distillation from full attention.

A seeded branch adds noise to the window on a pretrained model. Calibration trains only the branch
(dt projection and bias, A_log, gate, and with `maps` its identity-initialised key and query maps;
the base weights stay frozen) so that, on the same layer
input, each hybrid layer's output (window attention + gated history, after o_proj) matches the
full-attention layer's output. No labels are needed: the layer inputs come from the full model run
on random-token sequences, or on recall-style block-filler-block sequences that put the copied
block beyond the window. The computation is the DESIGN.md section 3 recurrence, written
differentiably: the reference attention and the chunked reference scan with the k/v/dt streams
shifted right by W.

The calibrated branch is saved as safetensors whose metadata names the base model's hash, W, the
steps and the final loss; loading it for another model or window is refused.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from hybench.engine.errors import EngineConfigError
from hybench.engine.history import HistoryBranch
from hybench.engine.kernels.attention_ref import window_mask
from hybench.engine.kernels.fused import rotary
from hybench.engine.kernels.ssd_ref import ssd_scan_chunked_ref
from hybench.engine.llama import LlamaForCausalLM

DATA_KINDS = ("random", "recall", "text")  # text: windows cut from a tokenized --eval-text


class CalibrationError(EngineConfigError):
    """History weights that cannot be used as asked (wrong model, wrong window, unreadable file)."""


@dataclass(frozen=True, slots=True)
class CalibrationSpec:
    window: int
    steps: int = 200
    seed: int = 0
    batch: int = 8
    seq_len: int = 256
    lr: float = 3e-2
    data: str = "recall"  # random | recall | text
    block_len: int = 16
    maps: bool = False  # also train identity-initialised key and query maps (HistoryBranch.enable_maps)


@dataclass(frozen=True, slots=True)
class HistoryWeights:
    tensors: dict[str, torch.Tensor]  # "layers.{i}.{param}" -> fp32 tensor
    model_hash: str
    window: int
    steps: int
    final_loss: float

    @property
    def sha(self) -> str:
        """A short content hash of the weights, for naming a calibrated branch in results."""
        digest = hashlib.sha256()
        for name in sorted(self.tensors):
            digest.update(name.encode())
            digest.update(self.tensors[name].contiguous().numpy().tobytes())
        return digest.hexdigest()[:12]


@dataclass(frozen=True, slots=True)
class HistoryWeightsRef:
    """A job's history weights: where to read them, their content hash (part of the job id, and of the
    jobs row's `ssm_init`) and the window they were calibrated for."""

    path: str
    sha: str
    window: int

    @classmethod
    def open(cls, path: str) -> HistoryWeightsRef:
        weights = read_history_weights(path)
        return cls(path, weights.sha, weights.window)

    def load(self, model: LlamaForCausalLM, window: int) -> HistoryWeights:
        """The weights, refused for another model or window, or when the file changed since the job was defined."""
        weights = load_history_weights(self.path, model, window)
        if weights.sha != self.sha:
            raise CalibrationError(f"--history-weights {self.path}: the file changed since the job was defined")
        return weights


def model_hash(model: LlamaForCausalLM) -> str:
    """sha256 of the model's config (its name aside: the same weights under another path are the same
    model) and of every base weight; the history branch is not part of it."""
    digest = hashlib.sha256()
    config = {k: v for k, v in dataclasses.asdict(model.config).items() if k != "name"}
    digest.update(json.dumps(config, sort_keys=True, default=str).encode())
    for name, tensor in sorted(model.state_dict().items()):
        if ".history." in name or name.startswith("model.rope"):
            continue
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def seeded_branches(model: LlamaForCausalLM, seed: int) -> list[HistoryBranch]:
    """One seeded branch per layer, exactly as `LlamaForCausalLM.configure` makes them for this seed."""
    generator = torch.Generator().manual_seed(seed)
    branches = []
    for _ in model.attention_layers:
        branch = HistoryBranch(model.config.hidden_size, model.config.num_heads, model.config.num_kv_heads,
                               model.lm_head.weight.dtype).to(model.lm_head.weight.device)
        branch.init_seeded(generator)
        branches.append(branch)
    return branches


def calibration_batch(vocab_size: int, spec: CalibrationSpec, generator: torch.Generator,
                      text: torch.Tensor | None = None) -> torch.Tensor:
    """[batch, seq_len] token ids. `recall`: random tokens with a block repeated from W to 4W later
    (the distances the branch exists for); `random`: uniform random tokens; `text`: windows of the
    token ids `text` at seeded offsets (real text, where the model's own long-range habits show)."""
    if spec.data == "text":
        starts = torch.randint(0, len(text) - spec.seq_len + 1, (spec.batch,), generator=generator)
        return torch.stack([text[start:start + spec.seq_len] for start in starts.tolist()])
    ids = torch.randint(0, vocab_size, (spec.batch, spec.seq_len), generator=generator)
    if spec.data == "random":
        return ids
    b = spec.block_len
    for row in ids:
        distance = int(torch.randint(spec.window, 4 * spec.window + 1, (1,), generator=generator))
        distance = min(distance, spec.seq_len - 2 * b)
        start = int(torch.randint(0, spec.seq_len - 2 * b - distance + 1, (1,), generator=generator))
        row[start + b + distance:start + 2 * b + distance] = row[start:start + b]
    return ids


def _qkv(attn, h: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
    """h [B, L, hidden] -> rotated q [B, L, H, D], k and v [B, L, Hkv, D]."""
    batch, length = h.shape[:2]
    qkv = attn.qkv_proj(h.reshape(batch * length, -1))
    qk = rotary(qkv[:, :attn.q_size + attn.kv_size].view(-1, attn.num_heads + attn.num_kv_heads, attn.head_dim),
                cos.repeat(batch, 1), sin.repeat(batch, 1))
    q, k = qk.split([attn.num_heads, attn.num_kv_heads], dim=1)
    v = qkv[:, attn.q_size + attn.kv_size:].view(-1, attn.num_kv_heads, attn.head_dim)
    shape = (batch, length, -1, attn.head_dim)
    return q.reshape(shape), k.reshape(shape), v.reshape(shape)


def _attend(attn, q, k, v, window: int | None) -> torch.Tensor:
    """Causal (optionally windowed) attention, [B, L, H, D]."""
    group = attn.num_heads // attn.num_kv_heads
    positions = torch.arange(q.shape[1], device=q.device)
    mask = window_mask(positions, positions, window)
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.repeat_interleave(group, 2).transpose(1, 2),
                                         v.repeat_interleave(group, 2).transpose(1, 2), attn_mask=mask,
                                         scale=attn.scale)
    return out.transpose(1, 2)


def _history(branch: HistoryBranch, h, q, k, v, window: int) -> torch.Tensor:
    """y [B, L, H, D]: query t reads the state of every token <= t - W (streams shifted right by W).
    The batch rides in the scan's head axis: each sequence's heads get their own states."""
    batch, length, heads, dim = q.shape
    kv_heads = k.shape[2]
    dt = branch.dt(h.reshape(batch * length, -1)).view(batch, length, kv_heads)

    def shifted(t: torch.Tensor) -> torch.Tensor:
        return F.pad(t, (0, 0) * (t.dim() - 2) + (window, 0))[:, :length]

    def heads_last(t: torch.Tensor) -> torch.Tensor:  # [B, L, G, ...] -> [L, B*G, ...]
        return t.transpose(0, 1).reshape(length, batch * t.shape[2], *t.shape[3:])

    state = q.new_zeros((batch * kv_heads, dim, dim), dtype=torch.float32)
    y, _ = ssd_scan_chunked_ref(heads_last(shifted(v)), heads_last(shifted(branch.map_keys(k))),
                                heads_last(branch.map_queries(q)),
                                heads_last(shifted(dt)), branch.A.repeat(batch), state)
    return y.view(length, batch, heads, dim).transpose(0, 1)


@torch.no_grad()
def teacher_layers(model: LlamaForCausalLM, ids: torch.Tensor):
    """Run the full model; per layer: (layer input after its norm, rotated q, k, v, full output)."""
    config = model.config
    positions = torch.arange(ids.shape[1], device=ids.device)
    cos, sin = model.model.rope.lookup(positions, model.lm_head.weight.dtype)
    x, residual, per_layer = model.model.embed_tokens(ids), None, []
    for layer in model.model.layers:
        flat = x.reshape(-1, config.hidden_size)
        if residual is None:
            h, residual = layer.input_layernorm(flat), flat
        else:
            h, residual = layer.input_layernorm(flat, residual)
        h = h.view_as(x)
        attn = layer.self_attn
        q, k, v = _qkv(attn, h, cos, sin)
        out = attn.o_proj(_attend(attn, q, k, v, None).flatten(2))
        per_layer.append((h, q, k, v, out))
        h2, residual = layer.post_attention_layernorm(out.reshape(-1, config.hidden_size), residual)
        x = layer.mlp(h2).view_as(x)
    return per_layer


def hybrid_layer_output(attn, branch: HistoryBranch, h, q, k, v, window: int) -> torch.Tensor:
    """The hybrid attention layer's output [B, L, hidden] (after o_proj), differentiable in the branch."""
    with torch.no_grad():
        window_out = _attend(attn, q, k, v, window)
    y = _history(branch, h, q, k, v, window)
    mixed = branch.mix(window_out.flatten(0, 1), y.flatten(0, 1)).view_as(window_out)
    return attn.o_proj(mixed.flatten(2))


def distillation_loss(model: LlamaForCausalLM, branches: list[HistoryBranch], ids: torch.Tensor,
                      window: int) -> torch.Tensor:
    """Mean over layers of |hybrid out - full out|^2 / |full out|^2, each layer fed the full model's
    input to it; positions inside the first window (where hybrid equals sliding equals full) are left out."""
    losses = []
    for (h, q, k, v, target), branch, attn in zip(teacher_layers(model, ids), branches, model.attention_layers):
        out = hybrid_layer_output(attn, branch, h, q, k, v, window)
        err = (out - target)[:, window:].pow(2).sum(-1)
        losses.append((err / target[:, window:].pow(2).sum(-1).clamp_min(1e-12)).mean())
    return torch.stack(losses).mean()


def calibrate(model: LlamaForCausalLM, spec: CalibrationSpec,
              progress: Callable[[int, float], None] | None = None,
              branches: list[HistoryBranch] | None = None,
              text: torch.Tensor | None = None) -> tuple[list[HistoryBranch], list[float]]:
    """Train the branches (by default seeded with `spec.seed`; given ones are trained in place) for
    `spec.steps` Adam steps on fresh seeded batches (cut from `text`, 1-D token ids, when `spec.data`
    is `text`). Returns the branches and the loss of every step."""
    if spec.data not in DATA_KINDS:
        raise CalibrationError(f"calibration data must be one of {', '.join(DATA_KINDS)}, got {spec.data!r}")
    if (spec.data == "text") != (text is not None):
        raise CalibrationError("calibration on text needs the text's token ids, and only text calibration takes them")
    if text is not None and len(text) < spec.seq_len:
        raise CalibrationError(f"the text has {len(text)} tokens, fewer than one calibration sequence of "
                               f"{spec.seq_len} (lower --seq-len or give a longer --eval-text)")
    if spec.steps < 1 or spec.window < 1:
        raise CalibrationError(f"calibration needs steps >= 1 and a window >= 1, got {spec.steps} and {spec.window}")
    if spec.seq_len <= spec.window or spec.seq_len < 2 * spec.block_len + spec.window:
        raise CalibrationError(f"calibration sequences of {spec.seq_len} tokens are too short for window "
                               f"{spec.window}: they need at least {max(spec.window + 1, 2 * spec.block_len + spec.window)}")
    if spec.seq_len > model.model.rope.cos.shape[0]:
        raise CalibrationError(f"calibration sequences of {spec.seq_len} tokens exceed the model's "
                               f"{model.model.rope.cos.shape[0]} positions")
    for p in model.parameters():
        p.requires_grad_(False)
    branches = branches or seeded_branches(model, spec.seed)
    if spec.maps:
        for branch in branches:
            if branch.k_map is None:
                branch.enable_maps(model.config.head_dim)
    params = [p for b in branches for p in b.parameters()]
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.Adam(params, lr=spec.lr)
    generator = torch.Generator().manual_seed(spec.seed)
    device = model.lm_head.weight.device
    curve = []
    for step in range(spec.steps):
        ids = calibration_batch(model.config.vocab_size, spec, generator, text).to(device)
        loss = distillation_loss(model, branches, ids, spec.window)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        curve.append(loss.item())
        if progress is not None:
            progress(step, curve[-1])
    for p in params:
        p.requires_grad_(False)
    return branches, curve


def history_weights(model: LlamaForCausalLM, branches: list[HistoryBranch], window: int, steps: int,
                    final_loss: float) -> HistoryWeights:
    tensors = {f"layers.{i}.{name}": t.detach().float().cpu().contiguous()
               for i, branch in enumerate(branches) for name, t in branch.state_dict().items()}
    return HistoryWeights(tensors, model_hash(model), window, steps, final_loss)


def save_history_weights(weights: HistoryWeights, path: str) -> None:
    save_file(weights.tensors, path, metadata={
        "format": "hybench-history", "model_hash": weights.model_hash, "window": str(weights.window),
        "steps": str(weights.steps), "final_loss": repr(weights.final_loss)})


def read_history_weights(path: str) -> HistoryWeights:
    """Read a history-weights file made by `hybench calibrate`, for no model in particular."""
    try:
        tensors = load_file(path)
        with safe_open(path, "pt") as handle:
            meta = handle.metadata() or {}
    except (OSError, SafetensorError) as exc:
        raise CalibrationError(f"--history-weights {path}: cannot read it as safetensors ({exc})") from None
    if meta.get("format") != "hybench-history" or not {"model_hash", "window", "steps", "final_loss"} <= meta.keys():
        raise CalibrationError(f"--history-weights {path}: not a hybench history-weights file (made by hybench calibrate)")
    return HistoryWeights(tensors, meta["model_hash"], int(meta["window"]), int(meta["steps"]),
                          float(meta["final_loss"]))


def check_history_weights(weights: HistoryWeights, path: str, model: LlamaForCausalLM | None, window: int) -> None:
    """Refuse weights calibrated for another window, or (given the model) another model."""
    if weights.window != window:
        raise CalibrationError(f"--history-weights {path}: calibrated for window {weights.window}, "
                               f"the window asked is {window}")
    if model is not None and weights.model_hash != model_hash(model):
        raise CalibrationError(f"--history-weights {path}: calibrated for another model (hash "
                               f"{weights.model_hash[:12]}), not {model.config.name} ({model_hash(model)[:12]})")


def load_history_weights(path: str, model: LlamaForCausalLM, window: int) -> HistoryWeights:
    """Read history weights, refusing a file made for another model or window."""
    weights = read_history_weights(path)
    check_history_weights(weights, path, model, window)
    return weights


def apply_history_weights(model: LlamaForCausalLM, weights: HistoryWeights) -> None:
    """Replace a configured hybrid model's seeded branches by the calibrated ones."""
    for i, attn in enumerate(model.attention_layers):
        if attn.history is None:
            raise CalibrationError("history weights apply only to the hybrid attention config")
        prefix = f"layers.{i}."
        tensors = {k[len(prefix):]: v for k, v in weights.tensors.items() if k.startswith(prefix)}
        if "k_map" in tensors and attn.history.k_map is None:  # calibrated with --maps
            attn.history.enable_maps(tensors["k_map"].shape[-1])
        attn.history.load_state_dict(tensors)
