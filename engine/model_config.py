"""ModelConfig: the shape of a Llama-family decoder, read from a Hugging Face config.json."""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from typing import Any

from hybench.engine.bounded_input import InputLimitError, load_json
from hybench.engine.errors import CheckpointError, EngineConfigError

# Architectures whose weights and math this engine implements, and whether q/k/v carry a bias.
SUPPORTED_ARCHITECTURES = {
    "LlamaForCausalLM": None,  # None: from the config's attention_bias (default False)
    "MistralForCausalLM": False,
    "Qwen2ForCausalLM": True,
}
SUPPORTED_ROPE_TYPES = ("default", "llama3", "linear")
# (field, config.json key, largest value accepted) of the sizes that must be positive integers. The
# bounds sit far above any released model (vocabularies ~256k, hidden sizes ~16k, a few hundred
# layers) and far below sizes whose allocation would be terabytes: a typo or a hostile file is
# refused up front instead of failing in the allocator.
_POSITIVE_INTS = (("vocab_size", "vocab_size", 1 << 22), ("hidden_size", "hidden_size", 1 << 17),
                  ("intermediate_size", "intermediate_size", 1 << 20), ("num_layers", "num_hidden_layers", 1024),
                  ("num_heads", "num_attention_heads", 1024), ("num_kv_heads", "num_key_value_heads", 1024),
                  ("head_dim", "head_dim", 1024), ("max_position_embeddings", "max_position_embeddings", 1 << 24))


@dataclass(frozen=True, slots=True)
class ModelConfig:
    name: str
    architecture: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    max_position_embeddings: int
    tie_word_embeddings: bool
    qkv_bias: bool
    o_bias: bool
    torch_dtype: str | None
    rope_scaling: dict[str, Any] = field(default_factory=dict)
    remote_code: tuple[str, ...] = ()  # the classes config.json's auto_map asks to import from the checkpoint

    def __post_init__(self) -> None:
        for field_name, key, largest in _POSITIVE_INTS:
            value = getattr(self, field_name)
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= largest:
                raise EngineConfigError(
                    f"{self.name}: config.json: {key} must be an integer in 1..{largest}, got {value!r}")
        if not 0 < self.rope_theta < math.inf:
            raise EngineConfigError(
                f"{self.name}: config.json: rope_theta must be a positive number, got {self.rope_theta}")
        if not 0 <= self.rms_norm_eps < math.inf:
            raise EngineConfigError(
                f"{self.name}: config.json: rms_norm_eps must be a number >= 0, got {self.rms_norm_eps}")
        if self.num_heads % self.num_kv_heads:
            raise EngineConfigError(
                f"{self.name}: num_attention_heads ({self.num_heads}) is not a multiple of "
                f"num_key_value_heads ({self.num_kv_heads})")
        rope_type = self.rope_scaling.get("rope_type", "default")
        if rope_type not in SUPPORTED_ROPE_TYPES:
            raise EngineConfigError(
                f"{self.name}: rope type {rope_type!r} is not supported "
                f"(supported: {', '.join(SUPPORTED_ROPE_TYPES)})")

    @property
    def num_params(self) -> int:
        """Parameters of the pretrained model (embeddings counted once when tied)."""
        h, d = self.hidden_size, self.head_dim
        attn = h * (self.num_heads + 2 * self.num_kv_heads) * d + self.num_heads * d * h
        attn += (self.num_heads + 2 * self.num_kv_heads) * d if self.qkv_bias else 0
        mlp = 3 * h * self.intermediate_size
        per_layer = attn + mlp + 2 * h
        embed = self.vocab_size * h * (1 if self.tie_word_embeddings else 2)
        return self.num_layers * per_layer + embed + h

    @classmethod
    def from_dict(cls, raw: dict[str, Any], name: str) -> "ModelConfig":
        archs = raw.get("architectures") or [f"{str(raw.get('model_type', '?')).capitalize()}ForCausalLM"]
        if not isinstance(archs, list) or not all(isinstance(a, str) for a in archs):
            raise CheckpointError(f"{name}: config.json: architectures must be a list of names, got {archs!r}")
        arch = archs[0]
        if arch not in SUPPORTED_ARCHITECTURES:
            raise EngineConfigError(
                f"{name}: architecture {arch} is not supported "
                f"(supported: {', '.join(SUPPORTED_ARCHITECTURES)})")
        try:
            hidden = _int(raw["hidden_size"], "hidden_size")
            heads = _int(raw["num_attention_heads"], "num_attention_heads")
            if not raw.get("head_dim") and heads > 0 and hidden % heads:
                raise EngineConfigError(f"{name}: config.json: hidden_size ({hidden}) is not a multiple of "
                                        f"num_attention_heads ({heads}) and no head_dim is given")
            bias = SUPPORTED_ARCHITECTURES[arch]
            attention_bias = bool(raw.get("attention_bias", False))
            # transformers 5 folds rope_theta and rope_scaling into rope_parameters.
            rope = dict(raw.get("rope_parameters") or raw.get("rope_scaling") or {})
            if "type" in rope and "rope_type" not in rope:
                rope["rope_type"] = rope.pop("type")
            theta = float(rope.pop("rope_theta", raw.get("rope_theta", 10000.0)))
            return cls(
                name=name,
                architecture=arch,
                vocab_size=_int(raw["vocab_size"], "vocab_size"),
                hidden_size=hidden,
                intermediate_size=_int(raw["intermediate_size"], "intermediate_size"),
                num_layers=_int(raw["num_hidden_layers"], "num_hidden_layers"),
                num_heads=heads,
                num_kv_heads=_int(raw.get("num_key_value_heads") or heads, "num_key_value_heads"),
                head_dim=_int(raw.get("head_dim") or hidden // heads, "head_dim"),
                rms_norm_eps=float(raw.get("rms_norm_eps", 1e-6)),
                rope_theta=theta,
                max_position_embeddings=_int(raw.get("max_position_embeddings", 2048), "max_position_embeddings"),
                tie_word_embeddings=bool(raw.get("tie_word_embeddings", False)),
                qkv_bias=attention_bias if bias is None else bias,
                o_bias=attention_bias if bias is None else False,
                torch_dtype=_optional_str(raw.get("torch_dtype") or raw.get("dtype"), "torch_dtype"),
                rope_scaling=rope,
                remote_code=_auto_map_classes(raw.get("auto_map")),
            )
        except KeyError as exc:
            raise CheckpointError(f"{name}: config.json has no {exc.args[0]!r}") from None
        except EngineConfigError:
            raise
        except (TypeError, ValueError, ZeroDivisionError, OverflowError) as exc:
            raise CheckpointError(f"{name}: config.json has a malformed value: {exc}") from None

    @classmethod
    def from_file(cls, path: str, name: str) -> "ModelConfig":
        try:
            raw = load_json(path, "config")
        except InputLimitError as exc:
            raise CheckpointError(f"{path}: {exc}") from None
        except OSError as exc:
            raise CheckpointError(f"cannot read {path}: {exc.strerror}") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CheckpointError(f"{path} is not valid JSON: {exc}") from None
        if not isinstance(raw, dict):
            raise CheckpointError(f"{path} is not a JSON object")
        return cls.from_dict(raw, name)


def _int(value: Any, key: str) -> int:
    """An integer size as written: 64 or 64.0, never 64.5 truncated to 64 nor "64"."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{key} must be an integer, got {value!r}")
    return value


def _auto_map_classes(auto_map: Any) -> tuple[str, ...]:
    """The checkpoint classes an auto_map names (a dict of class or [class, class] entries)."""
    if auto_map is None:
        return ()
    if not isinstance(auto_map, dict):
        raise TypeError(f"auto_map must be an object, got {auto_map!r}")
    entries = [v for value in auto_map.values() for v in (value if isinstance(value, list) else [value])]
    return tuple(str(v) for v in entries if v is not None)


def _optional_str(value: Any, key: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise TypeError(f"{key} must be a string, got {value!r}")
    return value


PRESET_DIR = os.path.join(os.path.dirname(__file__), "presets")
# Model ids that resolve to a config shipped with the project, so they run offline with dummy weights.
PRESETS = {
    "tiny-llama": "tiny-llama.json",
    "meta-llama/Llama-3.2-1B": "Llama-3.2-1B.json",
    "meta-llama/Llama-3.2-3B": "Llama-3.2-3B.json",
    "meta-llama/Llama-3.1-8B": "Llama-3.1-8B.json",
    "mistralai/Mistral-7B-v0.1": "Mistral-7B-v0.1.json",
    "tiny-recall": "tiny-recall/config.json",
}
# Presets trained for a quality measure, each a checkpoint folder (config.json + safetensors) shipped in
# the package, and the window W each was trained to be measured at (full recalls at 4W, sliding cannot
# beyond W).
TRAINED_PRESET_WINDOWS = {"tiny-recall": 32}


def preset_config(model: str) -> ModelConfig | None:
    filename = PRESETS.get(model)
    return None if filename is None else ModelConfig.from_file(os.path.join(PRESET_DIR, filename), model)


def trained_preset_folder(model: str) -> str | None:
    """The checkpoint folder a trained preset ships as; None for the shape-only presets."""
    if model not in TRAINED_PRESET_WINDOWS:
        return None
    return os.path.join(PRESET_DIR, os.path.dirname(PRESETS[model]))
