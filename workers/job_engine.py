"""What every task of our engine shares: the engine a job runs on, and the jobs row's memory, backend and
kernel figures read from it afterwards.

A throughput job and a quality job (perplexity, recall) of the same cell get the same engine (config,
window, KV pool, kernels, history branch), so their rows compare on equal terms.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from hybench.engine import EngineConfig, LLMEngine
from hybench.engine.calibration import apply_history_weights
from hybench.engine.llm_engine import StepRecord
from hybench.engine.memory import GIB
from hybench.workers import device_info

if TYPE_CHECKING:
    from hybench.workers.job import ModelCache, PreparedJob


def start_engine(job: PreparedJob, models: ModelCache) -> tuple[LLMEngine, str]:
    """The job's engine on the cached model, and how its history branch was set: none, seeded, or
    calibrated:<sha> when the job names --history-weights (applied over the seeded branch)."""
    spec = job.spec
    model = models.get(job)
    config = EngineConfig(
        model=job.resolved.config, attention=spec.config, window=spec.window, max_model_len=job.max_model_len,
        max_num_seqs=spec.max_num_seqs, max_num_batched_tokens=spec.max_num_batched_tokens,
        gpu_memory_utilization=spec.gpu_memory_utilization, kv_cache_gib=spec.kv_cache_gib,
        enforce_eager=spec.enforce_eager, enable_prefix_caching=spec.enable_prefix_caching, seed=spec.seed,
        device=job.device, dtype=job.dtype)
    engine = LLMEngine(model, config)
    if spec.config != "hybrid":
        return engine, "none"
    if spec.history_weights is None:
        return engine, "seeded"
    apply_history_weights(model, spec.history_weights.load(model, spec.window))
    return engine, f"calibrated:{spec.history_weights.sha}"


def engine_fields(job: PreparedJob, engine: LLMEngine, measured_steps: list[StepRecord]) -> dict:
    """The jobs row's memory (DESIGN.md section 4), achieved bandwidth and FLOP rates, and the kernels that
    ran, for the steps the job measured."""
    model, m, config = engine.model, engine.memory, engine.config
    peak_rows = engine.rows.peak_rows
    decode = [s for s in measured_steps if not s.is_prefill]
    prefill = [s for s in measured_steps if s.is_prefill]
    decode_bw = _rate(decode) / 1e9
    prefill_tflops = _rate(prefill) / 1e12
    peak_bw, peak_flops = device_info.copy_bandwidth_gbs(job.device), device_info.peak_tflops(job.device)
    history_bytes = sum(p.nbytes for a in model.attention_layers if a.history is not None
                        for p in a.history.parameters())
    return {
        "model_gib": sum(p.nbytes for p in model.parameters()) / GIB - history_bytes / GIB,
        "ssm_param_gib": history_bytes / GIB,
        "kv_pool_gib": engine.plan.pool_bytes / GIB,
        "kv_used_gib": engine.rows.peak_kv_bytes / GIB,
        "ssm_state_gib": peak_rows * m.state_bytes() / GIB,
        "kv_state_used_gib": engine.rows.peak_bytes / GIB,
        "kv_capacity_seqs": engine.plan.fit,
        "max_running": peak_rows,
        "kv_capacity_tokens": config.kv_capacity,
        "vocab_size": model.config.vocab_size,
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
        "peak_torch_gib": device_info.peak_torch_gib(job.device),
        "nvml_used_gib": device_info.nvml_used_gib(job.device),
    }


def _rate(steps: list[StepRecord]) -> float:
    seconds = sum(s.duration_ns for s in steps) / 1e9
    return sum(s.work for s in steps) / seconds if seconds > 0 else 0.0
