"""Run one benchmark job and write its records: the single-job API the CLI and Ray actors share.

A job runs its warmup iterations, then its measured ones; each iteration submits its prompts on the
job's arrival schedule (arrivals.py; by default every prompt at once, offline, as the original suite)
and runs them to completion. Per-request records go to the `requests` table, one summary row to
`jobs` (written last, so it marks the job complete). A job that does not fit in memory is an
`oom` row; any other failure inside the job is an `error` row; both keep the worker alive for the
next job.
"""
from __future__ import annotations

import datetime as dt
import gc
import os
import socket
import time
import traceback
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version

import torch
from tqdm import tqdm

from hybench.engine import (
    EngineConfig,
    EngineConfigError,
    KVPoolTooSmall,
    LLMEngine,
    ResolvedModel,
    SamplingParams,
    build_model,
    resolve_device,
    resolve_dtype,
    resolve_model,
)
from hybench.engine.llama import LlamaForCausalLM
from hybench.engine.loader import check_weights
from hybench.engine.memory import GIB, SequenceMemory, check_fits
from hybench.workers import device_info
from hybench.workers.arrivals import OFFLINE, arrival_offsets_ns, run_schedule
from hybench.workers.job_spec import JobSpec, project_version
from hybench.workers.metrics import RequestTiming, iteration_rows, iteration_spread, request_row, summarize
from hybench.workers.prompts import random_prompts
from hybench.workers.records import result_tables
from hybench.workers.store import ResultStore


@dataclass(frozen=True, slots=True)
class PreparedJob:
    """A validated job: its model resolved and its lengths checked, nothing run yet."""

    spec: JobSpec
    resolved: ResolvedModel
    device: torch.device
    dtype: torch.dtype
    max_model_len: int
    dataset_prompts: list[list[int]] | None  # the dataset's prompts for this job; None: seeded random ones


def prepare(spec: JobSpec) -> PreparedJob:
    """Check everything a user can get wrong before any work is done; raises EngineConfigError, or
    DatasetError for a --dataset that cannot serve the job."""
    resolved = resolve_model(spec.model, spec.load_format)
    if resolved.config.remote_code and not spec.trust_remote_code:
        raise EngineConfigError(
            f"{spec.model}: config.json asks to run code shipped with the checkpoint (auto_map: "
            f"{', '.join(resolved.config.remote_code)}); pass --trust-remote-code only if you trust it")
    check_weights(resolved)  # a truncated or mismatched checkpoint stops here, before anything is written
    config = resolved.config
    device = resolve_device(spec.device)
    needed = spec.input_len + spec.output_len
    if needed > config.max_position_embeddings:
        raise EngineConfigError(
            f"input length {spec.input_len} + output length {spec.output_len} exceeds the "
            f"{config.max_position_embeddings} positions {spec.model} supports")
    if spec.max_model_len is not None and needed > spec.max_model_len:
        raise EngineConfigError(
            f"input length {spec.input_len} + output length {spec.output_len} exceeds --max-model-len "
            f"{spec.max_model_len}")
    if spec.engine == "hf" and spec.config != "full":
        raise EngineConfigError("--engine hf (Hugging Face generate) runs the full config only")
    if spec.engine == "hf" and spec.temperature > 0:
        raise EngineConfigError("--engine hf runs greedy decoding only (temperature 0)")
    if spec.engine == "hf" and (spec.request_rate != OFFLINE or spec.concurrency_limit is not None):
        raise EngineConfigError("--engine hf runs offline only (no --request-rate or --max-concurrency)")
    max_len = spec.max_model_len or needed
    if max_len > config.max_position_embeddings:
        raise EngineConfigError(
            f"--max-model-len {max_len} exceeds the {config.max_position_embeddings} positions {spec.model} supports")
    dtype = resolve_dtype(spec.dtype, config, device)
    kv_elem_bytes = torch.empty((), dtype=dtype).element_size()
    sequence_memory = SequenceMemory(config.num_layers, config.num_kv_heads, config.head_dim, kv_elem_bytes,
                                     None if spec.config == "full" else spec.window, spec.config == "hybrid")
    check_fits(config, dtype, device, sequence_memory, max_len)
    dataset_prompts = None
    if spec.dataset is not None:
        dataset_prompts = spec.dataset.prompts(spec.input_len, spec.num_prompts, config.vocab_size, spec.model)
    return PreparedJob(spec, resolved, device, dtype, max_len, dataset_prompts)


class ModelCache:
    """Keeps the last loaded model so consecutive jobs on the same weights load them once."""

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._model: LlamaForCausalLM | None = None

    def clear(self) -> None:
        self._key, self._model = None, None

    def get(self, job: PreparedJob) -> LlamaForCausalLM:
        s = job.spec
        key = (s.model, s.load_format, s.seed, str(job.device), str(job.dtype))
        if key != self._key:
            self.clear()  # a load that fails half way must not leave the old key beside no model
            if job.device.type == "cuda":
                torch.cuda.empty_cache()
            self._model = build_model(job.resolved, job.device, job.dtype,
                                      job.resolved.config.max_position_embeddings, s.seed)
            self._key = key
        return self._model

    def release_cache(self) -> None:
        """Drop the views of a KV pool that the model's layers still hold after a job failed before its
        engine released them (an OOM, an error), so that the pool is freed now, not when the next
        job's engine replaces them."""
        if self._model is not None:
            for attn in self._model.attention_layers:
                attn.cache = None


def load_model(spec: JobSpec, models: ModelCache) -> None:
    """Load the model `spec` runs on into `models`, ahead of run_job. A failure is left for run_job,
    which meets it again and records it as the job's row."""
    if spec.engine == "hf":  # the Hugging Face peer loads its own model inside the job
        return
    try:
        models.get(prepare(spec))
    except Exception:  # noqa: BLE001, S110 - recorded by run_job, not here
        models.clear()


def run_job(spec: JobSpec, store: ResultStore, models: ModelCache | None = None, progress: bool = True) -> dict:
    """Run one job end to end and write its requests and jobs files. Returns the jobs row."""
    job = prepare(spec)
    started = dt.datetime.now(dt.timezone.utc)
    request_rows: list[dict] = []
    iteration_elapsed: dict[int, float] = {}  # seconds each iteration took, by iteration
    row = job_key(spec) | {"status": "ok", "error": None, "started_at": started}
    models = models if models is not None else ModelCache()
    try:
        row |= _execute(job, models, request_rows, iteration_elapsed, progress)
    except (KVPoolTooSmall, torch.OutOfMemoryError) as exc:
        row |= {"status": "oom", "error": f"{type(exc).__name__}: {exc}"}
    except Exception as exc:  # noqa: BLE001 - a failed job is a result row; the worker lives on
        row |= {"status": "error", "error": "".join(traceback.format_exception_only(exc)).strip()
                + "\n" + "".join(traceback.format_tb(exc.__traceback__)[-3:])}
    iterations = iteration_rows(request_rows, iteration_elapsed) if row["status"] == "ok" else []
    row |= iteration_spread(iterations)
    if row["status"] != "ok":
        request_rows = []
        # What the failed job held (KV pool, activations) goes back before the next job sizes its pool
        # from free memory: the layers still point into the pool, and the engine may sit in a cycle.
        models.release_cache()
        gc.collect()
    if job.device.type == "cuda":
        torch.cuda.empty_cache()
    row |= _environment(job) | {"finished_at": dt.datetime.now(dt.timezone.utc)}
    key = job_key(spec)
    store.write_result(spec.partition(), spec.job_id,
                       result_tables([key | r for r in request_rows], [key | r for r in iterations], [row]))
    return row


def job_key(spec: JobSpec) -> dict:
    """The columns that identify a job and its workload, shared by its requests and jobs rows (and by
    the driver's row for a job whose actor kept dying)."""
    return {
        "job_id": spec.job_id, "sweep_id": spec.sweep_id, "model": spec.model, "config": spec.config,
        "window": spec.window, "engine": spec.engine, "input_len": spec.input_len, "output_len": spec.output_len,
        "num_prompts": spec.num_prompts, "seed": spec.seed, "dtype": spec.dtype, "load_format": spec.load_format,
        "enable_prefix_caching": spec.enable_prefix_caching,
        "num_warmup_iters": spec.num_warmup_iters, "num_benchmark_iters": spec.num_benchmark_iters,
        "request_rate": spec.request_rate, "concurrency_limit": spec.concurrency_limit,
        "dataset": spec.dataset.path if spec.dataset else None,
        "dataset_sha256": spec.dataset.sha256 if spec.dataset else None,
        "repeat": spec.repeat,
    }


def _prompts(job: PreparedJob, iteration: int) -> list[list[int]]:
    """One iteration's prompts: the dataset's (the same every iteration), else seeded random ones."""
    if job.dataset_prompts is not None:
        return job.dataset_prompts
    spec = job.spec
    return random_prompts(job.resolved.config.vocab_size, spec.input_len, spec.num_prompts, spec.seed, iteration)


def _execute(job: PreparedJob, models: ModelCache, request_rows: list[dict], iteration_elapsed: dict[int, float],
             progress: bool) -> dict:
    spec = job.spec
    if job.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(job.device)
    if spec.engine == "hf":
        models.clear()  # our copy of the weights would sit beside HF's and inflate its memory figures
        return _execute_hf(job, request_rows, iteration_elapsed, progress)
    model = models.get(job)
    config = EngineConfig(
        model=job.resolved.config, attention=spec.config, window=spec.window, max_model_len=job.max_model_len,
        max_num_seqs=spec.max_num_seqs, max_num_batched_tokens=spec.max_num_batched_tokens,
        gpu_memory_utilization=spec.gpu_memory_utilization, kv_cache_gib=spec.kv_cache_gib,
        enforce_eager=spec.enforce_eager, enable_prefix_caching=spec.enable_prefix_caching, seed=spec.seed,
        device=job.device, dtype=job.dtype)
    engine = LLMEngine(model, config)
    sampling = SamplingParams(spec.output_len, spec.temperature, spec.top_p)
    epoch_offset = time.time_ns() - time.monotonic_ns()
    iterations = spec.num_warmup_iters + spec.num_benchmark_iters
    bar = tqdm(total=iterations * spec.num_prompts, unit="req", disable=not progress, leave=False,
               desc=f"{spec.config} W={spec.window} in={spec.input_len}")
    elapsed_ns, measured_steps = 0, []
    try:
        for iteration in range(iterations):
            warmup = iteration < spec.num_warmup_iters
            if iteration == spec.num_warmup_iters:
                engine.rows.reset_peaks()  # the memory figures describe the measured iterations
            prompts = _prompts(job, iteration)
            offsets_ns = arrival_offsets_ns(len(prompts), spec.request_rate, spec.seed, iteration)
            first_step = len(engine.steps)
            start = time.monotonic_ns()
            submitted = run_schedule(engine, prompts, sampling, start + offsets_ns, spec.concurrency_limit,
                                     on_finish=lambda _seq: bar.update(1))
            iteration_elapsed[iteration] = (time.monotonic_ns() - start) / 1e9
            if not warmup:
                elapsed_ns += time.monotonic_ns() - start
                measured_steps += engine.steps[first_step:]
            for request in submitted:
                seq = request.seq
                timing = RequestTiming(seq.request_id, iteration, warmup, seq.prompt_len, len(seq.output),
                                       seq.arrival_ns, tuple(seq.token_ns), request.submitted_ns, request.admitted_ns)
                request_rows.append(request_row(timing, epoch_offset))
    finally:
        bar.close()
    m = engine.memory
    peak_rows = engine.rows.peak_rows
    decode = [s for s in measured_steps if not s.is_prefill]
    prefill = [s for s in measured_steps if s.is_prefill]
    decode_bw = _rate(decode) / 1e9
    prefill_tflops = _rate(prefill) / 1e12
    peak_bw, peak_flops = device_info.copy_bandwidth_gbs(job.device), device_info.peak_tflops(job.device)
    history_bytes = sum(p.nbytes for a in model.attention_layers if a.history is not None
                        for p in a.history.parameters())
    out = summarize(request_rows, elapsed_ns / 1e9) | {
        "model_gib": sum(p.nbytes for p in model.parameters()) / GIB - history_bytes / GIB,
        "ssm_param_gib": history_bytes / GIB,
        "kv_pool_gib": engine.plan.pool_bytes / GIB,
        "kv_used_gib": engine.rows.peak_kv_bytes / GIB,
        "ssm_state_gib": peak_rows * m.state_bytes() / GIB,
        "kv_state_used_gib": engine.rows.peak_bytes / GIB,
        "kv_capacity_seqs": engine.plan.fit,
        "max_running": peak_rows,
        "kv_capacity_tokens": config.kv_capacity,
        "decode_bw_gbs": decode_bw or None,
        "prefill_tflops": prefill_tflops or None,
        "peak_bw_gbs": peak_bw,
        "peak_tflops": peak_flops,
        "decode_mbu": decode_bw / peak_bw if peak_bw and decode_bw else None,
        "prefill_mfu": prefill_tflops / peak_flops if peak_flops and prefill_tflops else None,
        "activation_peak_gib": engine.activation_peak / GIB if job.device.type == "cuda" else None,
        "graph_pool_gib": engine.runner.graphs.pool_bytes / GIB if engine.runner.graphs else None,
        "attn_backend": engine.attn_backend.name,
        "ssm_backend": engine.ssm_backend_name,
        "ssm_init": "seeded" if spec.config == "hybrid" else "none",
        "peak_torch_gib": device_info.peak_torch_gib(job.device),
        "nvml_used_gib": device_info.nvml_used_gib(job.device),
    } | _prefix_cache_fields(engine)
    engine.release()
    return out


def _prefix_cache_fields(engine: LLMEngine) -> dict:
    """Hit rate (share of prompt tokens served from the cache, warmup included: the cache is warm
    across iterations as in a server) and the memory its entries held at most."""
    cache = engine.prefix_cache
    if cache is None:
        return {}
    return {
        "prefix_cache_hit_rate": cache.stats.hit_rate,
        "prefix_cache_hits": cache.stats.hits,
        "prefix_cache_gib": cache.stats.peak_entries * engine.plan.row_bytes / GIB,
    }


def _execute_hf(job: PreparedJob, request_rows: list[dict], iteration_elapsed: dict[int, float],
                progress: bool) -> dict:
    """Hugging Face generate on the same prompts (DESIGN.md section 9): the same records, none of our pools."""
    from hybench.workers.hf_peer import HFPeer  # transformers loads only for hf jobs

    spec = job.spec
    peer = HFPeer(job.resolved, job.device, job.dtype, spec.seed, spec.trust_remote_code)
    epoch_offset = time.time_ns() - time.monotonic_ns()
    iterations = spec.num_warmup_iters + spec.num_benchmark_iters
    bar = tqdm(total=iterations * spec.num_prompts, unit="req", disable=not progress, leave=False,
               desc=f"hf in={spec.input_len}")
    elapsed_ns = 0
    try:
        for iteration in range(iterations):
            warmup = iteration < spec.num_warmup_iters
            prompts = _prompts(job, iteration)
            start = time.monotonic_ns()
            results = peer.run(prompts, spec.output_len, spec.max_num_seqs, start, on_finish=lambda: bar.update(1))
            iteration_elapsed[iteration] = (time.monotonic_ns() - start) / 1e9
            if not warmup:
                elapsed_ns += time.monotonic_ns() - start
            for i, r in enumerate(results):
                timing = RequestTiming(iteration * spec.num_prompts + i, iteration, warmup, r.prompt_tokens,
                                       r.output_tokens, r.arrival_ns, r.token_ns)
                request_rows.append(request_row(timing, epoch_offset))
    finally:
        bar.close()
    return summarize(request_rows, elapsed_ns / 1e9) | {
        "model_gib": sum(p.nbytes for p in peer.model.parameters()) / GIB,
        "max_running": min(spec.max_num_seqs, spec.num_prompts),
        "attn_backend": peer.name,
        "ssm_backend": "none",
        "ssm_init": "none",
        "peak_torch_gib": device_info.peak_torch_gib(job.device),
        "nvml_used_gib": device_info.nvml_used_gib(job.device),
    }


def _rate(steps: list) -> float:
    seconds = sum(s.duration_ns for s in steps) / 1e9
    return sum(s.work for s in steps) / seconds if seconds > 0 else 0.0


def _environment(job: PreparedJob) -> dict:
    try:
        ray_version = version("ray")
    except PackageNotFoundError:
        ray_version = None
    return {
        "device_name": device_info.device_name(job.device),
        "driver_version": device_info.driver_version(job.device),
        "torch_version": torch.__version__,
        "project_version": project_version(),
        "ray_version": ray_version,
        "hostname": socket.gethostname(),
        "worker_pid": os.getpid(),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "gpu_uuid": device_info.gpu_uuid(job.device),
        "peak_rss_gib": device_info.peak_rss_gib(),
    }
