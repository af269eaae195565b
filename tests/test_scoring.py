"""Teacher-forced scoring through the engine's chunked prefill: `full` equals transformers' loss with
labels= on the same weights; sliding and hybrid equal the dense reference of DESIGN.md section 3."""
from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

from hybench.engine import build_model, resolve_model  # noqa: E402
from hybench.engine.errors import EngineConfigError  # noqa: E402
from hybench.engine.scoring import score_sequences  # noqa: E402
from engine_harness import make_engine, open_history  # noqa: E402
from reference_model import reference_logits  # noqa: E402
from test_hf_parity import _write_checkpoint  # noqa: E402

LENGTHS = (90, 61, 120)


@pytest.fixture(scope="module")
def hf_and_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ckpt")
    hf = _write_checkpoint(str(folder), tie=False)
    model = build_model(resolve_model(str(folder)), torch.device("cpu"), torch.float32, 256, seed=0)
    return hf, model


def _sequences(vocab: int) -> list[list[int]]:
    gen = torch.Generator().manual_seed(3)
    return [torch.randint(0, vocab, (n,), generator=gen).tolist() for n in LENGTHS]


@pytest.mark.parametrize("budget", [8192, 37, 16])  # one step for all; chunks cut mid-sequence
def test_full_nll_equals_transformers_loss(hf_and_model, budget):
    hf, model = hf_and_model
    sequences = _sequences(model.config.vocab_size)
    engine = make_engine(model, "full", max_num_batched_tokens=budget)
    scores = score_sequences(engine, sequences)
    assert max(s.num_tokens for s in engine.steps) <= budget
    if budget < min(LENGTHS):
        assert len(engine.steps) >= sum(LENGTHS) // budget  # really chunked
    for tokens, got in zip(sequences, scores):
        ids = torch.tensor([tokens])
        with torch.no_grad():
            out = hf(ids, labels=ids)
        assert got.nll.shape == (len(tokens) - 1,)
        assert abs(got.nll.mean().item() - out.loss.item()) <= 1e-4
        expected_nll = torch.nn.functional.cross_entropy(out.logits[0, :-1], ids[0, 1:], reduction="none")
        torch.testing.assert_close(got.nll, expected_nll, rtol=1e-4, atol=1e-4)
        assert torch.equal(got.correct, out.logits[0, :-1].argmax(-1) == ids[0, 1:])


@pytest.mark.parametrize("kind", ["sliding", "hybrid"])
def test_windowed_nll_equals_dense_reference(hf_and_model, kind):
    _, model = hf_and_model
    sequences = _sequences(model.config.vocab_size)
    window = 12
    engine = open_history(make_engine(model, kind, window=window, max_num_batched_tokens=29))
    scores = score_sequences(engine, sequences)
    for tokens, got in zip(sequences, scores):
        logits = reference_logits(model, tokens, kind, window)[:-1]
        expected = torch.nn.functional.cross_entropy(logits, torch.tensor(tokens[1:]), reduction="none")
        torch.testing.assert_close(got.nll, expected, rtol=1e-4, atol=1e-4)
    # the window changes the scores: sliding is not full by accident
    full = score_sequences(make_engine(model, "full"), sequences[:1])[0]
    assert (full.nll[window:] - scores[0].nll[window:]).abs().max() > 1e-3


def test_scoring_refuses_prefix_caching_and_one_token_sequences(hf_and_model):
    _, model = hf_and_model
    with pytest.raises(EngineConfigError, match="prefix caching"):
        score_sequences(make_engine(model, "full", enable_prefix_caching=True), [[1, 2, 3]])
    with pytest.raises(EngineConfigError, match="at least 2 tokens"):
        score_sequences(make_engine(model, "full"), [[1]])


def test_scoring_some_positions_projects_only_their_rows(hf_and_model):
    """Recall scores a block of a long sequence: the same numbers as scoring every position, NaN
    elsewhere, and the LM head sees only those rows (plus one per sequence for its sampled token)."""
    _, model = hf_and_model
    sequences = _sequences(model.config.vocab_size)
    every = score_sequences(make_engine(model, "full", max_num_batched_tokens=37), sequences)
    positions = [range(30, 45), range(1, 3), range(100, 120)]
    seen = []
    hook = model.lm_head.register_forward_hook(lambda _m, args, _out: seen.append(args[0].shape[0]))
    try:
        some = score_sequences(make_engine(model, "full", max_num_batched_tokens=37), sequences, positions)
    finally:
        hook.remove()
    assert sum(seen) == sum(len(r) for r in positions) + len(sequences)
    for got, want, wanted in zip(some, every, positions):
        index = torch.tensor(list(wanted)) - 1
        torch.testing.assert_close(got.nll[index], want.nll[index])
        assert torch.equal(got.correct[index], want.correct[index])
        outside = torch.ones(len(got.nll), dtype=torch.bool)
        outside[index] = False
        assert got.nll[outside].isnan().all() and not got.correct[outside].any()
    with pytest.raises(EngineConfigError, match="contiguous range"):
        score_sequences(make_engine(model, "full"), sequences[:1], [range(0, 5)])
