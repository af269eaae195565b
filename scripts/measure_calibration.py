"""Recall of the calibrated hybrid on tiny-recall against full, sliding and the seeded hybrid.

Calibrates the history branch (engine.calibration) and scores block-filler-block recall sequences
through the engine (score_sequences + recall_outcome): top-1 accuracy on the repeated block inside
the window (0.25W) and at 2W, and the share of the full-vs-sliding gap (accuracy and NLL) the
calibrated branch recovers. Prints one table row; docs/calibration.md records the rows.
"""
from __future__ import annotations

import argparse
import time

import torch

from hybench.engine import EngineConfig, LLMEngine, build_model, resolve_model
from hybench.engine.calibration import CalibrationSpec, apply_history_weights, calibrate, history_weights
from hybench.engine.model_config import TRAINED_PRESET_WINDOWS
from hybench.engine.scoring import score_sequences
from hybench.workers.recall import distance_tokens, recall_outcome, recall_sequence

INPUT_LEN, BLOCK, COUNT = 256, 16, 16


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--data", default="recall")
    parser.add_argument("--lr", type=float, default=3e-2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--maps", action="store_true", help="also train the key and query maps (hybench calibrate --maps)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    window = TRAINED_PRESET_WINDOWS["tiny-recall"]
    model = build_model(resolve_model("tiny-recall"), torch.device("cpu"), torch.float32, INPUT_LEN + 1, seed=0)
    start = time.monotonic()
    branches, curve = calibrate(model, CalibrationSpec(window=window, steps=args.steps, seed=args.seed,
                                                       data=args.data, lr=args.lr, maps=args.maps))
    wall = time.monotonic() - start
    weights = history_weights(model, branches, window, args.steps, curve[-1])

    def outcome(kind: str, multiple: float, calibrated: bool = False) -> tuple[float, float]:
        """(mean NLL, top-1 accuracy) over the sequences' repeated blocks."""
        engine = LLMEngine(model, EngineConfig(model=model.config, attention=kind, window=window,
                                               max_model_len=INPUT_LEN + 1, dtype=torch.float32))
        if calibrated:
            apply_history_weights(engine.model, weights)
        seqs = [recall_sequence(model.config.vocab_size, INPUT_LEN, BLOCK, distance_tokens(multiple, window),
                                seed=1000 + s) for s in range(COUNT)]
        scores = score_sequences(engine, [s.tokens for s in seqs])
        outcomes = [recall_outcome(s, sc) for s, sc in zip(seqs, scores)]
        return sum(o[0] for o in outcomes) / COUNT, sum(o[1] for o in outcomes) / COUNT

    print(f"data={args.data} maps={args.maps} steps={args.steps} lr={args.lr} wall={wall:.0f}s loss {curve[0]:.4f} -> {curve[-1]:.4f}")
    for multiple in (0.25, 2.0):
        results = [outcome("full", multiple), outcome("sliding", multiple), outcome("hybrid", multiple),
                   outcome("hybrid", multiple, calibrated=True)]
        for name, index in (("top-1", 1), ("NLL", 0)):
            full, sliding, seeded, calibrated = (r[index] for r in results)
            share = (calibrated - sliding) / (full - sliding) if full != sliding else float("nan")
            print(f"{multiple}W {name}: full {full:.3f} sliding {sliding:.3f} seeded {seeded:.3f} "
                  f"calibrated {calibrated:.3f} gap recovered {share:.3f}")


if __name__ == "__main__":
    main()
