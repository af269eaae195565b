"""EngineConfig: how one engine instance runs a model (attention layout, window, budgets)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from hybench.engine.errors import EngineConfigError
from hybench.engine.model_config import ModelConfig

ATTENTION_CONFIGS = ("full", "sliding", "hybrid")
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
CPU_DEFAULT_KV_GIB = 2.0


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        resolved = None
    if resolved is None or resolved.type not in ("cpu", "cuda"):
        raise EngineConfigError(f"unknown device {device!r} (use cpu, cuda or cuda:N)")
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise EngineConfigError(f"device {device!r} asked for, but no CUDA GPU is available")
    return resolved


def resolve_dtype(dtype: str, model: ModelConfig, device: torch.device) -> torch.dtype:
    """auto: float32 on CPU (reduced precision is slow there), else the checkpoint's dtype."""
    if dtype != "auto":
        if dtype not in DTYPES:
            raise EngineConfigError(f"unknown dtype {dtype!r} (use auto, {', '.join(DTYPES)})")
        return DTYPES[dtype]
    if device.type == "cpu":
        return torch.float32
    return DTYPES.get(model.torch_dtype or "", torch.bfloat16)


@dataclass(slots=True)
class EngineConfig:
    model: ModelConfig
    attention: str = "full"
    window: int = 4096
    max_model_len: int = 2048
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 8192
    gpu_memory_utilization: float = 0.9
    kv_cache_gib: float | None = None
    enforce_eager: bool = False
    enable_prefix_caching: bool = False
    prefix_block_size: int = 16
    seed: int = 42
    device: torch.device = torch.device("cpu")
    dtype: torch.dtype = torch.float32

    def __post_init__(self) -> None:
        if self.attention not in ATTENTION_CONFIGS:
            raise EngineConfigError(
                f"unknown attention config {self.attention!r} (use {', '.join(ATTENTION_CONFIGS)})")
        if self.window < 1:
            raise EngineConfigError(f"sliding window must be at least 1, got {self.window}")
        if not 1 <= self.max_model_len <= self.model.max_position_embeddings:
            raise EngineConfigError(
                f"max model length {self.max_model_len} is outside 1..{self.model.max_position_embeddings}, "
                f"the positions {self.model.name} supports")
        if self.prefix_block_size < 1:
            raise EngineConfigError(f"prefix block size must be at least 1, got {self.prefix_block_size}")
        if self.max_num_seqs < 1 or self.max_num_batched_tokens < 1:
            raise EngineConfigError("max_num_seqs and max_num_batched_tokens must be at least 1")
        if not 0.0 < self.gpu_memory_utilization <= 1.0:
            raise EngineConfigError(
                f"gpu memory utilization must be in (0, 1], got {self.gpu_memory_utilization}")

    @property
    def windowed(self) -> bool:
        return self.attention in ("sliding", "hybrid")

    @property
    def kv_capacity(self) -> int:
        """KV slots one sequence holds at most: a ring of W for windowed configs."""
        return min(self.window, self.max_model_len) if self.windowed else self.max_model_len
