"""Llama-family decoder (Llama 3.x, Mistral, Qwen2): RMSNorm, RoPE, GQA, SwiGLU, tied or untied
embeddings. q/k/v and gate/up are fused into one matmul each; the loader maps HF weight names."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hybench.engine.attention import Attention, AttentionLayout
from hybench.engine.context import StepContext
from hybench.engine.history import HistoryBranch
from hybench.engine.kv_cache import KVCache
from hybench.engine.model_config import ModelConfig
from hybench.engine.rotary import RotaryEmbedding


class RMSNorm(nn.Module):
    def __init__(self, size: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


class MLP(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.gate_up_proj = nn.Linear(config.hidden_size, 2 * config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
        return self.down_proj(F.silu(gate) * up)


class DecoderLayer(nn.Module):
    def __init__(self, config: ModelConfig, rotary: RotaryEmbedding) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = Attention(config, rotary)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), ctx)
        return x + self.mlp(self.post_attention_layernorm(x))


class LlamaModel(nn.Module):
    def __init__(self, config: ModelConfig, max_positions: int) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        rotary = RotaryEmbedding(config, max_positions)
        self.layers = nn.ModuleList(DecoderLayer(config, rotary) for _ in range(config.num_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(self, input_ids: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        x = self.embed_tokens(input_ids)
        for layer in self.layers:
            x = layer(x, ctx)
        return self.norm(x)


class LlamaForCausalLM(nn.Module):
    def __init__(self, config: ModelConfig, max_positions: int | None = None) -> None:
        super().__init__()
        self.config = config
        self.model = LlamaModel(config, max_positions or config.max_position_embeddings)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    def forward(self, input_ids: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        """Logits of the tokens `ctx.logits_indices` selects, [len(indices), vocab]."""
        hidden = self.model(input_ids, ctx)
        return self.lm_head(hidden[ctx.logits_indices]).float()

    @property
    def attention_layers(self) -> list[Attention]:
        return [layer.self_attn for layer in self.model.layers]

    def configure(self, layout: AttentionLayout, cache: KVCache, seed: int) -> None:
        """Set every layer's attention layout and cache rows; hybrid adds a seeded history branch
        (the same seed gives the same branch, so configs compare on equal terms)."""
        generator = torch.Generator().manual_seed(seed)
        for attn, layer_cache in zip(self.attention_layers, cache.layers):
            attn.layout, attn.cache = layout, layer_cache
            if layout.kind == "hybrid":
                branch = HistoryBranch(self.config.hidden_size, self.config.num_heads, self.config.num_kv_heads)
                branch.to(self.lm_head.weight.device)
                branch.init_seeded(generator)
                attn.history = branch
            else:
                attn.history = None

    @property
    def history_params(self) -> int:
        return sum(a.history.num_params for a in self.attention_layers if a.history is not None)
