"""The Hugging Face peer generates exactly the asked-for tokens, times them sensibly, batches without
changing the answer, and agrees token for token with our engine's `full` config on a real checkpoint."""
from __future__ import annotations

import time

import pytest
import torch

transformers = pytest.importorskip("transformers")

from hybench.engine import EngineConfig, LLMEngine, SamplingParams, build_model, resolve_model  # noqa: E402
from hybench.workers.hf_peer import HFPeer  # noqa: E402
from hybench.workers.prompts import random_prompts  # noqa: E402

CPU = torch.device("cpu")
OUTPUT_LEN = 6


def _check_records(results, prompts, arrival_ns):
    assert [r.prompt_tokens for r in results] == [len(p) for p in prompts]
    for r in results:
        assert r.output_tokens == OUTPUT_LEN == len(r.output_ids) == len(r.token_ns)
        assert r.arrival_ns == arrival_ns <= r.token_ns[0]
        assert list(r.token_ns) == sorted(r.token_ns)


def test_dummy_preset_counts_timestamps_and_batching():
    resolved = resolve_model("tiny-llama", "dummy")
    assert resolved.weight_files == ()
    peer = HFPeer(resolved, CPU, torch.float32, seed=0)
    assert peer.name == "hf-generate-sdpa"
    prompts = random_prompts(resolved.config.vocab_size, 8, 4, seed=0)
    by_batch = {}
    for max_batch in (2, 4):
        finished = []
        arrival = time.monotonic_ns()
        results = peer.run(prompts, OUTPUT_LEN, max_batch, arrival, on_finish=lambda: finished.append(1))
        assert len(finished) == len(prompts)
        _check_records(results, prompts, arrival)
        by_batch[max_batch] = [r.output_ids for r in results]
        if max_batch == 2:  # the second batch queued behind the first: its TTFT includes the wait
            assert results[2].token_ns[0] > results[1].token_ns[-1]
    assert by_batch[2] == by_batch[4]
    again = HFPeer(resolved, CPU, torch.float32, seed=0).run(prompts, OUTPUT_LEN, 4, time.monotonic_ns())
    assert [r.output_ids for r in again] == by_batch[4]  # dummy weights are seeded


def test_checkpoint_matches_our_full_engine_with_eos_ignored(tmp_path):
    cfg = transformers.LlamaConfig(
        vocab_size=97, hidden_size=64, intermediate_size=112, num_hidden_layers=2, num_attention_heads=8,
        num_key_value_heads=2, head_dim=8, max_position_embeddings=128, rms_norm_eps=1e-5, rope_theta=10000.0)
    torch.manual_seed(0)
    hf = transformers.LlamaForCausalLM(cfg)
    hf.save_pretrained(tmp_path)
    resolved = resolve_model(str(tmp_path))
    assert resolved.weight_files

    # mixed lengths in one batch exercise left padding; same-length prompts are the job's usual case
    generator = torch.Generator().manual_seed(1)
    prompts = [torch.randint(0, 97, (n,), generator=generator).tolist() for n in (5, 11, 8)]
    model = build_model(resolved, CPU, torch.float32, cfg.max_position_embeddings, seed=0)
    engine = LLMEngine(model, EngineConfig(model=resolved.config, attention="full", max_model_len=64))
    ours = [tuple(s.output) for s in engine.generate(prompts, SamplingParams(max_tokens=OUTPUT_LEN))]

    # make the checkpoint's EOS a token greedy decoding emits first: it must not stop or bias generation
    hf.config.eos_token_id = hf.generation_config.eos_token_id = ours[0][0]
    hf.save_pretrained(tmp_path)
    peer = HFPeer(resolve_model(str(tmp_path)), CPU, torch.float32, seed=0)
    for max_batch in (1, 3):
        arrival = time.monotonic_ns()
        results = peer.run(prompts, OUTPUT_LEN, max_batch, arrival)
        _check_records(results, prompts, arrival)
        assert [r.output_ids for r in results] == ours
