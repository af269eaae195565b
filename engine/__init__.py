"""The inference engine: Llama-family model, three attention configs, windowed KV cache, SSM
history branch, continuous-batching scheduler and swappable kernels.

The names below load on first use (PEP 562), so that importing a light submodule such as
`hybench.engine.bounded_input` (as the store, queries and report do) does not import torch, which
cost every `hybench query` and the sweep's done-check seconds."""
from __future__ import annotations

import importlib

_HOMES = {
    "hybench.engine.config": ("ATTENTION_CONFIGS", "EngineConfig", "resolve_device", "resolve_dtype"),
    "hybench.engine.errors": ("CheckpointError", "EngineConfigError"),
    "hybench.engine.kv_budget": ("KVPoolTooSmall",),
    "hybench.engine.llm_engine": ("LLMEngine", "StepRecord"),
    "hybench.engine.checkpoint": ("ResolvedModel", "resolve_model"),
    "hybench.engine.loader": ("build_model",),
    "hybench.engine.model_config": ("PRESETS", "ModelConfig"),
    "hybench.engine.sequence": ("SamplingParams", "Sequence"),
}
_MODULE_OF = {name: module for module, names in _HOMES.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str):
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_MODULE_OF[name]), name)
