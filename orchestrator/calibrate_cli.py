"""`hybench calibrate`: train a model's hybrid history branch for one window and save it.

Writes the branch weights (safetensors, with the model's hash, W, steps and final loss in its
metadata) and the loss curve beside them (`<output stem>.loss.csv`). Both are written to temporary
names and renamed at the end, so an interrupted or refused run leaves nothing behind.
"""
from __future__ import annotations

import argparse
import csv
import os

import torch
from tqdm import tqdm

from hybench.engine import build_model, resolve_model
from hybench.engine.calibration import (CalibrationError, CalibrationSpec, calibrate, history_weights,
                                        save_history_weights)
from hybench.workers.eval_text import EvalTextError, EvalTextRef, text_tokens


def add_calibrate_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "calibrate", help="train the hybrid history branch to match full attention, for one model and window",
        description="Layer-wise distillation: train only the history branch (dt, A, gate, and with --maps its key "
        "and query maps; base weights frozen) "
        "so that each hybrid layer's output matches full attention's on the same inputs. No labels needed, and "
        "no data unless --eval-text is given. The file holds the model's hash and W, so it loads only for them (hybench.engine.calibration).",
    )
    parser.add_argument("--model", required=True, help="preset name, local checkpoint folder or Hugging Face id")
    parser.add_argument("--sliding-window-override", dest="window", type=int, required=True, metavar="W",
                        help="the window W the branch is calibrated for")
    parser.add_argument("--steps", type=int, default=200, help="optimizer steps (default: 200)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the branch init and the batches (default: 0)")
    parser.add_argument("--data", choices=("random", "recall"), default="recall",
                        help="calibration sequences without --eval-text: random tokens, or recall (random tokens "
                        "with a block repeated W-4W later; default)")
    parser.add_argument("--eval-text", metavar="FILE", default=None,
                        help="calibrate on windows of this text instead (.txt, .jsonl with a text field, or "
                        "Parquet with a text column; tokenized with the model's tokenizer, as for --task perplexity)")
    parser.add_argument("--seq-len", type=int, default=None,
                        help="tokens per calibration sequence (default: 8W, at least 256)")
    parser.add_argument("--batch-size", type=int, default=8, help="sequences per step (default: 8)")
    parser.add_argument("--maps", action="store_true",
                        help="also train a key and a query map per KV head (D x D, identity at first, on the rotated "
                        "q and k the branch reads); measured on tiny-recall in docs/calibration.md")
    parser.add_argument("--output", required=True, metavar="FILE", help="history weights to write (.safetensors)")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="hide the progress bar")
    parser.set_defaults(func=run_calibrate)


def curve_path(output: str) -> str:
    """Where the loss curve of `output` is written."""
    return os.path.splitext(output)[0] + ".loss.csv"


def _text(path: str, model: str, vocab_size: int) -> torch.Tensor:
    """The --eval-text file's token ids under the model's tokenizer, refused when they leave its vocabulary."""
    ref = EvalTextRef.open(path)
    tokens = text_tokens(ref.path, ref.sha256, model)
    if tokens and max(tokens) >= vocab_size:
        raise EvalTextError(f"--eval-text {path}: {model}'s tokenizer gives token id {max(tokens)}, outside the "
                            f"model's vocabulary of {vocab_size}")
    return torch.tensor(tokens, dtype=torch.long)


def run_calibrate(args: argparse.Namespace) -> int:
    for flag, value in (("--sliding-window-override", args.window), ("--steps", args.steps),
                        ("--batch-size", args.batch_size), ("--seq-len", args.seq_len)):
        if value is not None and value < 1:
            raise CalibrationError(f"{flag} must be at least 1, got {value}")
    parent = os.path.dirname(os.path.abspath(args.output))
    if not os.path.isdir(parent):
        raise CalibrationError(f"--output {args.output}: folder {parent} does not exist")
    seq_len = args.seq_len or max(256, 8 * args.window)
    spec = CalibrationSpec(window=args.window, steps=args.steps, seed=args.seed, batch=args.batch_size,
                           seq_len=seq_len, data="text" if args.eval_text else args.data, maps=args.maps)
    resolved = resolve_model(args.model)
    text = None if args.eval_text is None else _text(args.eval_text, args.model, resolved.config.vocab_size)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = build_model(resolved, device, torch.float32, seq_len, seed=args.seed)
    with tqdm(total=args.steps, desc="calibrate", unit="step", disable=not args.progress) as bar:
        def progress(step: int, loss: float) -> None:
            bar.set_postfix(loss=f"{loss:.4f}")
            bar.update(1)

        branches, curve = calibrate(model, spec, progress, text=text)
    weights = history_weights(model, branches, args.window, args.steps, curve[-1])
    curve_file = curve_path(args.output)
    save_history_weights(weights, args.output + ".tmp")
    with open(curve_file + ".tmp", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["step", "loss"])
        writer.writerows((step, f"{loss:.6g}") for step, loss in enumerate(curve, 1))
    os.replace(curve_file + ".tmp", curve_file)
    os.replace(args.output + ".tmp", args.output)
    print(f"calibrated {args.model} for W={args.window}: loss {curve[0]:.4f} -> {curve[-1]:.4f} over {args.steps} "
          f"steps; wrote {args.output} (sha {weights.sha}) and {curve_file}")
    return 0
