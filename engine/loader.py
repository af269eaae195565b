"""Weight loading into the model: safetensors files found by `checkpoint.resolve_model`, or dummy weights.

Weights are only ever read from safetensors (no pickle, no checkpoint code is run). Every tensor
is checked against the model's shape, and every parameter must be covered, so a bad checkpoint
fails with the file and tensor named instead of running with garbage.
"""
from __future__ import annotations

import contextlib
import os

import torch
from safetensors import SafetensorError, safe_open

from hybench.engine.checkpoint import ResolvedModel
from hybench.engine.errors import CheckpointError
from hybench.engine.llama import LlamaForCausalLM

IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)
DUMMY_STD = 0.02


@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype):
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def build_model(resolved: ResolvedModel, device: torch.device, dtype: torch.dtype, max_positions: int,
                seed: int) -> LlamaForCausalLM:
    """Allocate the model directly on `device` in `dtype`, then load or randomly fill its weights."""
    with _default_dtype(dtype), torch.device("meta"):
        model = LlamaForCausalLM(resolved.config, max_positions)
    model.to_empty(device=device)
    model.model.rope.build(device)
    if resolved.config.tie_word_embeddings:
        model.lm_head.weight = model.model.embed_tokens.weight
    if resolved.weight_files:
        load_safetensors(model, resolved.weight_files)
    else:
        init_dummy(model, seed)
    return model.eval()


@torch.no_grad()
def init_dummy(model: LlamaForCausalLM, seed: int) -> None:
    """Random weights with the real shapes: normal(0, 0.02) matrices, unit norms, zero biases."""
    device = model.lm_head.weight.device
    generator = torch.Generator(device=device).manual_seed(seed)
    for name, param in model.named_parameters():
        if name.endswith("norm.weight"):
            param.fill_(1.0)
        elif name.endswith(".bias"):
            param.zero_()
        else:
            param.copy_(torch.randn(param.shape, generator=generator, device=device, dtype=torch.float32) * DUMMY_STD)


def _target(model: LlamaForCausalLM, name: str) -> tuple[str, slice | None]:
    """Our parameter and row range for a Hugging Face tensor name (q/k/v and gate/up are fused)."""
    c = model.config
    q, kv, inter = c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim, c.intermediate_size
    fused = {
        "self_attn.q_proj": ("self_attn.qkv_proj", slice(0, q)),
        "self_attn.k_proj": ("self_attn.qkv_proj", slice(q, q + kv)),
        "self_attn.v_proj": ("self_attn.qkv_proj", slice(q + kv, q + 2 * kv)),
        "mlp.gate_proj": ("mlp.gate_up_proj", slice(0, inter)),
        "mlp.up_proj": ("mlp.gate_up_proj", slice(inter, 2 * inter)),
    }
    for hf, (ours, rows) in fused.items():
        marker = f".{hf}."
        if marker in name:
            return name.replace(marker, f".{ours}."), rows
    return name, None


class _Coverage:
    """Where each checkpoint tensor goes in our model (checked), and how much of every parameter the
    checkpoint has covered so far."""

    def __init__(self, model: LlamaForCausalLM) -> None:
        self.model = model
        self.params = dict(model.named_parameters(remove_duplicate=False))
        self.covered = {name: 0 for name in dict(model.named_parameters())}

    def destination(self, path: str, name: str, shape: tuple[int, ...]) -> torch.Tensor | None:
        """The parameter (or its rows) the tensor `name` of file `path` fills; None: not loaded."""
        if name.endswith(IGNORED_SUFFIXES):
            return None
        if name == "lm_head.weight" and self.model.config.tie_word_embeddings:
            return None
        target, rows = _target(self.model, name)
        if target not in self.params:
            raise CheckpointError(f"{path}: tensor {name!r} does not belong to a {self.model.config.architecture}")
        param = self.params[target]
        dest = param if rows is None else param[rows]
        if tuple(shape) != tuple(dest.shape):
            raise CheckpointError(
                f"{path}: tensor {name!r} has shape {tuple(shape)}, the config implies {tuple(dest.shape)}")
        self.covered[target] += dest.numel()
        return dest

    def check_complete(self, folder: str) -> None:
        missing = [name for name, count in self.covered.items() if count != self.params[name].numel()]
        if missing:
            shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            raise CheckpointError(f"checkpoint {folder} lacks weights for {shown}")


_checked: set[str] = set()  # checkpoints whose headers passed check_weights, by config and file stats


def check_weights(resolved: ResolvedModel) -> None:
    """Check a checkpoint against its config from the safetensors headers alone (no tensor data is
    read): every file opens whole (a truncated one does not), every tensor belongs to the model with
    the shape the config implies, and every parameter is covered. A problem is a CheckpointError
    naming the file, raised before any job runs or writes anything."""
    files = resolved.weight_files
    if not files:
        return
    try:
        key = repr((resolved.config, [(f, os.stat(f).st_size, os.stat(f).st_mtime_ns) for f in files]))
    except OSError as exc:
        raise CheckpointError(f"cannot read {exc.filename}: {exc.strerror}") from None
    if key in _checked:
        return
    with _default_dtype(torch.float32), torch.device("meta"):
        model = LlamaForCausalLM(resolved.config, 1)
    if resolved.config.tie_word_embeddings:
        model.lm_head.weight = model.model.embed_tokens.weight
    coverage = _Coverage(model)
    for path in files:
        try:
            with safe_open(path, framework="pt", device="cpu") as fh:
                for name in fh.keys():
                    coverage.destination(path, name, tuple(fh.get_slice(name).get_shape()))
        except (SafetensorError, OSError) as exc:
            raise CheckpointError(f"cannot read {path} (truncated or not safetensors?): {exc}") from None
    coverage.check_complete(os.path.dirname(files[0]))
    _checked.add(key)


@torch.no_grad()
def load_safetensors(model: LlamaForCausalLM, files: tuple[str, ...]) -> None:
    coverage = _Coverage(model)
    for path in files:
        try:
            with safe_open(path, framework="pt", device=str(model.lm_head.weight.device)) as fh:
                for name in fh.keys():
                    dest = coverage.destination(path, name, tuple(fh.get_slice(name).get_shape()))
                    if dest is not None:
                        dest.copy_(fh.get_tensor(name))
        except (SafetensorError, OSError) as exc:
            raise CheckpointError(f"cannot read {path} (truncated or not safetensors?): {exc}") from None
    coverage.check_complete(os.path.dirname(files[0]))
