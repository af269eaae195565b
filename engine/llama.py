"""Llama-family decoder (Llama 3.x, Mistral, Qwen2): RMSNorm, RoPE, GQA, SwiGLU, tied or untied
embeddings. q/k/v and gate/up are fused into one matmul each; the loader maps HF weight names."""
from __future__ import annotations

import torch
from torch import nn

from hybench.engine.attention import Attention, AttentionLayout
from hybench.engine.context import StepContext
from hybench.engine.history import HistoryBranch
from hybench.engine.kernels.fused import add_rms_norm, rms_norm, silu_mul
from hybench.engine.kv_cache import KVCache
from hybench.engine.model_config import ModelConfig
from hybench.engine.rotary import RotaryEmbedding


class RMSNorm(nn.Module):
    def __init__(self, size: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None):
        """norm(x), or with a residual: (norm(x + residual), x + residual) in one kernel."""
        if residual is None:
            return rms_norm(x, self.weight, self.eps)
        return add_rms_norm(x, residual, self.weight, self.eps)


class MLP(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.gate_up_proj = nn.Linear(config.hidden_size, 2 * config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(silu_mul(self.gate_up_proj(x)))


class DecoderLayer(nn.Module):
    def __init__(self, config: ModelConfig, rope: RotaryEmbedding) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = Attention(config, rope)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None, ctx: StepContext, cos: torch.Tensor,
                sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (this layer's MLP output, the residual stream before it); the next layer's norm
        adds the two (vLLM's layout, so every add rides in a norm kernel)."""
        if residual is None:
            h, residual = self.input_layernorm(x), x
        else:
            h, residual = self.input_layernorm(x, residual)
        h = self.self_attn(h, ctx, cos, sin)
        h, residual = self.post_attention_layernorm(h, residual)
        return self.mlp(h), residual


class LlamaModel(nn.Module):
    def __init__(self, config: ModelConfig, max_positions: int) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.rope = RotaryEmbedding(config, max_positions)
        self.layers = nn.ModuleList(DecoderLayer(config, self.rope) for _ in range(config.num_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(self, input_ids: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        x = self.embed_tokens(input_ids)
        cos, sin = self.rope.lookup(ctx.positions, x.dtype)
        residual = None
        for layer in self.layers:
            x, residual = layer(x, residual, ctx, cos, sin)
        return self.norm(x, residual)[0]


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
                branch = HistoryBranch(self.config.hidden_size, self.config.num_heads, self.config.num_kv_heads,
                                       self.lm_head.weight.dtype)
                branch.to(self.lm_head.weight.device)
                branch.init_seeded(generator)
                attn.history = branch
            else:
                attn.history = None

    @property
    def history_params(self) -> int:
        return sum(a.history.num_params for a in self.attention_layers if a.history is not None)
