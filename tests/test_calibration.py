"""History-branch calibration: its differentiable layer is the engine's hybrid layer, training lowers the
distillation loss, the weights round-trip through safetensors, and a file for another model or
window is refused."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from hybench.engine.calibration import (CalibrationError, CalibrationSpec, apply_history_weights, calibrate,
                                        calibration_batch, distillation_loss, history_weights, hybrid_layer_output,
                                        load_history_weights, save_history_weights, seeded_branches, teacher_layers)
from hybench.engine.checkpoint import resolve_model
from hybench.engine.loader import ResolvedModel, build_model
from hybench.orchestrator.cli import main
from engine_harness import TINY, make_engine, open_history, teacher_forced_logits

WINDOW = 8
SPEC = CalibrationSpec(window=WINDOW, steps=25, seed=0, batch=4, seq_len=64, lr=5e-2, block_len=4)


def _model(seed: int = 3):
    return build_model(ResolvedModel(TINY, ()), torch.device("cpu"), torch.float32, 128, seed=seed)


@pytest.fixture(scope="module")
def model():
    return _model()


def _open_branches(model):
    """Seeded branches with the gate opened and long steps: their history output is large and wrong,
    so there is a clear loss for calibration to remove."""
    branches = seeded_branches(model, SPEC.seed)
    with torch.no_grad():
        for branch in branches:
            branch.gate.fill_(2.0)
            branch.dt_bias.fill_(2.0)
            branch.A_log.fill_(-3.0)
    return branches


@pytest.fixture(scope="module")
def calibrated(model):
    return calibrate(model, SPEC, branches=_open_branches(model))


def test_calibration_layer_is_the_engines_hybrid_layer(model):
    """The layer calibration trains computes what the engine's hybrid prefill computes (layer 0, whose
    input is the same in both), so a calibrated branch means the same thing in the engine."""
    engine = open_history(make_engine(model, "hybrid", window=WINDOW, max_model_len=128))
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


def test_calibration_lowers_the_distillation_loss(model, calibrated):
    branches, curve = calibrated
    assert len(curve) == SPEC.steps
    held_out = calibration_batch(TINY.vocab_size, SPEC, torch.Generator().manual_seed(99))
    with torch.no_grad():
        before = distillation_loss(model, _open_branches(model), held_out, WINDOW).item()
        after = distillation_loss(model, branches, held_out, WINDOW).item()
    assert after < 0.75 * before
    assert all(not p.requires_grad for p in model.parameters())  # base weights stayed frozen


def test_weights_round_trip_and_apply_to_the_engine(model, calibrated, tmp_path):
    branches, curve = calibrated
    weights = history_weights(model, branches, WINDOW, SPEC.steps, curve[-1])
    path = str(tmp_path / "history.safetensors")
    save_history_weights(weights, path)
    loaded = load_history_weights(path, model, WINDOW)
    assert (loaded.model_hash, loaded.window, loaded.steps, loaded.final_loss) == (
        weights.model_hash, WINDOW, SPEC.steps, curve[-1])
    assert loaded.tensors.keys() == weights.tensors.keys() and loaded.sha == weights.sha
    engine = make_engine(model, "hybrid", window=WINDOW, max_model_len=128)
    apply_history_weights(engine.model, loaded)
    for attn, branch in zip(engine.model.attention_layers, branches):
        for (name, got), want in zip(attn.history.state_dict().items(), branch.state_dict().values()):
            torch.testing.assert_close(got, want, rtol=0, atol=0, msg=name)


def test_another_model_or_window_is_refused(model, calibrated, tmp_path):
    branches, curve = calibrated
    path = str(tmp_path / "history.safetensors")
    save_history_weights(history_weights(model, branches, WINDOW, SPEC.steps, curve[-1]), path)
    with pytest.raises(CalibrationError, match="window 8, the window asked is 16"):
        load_history_weights(path, model, 16)
    with pytest.raises(CalibrationError, match="another model"):
        load_history_weights(path, _model(seed=4), WINDOW)
    other_config = build_model(ResolvedModel(dataclasses.replace(TINY, rope_theta=500000.0), ()),
                               torch.device("cpu"), torch.float32, 128, seed=3)
    with pytest.raises(CalibrationError, match="another model"):
        load_history_weights(path, other_config, WINDOW)
    (tmp_path / "junk.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(CalibrationError, match="cannot read it as safetensors"):
        load_history_weights(str(tmp_path / "junk.safetensors"), model, WINDOW)


def test_cli_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys):
    output = tmp_path / "h.safetensors"
    assert main(["calibrate", "--model", "tiny-llama", "--sliding-window-override", "0",
                 "--output", str(output)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--sliding-window-override must be at least 1" in err
    assert list(tmp_path.iterdir()) == []


def test_cli_writes_weights_and_loss_curve(tmp_path, capsys):
    output = tmp_path / "h.safetensors"
    assert main(["calibrate", "--model", "tiny-llama", "--sliding-window-override", "8", "--steps", "2",
                 "--seq-len", "64", "--batch-size", "2", "--no-progress", "--output", str(output)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["h.loss.csv", "h.safetensors"]
    curve = (tmp_path / "h.loss.csv").read_text().splitlines()
    assert curve[0] == "step,loss" and len(curve) == 3
    model = build_model(resolve_model("tiny-llama"), torch.device("cpu"), torch.float32, 64, seed=0)
    weights = load_history_weights(str(output), model, 8)
    assert weights.steps == 2 and weights.final_loss == pytest.approx(float(curve[-1].split(",")[1]), rel=1e-5)
