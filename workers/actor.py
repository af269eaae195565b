"""The Ray actor that owns one device: it keeps the last model loaded and runs one job at a time.

Ray pins a GPU actor through CUDA_VISIBLE_DEVICES, so a job's device `auto` resolves to that GPU;
without a GPU the same actor runs the engine on CPU. The actor writes each job's Parquet files
itself (DESIGN.md section 6) and hands the driver only the one-row summary.
"""
from __future__ import annotations

import os
import socket

import ray
import torch

from hybench.workers.job import ModelCache, load_model, run_job
from hybench.workers.job_spec import JobSpec
from hybench.workers.store import ResultStore

# Set in the driver's environment, these reach every actor on every node (the driver passes them in the
# actors' runtime env): local Ray processes inherit the driver's environment, but the workers of a
# cluster's other nodes do not. They keep NVLink multicast off in NCCL, PyTorch and NVSHMEM, as shared
# multi-GPU hosts ask.
FORWARDED_ENV = ("NCCL_NVLS_ENABLE", "TORCH_SYMM_MEM_DISABLE_MULTICAST", "NVSHMEM_DISABLE_NVLS")


class JobWorker:
    def __init__(self, results: str, threads: int) -> None:
        # Its CPU share, so that the actors of one node do not oversubscribe its cores.
        torch.set_num_threads(threads)
        self._store = ResultStore(results)
        self._models = ModelCache()

    def placement(self) -> dict:
        """Where Ray placed this actor. Answering also tells the driver the actor is up."""
        return {
            "node_id": ray.get_runtime_context().get_node_id(),
            "hostname": socket.gethostname(),
            "pid": os.getpid(),
            "gpu_ids": [str(g) for g in ray.get_gpu_ids()],
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "torch_threads": torch.get_num_threads(),
            "env": {name: os.environ.get(name) for name in FORWARDED_ENV},
        }

    def load(self, spec: JobSpec) -> None:
        """Load the job's model ahead of `run`, so the driver's --job-timeout counts the job alone."""
        load_model(spec, self._models)

    def run(self, spec: JobSpec) -> dict:
        return run_job(spec, self._store, self._models, progress=False)


# Ray restarts a lost actor (on another node if its own is gone); the driver, not Ray, decides
# whether the job that was running on it runs again.
RemoteJobWorker = ray.remote(max_restarts=-1, max_task_retries=0)(JobWorker)
