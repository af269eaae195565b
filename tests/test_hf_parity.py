"""`full` matches Hugging Face transformers' LlamaForCausalLM on the same weights, loaded from a
sharded safetensors checkpoint that the test writes (GQA and Llama-3 rope scaling)."""
from __future__ import annotations

import json
import os

import pytest
import torch

transformers = pytest.importorskip("transformers")

from hybench.engine import build_model, resolve_model  # noqa: E402
from engine_harness import make_engine, teacher_forced_logits  # noqa: E402

HF_CONFIG = dict(
    vocab_size=101, hidden_size=64, intermediate_size=112, num_hidden_layers=3, num_attention_heads=8,
    num_key_value_heads=2, head_dim=8, max_position_embeddings=256, rms_norm_eps=1e-5, rope_theta=50000.0,
    rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                  "original_max_position_embeddings": 32},
)


def _write_checkpoint(folder: str, tie: bool, arch: str = "llama") -> "transformers.PreTrainedModel":
    torch.manual_seed(0)
    if arch == "qwen2":
        cfg = transformers.Qwen2Config(**HF_CONFIG, tie_word_embeddings=tie)
        hf = transformers.Qwen2ForCausalLM(cfg)
    else:
        cfg = transformers.LlamaConfig(**HF_CONFIG, tie_word_embeddings=tie)
        hf = transformers.LlamaForCausalLM(cfg)
    with torch.no_grad():  # give norms and biases non-trivial values too
        for name, p in hf.named_parameters():
            if name.endswith("norm.weight") or name.endswith(".bias"):
                p.add_(torch.randn_like(p) * 0.1)
    hf.save_pretrained(folder, max_shard_size="40KB", safe_serialization=True)
    return hf.eval()


@pytest.mark.parametrize("tie,arch", [(False, "llama"), (True, "llama"), (False, "qwen2")])
def test_full_matches_transformers_prefill_and_decode(tmp_path, tie, arch):
    hf = _write_checkpoint(str(tmp_path), tie, arch)
    shards = [f for f in os.listdir(tmp_path) if f.endswith(".safetensors")]
    assert len(shards) > 1 and os.path.exists(tmp_path / "model.safetensors.index.json")

    resolved = resolve_model(str(tmp_path))
    assert resolved.config.num_kv_heads == 2 and resolved.config.rope_scaling["rope_type"] == "llama3"
    model = build_model(resolved, torch.device("cpu"), torch.float32, 256, seed=0)
    engine = make_engine(model, "full")

    tokens = torch.randint(0, 101, (2, 90), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = hf(tokens).logits
    # all-prefill, and prefill of 40 then 50 single-token decode steps, both sequences batched
    for prefill_lens in ([90, 90], [40, 55]):
        got = teacher_forced_logits(engine, tokens.tolist(), prefill_lens)
        for i in range(2):
            torch.testing.assert_close(got[i], expected[i], rtol=1e-4, atol=1e-4)


def test_tied_checkpoint_config_round_trip(tmp_path):
    _write_checkpoint(str(tmp_path), tie=True)
    with open(tmp_path / "config.json") as fh:
        assert json.load(fh)["tie_word_embeddings"] is True
    model = build_model(resolve_model(str(tmp_path)), torch.device("cpu"), torch.float32, 256, seed=0)
    assert model.lm_head.weight is model.model.embed_tokens.weight
