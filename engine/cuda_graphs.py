"""Decode steps captured as CUDA graphs, one per batch-size bucket, and replayed.

A decode step launches a few hundred small kernels; replaying a graph removes their launch cost,
which at batch 1 is most of the step. A batch runs in the smallest bucket that holds it: its
inputs arrive as the runner's two packed tensors, padded with entries that touch only a scratch
cache row, and are copied into the graphs' static buffers in two copies.
"""
from __future__ import annotations

import torch

from hybench.engine.llama import LlamaForCausalLM


MAX_CAPTURED_BATCH = 512  # larger decode batches run eagerly: launch cost no longer dominates them


def bucket_sizes(max_batch: int) -> list[int]:
    sizes = [b for b in (1, 2, 4, 8) if b < max_batch] + list(range(16, max_batch, 16))
    return sizes + [max_batch]


class DecodeGraphs:
    def __init__(self, model: LlamaForCausalLM, runner, max_batch: int, scratch_row: int, device: torch.device) -> None:
        self.model = model
        before = torch.cuda.memory_allocated(device)
        max_batch = min(max_batch, MAX_CAPTURED_BATCH)
        self.buckets = bucket_sizes(max_batch)
        self.scratch_row = scratch_row
        n = max_batch
        # One logits buffer that every graph writes into; a buffer per graph would keep
        # sum(buckets) x vocab floats alive (gigabytes at a large vocabulary).
        self.logits = torch.empty((n, model.config.vocab_size), dtype=torch.float32, device=device)
        self.packed64 = torch.zeros((5, n), dtype=torch.long, device=device)
        self.packed32 = torch.zeros((3, n + 1), dtype=torch.int32, device=device)
        self.packed64[2].fill_(scratch_row)
        self.packed64[3].fill_(scratch_row * runner.capacity)
        self.packed32[1].fill_(scratch_row * runner.capacity)
        self.packed32[2].copy_(torch.arange(n + 1, dtype=torch.int32, device=device) * runner.group)
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self._capture(runner, device)
        self.pool_bytes = torch.cuda.memory_allocated(device) - before  # static buffers + graph pool

    @torch.inference_mode()
    def _capture(self, runner, device: torch.device) -> None:
        pool = None
        for b in reversed(self.buckets):  # largest first, so smaller graphs reuse its pool
            ids, ctx = runner.decode_context(self.packed64[:, :b], self.packed32[:, : b + 1])
            self.model(ids, ctx)  # warm up: compile Triton kernels, pick cuBLAS algorithms
            torch.cuda.synchronize(device)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=pool):
                self.logits[:b].copy_(self.model(ids, ctx))
            pool = graph.pool() if pool is None else pool
            self.graphs[b] = graph
        torch.cuda.synchronize(device)

    def fits(self, batch: int) -> bool:
        return batch <= self.buckets[-1]

    def bucket(self, batch: int) -> int:
        return next(size for size in self.buckets if size >= batch)

    def run(self, packed64: torch.Tensor, packed32: torch.Tensor, n: int) -> torch.Tensor:
        """Replay the graph of this bucket (packed64.shape[1]); returns the real entries' logits."""
        b = packed64.shape[1]
        self.packed64[:, :b].copy_(packed64, non_blocking=True)
        self.packed32[:, : b + 1].copy_(packed32, non_blocking=True)
        self.graphs[b].replay()
        return self.logits[:n]
