"""The inference engine: Llama-family model, three attention configs, windowed KV cache, SSM
history branch, continuous-batching scheduler and swappable kernels."""
from hybench.engine.config import ATTENTION_CONFIGS, EngineConfig, resolve_device, resolve_dtype
from hybench.engine.errors import CheckpointError, EngineConfigError
from hybench.engine.kv_budget import KVPoolTooSmall
from hybench.engine.llm_engine import LLMEngine, StepRecord
from hybench.engine.loader import ResolvedModel, build_model, resolve_model
from hybench.engine.model_config import PRESETS, ModelConfig
from hybench.engine.sequence import SamplingParams, Sequence

__all__ = [
    "ATTENTION_CONFIGS", "CheckpointError", "EngineConfig", "EngineConfigError", "KVPoolTooSmall", "LLMEngine",
    "ModelConfig", "PRESETS", "ResolvedModel", "SamplingParams", "Sequence", "StepRecord", "build_model",
    "resolve_device", "resolve_dtype", "resolve_model",
]
