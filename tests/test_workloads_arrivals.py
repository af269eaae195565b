"""Arrival patterns: Poisson schedules at the requested rate, the client loop that keeps to them
(never more than C requests in the engine, no busy-wait), and the waits it records."""
from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from hybench.engine import SamplingParams, build_model
from hybench.engine.loader import ResolvedModel
from hybench.workers import arrivals
from hybench.workers.arrivals import OFFLINE, arrival_offsets_ns, run_schedule
from engine_harness import TINY, make_engine


@pytest.fixture(scope="module")
def model():
    return build_model(ResolvedModel(TINY, ()), torch.device("cpu"), torch.float32, 512, seed=0)


def test_poisson_gaps_follow_the_rate():
    rate, n = 40.0, 10_001
    offsets = arrival_offsets_ns(n, rate, seed=7, iteration=0)
    assert offsets[0] == 0 and np.all(np.diff(offsets) >= 0)
    gaps = np.diff(offsets) / 1e9
    assert gaps.mean() == pytest.approx(1 / rate, rel=0.03)
    # Kolmogorov-Smirnov against Exp(rate): 1.63/sqrt(n) is the 1% critical value.
    x = np.sort(gaps)
    cdf = 1 - np.exp(-rate * x)
    ks = max(np.max(np.arange(1, x.size + 1) / x.size - cdf), np.max(cdf - np.arange(x.size) / x.size))
    assert ks < 1.63 / np.sqrt(x.size)
    # Counts per window of 10 expected arrivals are Poisson: variance ~ mean (index of dispersion 1).
    counts = np.bincount((offsets / 1e9 * rate / 10).astype(int))[:-1]
    assert counts.mean() == pytest.approx(10, rel=0.03)
    assert 0.85 < counts.var() / counts.mean() < 1.15


def test_schedules_are_seeded_and_rates_scale_one_pattern():
    first = arrival_offsets_ns(50, 4.0, seed=1, iteration=2)
    assert np.array_equal(first, arrival_offsets_ns(50, 4.0, seed=1, iteration=2))
    assert not np.array_equal(first, arrival_offsets_ns(50, 4.0, seed=2, iteration=2))
    assert not np.array_equal(first, arrival_offsets_ns(50, 4.0, seed=1, iteration=3))
    assert np.allclose(arrival_offsets_ns(50, 8.0, seed=1, iteration=2), first / 2, atol=1)
    assert not arrival_offsets_ns(7, OFFLINE, seed=1, iteration=0).any()
    assert arrival_offsets_ns(1, 3.0, seed=1, iteration=0).tolist() == [0]


def _prompts(n, length=12):
    rng = np.random.default_rng(0)
    return rng.integers(0, TINY.vocab_size, size=(n, length)).tolist()


def _count_in_engine(engine):
    """Wrap engine.step to record how many requests are in the engine when each step starts."""
    seen, step = [], engine.step

    def counting_step():
        seen.append(len(engine.scheduler.waiting) + len(engine.scheduler.running))
        return step()

    engine.step = counting_step
    return seen


@pytest.mark.parametrize("rate", [OFFLINE, 300.0])
def test_max_concurrency_is_never_exceeded(model, rate):
    engine = make_engine(model, "hybrid", kv_cache_gib=0.01)
    assert engine.plan.num_rows >= 8  # the engine alone would take every request at once
    in_engine = _count_in_engine(engine)
    finished = []
    start = time.monotonic_ns()
    schedule = start + arrival_offsets_ns(8, rate, seed=0, iteration=0)
    done = run_schedule(engine, _prompts(8), SamplingParams(6), schedule, 3, finished.append)
    assert max(in_engine) <= 3 and len(finished) == 8
    assert [r.seq.prompt for r in done] == _prompts(8)  # results in prompt order
    for r, arrival in zip(done, schedule):
        assert r.seq.arrival_ns == arrival <= r.submitted_ns <= r.admitted_ns < r.seq.token_ns[0]
        assert len(r.seq.output) == 6
    if rate == OFFLINE:  # everyone arrives at once: the limit binds, and the last five wait their turn
        assert max(in_engine) == 3
        first_finish = min(r.seq.token_ns[-1] for r in done[:3])
        assert all(r.submitted_ns >= first_finish for r in done[3:])


def test_requests_arrive_on_schedule_and_an_idle_engine_sleeps(model, monkeypatch):
    naps = []

    def recording_sleep(seconds):
        naps.append(seconds)
        time.sleep(seconds)

    monkeypatch.setattr(arrivals, "sleep", recording_sleep)
    engine = make_engine(model, "full", kv_cache_gib=0.01)
    steps = _count_in_engine(engine)
    schedule = time.monotonic_ns() + np.arange(5) * 50_000_000  # one request every 50 ms
    done = run_schedule(engine, _prompts(5), SamplingParams(2), schedule, None, lambda seq: None)
    assert [r.seq.arrival_ns for r in done] == schedule.tolist()
    assert all(r.submitted_ns >= r.seq.arrival_ns for r in done)
    # Each request needs two steps (prefill, one decode) and is done well before the next arrives, so
    # the loop sleeps about once per gap (a busy-wait would spin thousands of times) and steps only
    # when there is work.
    assert 1 <= len(naps) <= 2 * 5 and sum(naps) > 0.05
    assert len(steps) <= 5 * 2 and min(steps) >= 1
