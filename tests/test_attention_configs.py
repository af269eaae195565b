"""sliding and hybrid against the dense reference; the window convention; prefill/decode/chunking
equivalences; the gate at zero; batching sequences of different lengths together."""
from __future__ import annotations

import pytest
import torch

from hybench.engine import build_model
from hybench.engine.kernels.attention_ref import decode_attention_ref, prefill_attention_ref
from hybench.engine.loader import ResolvedModel
from engine_harness import TINY, make_engine, open_history, teacher_forced_logits
from reference_model import reference_logits


@pytest.fixture(scope="module")
def model():
    return build_model(ResolvedModel(TINY, ()), torch.device("cpu"), torch.float32, 512, seed=3)


def _tokens(n: int, seed: int = 0) -> list[int]:
    return torch.randint(0, TINY.vocab_size, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


def test_window_convention_pinned():
    """Query t sees exactly keys t-W+1..t: with q = 0 attention averages the visible values, and
    value j is the one-hot of position j, so the output is the indicator of the visible keys / count."""
    n, w = 10, 3
    q = torch.zeros(n, 1, n)
    k = torch.zeros(n, 1, n)
    v = torch.eye(n)[:, None, :]
    out = prefill_attention_ref(q, k, v, [0, n], [0, n], w, 1.0)[:, 0, :]
    for t in range(n):
        assert (out[t] > 0).nonzero().flatten().tolist() == list(range(max(0, t - w + 1), t + 1))
    # a ring of W slots at decode holds exactly the last W tokens, in any slot order
    k_cache = torch.zeros(1, w, 1, n)
    v_cache = torch.zeros(1, w, 1, n)
    for t in range(n):
        v_cache[0, t % w, 0] = torch.eye(n)[t]
    out = decode_attention_ref(torch.zeros(1, 1, n), k_cache, v_cache, torch.tensor([0]), torch.tensor([w]), 1.0)
    assert (out[0, 0] > 0).nonzero().flatten().tolist() == list(range(n - w, n))


@pytest.mark.parametrize("window", [1, 2, 7, 64])
@pytest.mark.parametrize("kind", ["sliding", "hybrid"])
def test_windowed_configs_match_reference(model, kind, window):
    """Windows 1, 2, W < prompt and W >= prompt; prefill only, and prefill + decode past the window."""
    tokens = _tokens(40)
    engine = open_history(make_engine(model, kind, window=window))
    expected = reference_logits(model, tokens, kind, window)
    for prefill_len in (40, 5):
        got = teacher_forced_logits(engine, [tokens], [prefill_len])[0]
        torch.testing.assert_close(got, expected, rtol=2e-4, atol=2e-4)


def test_full_matches_reference(model):
    tokens = _tokens(30)
    got = teacher_forced_logits(make_engine(model, "full"), [tokens], [12])[0]
    torch.testing.assert_close(got, reference_logits(model, tokens, "full", None), rtol=2e-4, atol=2e-4)


@pytest.mark.parametrize("kind", ["full", "sliding", "hybrid"])
def test_chunked_prefill_equals_unchunked(model, kind):
    tokens = _tokens(70, seed=1)
    engine = open_history(make_engine(model, kind, window=9))
    whole = teacher_forced_logits(engine, [tokens], [70])[0]
    for chunk in (1, 4, 9, 23):
        torch.testing.assert_close(teacher_forced_logits(engine, [tokens], [70], chunk=chunk)[0], whole,
                                   rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kind", ["full", "sliding", "hybrid"])
def test_batched_sequences_of_different_lengths(model, kind):
    """Several sequences prefilled and decoded together give each one's solo logits."""
    seqs = [_tokens(n, seed=n) for n in (33, 12, 50)]
    engine = open_history(make_engine(model, kind, window=6))
    together = teacher_forced_logits(engine, seqs, [20, 3, 41], chunk=16)
    for tokens, got in zip(seqs, together):
        alone = teacher_forced_logits(engine, [tokens], [len(tokens)])[0]
        torch.testing.assert_close(got, alone, rtol=1e-4, atol=1e-4)


def test_hybrid_with_gate_at_zero_equals_sliding(model):
    tokens = _tokens(45, seed=2)
    sliding = teacher_forced_logits(make_engine(model, "sliding", window=5), [tokens], [20])[0]
    engine = make_engine(model, "hybrid", window=5)
    for attn in engine.model.attention_layers:
        attn.history.gate.data.fill_(-1e4)  # sigmoid(-1e4) == 0 exactly in fp32
    hybrid = teacher_forced_logits(engine, [tokens], [20])[0]
    torch.testing.assert_close(hybrid, sliding, rtol=0, atol=0)
    # and the branch really contributes when the gate is open
    open_history(engine)
    assert not torch.allclose(teacher_forced_logits(engine, [tokens], [20])[0], sliding, atol=1e-3)


def test_hybrid_branch_init_is_seeded(model):
    a = make_engine(model, "hybrid", seed=5).model.attention_layers[0].history.A_log.clone()
    b = make_engine(model, "hybrid", seed=5).model.attention_layers[0].history.A_log.clone()
    c = make_engine(model, "hybrid", seed=6).model.attention_layers[0].history.A_log.clone()
    assert torch.equal(a, b) and not torch.equal(a, c)
