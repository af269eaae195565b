"""One on-disk home for every Triton kernel a process builds, and mamba-ssm's autotuning kept there.

Inductor (torch.compile) points TRITON_CACHE_DIR at a folder of its own the first time it builds a
kernel, unless the variable is set. Triton kernels compiled before that moment (hybench's decode
kernels, mamba-ssm's scan) land in Triton's default folder, those after it in Inductor's, and which
comes first differs between a process that compiles and one that finds Inductor's cache warm: every
second process recompiled about 60 kernels (an actor's first job took 53 s instead of 24 s on the
H100 host, docs/benchmarks/multi_gpu_results.md). Setting the variable before anything compiles
gives both one folder. mamba-ssm's chunk scan autotunes on its first call in each process (seconds);
caching those timings on disk also makes every process pick the same configs.
"""
from __future__ import annotations

import os


def pin_triton_caches() -> None:
    """Set TRITON_CACHE_DIR (to Triton's own default) and TRITON_CACHE_AUTOTUNING where the user has
    not; must run before torch.compile builds a kernel and before mamba-ssm's ops are imported."""
    if not os.environ.get("TRITON_CACHE_DIR"):
        home = os.environ.get("TRITON_HOME") or os.path.expanduser("~")
        os.environ["TRITON_CACHE_DIR"] = os.path.join(home, ".triton", "cache")
    os.environ.setdefault("TRITON_CACHE_AUTOTUNING", "1")
