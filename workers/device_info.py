"""What the job ran on: device name, driver, memory use, for the jobs row."""
from __future__ import annotations

import platform
import sys

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


def gpu_uuid(device: torch.device) -> str | None:
    """The GPU's UUID as nvidia-smi prints it (GPU-xxxxxxxx-...), whatever CUDA_VISIBLE_DEVICES renumbered."""
    if device.type != "cuda":
        return None
    try:
        uuid = str(torch.cuda.get_device_properties(device).uuid)
    except (AttributeError, RuntimeError):
        return None
    return uuid if uuid.startswith(("GPU-", "MIG-")) else "GPU-" + uuid


def nvml_used_gib(device: torch.device) -> float | None:
    """Memory the whole GPU has in use (all processes), as nvidia-smi shows it."""
    if device.type != "cuda":
        return None
    try:
        free, total = torch.cuda.mem_get_info(device)
    except RuntimeError:
        return None
    return (total - free) / GIB


def peak_rss_gib() -> float | None:
    """This process's peak resident memory so far (Linux reports KiB, macOS bytes): the memory a CPU job
    can be measured by, since torch keeps no allocator statistics there."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (GIB if sys.platform == "darwin" else GIB / 1024)


def peak_torch_gib(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / GIB


# Dense bf16 tensor-core peaks from the vendors' datasheets, in TFLOP/s: the denominator of MFU.
PEAK_BF16_TFLOPS = {"H100 80GB HBM3": 989.4, "H100 SXM": 989.4, "H200": 989.4, "H100 PCIe": 756.0,
                    "H100 NVL": 835.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10": 125.0}

_copy_bandwidth: dict[str, float] = {}


def peak_tflops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, value in PEAK_BF16_TFLOPS.items():
        if key in name:
            return value
    return None


def copy_bandwidth_gbs(device: torch.device) -> float | None:
    """Measured device-to-device copy bandwidth (bytes read + written per second, GB/s): what a
    memory-bound kernel can reach here, the denominator of MBU. Measured once per process."""
    if device.type != "cuda":
        return None
    key = str(device)
    if key not in _copy_bandwidth:
        src = torch.empty(1 << 30, dtype=torch.uint8, device=device)
        dst = torch.empty_like(src)
        for _ in range(3):
            dst.copy_(src)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        best = float("inf")
        for _ in range(10):
            start.record()
            dst.copy_(src)
            end.record()
            end.synchronize()
            best = min(best, start.elapsed_time(end) / 1e3)
        _copy_bandwidth[key] = 2 * src.numel() / best / 1e9
        del src, dst
        torch.cuda.empty_cache()
    return _copy_bandwidth[key]
