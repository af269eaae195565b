"""What the job ran on: device name, driver, memory use, for the jobs row."""
from __future__ import annotations

import platform

import torch

from hybench.engine.memory import GIB


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine() or "cpu"


def driver_version(device: torch.device) -> str | None:
    if device.type != "cuda":
        return None
    try:
        import pynvml

        pynvml.nvmlInit()
        return pynvml.nvmlSystemGetDriverVersion()
    except Exception:  # noqa: BLE001 - NVML is optional
        return None


def nvml_used_gib(device: torch.device) -> float | None:
    """Memory the whole GPU has in use (all processes), as nvidia-smi shows it."""
    if device.type != "cuda":
        return None
    try:
        free, total = torch.cuda.mem_get_info(device)
    except RuntimeError:
        return None
    return (total - free) / GIB


def peak_torch_gib(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / GIB
