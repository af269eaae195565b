"""How many sequences fit: the KV pool budget divided by one sequence's cost (DESIGN.md section 4)."""
from __future__ import annotations

from dataclasses import dataclass

from hybench.engine.config import CPU_DEFAULT_KV_GIB, EngineConfig
from hybench.engine.errors import EngineConfigError
from hybench.engine.memory import GIB, SequenceMemory


class KVPoolTooSmall(EngineConfigError):
    """Not even one sequence fits in the memory left for the KV pool (an `oom` result)."""


@dataclass(frozen=True, slots=True)
class KVPlan:
    budget_bytes: int  # memory the pool may take
    row_bytes: int  # one sequence at full length
    num_rows: int  # sequences that run at once: the fit, capped by max_num_seqs

    @property
    def fit(self) -> int:
        """Sequences the budget holds, whatever max_num_seqs allows: what the configs compare on."""
        return self.budget_bytes // self.row_bytes

    @property
    def pool_bytes(self) -> int:
        return self.row_bytes * self.num_rows


def plan_kv_pool(config: EngineConfig, memory: SequenceMemory, budget_bytes: int | None = None) -> KVPlan:
    """`budget_bytes` is what the device leaves (measured by the caller on a GPU); an explicit
    kv_cache_gib wins, and a CPU without either gets CPU_DEFAULT_KV_GIB."""
    if config.kv_cache_gib is not None:
        budget_bytes = int(config.kv_cache_gib * GIB)
    elif budget_bytes is None:
        budget_bytes = int(CPU_DEFAULT_KV_GIB * GIB)
    row_bytes = memory.sequence_bytes(config.kv_capacity)
    fit = max(0, budget_bytes) // row_bytes
    if fit < 1:
        left = (f"only {_size(budget_bytes)} is left for it" if budget_bytes > 0
                else "no memory is left for it after the weights and activations")
        raise KVPoolTooSmall(
            f"one {config.attention} sequence of {config.max_model_len} tokens needs {_size(row_bytes)} of KV "
            f"cache and {left}: lower --input-lengths or --output-len, or raise --kv-cache-gib "
            "(--gpu-memory-utilization on a GPU)")
    return KVPlan(budget_bytes, row_bytes, min(config.max_num_seqs, fit))


def _size(num_bytes: int) -> str:
    """Bytes in the unit that shows them: a small pool reads 12.0 MiB, not 0.012 GiB."""
    for unit, size in (("GiB", GIB), ("MiB", 1024**2), ("KiB", 1024)):
        if num_bytes >= size:
            return f"{num_bytes / size:.1f} {unit}"
    return f"{num_bytes} B"


GRAPH_POOL_RESERVE = 256 * 1024**2  # decode graphs' own buffers, on top of the logits they keep


def gpu_budget_bytes(config: EngineConfig, activation_peak: int, max_batch: int) -> int:
    """vLLM's rule: total * gpu_memory_utilization, less weights (what torch holds now), the
    activation peak of a profiled forward at the full token budget, the CUDA graph pool and
    memory used outside torch (CUDA context, other processes)."""
    import torch

    device = config.device
    torch.cuda.synchronize(device)
    free, total = torch.cuda.mem_get_info(device)
    non_torch = (total - free) - torch.cuda.memory_reserved(device)
    weights = torch.cuda.memory_allocated(device)
    graphs = 0 if config.enforce_eager else GRAPH_POOL_RESERVE + 2 * max_batch * config.model.vocab_size * 4
    return int(total * config.gpu_memory_utilization) - weights - activation_peak - graphs - max(0, non_torch)
