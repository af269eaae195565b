"""When requests reach the engine: the arrival schedule, and the client loop that keeps to it.

Offline (rate inf, the original suite's mode) every request arrives as the iteration starts. At a
finite rate R, arrivals are a Poisson process: exponential gaps of mean 1/R, the first request at
time 0 (as vLLM's benchmark_serving). A request's arrival is when the schedule says it arrives,
whether or not the engine can take it then, so TTFT counts every wait. With a concurrency limit C,
at most C requests are in the engine (submitted, not finished); later arrivals wait in the client
queue. Each request records when the client submitted it (add_request) and when the engine
admitted it (the start of the step that scheduled its first prefill chunk), so the wait before the
first prefill is known and split into its client and engine parts.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from time import monotonic_ns, sleep

import numpy as np

from hybench.engine import LLMEngine, SamplingParams, Sequence
from hybench.engine.sequence import Status

OFFLINE = math.inf
# A trailing non-zero word keeps these draws apart from the prompts' of the same seed.
_ARRIVALS_STREAM = 0x61727276


def arrival_offsets_ns(num_requests: int, rate: float, seed: int, iteration: int) -> np.ndarray:
    """When each request arrives, in ns after the iteration starts (non-decreasing).

    Gaps are drawn at unit rate and scaled by 1/rate, so one seed gives the same pattern of bursts
    and lulls at every rate: a sweep over rates compares like with like."""
    if math.isinf(rate):
        return np.zeros(num_requests, dtype=np.int64)
    rng = np.random.default_rng([seed, iteration, _ARRIVALS_STREAM])
    gaps_s = rng.standard_exponential(max(num_requests - 1, 0)) / rate
    return np.round(np.concatenate([[0.0], np.cumsum(gaps_s)])[:num_requests] * 1e9).astype(np.int64)


@dataclass(slots=True)
class Submitted:
    """One request as the client handled it; `seq` carries its arrival and token times."""

    seq: Sequence
    submitted_ns: int  # the client called add_request
    admitted_ns: int | None = None  # the engine step that scheduled its first prefill chunk began


def run_schedule(engine: LLMEngine, prompts: list[list[int]], sampling: SamplingParams, arrivals_ns: np.ndarray,
                 max_concurrency: int | None, on_finish: Callable[[Sequence], object]) -> list[Submitted]:
    """Submit prompt i at monotonic time arrivals_ns[i] (or as soon as fewer than `max_concurrency`
    requests are in the engine) and step the engine until every request is done.

    Between steps, every request that has arrived is submitted while there is room. When the engine
    has nothing to do, the loop sleeps until the next arrival instead of spinning. Returns the
    requests in prompt order."""
    submitted: list[Submitted] = []
    awaiting_admission: list[Submitted] = []
    in_engine = 0
    while len(submitted) < len(prompts) or engine.has_work:
        now = monotonic_ns()
        while (len(submitted) < len(prompts) and arrivals_ns[len(submitted)] <= now
               and (max_concurrency is None or in_engine < max_concurrency)):
            i = len(submitted)
            seq = engine.add_request(prompts[i], sampling, arrival_ns=int(arrivals_ns[i]))
            submitted.append(Submitted(seq, monotonic_ns()))
            awaiting_admission.append(submitted[-1])
            in_engine += 1
        if not engine.has_work:  # idle: the next request has not arrived yet
            sleep(max(int(arrivals_ns[len(submitted)]) - monotonic_ns(), 0) / 1e9)
            continue
        step_start = monotonic_ns()
        finished = engine.step()
        for request in awaiting_admission:
            if request.seq.status is not Status.WAITING:
                request.admitted_ns = step_start
        awaiting_admission = [r for r in awaiting_admission if r.admitted_ns is None]
        in_engine -= len(finished)
        for seq in finished:
            on_finish(seq)
    return submitted
