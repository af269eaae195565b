"""The shipped `tiny-recall` preset, scored by hybench's own engine: `full` copies a block from 4W
back, `sliding` cannot beyond W (yet copies inside it), and the seeded `hybrid` stays near sliding."""
from __future__ import annotations

import pytest
import torch

from hybench.engine import build_model, resolve_model
from hybench.engine.model_config import TRAINED_PRESET_WINDOWS
from hybench.engine.scoring import score_sequences
from hybench.workers.recall import distance_tokens, recall_outcome, recall_sequence
from engine_harness import make_engine

WINDOW = TRAINED_PRESET_WINDOWS["tiny-recall"]
INPUT_LEN, BLOCK, COUNT = 256, 16, 6


@pytest.fixture(scope="module")
def model():
    return build_model(resolve_model("tiny-recall"), torch.device("cpu"), torch.float32, INPUT_LEN + 1, seed=0)


def _accuracy(model, kind: str, multiple: float) -> float:
    engine = make_engine(model, kind, window=WINDOW, max_model_len=INPUT_LEN + 1)
    seqs = [recall_sequence(model.config.vocab_size, INPUT_LEN, BLOCK, distance_tokens(multiple, WINDOW), seed=s)
            for s in range(COUNT)]
    scores = score_sequences(engine, [s.tokens for s in seqs])
    return sum(recall_outcome(s, sc)[1] for s, sc in zip(seqs, scores)) / COUNT


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
