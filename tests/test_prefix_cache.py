"""Prefix caching in all three configs: the same tokens with and without it, hits where the
workload shares prefixes (also prefixes longer than the window), LRU eviction under a small pool."""
from __future__ import annotations

import random

import pytest
import torch

from hybench.engine import EngineConfig, LLMEngine, SamplingParams, build_model
from hybench.engine.loader import ResolvedModel
from hybench.engine.memory import GIB, SequenceMemory
from hybench.engine.prefix_cache import PrefixCache, prefix_hashes
from hybench.engine.row_manager import RowManager
from engine_harness import TINY, open_history


@pytest.fixture(scope="module")
def model():
    """Weights scaled up from the dummy init's 0.02, so greedy tokens depend on the whole context
    (a cache restored wrongly then changes them)."""
    model = build_model(ResolvedModel(TINY, ()), torch.device("cpu"), torch.float32, 512, seed=2)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not name.endswith("norm.weight"):
                p.mul_(8.0)
    return model


def _engine(model, kind, caching, rows=16, budget=64):
    cfg = EngineConfig(model=TINY, attention=kind, window=8, max_model_len=160, max_num_batched_tokens=budget,
                       enable_prefix_caching=caching, prefix_block_size=4)
    row_bytes = SequenceMemory.of(cfg).sequence_bytes(cfg.kv_capacity)
    cfg.kv_cache_gib = (rows * row_bytes + row_bytes // 2) / GIB
    return open_history(LLMEngine(model, cfg))


def _shared_prefix_prompts(num_prefixes, per_prefix, prefix_len, seed=0):
    rng = random.Random(seed)
    prefixes = [[rng.randrange(TINY.vocab_size) for _ in range(prefix_len)] for _ in range(num_prefixes)]
    return [prefixes[i % num_prefixes] + [rng.randrange(TINY.vocab_size) for _ in range(rng.randint(3, 20))]
            for i in range(num_prefixes * per_prefix)]


def _run(engine, prompts, arrive_in_waves=False):
    params = SamplingParams(max_tokens=6)
    if not arrive_in_waves:
        return [s.output for s in engine.generate(prompts, params)]
    seqs = []
    for prompt in prompts:  # one at a time: each request finds the earlier ones' snapshots
        seqs.append(engine.add_request(prompt, params))
        engine.run_until_done()
    return [s.output for s in seqs]


@pytest.mark.parametrize("kind", ["full", "sliding", "hybrid"])
@pytest.mark.parametrize("prefix_len", [6, 37])  # shorter and longer than the window (8)
def test_caching_gives_identical_tokens_and_hits(model, kind, prefix_len):
    prompts = _shared_prefix_prompts(num_prefixes=2, per_prefix=5, prefix_len=prefix_len)
    baseline = _run(_engine(model, kind, caching=False), prompts)
    engine = _engine(model, kind, caching=True)
    assert _run(engine, prompts) == baseline
    stats = engine.prefix_cache.stats
    shared = prefix_len // 4 * 4  # the block-aligned part of the shared prefix
    if shared:
        # all arrive at once: the first of each prefix is snapshotted at the fork point while the
        # others wait, and every later admission of that prefix hits it
        assert stats.hits >= 2 * 3 and stats.hit_tokens >= stats.hits * shared
        assert engine.prefix_cache.num_entries >= 2
    # arriving one by one, the second request of a prefix takes the snapshot and the rest hit
    engine = _engine(model, kind, caching=True)
    assert _run(engine, prompts, arrive_in_waves=True) == baseline


def test_hit_rate_matches_the_workload_structure(model):
    """Identical prompts arriving one after another: all but the first are served from the cache
    up to their last full block before the final token."""
    prompt = list(range(1, 42))  # 41 tokens, blocks of 4: 40 cacheable
    engine = _engine(model, "hybrid", caching=True)
    for _ in range(5):
        engine.add_request(prompt, SamplingParams(max_tokens=2))
    engine.run_until_done()
    stats = engine.prefix_cache.stats
    # the first request snapshots at 40 (the others share it), the next four each reuse 40 tokens
    assert stats.hits == 4 and stats.hit_tokens == 4 * 40 and stats.prompt_tokens == 5 * 41
    assert stats.hit_rate == pytest.approx(160 / 205)


def test_entries_are_evicted_lru_when_rows_run_out():
    rows = RowManager(3, SequenceMemory(1, 1, 4, 4, None, False))
    cache = PrefixCache(rows, block_size=2)
    a, b, c = (prefix_hashes([i] * 5, 2) for i in (1, 2, 3))
    for h in (a, b):
        assert cache.insert(h, 4) is not None
    assert cache.admit(a, 5)[0] is not None  # a is now the most recently used
    assert rows.num_free == 1
    cache.insert(c, 4)
    assert rows.num_free == 0
    assert cache.insert(prefix_hashes([4] * 5, 2), 4) is not None  # evicts b, the least recently used
    assert cache.longest_cached(b) is None and cache.longest_cached(a) is not None


def test_small_pool_with_caching_finishes_everything(model):
    prompts = _shared_prefix_prompts(num_prefixes=3, per_prefix=6, prefix_len=21, seed=3)
    baseline = _run(_engine(model, "sliding", caching=False, rows=3), prompts)
    engine = _engine(model, "sliding", caching=True, rows=3)
    assert _run(engine, prompts) == baseline
    assert engine.rows.num_free + engine.prefix_cache.num_entries == 3


def test_bench_records_hit_rate_and_cache_memory(tmp_path):
    """End to end: a shared-prefix dataset with --enable-prefix-caching; the jobs row carries the
    hit rate the structure implies and the memory the entries held."""
    import pyarrow.parquet as pq

    from hybench.orchestrator.cli import main

    data = tmp_path / "sp.json"
    assert main(["data", "--input-lengths", "64", "--num-prompts", "8", "--pattern", "shared_prefix",
                 "--prefix-len", "48", "--num-prefixes", "2", "--output-file", str(data)]) == 0
    out = tmp_path / "results"
    for caching in ([], ["--enable-prefix-caching"]):
        assert main(["bench", "--model", "tiny-llama", "--config", "hybrid", "--sliding-window-override", "16",
                     "--dataset", str(data), "--input-lengths", "64", "--num-prompts", "8", "--output-len", "3",
                     "--num-warmup-iters", "0", "--num-benchmark-iters", "1", "--max-num-batched-tokens", "128",
                     "--output-dir", str(out), "--no-progress", *caching]) == 0
    jobs = {r["enable_prefix_caching"]: r for r in pq.read_table(out / "jobs").to_pylist()}
    assert jobs[False]["prefix_cache_hit_rate"] is None
    cached = jobs[True]
    # 2 prefixes x 4 prompts: the first of each is snapshotted at 48 tokens, the other 3 reuse them
    assert cached["prefix_cache_hits"] == 6
    assert cached["prefix_cache_hit_rate"] == pytest.approx(6 * 48 / (8 * 64))
    assert cached["prefix_cache_gib"] > 0
