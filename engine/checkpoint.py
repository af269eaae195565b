"""Model resolution: which config and which safetensors files a model name stands for.

A local folder, a Hugging Face id (a local snapshot, else a download when online) or a built-in
preset. Kept apart from weight loading, and free of torch, so that the data and eval-text commands
can resolve a model's vocabulary without loading the engine.
"""
from __future__ import annotations

import glob
import os
from dataclasses import dataclass

from hybench.engine.bounded_input import load_json
from hybench.engine.errors import CheckpointError, EngineConfigError
from hybench.engine.hub import hub_online
from hybench.engine.model_config import PRESETS, ModelConfig, preset_config, trained_preset_folder

INDEX_FILE = "model.safetensors.index.json"


@dataclass(frozen=True, slots=True)
class ResolvedModel:
    config: ModelConfig
    weight_files: tuple[str, ...]  # empty for dummy weights


def resolve_model(model: str, load_format: str = "auto") -> ResolvedModel:
    """Find a model's config and (unless dummy) its safetensors files."""
    if os.path.isdir(model):
        if not os.path.isfile(os.path.join(model, "config.json")):
            raise CheckpointError(f"model folder {model} has no config.json (a checkpoint folder holds config.json "
                                  "and safetensors weights)")
        config = ModelConfig.from_file(os.path.join(model, "config.json"), model)
        return ResolvedModel(config, () if load_format == "dummy" else safetensors_files(model))
    preset = preset_config(model)
    # A built-in preset that is not a Hub id has no weights anywhere (tiny-llama: auto means dummy)
    # or ships its own (tiny-recall).
    if preset is not None and (load_format == "dummy" or "/" not in model):
        folder = trained_preset_folder(model)
        return ResolvedModel(preset, () if folder is None or load_format == "dummy" else safetensors_files(folder))
    folder = _hub_snapshot(model)
    if folder is None:
        if preset is not None:
            raise EngineConfigError(
                f"no weights for {model} are reachable (offline, or gated on the Hub); "
                "use --load-format dummy for random weights of the same shape")
        raise EngineConfigError(
            f"unknown model {model!r}: not a local folder, not reachable on the Hugging Face Hub, and not "
            f"a preset ({', '.join(PRESETS)})")
    config = ModelConfig.from_file(os.path.join(folder, "config.json"), model)
    return ResolvedModel(config, () if load_format == "dummy" else safetensors_files(folder))


def _hub_snapshot(model_id: str) -> str | None:
    """A local snapshot of a Hub repo's config and safetensors, or None when unreachable."""
    if model_id.count("/") > 1 or model_id.startswith((".", "/")):
        return None
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        return None
    patterns = ["config.json", "*.safetensors", INDEX_FILE]
    for local_only in (True, False):
        if not local_only and not hub_online():
            return None
        try:
            return snapshot_download(model_id, allow_patterns=patterns, local_files_only=local_only)
        except Exception:  # noqa: BLE001 - any hub failure means "not reachable" here
            continue
    return None


def safetensors_files(folder: str) -> tuple[str, ...]:
    index = os.path.join(folder, INDEX_FILE)
    if os.path.exists(index):
        try:
            names = sorted(set(load_json(index, "index")["weight_map"].values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CheckpointError(f"{index} is malformed: {exc}") from None
        files = [os.path.join(folder, name) for name in names]
        missing = [f for f in files if not os.path.exists(f)]
        if missing:
            raise CheckpointError(f"{index} lists shards that are missing: {', '.join(missing)}")
        return tuple(files)
    files = sorted(glob.glob(os.path.join(folder, "*.safetensors")))
    if not files:
        pickles = glob.glob(os.path.join(folder, "*.bin")) + glob.glob(os.path.join(folder, "*.pt"))
        hint = " (pickle weights such as .bin are never loaded)" if pickles else ""
        raise CheckpointError(f"no .safetensors weights in {folder}{hint}; use --load-format dummy for random weights")
    return tuple(files)
