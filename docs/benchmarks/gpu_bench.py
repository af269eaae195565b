"""GPU targets of the fast path, measured in one run (Llama-3.2-1B preset, dummy weights, bf16).

    python docs/benchmarks/gpu_bench.py [--quick] [--out DIR]

1. decode step time against the roofline (bytes of weights + KV + state / measured copy
   bandwidth) at batch 1 / context 1024 and batch 64 / context 4096, for each config;
2. prefill MFU at 8 x 4096 tokens;
3. this engine against Hugging Face transformers: the decode step of `full` against `generate` eager
   and with its documented fast path (a static cache, with which `generate` compiles the forward), at
   batch 1 and 64, context 1024; and output-token throughput against `--engine hf` on the seed's
   default workload;
4. concurrent sequences at input 8192, window 2048, per config, in one memory budget;
5. input length 32768 in every config.
Each section prints a markdown table; the whole report is also written to DIR/gpu_bench.md.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import statistics
import sys
import time

import torch

from hybench.engine import EngineConfig, LLMEngine, SamplingParams, build_model, resolve_model
from hybench.workers import device_info
from hybench.workers.job import ModelCache, run_job
from hybench.workers.job_spec import JobSpec
from hybench.workers.store import ResultStore

MODEL = "meta-llama/Llama-3.2-1B"
CONFIGS = ("full", "sliding", "hybrid")
DEV = torch.device("cuda")
lines: list[str] = []


def emit(text: str = "") -> None:
    print(text, flush=True)
    lines.append(text)


def decode_vs_roofline(model, window: int, quick: bool, configs: tuple[str, ...] = CONFIGS,
                       kernel_sets: tuple[str, ...] = ("triton", "flash2")) -> None:
    """Each config with hybench's Triton decode kernels, and again on FlashAttention-2's decode +
    mamba-ssm's step (the previous fast path), in the same run."""
    bw = device_info.copy_bandwidth_gbs(DEV) * 1e9
    emit(f"\n### Decode step vs roofline (copy bandwidth {bw / 1e12:.2f} TB/s, window {window})\n")
    emit("| decode kernels | config | batch | context | step ms (median) | roofline ms | ratio | target |")
    emit("|---|---|---|---|---|---|---|---|")
    cases = [(1, 1024, 1.25), (64, 4096, 1.35)]
    for kernels in kernel_sets:
        with triton_decode(kernels == "triton"):
            for kind in configs:
                for batch, context, target in cases:
                    out_len = 32 if quick else 96
                    cfg = EngineConfig(model=model.config, attention=kind, window=window,
                                       max_model_len=context + out_len, max_num_seqs=batch, device=DEV,
                                       dtype=torch.bfloat16)
                    engine = LLMEngine(model, cfg)
                    prompts = torch.randint(0, model.config.vocab_size, (batch, context)).tolist()
                    engine.generate(prompts, SamplingParams(out_len))
                    steps = [s for s in engine.steps if not s.is_prefill and s.num_seqs == batch][8:]  # skip warm-up
                    step_ns = statistics.median(s.duration_ns for s in steps)
                    roof_ns = statistics.median(s.work for s in steps) / bw * 1e9
                    emit(f"| {engine.attn_backend.name} / {engine.ssm_backend_name} | {kind} | {batch} | {context} | "
                         f"{step_ns / 1e6:.3f} | {roof_ns / 1e6:.3f} | {step_ns / roof_ns:.2f} | "
                         f"<= {target} {'met' if step_ns / roof_ns <= target else 'MISSED'} |")
                    engine.release()


@contextlib.contextmanager
def triton_decode(enabled: bool):
    """Select (or not) hybench's Triton decode kernels for engines built inside the block."""
    from hybench.engine.kernels import decode_triton

    available = decode_triton.available
    if not enabled:
        decode_triton.available = lambda device, head_dim: False
    try:
        yield
    finally:
        decode_triton.available = available


def prefill_mfu(model) -> None:
    peak = device_info.peak_tflops(DEV)
    emit(f"\n### Prefill MFU at 8 x 4096 tokens (peak {peak} TFLOP/s bf16 dense)\n")
    emit("| config | step s | TFLOP/s | MFU | target |\n|---|---|---|---|---|")
    for kind in CONFIGS:
        cfg = EngineConfig(model=model.config, attention=kind, window=2048, max_model_len=4097, max_num_seqs=8,
                           max_num_batched_tokens=8 * 4096, device=DEV, dtype=torch.bfloat16)
        engine = LLMEngine(model, cfg)
        best = None
        for _ in range(3):
            engine.steps.clear()
            engine.generate(torch.randint(0, 1000, (8, 4096)).tolist(), SamplingParams(1))
            step = next(s for s in engine.steps if s.is_prefill)
            best = step if best is None or step.duration_ns < best.duration_ns else best
        tflops = best.work / best.duration_ns / 1e3
        emit(f"| {kind} | {best.duration_ns / 1e9:.3f} | {tflops:.0f} | {tflops / peak:.1%} | >= 40% "
             f"{'met' if tflops / peak >= 0.4 else 'MISSED'} |")
        engine.release()


def decode_profile(model, batch: int, context: int, configs=CONFIGS) -> None:
    """Where a decode step's GPU time goes (eager, so each kernel is visible)."""
    from torch.profiler import ProfilerActivity, profile

    for kind in configs:
        emit(f"\n### Batch-{batch} decode step, {kind} (window 512), context {context}: GPU kernel time (eager)\n")
        cfg = EngineConfig(model=model.config, attention=kind, window=512, max_model_len=context + 76,
                           max_num_seqs=batch, device=DEV, dtype=torch.bfloat16, enforce_eager=True)
        engine = LLMEngine(model, cfg)
        for _ in range(batch):
            engine.add_request(torch.randint(0, 1000, (context,)).tolist(), SamplingParams(40))
        while engine.has_work and sum(not s.is_prefill for s in engine.steps) < 10:
            engine.step()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(5):
                engine.step()
        events = [e for e in prof.key_averages() if e.device_type.name == "CUDA"]
        total = sum(e.self_device_time_total for e in events) / 5
        count = sum(e.count for e in events) / 5
        emit(f"{count:.0f} kernels per step, {total / 1e3:.3f} ms of GPU time per step\n")
        emit("| kernel | calls/step | us/step |\n|---|---|---|")
        for e in sorted(events, key=lambda e: -e.self_device_time_total)[:10]:
            emit(f"| {e.key[:70]} | {e.count / 5:.0f} | {e.self_device_time_total / 5:.0f} |")
        engine.release()


def jobs(store: ResultStore, models: ModelCache, **spec) -> list[dict]:
    rows = []
    for n in spec.pop("input_lens"):
        rows.append(run_job(JobSpec(model=MODEL, load_format="dummy", dtype="bfloat16", input_len=n, **spec),
                            store, models, progress=False))
    return rows


def hybench_decode_ms(model, batch: int, context: int, steps: int) -> float:
    """Median decode step of this engine's full config (warm-up steps left out)."""
    cfg = EngineConfig(model=model.config, attention="full", window=context + steps, max_model_len=context + steps,
                       max_num_seqs=batch, device=DEV, dtype=torch.bfloat16)
    engine = LLMEngine(model, cfg)
    engine.generate(torch.randint(0, model.config.vocab_size, (batch, context)).tolist(), SamplingParams(steps))
    ms = statistics.median(s.duration_ns for s in engine.steps if not s.is_prefill and s.num_seqs == batch) / 1e6
    engine.release()
    return ms


def hf_decode_ms(peer, batch: int, context: int, steps: int, static: bool) -> float:
    """Median time between consecutive tokens of one `generate` call (the first 8 steps left out), after
    one untimed call of the same shape (with a static cache, that call compiles the forward)."""
    from hybench.workers.hf_peer import _left_padded, _TokenClock

    vocab = peer.model.config.vocab_size
    ids, mask = _left_padded(torch.randint(0, vocab, (batch, context)).tolist(), DEV)
    kwargs = {"cache_implementation": "static"} if static else {}
    clock = None
    with torch.inference_mode():
        for _ in range(2):
            clock = _TokenClock(DEV)
            peer.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=steps, min_new_tokens=steps,
                                streamer=clock, **kwargs)
    gaps = [b - a for a, b in zip(clock.token_ns, clock.token_ns[1:])][8:]
    return statistics.median(gaps) / 1e6


def vs_hf_decode(model, quick: bool) -> None:
    """This engine's decode step against transformers' generate, eager and static-cache + compiled."""
    from hybench.workers.hf_peer import HFPeer

    steps = 32 if quick else 64
    peer = HFPeer(resolve_model(MODEL, "dummy"), DEV, torch.bfloat16, seed=0)
    emit(f"\n### Decode step against Hugging Face generate (context 1024, {steps} steps, bf16, "
         f"transformers {__import__('transformers').__version__})\n")
    emit("| batch | hybench full ms | HF eager ms | HF static cache + compile ms | HF eager / hybench | "
         "HF static+compile / hybench |")
    emit("|---|---|---|---|---|---|")
    for batch in (1, 64):
        ours = hybench_decode_ms(model, batch, 1024, steps)
        eager = hf_decode_ms(peer, batch, 1024, steps, static=False)
        compiled = hf_decode_ms(peer, batch, 1024, steps, static=True)
        emit(f"| {batch} | {ours:.3f} | {eager:.3f} | {compiled:.3f} | {eager / ours:.2f}x | {compiled / ours:.2f}x |")
    del peer
    torch.cuda.empty_cache()


def vs_hf(store: ResultStore, quick: bool) -> None:
    lens = (512, 1024) if quick else (512, 1024, 2048, 4096)
    prompts = 16 if quick else 100
    emit(f"\n### Output throughput vs `--engine hf` (generate, eager; inputs {lens}, {prompts} prompts, output 128)\n")
    emit("| engine | input | output tok/s | total tok/s | P99 latency ms | status |\n|---|---|---|---|---|---|")
    totals = {}
    for engine in ("hybrid", "hf"):
        rows = jobs(store, ModelCache(), config="full", window=4096, output_len=128, num_prompts=prompts,
                    engine=engine, num_warmup_iters=1, num_benchmark_iters=1, input_lens=lens)
        for r in rows:
            emit(f"| {engine} | {r['input_len']} | {r.get('output_tok_s') or 0:.0f} | "
                 f"{r.get('throughput_tok_s') or 0:.0f} | {r.get('latency_p99_ms') or 0:.0f} | {r['status']} |")
        ok = [r for r in rows if r["status"] == "ok"]
        out_tokens = sum(r["output_tok_s"] * r["elapsed_s"] for r in ok)
        totals[engine] = out_tokens / sum(r["elapsed_s"] for r in ok) if ok else 0.0
    ratio = totals["hybrid"] / totals["hf"] if totals["hf"] else float("nan")
    emit(f"\nWhole workload: this engine {totals['hybrid']:.0f} output tok/s, `--engine hf` {totals['hf']:.0f}: "
         f"{ratio:.1f}x")


def concurrency(store: ResultStore, models: ModelCache) -> None:
    emit("\n### Concurrent sequences at input 8192, window 2048 (gpu_memory_utilization 0.9)\n")
    emit("| config | max concurrency | KV pool GiB | per-seq MiB | ran at once | output tok/s | status |")
    emit("|---|---|---|---|---|---|---|")
    rows = {}
    for kind in CONFIGS:
        r = jobs(store, models, config=kind, window=2048, output_len=16, num_prompts=64, max_num_seqs=2048,
                 num_warmup_iters=0, num_benchmark_iters=1, input_lens=(8192,))[0]
        rows[kind] = r
        per_seq = r["kv_pool_gib"] * 1024 / r["kv_capacity_seqs"] if r.get("kv_capacity_seqs") else 0
        emit(f"| {kind} | {r.get('kv_capacity_seqs')} | {r.get('kv_pool_gib') or 0:.1f} | {per_seq:.0f} | "
             f"{r.get('max_running')} | {r.get('output_tok_s') or 0:.0f} | {r['status']} "
             f"{(r.get('error') or '').splitlines()[0] if r.get('error') else ''} |")
    full = rows["full"].get("kv_capacity_seqs") or 1
    for kind in ("sliding", "hybrid"):
        ratio = (rows[kind].get("kv_capacity_seqs") or 0) / full
        emit(f"\n{kind} / full concurrency: {ratio:.2f}x (target >= 3.5x: {'met' if ratio >= 3.5 else 'MISSED'})")


def long_inputs(store: ResultStore, models: ModelCache) -> None:
    emit("\n### Input length 32768 (window 2048, 2 prompts, output 16, after 1 warm-up iteration)\n")
    emit("| config | status | request latency P50 ms | output tok/s | KV used GiB |\n|---|---|---|---|---|")
    for kind in CONFIGS:
        r = jobs(store, models, config=kind, window=2048, output_len=16, num_prompts=2, num_warmup_iters=1,
                 num_benchmark_iters=1, input_lens=(32768,))[0]
        emit(f"| {kind} | {r['status']} {r.get('error') or ''} | {r.get('latency_p50_ms') or 0:.0f} | "
             f"{r.get('output_tok_s') or 0:.0f} | {r.get('kv_used_gib') or 0:.2f} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller workloads, for a smoke run")
    parser.add_argument("--out", default=os.environ.get("OUT", "."))
    parser.add_argument("--sections", default="decode,prefill,profile,hf,concurrency,long")
    parser.add_argument("--configs", default=",".join(CONFIGS), help="configs of the decode and profile sections")
    parser.add_argument("--decode-kernels", default="triton,flash2",
                        help="decode section: hybench's Triton kernels (triton), the previous fast path (flash2), or both")
    args = parser.parse_args()
    sections = args.sections.split(",")
    configs = tuple(args.configs.split(","))
    kernel_sets = tuple(args.decode_kernels.split(","))
    if not set(configs) <= set(CONFIGS) or not set(kernel_sets) <= {"triton", "flash2"}:
        parser.error(f"--configs takes {','.join(CONFIGS)}; --decode-kernels takes triton,flash2")
    emit(f"# GPU benchmark: {torch.cuda.get_device_name(DEV)}, {dt.date.today()}, torch {torch.__version__}")
    model = build_model(resolve_model(MODEL, "dummy"), DEV, torch.bfloat16, 131072, seed=0)
    from hybench.engine.kernels import select_backends
    attn, ssm = select_backends(DEV, model.config.head_dim)
    emit(f"backends: attention {attn.name}, ssm {ssm.name}")
    store = ResultStore(os.path.join("/tmp", f"bench-{int(time.time())}"))
    models = ModelCache()
    if "decode" in sections:
        decode_vs_roofline(model, 512, args.quick, configs, kernel_sets)
    if "prefill" in sections:
        prefill_mfu(model)
    if "profile" in sections:
        decode_profile(model, 1, 1024, configs)
    if "profile64" in sections:
        decode_profile(model, 64, 4096, tuple(c for c in configs if c != "full"))
    if "hf" in sections:
        vs_hf_decode(model, args.quick)
    del model
    torch.cuda.empty_cache()
    if "hf" in sections:
        vs_hf(store, args.quick)
    if "concurrency" in sections:
        concurrency(store, models)
    if "long" in sections:
        long_inputs(store, models)
    with open(os.path.join(args.out, "gpu_bench.md"), "w") as fh:
        fh.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
