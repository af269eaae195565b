"""The shipped `tiny-recall` preset, scored by hybench's own engine: `full` copies a block from 4W
back, `sliding` cannot beyond W (yet copies inside it), the seeded `hybrid` stays near sliding, and
calibration lowers the distillation loss and raises the hybrid's recall (inside the window: beyond it
neither way of calibrating recovers any, docs/calibration.md)."""
from __future__ import annotations

import pytest
import torch

from hybench.engine import build_model, resolve_model
from hybench.engine.calibration import (CalibrationSpec, apply_history_weights, calibrate, calibration_batch,
                                        distillation_loss, history_weights, seeded_branches)
from hybench.engine.model_config import TRAINED_PRESET_WINDOWS
from hybench.engine.scoring import score_sequences
from hybench.workers.recall import distance_tokens, recall_outcome, recall_sequence
from engine_harness import make_engine

WINDOW = TRAINED_PRESET_WINDOWS["tiny-recall"]
INPUT_LEN, BLOCK, COUNT = 256, 16, 6


@pytest.fixture(scope="module")
def model():
    return build_model(resolve_model("tiny-recall"), torch.device("cpu"), torch.float32, INPUT_LEN + 1, seed=0)


def _accuracy(model, kind: str, multiple: float, weights=None, count: int = COUNT) -> float:
    engine = make_engine(model, kind, window=WINDOW, max_model_len=INPUT_LEN + 1)
    if weights is not None:
        apply_history_weights(engine.model, weights)
    seqs = [recall_sequence(model.config.vocab_size, INPUT_LEN, BLOCK, distance_tokens(multiple, WINDOW), seed=s)
            for s in range(count)]
    scores = score_sequences(engine, [s.tokens for s in seqs])
    return sum(recall_outcome(s, sc)[1] for s, sc in zip(seqs, scores)) / count


def test_preset_ships_trained_weights():
    resolved = resolve_model("tiny-recall")
    assert len(resolved.weight_files) == 1 and resolved.config.num_params <= 10_000_000
    assert resolve_model("tiny-recall", "dummy").weight_files == ()


def test_full_recalls_at_4w_sliding_only_inside_the_window(model):
    assert _accuracy(model, "full", 4) >= 0.95
    assert _accuracy(model, "sliding", 0.25) >= 0.9  # block and repeat inside one window: it copies
    sliding = _accuracy(model, "sliding", 2)
    assert sliding <= 0.1  # chance is 1/256
    assert abs(_accuracy(model, "hybrid", 2) - sliding) <= 0.05


@pytest.mark.parametrize("maps", [False, True])
def test_calibration_lowers_the_loss_and_raises_hybrid_recall(model, maps):
    """The CLI's defaults (120 steps on recall data, seed 0), with and without key/query maps: the
    held-out distillation loss falls and in-window recall rises above the seeded branch's."""
    spec = CalibrationSpec(window=WINDOW, steps=120, seed=0, maps=maps)
    branches, _ = calibrate(model, spec)
    held_out = calibration_batch(model.config.vocab_size, spec, torch.Generator().manual_seed(99))
    with torch.no_grad():
        before = distillation_loss(model, seeded_branches(model, 0), held_out, WINDOW).item()
        after = distillation_loss(model, branches, held_out, WINDOW).item()
    assert after < before
    weights = history_weights(model, branches, WINDOW, spec.steps, after)
    assert _accuracy(model, "hybrid", 0.25, weights, count=16) > _accuracy(model, "hybrid", 0.25, count=16)
