"""The history branch's learned key and query maps (`hybench calibrate --maps`): identity maps leave the
branch exactly DESIGN.md section 3; trained (here: random) maps mean the same in the engine's prefill,
chunked prefill and decode and in calibration's differentiable layer; files with maps round-trip and
files without them still load; calibrating with maps lowers the distillation loss."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from hybench.engine.calibration import (apply_history_weights, calibrate, calibration_batch, distillation_loss,
                                        history_weights, hybrid_layer_output, load_history_weights,
                                        save_history_weights, teacher_layers)
from hybench.engine.loader import ResolvedModel, build_model
from engine_harness import TINY, make_engine, open_history, teacher_forced_logits
from test_calibration import SPEC, WINDOW, _open_branches

KV_HEADS, HEAD_DIM = TINY.num_kv_heads, TINY.head_dim


@pytest.fixture(scope="module")
def model():
    return build_model(ResolvedModel(TINY, ()), torch.device("cpu"), torch.float32, 256, seed=3)


def _tokens(n: int, seed: int = 0) -> list[int]:
    return torch.randint(0, TINY.vocab_size, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


def _with_random_maps(engine):
    """Maps far from identity, so that a path that skips or misplaces one shows."""
    generator = torch.Generator().manual_seed(7)
    for attn in engine.model.attention_layers:
        attn.history.enable_maps(HEAD_DIM)
        with torch.no_grad():
            for param in (attn.history.k_map, attn.history.q_map):
                param.add_(torch.randn(param.shape, generator=generator) * 0.5)
    return engine


def test_identity_maps_change_nothing(model):
    """Prefill then decode, and chunked prefill: bit for bit what the branch without maps gives."""
    tokens = _tokens(50)
    engine = open_history(make_engine(model, "hybrid", window=WINDOW))
    cases = ((20, None), (50, 7))
    expected = [teacher_forced_logits(engine, [tokens], [n], chunk=chunk)[0] for n, chunk in cases]
    for attn in engine.model.attention_layers:
        attn.history.enable_maps(HEAD_DIM)
    for (n, chunk), want in zip(cases, expected):
        torch.testing.assert_close(teacher_forced_logits(engine, [tokens], [n], chunk=chunk)[0], want, rtol=0, atol=0)


def test_maps_mean_the_same_in_prefill_chunks_and_decode(model):
    tokens = _tokens(60, seed=1)
    engine = _with_random_maps(open_history(make_engine(model, "hybrid", window=WINDOW)))
    whole = teacher_forced_logits(engine, [tokens], [60])[0]
    for prefill_len, chunk in ((60, 5), (13, None), (3, None)):
        torch.testing.assert_close(teacher_forced_logits(engine, [tokens], [prefill_len], chunk=chunk)[0], whole,
                                   rtol=1e-4, atol=1e-4)
    identity = open_history(make_engine(model, "hybrid", window=WINDOW))
    assert not torch.allclose(teacher_forced_logits(identity, [tokens], [60])[0], whole, atol=1e-3)


def test_calibrations_layer_with_maps_is_the_engines(model):
    engine = _with_random_maps(open_history(make_engine(model, "hybrid", window=WINDOW, max_model_len=128)))
    ids = calibration_batch(TINY.vocab_size, SPEC, torch.Generator().manual_seed(1))[:1]
    seen = []
    hook = engine.model.attention_layers[0].register_forward_hook(lambda mod, args, out: seen.append(out))
    try:
        teacher_forced_logits(engine, [ids[0].tolist()], [ids.shape[1]])
    finally:
        hook.remove()
    h, q, k, v, _ = teacher_layers(model, ids)[0]
    attn = engine.model.attention_layers[0]
    with torch.no_grad():
        ours = hybrid_layer_output(attn, attn.history, h, q, k, v, WINDOW)[0]
    torch.testing.assert_close(ours, seen[0][:ids.shape[1]], rtol=1e-4, atol=1e-5)


def test_calibration_with_maps_lowers_the_loss_and_round_trips(model, tmp_path):
    spec = dataclasses.replace(SPEC, maps=True)
    branches, curve = calibrate(model, spec, branches=_open_branches(model))
    assert all(b.k_map is not None and not torch.equal(b.k_map, torch.eye(HEAD_DIM).expand_as(b.k_map))
               for b in branches)  # the maps trained
    held_out = calibration_batch(TINY.vocab_size, spec, torch.Generator().manual_seed(99))
    with torch.no_grad():
        before = distillation_loss(model, _open_branches(model), held_out, WINDOW).item()
        after = distillation_loss(model, branches, held_out, WINDOW).item()
    assert after < 0.75 * before
    path = str(tmp_path / "maps.safetensors")
    save_history_weights(history_weights(model, branches, WINDOW, spec.steps, curve[-1]), path)
    loaded = load_history_weights(path, model, WINDOW)
    assert {k.split(".")[-1] for k in loaded.tensors} >= {"k_map", "q_map"}
    engine = make_engine(model, "hybrid", window=WINDOW, max_model_len=128)
    apply_history_weights(engine.model, loaded)
    for attn, branch in zip(engine.model.attention_layers, branches):
        torch.testing.assert_close(attn.history.q_map, branch.q_map, rtol=0, atol=0)
    # A file calibrated without maps loads into a branch without them, as before.
    plain, plain_curve = calibrate(model, dataclasses.replace(SPEC, steps=2))
    save_history_weights(history_weights(model, plain, WINDOW, 2, plain_curve[-1]), path)
    engine = make_engine(model, "hybrid", window=WINDOW, max_model_len=128)
    apply_history_weights(engine.model, load_history_weights(path, model, WINDOW))
    assert all(attn.history.k_map is None for attn in engine.model.attention_layers)
