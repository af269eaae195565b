"""Continuous batching under a small pool: every request finishes with exactly its length, none is
lost, the pool is never exceeded, and batching does not change what a sequence generates."""
from __future__ import annotations

import random

import pytest
import torch

from hybench.engine import EngineConfig, LLMEngine, SamplingParams, build_model
from hybench.engine.loader import ResolvedModel
from hybench.engine.memory import GIB, SequenceMemory
from engine_harness import TINY


@pytest.fixture(scope="module")
def model():
    return build_model(ResolvedModel(TINY, ()), torch.device("cpu"), torch.float32, 512, seed=0)


def _engine(model, kind, rows, **kw):
    cfg = EngineConfig(model=TINY, attention=kind, window=10, max_model_len=120, max_num_batched_tokens=32, **kw)
    row_bytes = SequenceMemory.of(cfg).sequence_bytes(cfg.kv_capacity)
    cfg.kv_cache_gib = (rows * row_bytes + row_bytes // 2) / GIB  # room for `rows` sequences, not one more
    return LLMEngine(model, cfg)


def _requests(n, seed=0):
    rng = random.Random(seed)
    return [([rng.randrange(TINY.vocab_size) for _ in range(rng.randint(1, 90))], rng.randint(1, 25)) for _ in range(n)]


@pytest.mark.parametrize("kind", ["full", "sliding", "hybrid"])
def test_mixed_lengths_small_pool(model, kind):
    engine = _engine(model, kind, rows=3)
    assert engine.plan.num_rows == 3
    reqs = _requests(25)
    seqs = [engine.add_request(p, SamplingParams(max_tokens=n)) for p, n in reqs]
    finished, max_running = [], 0
    while engine.has_work:
        finished += engine.step()
        running = len(engine.scheduler.running)
        max_running = max(max_running, running)
        assert running <= 3
        assert engine.rows.used_bytes()[0] <= engine.plan.pool_bytes
    assert sorted(s.request_id for s in finished) == [s.request_id for s in seqs]  # none lost, none twice
    for seq, (prompt, n) in zip(seqs, reqs):
        assert len(seq.output) == n and len(seq.token_ns) == n
        assert seq.token_ns == sorted(seq.token_ns)
    assert max_running == 3 and engine.rows.peak_bytes <= engine.plan.pool_bytes
    assert engine.rows.num_free == 3
    assert any(s.is_prefill and s.num_tokens == 32 for s in engine.steps)  # long prompts were chunked


@pytest.mark.parametrize("kind", ["full", "hybrid"])
def test_batching_does_not_change_greedy_outputs(model, kind):
    reqs = _requests(8, seed=1)
    batched = _engine(model, kind, rows=4)
    seqs = [batched.add_request(p, SamplingParams(max_tokens=n)) for p, n in reqs]
    batched.run_until_done()
    for seq, (prompt, n) in zip(seqs, reqs):
        solo = _engine(model, kind, rows=1)
        assert solo.generate([prompt], SamplingParams(max_tokens=n))[0].output == seq.output


def test_sampling_is_seeded(model):
    reqs = _requests(4, seed=2)
    params = SamplingParams(max_tokens=12, temperature=1.0, top_p=0.9)
    outs = [[s.output for s in _engine(model, "sliding", rows=4, seed=seed).generate([p for p, _ in reqs], params)]
            for seed in (7, 7, 8)]
    assert outs[0] == outs[1] and outs[0] != outs[2]
