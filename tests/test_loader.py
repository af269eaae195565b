"""Checkpoint folders: the real loading path, and bad folders that fail naming the file."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from hybench.engine import CheckpointError, EngineConfigError, build_model, resolve_model
from hybench.engine.loader import ResolvedModel
from engine_harness import TINY

CONFIG = {
    "architectures": ["LlamaForCausalLM"], "vocab_size": 97, "hidden_size": 48, "intermediate_size": 96,
    "num_hidden_layers": 2, "num_attention_heads": 6, "num_key_value_heads": 2, "head_dim": 8,
    "max_position_embeddings": 512, "tie_word_embeddings": False,
}


def _hf_state(model) -> dict[str, torch.Tensor]:
    """Our fused weights split back into Hugging Face names."""
    q, kv, inter = 6 * 8, 2 * 8, 96
    out = {}
    for name, p in model.state_dict().items():
        if "qkv_proj" in name:
            for part, rows in (("q_proj", slice(0, q)), ("k_proj", slice(q, q + kv)), ("v_proj", slice(q + kv, q + 2 * kv))):
                out[name.replace("qkv_proj", part)] = p[rows].clone()
        elif "gate_up_proj" in name:
            out[name.replace("gate_up_proj", "gate_proj")] = p[:inter].clone()
            out[name.replace("gate_up_proj", "up_proj")] = p[inter:].clone()
        else:
            out[name] = p.clone()
    return out


def _write(folder, state, config=CONFIG, shards=2):
    (folder / "config.json").write_text(json.dumps(config))
    names = sorted(state)
    weight_map = {}
    for i in range(shards):
        part = {n: state[n] for n in names[i::shards]}
        fname = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        save_file(part, str(folder / fname))
        weight_map |= {n: fname for n in part}
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))


@pytest.fixture
def source():
    return build_model(ResolvedModel(TINY, ()), torch.device("cpu"), torch.float32, 512, seed=4)


def test_sharded_checkpoint_round_trip(tmp_path, source):
    _write(tmp_path, _hf_state(source))
    loaded = build_model(resolve_model(str(tmp_path)), torch.device("cpu"), torch.float32, 512, seed=99)
    for (name, a), b in zip(source.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name


def test_malformed_config(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="config.json is not valid JSON"):
        resolve_model(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({**CONFIG, "architectures": ["GPT2LMHeadModel"]}))
    with pytest.raises(EngineConfigError, match="GPT2LMHeadModel is not supported"):
        resolve_model(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({k: v for k, v in CONFIG.items() if k != "hidden_size"}))
    with pytest.raises(CheckpointError, match="no 'hidden_size'"):
        resolve_model(str(tmp_path))


def test_missing_and_truncated_shards(tmp_path, source):
    _write(tmp_path, _hf_state(source))
    shard = tmp_path / "model-00002-of-00002.safetensors"
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="model-00002-of-00002.safetensors"):
        build_model(resolve_model(str(tmp_path)), torch.device("cpu"), torch.float32, 512, seed=0)
    shard.unlink()
    with pytest.raises(CheckpointError, match="missing: .*model-00002-of-00002.safetensors"):
        resolve_model(str(tmp_path))


def test_shape_mismatch_and_missing_tensor(tmp_path, source):
    state = _hf_state(source)
    state["model.layers.0.mlp.down_proj.weight"] = torch.zeros(48, 95)
    _write(tmp_path, state, shards=1)
    with pytest.raises(CheckpointError, match=r"down_proj.weight' has shape \(48, 95\)"):
        build_model(resolve_model(str(tmp_path)), torch.device("cpu"), torch.float32, 512, seed=0)
    state = _hf_state(source)
    del state["model.norm.weight"]
    _write(tmp_path, state, shards=1)
    with pytest.raises(CheckpointError, match="lacks weights for model.norm.weight"):
        build_model(resolve_model(str(tmp_path)), torch.device("cpu"), torch.float32, 512, seed=0)


def test_pickle_weights_are_never_loaded(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(CONFIG))
    (tmp_path / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(CheckpointError, match="pickle weights such as .bin are never loaded"):
        resolve_model(str(tmp_path))
    assert resolve_model(str(tmp_path), "dummy").weight_files == ()
