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
    num_rows: int  # sequences that run at once

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
        raise KVPoolTooSmall(
            f"KV pool of {budget_bytes / GIB:.3f} GiB cannot hold one {config.attention} sequence of "
            f"{config.max_model_len} tokens ({row_bytes / GIB:.3f} GiB)")
    return KVPlan(budget_bytes, row_bytes, min(config.max_num_seqs, fit))
