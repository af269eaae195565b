"""Per-request records and the job summary computed from them (DESIGN.md section 5).

Latency percentiles are taken over requests (linear interpolation, as numpy and DuckDB's
quantile_cont), never over batch times. Throughput follows vLLM: (prompt + output tokens) / elapsed.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hybench.workers.intervals import mean_interval
from hybench.workers.records import ITERATION_METRICS

NS_PER_MS = 1e6


@dataclass(frozen=True, slots=True)
class RequestTiming:
    request_id: int
    iteration: int
    warmup: bool
    prompt_tokens: int
    output_tokens: int
    arrival_ns: int
    token_ns: tuple[int, ...]  # when each output token was ready
    submitted_ns: int | None = None  # the client handed it to the engine (None: not tracked, as for --engine hf)
    admitted_ns: int | None = None  # the engine step that began its prefill started


def request_row(t: RequestTiming, epoch_offset_ns: int) -> dict:
    first, finish = t.token_ns[0], t.token_ns[-1]
    itl = np.diff(np.asarray(t.token_ns, dtype=np.float64)) / NS_PER_MS
    e2e = (finish - t.arrival_ns) / NS_PER_MS
    ttft = (first - t.arrival_ns) / NS_PER_MS
    return {
        "iteration": t.iteration,
        "warmup": t.warmup,
        "request_id": t.request_id,
        "prompt_tokens": t.prompt_tokens,
        "output_tokens": t.output_tokens,
        "arrival_ns": t.arrival_ns,
        "first_token_ns": first,
        "finish_ns": finish,
        "arrival_unix_s": (t.arrival_ns + epoch_offset_ns) / 1e9,
        "ttft_ms": ttft,
        "tpot_ms": (e2e - ttft) / (t.output_tokens - 1) if t.output_tokens > 1 else None,
        "e2e_ms": e2e,
        "itl_ms": itl.tolist(),
        "itl_min_ms": float(itl.min()) if itl.size else None,
        "itl_mean_ms": float(itl.mean()) if itl.size else None,
        "itl_max_ms": float(itl.max()) if itl.size else None,
        "queue_ms": _since_arrival(t, t.admitted_ns),
        "client_queue_ms": _since_arrival(t, t.submitted_ns),
    }


def _since_arrival(t: RequestTiming, ns: int | None) -> float | None:
    return None if ns is None else (ns - t.arrival_ns) / NS_PER_MS


def _percentile(values: list[float | None], q: float) -> float | None:
    present = [v for v in values if v is not None]
    return float(np.percentile(present, q)) if present else None


def iteration_rows(rows: list[dict], elapsed_s: dict[int, float]) -> list[dict]:
    """One row per iteration (warmup ones flagged): throughput and latency percentiles over that
    iteration's requests alone, each a sample of the job."""
    out = []
    for iteration, seconds in sorted(elapsed_s.items()):
        mine = [r for r in rows if r["iteration"] == iteration]
        if not mine or seconds <= 0:
            continue
        tokens = sum(r["prompt_tokens"] + r["output_tokens"] for r in mine)
        row = {"iteration": iteration, "warmup": mine[0]["warmup"], "requests": len(mine), "elapsed_s": seconds,
               "throughput_tok_s": tokens / seconds,
               "output_tok_s": sum(r["output_tokens"] for r in mine) / seconds,
               "requests_per_s": len(mine) / seconds}
        for name, column in (("ttft", "ttft_ms"), ("tpot", "tpot_ms"), ("e2e", "e2e_ms")):
            values = [r[column] for r in mine]
            row[f"{name}_p50_ms"], row[f"{name}_p99_ms"] = _percentile(values, 50), _percentile(values, 99)
        out.append(row)
    return out


def iteration_spread(iterations: list[dict]) -> dict:
    """The jobs row's summary of its measured iterations: their count, then per metric the mean,
    standard deviation and 95% interval of the mean (workers/intervals.py)."""
    measured = [r for r in iterations if not r["warmup"]]
    out: dict = {"iterations_n": len(measured)}
    for metric in ITERATION_METRICS:
        stats = mean_interval([r[metric] for r in measured])
        out |= {f"{metric}_{stat}": stats[stat] for stat in ("mean", "sd", "ci_low", "ci_high")}
    return out


def summarize(rows: list[dict], elapsed_s: float) -> dict:
    """Job-level throughput and latency over the measured (non-warmup) requests."""
    measured = [r for r in rows if not r["warmup"]]
    if not measured or elapsed_s <= 0:
        return {}
    e2e = np.array([r["e2e_ms"] for r in measured])
    prompt = sum(r["prompt_tokens"] for r in measured)
    output = sum(r["output_tokens"] for r in measured)
    return {
        "elapsed_s": elapsed_s,
        "throughput_tok_s": (prompt + output) / elapsed_s,
        "output_tok_s": output / elapsed_s,
        "requests_per_s": len(measured) / elapsed_s,
        "latency_mean_ms": float(e2e.mean()),
        "latency_p50_ms": float(np.percentile(e2e, 50)),
        "latency_p90_ms": float(np.percentile(e2e, 90)),
        "latency_p99_ms": float(np.percentile(e2e, 99)),
    }
