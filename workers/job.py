"""Run one benchmark job and write its records: the single-job API the CLI and Ray actors share.

A throughput job (the default task) runs its warmup iterations, then its measured ones; each iteration
submits its prompts on the job's arrival schedule (arrivals.py; by default every prompt at once,
offline, as the original suite) and runs them to completion. Per-request records go to the `requests`
table, one summary row to `jobs` (written last, so it marks the job complete). A quality job
(--task perplexity | recall) scores its task's sequences once instead (quality_job.py, with one module
per task) into the `quality` table; every attempt writes every table, empty ones too. A job that does
not fit in memory is an `oom` row; any other failure inside the job is an `error` row; both keep the
worker alive for the next job.
"""
from __future__ import annotations

import datetime as dt
import functools
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
from hybench.engine.calibration import CalibrationError, check_history_weights, model_hash, read_history_weights
from hybench.engine.llama import LlamaForCausalLM
from hybench.engine.loader import check_weights
from hybench.engine.memory import GIB, SequenceMemory, check_fits
from hybench.workers import device_info
from hybench.workers.arrivals import OFFLINE, arrival_offsets_ns, run_schedule
from hybench.workers.job_engine import engine_fields, start_engine
from hybench.workers.job_spec import JobSpec, project_version
from hybench.workers.metrics import RequestTiming, iteration_rows, iteration_spread, request_row, summarize
from hybench.workers.perplexity_task import perplexity_work
from hybench.workers.prompts import random_prompts
from hybench.workers.quality_job import QualityWork, execute_quality
from hybench.workers.recall import RecallInputError
from hybench.workers.recall_task import recall_work
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
    quality: QualityWork | None = None  # a quality job's sequences; None for throughput


# The module that builds each quality task's work: job.py chooses, quality_job.py runs it.
QUALITY_TASKS = {"perplexity": perplexity_work, "recall": recall_work}


def prepare(spec: JobSpec) -> PreparedJob:
    """Check everything a user can get wrong before any work is done; raises EngineConfigError, or
    DatasetError for a --dataset or --eval-text that cannot serve the job."""
    resolved = resolve_model(spec.model, spec.load_format)
    if resolved.config.remote_code and not spec.trust_remote_code:
        raise EngineConfigError(
            f"{spec.model}: config.json asks to run code shipped with the checkpoint (auto_map: "
            f"{', '.join(resolved.config.remote_code)}); pass --trust-remote-code only if you trust it")
    check_weights(resolved)  # a truncated or mismatched checkpoint stops here, before anything is written
    config = resolved.config
    device = resolve_device(spec.device)
    needed = spec.input_len + spec.output_len  # a quality job's output_len is 1: scoring samples one token
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
    if spec.history_weights is not None:
        _check_history_weights(spec, resolved)
    quality = None
    if spec.task in QUALITY_TASKS:
        try:
            quality = QUALITY_TASKS[spec.task](spec, resolved)
        except RecallInputError as exc:
            raise EngineConfigError(str(exc)) from None
    return PreparedJob(spec, resolved, device, dtype, max_len, dataset_prompts, quality)


@functools.lru_cache(maxsize=8)
def _model_hash_of(model: str, load_format: str, seed: int) -> str:
    """The hash `hybench calibrate` gives this model (it builds it on the CPU in float32, as here)."""
    built = build_model(resolve_model(model, load_format), torch.device("cpu"), torch.float32, 1, seed)
    return model_hash(built)


def _check_history_weights(spec: JobSpec, resolved: ResolvedModel) -> None:
    """Refuse weights calibrated for another window or model before the job runs (the worker checks the
    model it loaded again)."""
    ref = spec.history_weights
    weights = read_history_weights(ref.path)
    check_history_weights(weights, ref.path, None, spec.window)
    if weights.model_hash != _model_hash_of(spec.model, spec.load_format, spec.seed):
        raise CalibrationError(f"--history-weights {ref.path}: calibrated for another model (hash "
                               f"{weights.model_hash[:12]}), not {spec.model}")


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
    quality_rows: list[dict] = []
    iteration_elapsed: dict[int, float] = {}  # seconds each iteration took, by iteration
    row = job_key(spec) | {"status": "ok", "error": None, "started_at": started}
    models = models if models is not None else ModelCache()
    try:
        if job.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(job.device)
        if job.quality is not None:
            row |= execute_quality(job, job.quality, models, quality_rows)
        else:
            row |= _execute(job, models, request_rows, iteration_elapsed, progress)
    except (KVPoolTooSmall, torch.OutOfMemoryError) as exc:
        row |= {"status": "oom", "error": f"{type(exc).__name__}: {exc}"}
    except Exception as exc:  # noqa: BLE001 - a failed job is a result row; the worker lives on
        row |= {"status": "error", "error": "".join(traceback.format_exception_only(exc)).strip()
                + "\n" + "".join(traceback.format_tb(exc.__traceback__)[-3:])}
    iterations = iteration_rows(request_rows, iteration_elapsed) if row["status"] == "ok" else []
    row |= iteration_spread(iterations)
    if row["status"] != "ok":
        request_rows, quality_rows = [], []
        # What the failed job held (KV pool, activations) goes back before the next job sizes its pool
        # from free memory: the layers still point into the pool, and the engine may sit in a cycle.
        models.release_cache()
        gc.collect()
    if job.device.type == "cuda":
        torch.cuda.empty_cache()
    row |= _environment(job) | {"finished_at": dt.datetime.now(dt.timezone.utc)}
    key = job_key(spec)
    store.write_result(spec.partition(), spec.job_id,
                       result_tables([key | r for r in request_rows], [key | r for r in iterations], [row],
                                     [key | r for r in quality_rows]))
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
        "task": spec.task,
        "eval_text": spec.eval_text.path if spec.eval_text else None,
        "eval_text_sha256": spec.eval_text.sha256 if spec.eval_text else None,
        "history_weights": spec.history_weights.path if spec.history_weights else None,
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
    if spec.engine == "hf":
        models.clear()  # our copy of the weights would sit beside HF's and inflate its memory figures
        return _execute_hf(job, request_rows, iteration_elapsed, progress)
    engine, ssm_init = start_engine(job, models)
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
    out = summarize(request_rows, elapsed_ns / 1e9) | engine_fields(job, engine, measured_steps) | {
        "ssm_init": ssm_init,
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
