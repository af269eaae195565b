"""Synthetic results stores with known values for the queries tests, written the way workers write
them (ResultStore.write + records.to_table), and the rows kept to compute the expected numbers."""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np
import pytest
from scipy import stats
import pyarrow as pa

from hybench.workers import records
from hybench.workers.metrics import iteration_rows
from hybench.workers.store import ResultStore

MODEL = "org/tiny-model"  # the '/' is percent-encoded in partition paths
WINDOW = 512
OUTPUT_LEN = 6
LENGTHS = (256, 1024, 4096)
CONFIGS = ("full", "sliding", "hybrid")
KV_GIB_PER_TOKEN = 2e-5  # per sequence
WORKLOAD = ("enable_prefix_caching", "request_rate", "concurrency_limit", "dataset_sha256")
DEFAULT_WORKLOAD = (False, math.inf, None, None)  # what a job without the workload columns ran


@dataclass
class SyntheticStore:
    store: ResultStore
    requests: list[dict] = field(default_factory=list)  # rows readers can see (not in truncated files)
    jobs: list[dict] = field(default_factory=list)
    iterations: list[dict] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # paths of the truncated files

    @property
    def root(self) -> str:
        return self.store.uri

    def write_job(self, config: str, input_len: int, *, status: str = "ok", rng: np.random.Generator,
                  sweep_id: str = "s1", num_prompts: int = 10, iterations: int = 2, speed: float = 1.0,
                  write_requests: bool = True, write_jobs: bool = True, extra_column: bool = False,
                  truncate_requests: bool = False, model: str = MODEL, window: int = WINDOW,
                  workload: dict | None = None, repeat: int = 0) -> None:
        """`workload`: the jobs row's workload columns (WORKLOAD); left out, the row has none (an older
        store), which reads as DEFAULT_WORKLOAD. `repeat`: another run of the same cell (sweep --repeats)."""
        workload = dict(workload or {})
        suffix = "".join(f"-{k}={v}" for k, v in sorted(workload.items())) + (f"-r{repeat}" if repeat else "")
        job_id = f"{sweep_id}-{model.replace('/', '_')}-{config}-{window}-{input_len}-{status}{suffix}"
        key = dict(job_id=job_id, sweep_id=sweep_id, model=model, config=config, window=window, engine="hybrid",
                   input_len=input_len, output_len=OUTPUT_LEN)
        partition = {"model": model, "config": config, "input_len": input_len}
        cached = bool(workload.get("enable_prefix_caching"))
        rows = [] if status == "oom" else _requests(key, rng, num_prompts, iterations, speed, cached)
        if write_requests and rows:
            table = records.to_table("requests", rows)
            if extra_column:  # a column from a newer version of the project
                table = table.append_column("newer_metric", pa.array(np.arange(len(rows), dtype=np.float64)))
            path = self.store.write("requests", partition, job_id, table)
            if truncate_requests:
                with open(path, "r+b") as fh:
                    fh.truncate(os.path.getsize(path) // 2)
                self.skipped.append(path)
            else:
                self.requests += rows
            if not truncate_requests:
                iterations = iteration_table(rows)
                self.store.write("iterations", partition, job_id, records.to_table("iterations", iterations))
                self.iterations += iterations
        if write_jobs:
            job = dict(_job(key, config, input_len, status, rng, num_prompts, speed), **workload)
            if cached and status == "ok":
                job.update(prefix_cache_hit_rate=float(rng.uniform(0.3, 0.7)),
                           prefix_cache_hits=int(rng.integers(1, num_prompts)))
            self.store.write("jobs", partition, job_id, records.to_table("jobs", [job]))
            self.jobs.append(job)


def iteration_table(rows: list[dict]) -> list[dict]:
    """The iterations rows of these requests, each iteration timed from its first arrival to its last finish."""
    elapsed = {}
    for i in {r["iteration"] for r in rows}:
        mine = [r for r in rows if r["iteration"] == i]
        elapsed[i] = (max(r["finish_ns"] for r in mine) - min(r["arrival_ns"] for r in mine)) / 1e9
    key = {k: rows[0][k] for k in records.ITERATIONS_SCHEMA.names if k in rows[0] and k not in ("iteration", "warmup")}
    return [key | r for r in iteration_rows(rows, elapsed)]


def _requests(key: dict, rng: np.random.Generator, num_prompts: int, iterations: int, speed: float,
              cached: bool = False) -> list[dict]:
    rows = []
    base_ms = (20.0 + key["input_len"] / 50) * {"full": 1.3, "sliding": 1.0, "hybrid": 1.1}[key["config"]] / speed
    ttft_scale = 0.4 if cached else 1.0  # a cached prefix is not prefilled again
    for iteration in range(iterations + 1):
        warmup = iteration == 0  # warmup rows are far slower: a query that kept them would show it
        for request_id in range(num_prompts):
            ttft = float(rng.gamma(4.0, base_ms / 8)) * (50 if warmup else 1) * ttft_scale
            queue = ttft * float(rng.uniform(0.0, 0.5))
            itl = (rng.gamma(3.0, base_ms / 30, OUTPUT_LEN - 1) * (50 if warmup else 1)).tolist()
            e2e = ttft + float(sum(itl))
            arrival = 1_000_000 * (iteration * 1000 + request_id)
            rows.append(dict(key, iteration=iteration, warmup=warmup, request_id=request_id,
                             prompt_tokens=key["input_len"], output_tokens=OUTPUT_LEN, arrival_ns=arrival,
                             first_token_ns=arrival + int(ttft * 1e6), finish_ns=arrival + int(e2e * 1e6),
                             arrival_unix_s=1.7e9 + arrival / 1e9, ttft_ms=ttft, e2e_ms=e2e,
                             tpot_ms=(e2e - ttft) / (OUTPUT_LEN - 1), itl_ms=itl, itl_min_ms=min(itl),
                             itl_mean_ms=sum(itl) / len(itl), itl_max_ms=max(itl), queue_ms=queue))
    return rows


def _job(key: dict, config: str, input_len: int, status: str, rng: np.random.Generator, num_prompts: int,
         speed: float) -> dict:
    job = dict(key, num_prompts=num_prompts, status=status, started_at=datetime(2025, 1, 2, 3, 4, tzinfo=timezone.utc),
               device_name="NVIDIA H100 80GB HBM3", driver_version="550.54", torch_version="2.5.1",
               ray_version="2.40.0", project_version="0.1.0", hostname="node-1", model_gib=0.5)
    if status == "oom":
        return dict(job, error="CUDA out of memory. Tried to allocate 2.00 GiB\nTraceback (most recent call last): ...")
    if status == "error":
        return dict(job, error="RuntimeError: kernel launch failed\nTraceback (most recent call last): ...",
                    elapsed_s=0.5)
    kept = input_len + OUTPUT_LEN if config == "full" else min(input_len + OUTPUT_LEN, key["window"])
    kv_used = KV_GIB_PER_TOKEN * kept * num_prompts
    state = 0.003 * num_prompts / 10 if config == "hybrid" else None
    return dict(job, elapsed_s=float(rng.uniform(0.5, 2.0)) / speed,
                ssm_param_gib=0.01 if config == "hybrid" else None, kv_pool_gib=4.0, kv_used_gib=kv_used,
                ssm_state_gib=state, activation_peak_gib=0.3, graph_pool_gib=float(rng.uniform(0.01, 0.05)),
                prefix_cache_gib=float(rng.uniform(0.0, 0.2)),
                peak_torch_gib=4.6 + float(rng.uniform(0, 0.1)),
                nvml_used_gib=5.2, kv_capacity_seqs=int(4.0 / (KV_GIB_PER_TOKEN * kept)),
                kv_capacity_tokens=kept, decode_mbu=float(rng.uniform(0.3, 0.6)),
                prefill_mfu=float(rng.uniform(0.2, 0.5)), decode_bw_gbs=1500.0, prefill_tflops=300.0,
                peak_bw_gbs=3350.0, peak_tflops=989.0, attn_backend="flash_attn",
                ssm_backend="mamba_ssm" if config == "hybrid" else None)


def build_store(store: str | ResultStore, *, seed: int = 0, sweep_id: str = "s1", speed: float = 1.0,
                oom: tuple[tuple[str, int], ...] = (("full", 4096),)) -> SyntheticStore:
    """Every config at every length, one ok job each, except `oom` cells, which ran out of memory."""
    rng = np.random.default_rng(seed)
    synthetic = SyntheticStore(store if isinstance(store, ResultStore) else ResultStore(store))
    for config in CONFIGS:
        for input_len in LENGTHS:
            status = "oom" if (config, input_len) in oom else "ok"
            synthetic.write_job(config, input_len, status=status, rng=rng, sweep_id=sweep_id, speed=speed)
    return synthetic


def add_edge_cases(synthetic: SyntheticStore, seed: int = 1) -> None:
    """A truncated requests file, a file with a newer column, an error job whose requests must not
    count, a job that wrote its requests but never its jobs row, and two more runs of a cell (--repeats),
    one slower: its samples are then its three jobs."""
    rng = np.random.default_rng(seed)
    for repeat, speed in ((1, 0.7), (2, 1.1)):
        synthetic.write_job("hybrid", 4096, rng=rng, repeat=repeat, speed=speed, iterations=3)
    synthetic.write_job("full", 2048, rng=rng, truncate_requests=True)
    synthetic.write_job("sliding", 2048, rng=rng, extra_column=True)
    synthetic.write_job("hybrid", 2048, rng=rng, status="error")
    synthetic.write_job("hybrid", 8192, rng=rng, write_jobs=False)


def add_workload_variants(synthetic: SyntheticStore, seed: int = 2) -> None:
    """Jobs that differ from the store's others only in their workload: every config at 256 and 1024
    with prefix caching (the jobs without it are the store's own, whose rows lack the workload columns);
    full and hybrid at 1024 at 4 requests/s with and without caching; and a cached job with a
    concurrency limit and a dataset, which has no uncached twin."""
    rng = np.random.default_rng(seed)
    for config in CONFIGS:
        for input_len in (256, 1024):
            synthetic.write_job(config, input_len, rng=rng, workload=dict(enable_prefix_caching=True))
    for config in ("full", "hybrid"):
        for cached in (False, True):
            synthetic.write_job(config, 1024, rng=rng, workload=dict(enable_prefix_caching=cached, request_rate=4.0))
    synthetic.write_job("sliding", 256, rng=rng, workload=dict(
        enable_prefix_caching=True, request_rate=8.0, concurrency_limit=4, dataset_sha256="ab" * 32))


def workload_of(job: dict | None) -> tuple:
    """A jobs row's workload as the cells query reads it (no row: an interrupted job, the defaults)."""
    if job is None:
        return DEFAULT_WORKLOAD
    caching, rate = job.get("enable_prefix_caching"), job.get("request_rate")
    return (bool(caching), math.inf if rate is None else rate, job.get("concurrency_limit"), job.get("dataset_sha256"))


def _mean(values: list) -> float | None:
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept else None


def _iteration_stats(iterations: list[dict]) -> dict:
    """The cell's samples: its jobs (the mean log of each job's iterations) where it has two or more, else
    its job's iterations; their count, mean and variance of the logs, and the 95% intervals (scipy) of the
    headline figures; beside them the mean and sd over every iteration."""
    by_job: dict[str, list[dict]] = {}
    for i in iterations:
        by_job.setdefault(i["job_id"], []).append(i)

    def sample_logs(m: str) -> np.ndarray:
        if len(by_job) >= 2:
            return np.array([np.log([i[m] for i in rows]).mean() for rows in by_job.values()])
        return np.log(np.array([i[m] for i in iterations], dtype=np.float64))

    out = {"iterations": len(iterations), "samples": len(by_job) if len(by_job) >= 2 else len(iterations)}
    for m in ("throughput_tok_s", "output_tok_s", "e2e_p50_ms", "e2e_p99_ms", "ttft_p50_ms", "ttft_p99_ms", "tpot_p50_ms"):
        values = np.array([i[m] for i in iterations], dtype=np.float64)
        logs = sample_logs(m)
        out |= {f"{m}_log_mean": float(logs.mean()) if len(logs) else None,
                f"{m}_log_var": float(logs.var(ddof=1)) if len(logs) > 1 else None,
                f"{m}_iter_mean": float(values.mean()) if len(values) else None,
                f"{m}_iter_sd": float(values.std(ddof=1)) if len(values) > 1 else None}
    for name, m in (("throughput", "throughput_tok_s"), ("latency_p99", "e2e_p99_ms"), ("latency_p50", "e2e_p50_ms")):
        logs = sample_logs(m)
        low = high = None
        if len(logs) > 1:
            low, high = np.exp(stats.t.interval(0.95, len(logs) - 1, loc=logs.mean(), scale=stats.sem(logs)))
        out |= {f"{name}_ci_low": low, f"{name}_ci_high": high}
    return out


def _percentiles(values: list, prefix: str) -> dict:
    kept = np.array([v for v in values if v is not None], dtype=np.float64)
    if not kept.size:
        return {f"{prefix}_p{q}_ms": None for q in (50, 90, 99)}
    return {f"{prefix}_p{q}_ms": float(np.percentile(kept, q)) for q in (50, 90, 99)}


def expected_cells(synthetic: SyntheticStore, window: int = WINDOW,
                   workload: tuple = DEFAULT_WORKLOAD) -> dict[tuple[str, int], dict]:
    """What the cells query must return for one window and workload, keyed by (config, input_len)."""
    return {(config, n): cell for (w, wl, config, n), cell in expected_all_cells(synthetic).items()
            if w == window and wl == workload}


def expected_all_cells(synthetic: SyntheticStore) -> dict[tuple, dict]:
    """What the cells query must return, keyed by (window, workload tuple, config, input_len), computed
    with numpy from the rows the store holds: per-request percentiles (linear), throughput over the jobs'
    elapsed time; a request's workload is its job's (the requests table does not carry it)."""
    jobs_by_id = {j["job_id"]: j for j in synthetic.jobs}

    def cell_key(row: dict) -> tuple:
        return (row["window"], workload_of(jobs_by_id.get(row["job_id"])), row["config"], row["input_len"])

    ok_ids = {j["job_id"] for j in synthetic.jobs if j["status"] == "ok"}
    keys = {cell_key(j) for j in synthetic.jobs} | {cell_key(r) for r in synthetic.requests}
    cells = {}
    for key in keys:
        jobs = [j for j in synthetic.jobs if cell_key(j) == key]
        requests = [r for r in synthetic.requests if cell_key(r) == key]
        incomplete = {r["job_id"] for r in requests} - set(jobs_by_id)
        measured = [r for r in requests if not r["warmup"] and r["job_id"] in ok_ids]
        elapsed = sum(j["elapsed_s"] for j in jobs if j["job_id"] in {r["job_id"] for r in measured}) or None
        tokens = sum(r["prompt_tokens"] + r["output_tokens"] for r in measured)
        ok_jobs = [j for j in jobs if j["status"] == "ok"]
        queue = _percentiles([r.get("queue_ms") for r in measured], "queue")
        cell = dict(
            window=key[0], **dict(zip(WORKLOAD, key[1])),
            jobs=len(jobs) + len(incomplete), ok=len(ok_jobs), oom=sum(j["status"] == "oom" for j in jobs),
            error=sum(j["status"] == "error" for j in jobs), incomplete=len(incomplete), requests=len(measured),
            elapsed_s=elapsed,
            throughput_tok_s=tokens / elapsed if elapsed else None,
            output_tok_s=sum(r["output_tokens"] for r in measured) / elapsed if elapsed else None,
            requests_per_s=len(measured) / elapsed if elapsed else None,
            e2e_distinct=len({r["e2e_ms"] for r in measured}) if measured else None,
            ttft_distinct=len({r["ttft_ms"] for r in measured}) if measured else None,
            latency_mean_ms=_mean([r["e2e_ms"] for r in measured]),
            ttft_mean_ms=_mean([r["ttft_ms"] for r in measured]),
            tpot_mean_ms=_mean([r["tpot_ms"] for r in measured]),
            **{k.replace("e2e", "latency"): v for k, v in _percentiles([r["e2e_ms"] for r in measured], "e2e").items()},
            **_percentiles([r["ttft_ms"] for r in measured], "ttft"),
            **_percentiles([r["tpot_ms"] for r in measured], "tpot"),
            **_percentiles([v for r in measured for v in r["itl_ms"]], "itl"),
            queue_p50_ms=queue["queue_p50_ms"], queue_p99_ms=queue["queue_p99_ms"],
        )
        for name in ("model_gib", "ssm_param_gib", "kv_pool_gib", "kv_used_gib", "ssm_state_gib", "activation_peak_gib",
                     "graph_pool_gib", "prefix_cache_gib", "peak_torch_gib", "nvml_used_gib", "decode_mbu", "prefill_mfu", "decode_bw_gbs",
                     "prefill_tflops", "peak_bw_gbs", "peak_tflops", "prefix_cache_hit_rate", "prefix_cache_hits"):
            cell[name] = _mean([j.get(name) for j in ok_jobs])
        for name in ("kv_capacity_seqs", "kv_capacity_tokens"):
            cell[name] = min((j[name] for j in ok_jobs if j.get(name) is not None), default=None)
        cell["max_running"] = cell["kv_state_used_gib"] = cell["peak_rss_gib"] = None  # not in the synthetic rows
        cell.update(_iteration_stats([i for i in synthetic.iterations
                                      if i["job_id"] in ok_ids and not i["warmup"] and cell_key(i) == key]))
        needed = (None if cell["model_gib"] is None or cell["kv_used_gib"] is None else
                  cell["model_gib"] + (cell["ssm_param_gib"] or 0) + cell["kv_used_gib"] + (cell["ssm_state_gib"] or 0))
        cell["needed_gib"] = needed
        cell["tok_s_per_gib"] = cell["throughput_tok_s"] / needed if needed and cell["throughput_tok_s"] else None
        cells[key] = cell
    return cells


def expected_prefix_caching(synthetic: SyntheticStore) -> dict[tuple, dict]:
    """What the prefix_caching query must return, keyed as expected_all_cells less caching: each cell run
    with caching, beside the same cell without (None where there is none)."""
    cells = expected_all_cells(synthetic)
    out = {}
    for (window, workload, config, n), c in cells.items():
        if not workload[0]:
            continue
        b = cells.get((window, (False, *workload[1:]), config, n)) or {}

        def ratio(column: str) -> float | None:
            return c[column] / b[column] if c[column] is not None and b.get(column) else None

        out[(window, workload[1:], config, n)] = dict(
            window=window, **dict(zip(WORKLOAD[1:], workload[1:])), has_without=bool(b),
            **{f"{m}_with": c[m] for m in ("ttft_mean_ms", "ttft_p50_ms", "ttft_p99_ms", "throughput_tok_s")},
            **{f"{m}_without": b.get(m) for m in ("ttft_mean_ms", "ttft_p50_ms", "ttft_p99_ms", "throughput_tok_s")},
            ttft_p50_ratio=ratio("ttft_p50_ms"), ttft_p99_ratio=ratio("ttft_p99_ms"),
            throughput_ratio=ratio("throughput_tok_s"),
            prefix_cache_hit_rate=c["prefix_cache_hit_rate"], prefix_cache_hits=c["prefix_cache_hits"],
            prefix_cache_gib=c["prefix_cache_gib"])
    return out


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """The synthetic store with its edge cases, once per test module that imports this fixture."""
    store = build_store(str(tmp_path_factory.mktemp("store")))
    add_edge_cases(store)
    return store
