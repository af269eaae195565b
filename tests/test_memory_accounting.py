"""The analytic per-sequence bytes equal what the KV cache allocates, and windowed rows hold W tokens."""
from __future__ import annotations

import pytest
import torch

from hybench.engine import EngineConfig
from hybench.engine.kv_budget import KVPoolTooSmall, plan_kv_pool
from hybench.engine.kv_cache import KVCache
from hybench.engine.memory import GIB, SequenceMemory
from hybench.engine.model_config import preset_config
from engine_harness import TINY


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("kind", ["full", "sliding", "hybrid"])
def test_analytic_bytes_equal_allocated(kind, dtype):
    cfg = EngineConfig(model=TINY, attention=kind, window=24, max_model_len=100, dtype=dtype)
    memory = SequenceMemory.of(cfg)
    cache = KVCache(cfg, num_rows=5)
    assert cache.nbytes == 5 * memory.sequence_bytes(cfg.max_model_len)
    assert cache.state_nbytes == 5 * memory.state_bytes()
    expected_tokens = 100 if kind == "full" else 24
    assert cache.capacity == expected_tokens
    assert cache.kv.shape[3] == expected_tokens  # slots per row: the ring never holds more than W tokens


def test_formulas_of_design_section_4():
    """Per layer: full 2*Hkv*D*2*T; sliding min(T, W); hybrid adds H*D*D*4 state and a dt ring."""
    llama = preset_config("meta-llama/Llama-3.2-1B")
    layers, hkv, d = llama.num_layers, llama.num_kv_heads, llama.head_dim
    t, w = 8192 + 128, 2048
    full = SequenceMemory.of(EngineConfig(model=llama, attention="full", max_model_len=t, dtype=torch.bfloat16))
    sliding = SequenceMemory.of(EngineConfig(model=llama, attention="sliding", window=w, max_model_len=t,
                                             dtype=torch.bfloat16))
    hybrid = SequenceMemory.of(EngineConfig(model=llama, attention="hybrid", window=w, max_model_len=t,
                                            dtype=torch.bfloat16))
    assert full.sequence_bytes(t) == layers * 2 * hkv * d * 2 * t
    assert sliding.sequence_bytes(t) == layers * 2 * hkv * d * 2 * w
    assert hybrid.sequence_bytes(t) == layers * (2 * hkv * d * 2 * w + hkv * d * d * 4 + hkv * 4 * w)
    # the per-step sums (peak tracking, decode bytes) equal the per-sequence formulas
    counts = [1, w - 1, w, w + 1, t, 37]
    for mem in (full, sliding, hybrid):
        assert mem.held_bytes(counts) == (sum(mem.sequence_bytes(n) for n in counts),
                                          sum(mem.kv_bytes(n) for n in counts))
        assert mem.held_bytes([]) == (0, 0)
    # at input 8192, window 2048 both windowed configs fit >= 3.5x as many sequences in one budget
    budget = 40 * GIB
    rows = {}
    for name, mem, kind in (("full", full, "full"), ("sliding", sliding, "sliding"), ("hybrid", hybrid, "hybrid")):
        cfg = EngineConfig(model=llama, attention=kind, window=w, max_model_len=t, max_num_seqs=10**6,
                           dtype=torch.bfloat16)
        rows[name] = plan_kv_pool(cfg, mem, budget).num_rows
    assert rows["sliding"] >= 3.5 * rows["full"] and rows["hybrid"] >= 3.5 * rows["full"]


def test_pool_that_cannot_hold_one_sequence_is_an_oom():
    cfg = EngineConfig(model=TINY, attention="full", max_model_len=100, kv_cache_gib=1e-9)
    with pytest.raises(KVPoolTooSmall) as raised:
        plan_kv_pool(cfg, SequenceMemory.of(cfg))
    message = str(raised.value)
    assert message.startswith("one full sequence of 100 tokens needs ") and "only 1 B is left" in message
    assert "0.000 GiB" not in message and "--kv-cache-gib" in message and "--input-lengths" in message


def test_fit_is_what_memory_allows_and_rows_are_capped_by_max_num_seqs():
    cfg = EngineConfig(model=TINY, attention="sliding", window=24, max_model_len=100, max_num_seqs=3,
                       kv_cache_gib=0.01)
    memory = SequenceMemory.of(cfg)
    plan = plan_kv_pool(cfg, memory)
    assert plan.fit == int(0.01 * GIB) // memory.sequence_bytes(24) > 3 and plan.num_rows == 3
