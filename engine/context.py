"""StepContext: the per-step metadata one forward pass needs, built by the runner.

Model code reads only this object, never the scheduler, so the same model runs eager, under
CUDA graphs, or in tests that build a context by hand (nano-vllm's design).
Slots are flat indices into a layer's cache viewed as [rows * capacity]: row * C + position % C.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(slots=True)
class PrefillMeta:
    """A packed batch of prompt chunks. For sequence i the "assembled" keys are its cached context
    (the tokens before the chunk that attention or the history branch still needs, in position
    order) followed by the chunk's own tokens."""

    cu_seqlens_q: torch.Tensor  # [S+1] int32, chunk tokens
    cu_seqlens_k: torch.Tensor  # [S+1] int32, assembled keys
    cu_seqlens_q_host: list[int]
    cu_seqlens_k_host: list[int]
    max_seqlen_q: int
    max_seqlen_k: int
    ctx_src: torch.Tensor  # [M] slots of the cached context tokens
    ctx_dst: torch.Tensor  # [M] their index in the assembled buffer
    new_dst: torch.Tensor  # [N] index of each chunk token in the assembled buffer
    write_src: torch.Tensor  # [K] chunk tokens that stay in the cache (the last C of a chunk)
    write_dst: torch.Tensor  # [K] their slots
    rows: torch.Tensor  # [S] cache row of each sequence
    has_state: torch.Tensor  # [S] bool: the sequence has absorbed history before this chunk
    hist_src: torch.Tensor  # [N] assembled index of token t-W for chunk token t; M+N (a zero row) if t < W


@dataclass(slots=True)
class DecodeMeta:
    """One new token per sequence. The runner fills these from two packed host tensors (one copy
    each per step); under CUDA graphs they are views of the graphs' static buffers."""

    rows: torch.Tensor  # [B] cache row
    slots: torch.Tensor  # [B] slot the new token is written to
    evict: torch.Tensor  # [B] 1 where the slot holds token t-W, which leaves the window now
    used: torch.Tensor  # [B] int32 filled slots after the write: min(t + 1, C)
    row_starts: torch.Tensor  # [B + 1] int32 flat index of each row's first slot (FlashAttention's cu_seqlens_k)
    query_starts: torch.Tensor  # [B + 1] int32 b * G: each sequence's G query heads per KV head, packed as rows


@dataclass(slots=True)
class StepContext:
    positions: torch.Tensor  # [N] absolute position of each input token
    logits_indices: torch.Tensor  # rows of the hidden states to compute logits for
    prefill: PrefillMeta | None = None
    decode: DecodeMeta | None = None
