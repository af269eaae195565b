"""Quality jobs beside throughput jobs on a GPU, and calibration speed (Llama-3.2-1B shape, dummy weights).

    python docs/benchmarks/gpu_quality.py --model FOLDER_OR_ID --eval-text FILE [--out DIR]

1. For each config at one long input (default 32768 tokens, W = 4096): a throughput job (its
   prefill-dominated tokens/s), a perplexity job (every position through the LM head) and a recall job
   (only the repeated block's rows through it), as `hybench sweep --tasks` runs them; the quality
   jobs' `scored_tok_s` against the throughput job's `throughput_tok_s`.
2. `hybench calibrate`'s training loop (fp32, batch 1, sequences of 8W) at several windows: seconds per
   step, tokens per second, peak GPU memory.

Perplexity needs a tokenizer: `--model` is a folder holding the model's config.json and tokenizer
files (the weights are dummy, so any tokenizer whose ids fit the vocabulary measures the same speed),
or a Hub id whose tokenizer is in the local cache. Without `--eval-text` the perplexity jobs are
skipped. Writes DIR/gpu_quality.md.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import subprocess
import time

import torch

from hybench.engine.calibration import CalibrationSpec, calibrate
from hybench.engine.checkpoint import resolve_model
from hybench.engine.loader import build_model
from hybench.workers.eval_text import EvalTextRef
from hybench.workers.job import ModelCache, run_job
from hybench.workers.job_spec import JobSpec
from hybench.workers.store import ResultStore

CONFIGS = ("full", "sliding", "hybrid")
PROMPTS = {"throughput": 2, "perplexity": 2, "recall": 1}  # recall: one sequence per distance that fits


def quality_vs_throughput(args: argparse.Namespace, lines: list[str]) -> None:
    text = EvalTextRef.open(args.eval_text) if args.eval_text else None
    tasks = ("throughput", "perplexity", "recall") if text else ("throughput", "recall")
    store, models = ResultStore(os.path.join(args.out, "store")), ModelCache()
    lines += [f"\n### Quality jobs against the throughput job (input {args.input_len}, W = {args.window})\n",
              "| config | throughput job tok/s | perplexity tok/s (ratio) | recall tok/s (ratio) | job wall s |",
              "|---|---|---|---|---|"]
    for config in CONFIGS:
        speed, walls = {}, []
        for task in tasks:
            spec = JobSpec(model=args.model, config=config, window=args.window, input_len=args.input_len,
                           output_len=1, num_prompts=PROMPTS[task], load_format="dummy", task=task,
                           num_warmup_iters=1, num_benchmark_iters=2, max_num_batched_tokens=8192,
                           eval_text=text if task == "perplexity" else None)
            start = time.time()
            row = run_job(spec, store, models, progress=False)
            walls.append(f"{time.time() - start:.0f}")
            if row["status"] != "ok":
                speed[task] = None
                print(f"{config} {task}: {row['status']}: {row['error']}", flush=True)
                continue
            speed[task] = row["throughput_tok_s"] if task == "throughput" else row["scored_tok_s"]
            print(f"{config} {task}: {speed[task]:,.0f} tok/s", flush=True)
        base = speed.get("throughput")

        def cell(task: str) -> str:
            if task not in speed:
                return "not run"
            if speed[task] is None:
                return "failed"
            return f"{speed[task]:,.0f}" + (f" ({speed[task] / base:.2f}x)" if base else "")

        lines.append(f"| {config} | {base:,.0f} | {cell('perplexity')} | {cell('recall')} | {' / '.join(walls)} |"
                     if base else f"| {config} | failed | {cell('perplexity')} | {cell('recall')} | {' / '.join(walls)} |")


def calibration_speed(args: argparse.Namespace, lines: list[str]) -> None:
    lines += ["\n### Calibration (hybench calibrate's loop: fp32, batch 1, sequences of 8W, 4 steps)\n",
              "| W | sequence | s per step | tokens/s | peak GPU GiB |", "|---|---|---|---|---|"]
    for window in args.calibration_windows:
        seq = 8 * window
        model = build_model(resolve_model(args.model, "dummy"), torch.device("cuda"), torch.float32, seq, seed=0)
        stamps: list[float] = []
        torch.cuda.reset_peak_memory_stats()
        try:
            calibrate(model, CalibrationSpec(window=window, steps=4, batch=1, seq_len=seq),
                      lambda _step, _loss: stamps.append(time.perf_counter()))
        except torch.OutOfMemoryError:
            lines.append(f"| {window} | {seq} | out of memory | | |")
        else:
            per_step = (stamps[-1] - stamps[0]) / (len(stamps) - 1)  # the first step pays for warm-up
            lines.append(f"| {window} | {seq} | {per_step:.2f} | {seq / per_step:,.0f} | "
                         f"{torch.cuda.max_memory_allocated() / 2**30:.1f} |")
        print(lines[-1], flush=True)
        del model
        torch.cuda.empty_cache()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="meta-llama/Llama-3.2-1B",
                        help="a folder with config.json and tokenizer files, or a Hub id (weights are dummy)")
    parser.add_argument("--eval-text", default=None, help="text for the perplexity jobs (none: they are skipped)")
    parser.add_argument("--input-len", type=int, default=32768, help="tokens per sequence (default: 32768)")
    parser.add_argument("--window", type=int, default=4096, help="W of sliding and hybrid (default: 4096)")
    parser.add_argument("--calibration-windows", type=lambda s: [int(w) for w in s.split(",")],
                        default=[512, 1024, 4096], help="windows timed for calibration (default: 512,1024,4096)")
    parser.add_argument("--out", default="/tmp/gpu_quality", help="folder for the page and the jobs' store")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    lines = [f"# Quality jobs and calibration on {torch.cuda.get_device_name()}",
             f"\nDate {dt.date.today()}, commit {commit or 'unknown'}, torch {torch.__version__}. Command: "
             f"`python docs/benchmarks/gpu_quality.py --model {args.model}"
             + (f" --eval-text {args.eval_text}`" if args.eval_text else "`")]
    quality_vs_throughput(args, lines)
    calibration_speed(args, lines)
    page = "\n".join(lines) + "\n"
    with open(os.path.join(args.out, "gpu_quality.md"), "w") as handle:
        handle.write(page)
    print(page)


if __name__ == "__main__":
    main()
