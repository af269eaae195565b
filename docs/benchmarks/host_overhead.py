"""Host work of one decode step, the model left out: scheduling, packing the step's inputs, byte
accounting and postprocessing. On a GPU this runs between device steps, so it adds to every step.

    python docs/benchmarks/host_overhead.py [--batch 64] [--steps 300]

Runs on CPU with the tiny built-in model; the runner's forward is replaced by one that only packs
the inputs (as the CUDA-graph path does) and returns a token per sequence.
"""
from __future__ import annotations

import argparse
import time

import torch

from hybench.engine import EngineConfig, LLMEngine, SamplingParams, build_model, resolve_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64, help="sequences decoding together")
    parser.add_argument("--steps", type=int, default=300, help="timed decode steps")
    parser.add_argument("--config", default="hybrid", choices=("full", "sliding", "hybrid"))
    args = parser.parse_args()
    cpu = torch.device("cpu")
    model = build_model(resolve_model("tiny-llama", "dummy"), cpu, torch.float32, 4096, seed=0)
    cfg = EngineConfig(model=model.config, attention=args.config, window=64, max_model_len=4096,
                       max_num_seqs=args.batch, device=cpu, dtype=torch.float32, kv_cache_gib=1.0)
    engine = LLMEngine(model, cfg)
    for _ in range(args.batch):
        engine.add_request(list(range(1, 32)), SamplingParams(args.steps + 64))
    engine.step()  # the prefill, with the real model
    runner = engine.runner

    def packed_only(batch):
        runner.pack_decode(batch, len(batch.seqs), 0)
        return [1] * len(batch.seqs)

    runner.run = packed_only
    for _ in range(20):
        engine.step()
    start = time.perf_counter()
    for _ in range(args.steps):
        engine.step()
    per_step = (time.perf_counter() - start) / args.steps
    print(f"{args.config}, batch {args.batch}: {per_step * 1e6:.0f} us of host work per decode step")


if __name__ == "__main__":
    main()
