"""Drive the engine's runner by hand: teacher-forced logits for every position, through the real
prefill (optionally chunked) and decode paths, for one or several sequences at once."""
from __future__ import annotations

import torch

from hybench.engine import EngineConfig, LLMEngine
from hybench.engine.llama import LlamaForCausalLM
from hybench.engine.model_config import ModelConfig
from hybench.engine.scheduler import ScheduledBatch
from hybench.engine.sequence import SamplingParams, Sequence

TINY = ModelConfig.from_dict(
    {
        "architectures": ["LlamaForCausalLM"], "vocab_size": 97, "hidden_size": 48, "intermediate_size": 96,
        "num_hidden_layers": 2, "num_attention_heads": 6, "num_key_value_heads": 2, "head_dim": 8,
        "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "max_position_embeddings": 512,
        "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 64},
        "tie_word_embeddings": False,
    },
    "test-tiny",
)


def make_engine(model: LlamaForCausalLM, attention: str, window: int = 8, max_model_len: int = 256,
                **kw) -> LLMEngine:
    cfg = EngineConfig(model=model.config, attention=attention, window=window, max_model_len=max_model_len,
                       dtype=model.lm_head.weight.dtype, **kw)
    return LLMEngine(model, cfg)


def open_history(engine: LLMEngine) -> LLMEngine:
    """Make the history branch weigh as much as the window, so any error in it shows. The seeded
    init (gate ~0.02, dt ~0.001-0.1) would hide errors under the tolerance."""
    for attn in engine.model.attention_layers:
        if attn.history is not None:
            attn.history.gate.data.fill_(1.0)
            attn.history.dt_bias.data.fill_(0.5)
            attn.history.A_log.data.uniform_(-2.0, 0.0, generator=torch.Generator().manual_seed(0))
    return engine


@torch.inference_mode()
def teacher_forced_logits(engine: LLMEngine, sequences: list[list[int]], prefill_lens: list[int],
                          chunk: int | None = None) -> list[torch.Tensor]:
    """Logits at every position of each sequence: the first prefill_lens[i] tokens through
    (chunked) prefill of all sequences together, the rest one decode step at a time, batched."""
    runner, model = engine.runner, engine.model
    seqs = []
    for i, tokens in enumerate(sequences):
        seq = Sequence(i, tokens[: prefill_lens[i]], SamplingParams(len(tokens)), 0)
        engine.rows.allocate(seq)
        seqs.append(seq)
    out: list[list[torch.Tensor]] = [[] for _ in sequences]
    while any(s.num_cached < s.prompt_len for s in seqs):
        active = [s for s in seqs if s.num_cached < s.prompt_len]
        sizes = [min(s.prompt_len - s.num_cached, chunk or s.prompt_len) for s in active]
        ids, ctx = runner.prepare_prefill(ScheduledBatch(True, active, sizes))
        ctx.logits_indices = torch.arange(ids.numel(), device=ids.device)
        logits = model(ids, ctx)
        offset = 0
        for s, n in zip(active, sizes):
            out[s.request_id].append(logits[offset: offset + n])
            offset += n
            s.num_cached += n
    while True:
        active = [s for s in seqs if s.num_cached < len(sequences[s.request_id])]
        if not active:
            break
        for s in active:  # feed the true next token, not a sampled one
            s.output.append(sequences[s.request_id][s.num_cached])
        ids, ctx = runner.prepare_decode(ScheduledBatch(False, active, [1] * len(active)))
        logits = model(ids, ctx)
        for s, row in zip(active, logits):
            out[s.request_id].append(row[None])
            s.num_cached += 1
    for s in seqs:
        engine.rows.free(s)
    return [torch.cat(parts) for parts in out]
