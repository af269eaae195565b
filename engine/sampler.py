"""Token sampling: greedy by default; temperature and top-p per sequence, from a seeded generator."""
from __future__ import annotations

import torch


def sample(logits: torch.Tensor, temperature: torch.Tensor, top_p: torch.Tensor,
           generator: torch.Generator | None) -> torch.Tensor:
    """logits [B, V] fp32; temperature, top_p [B]. Rows with temperature 0 are greedy."""
    greedy = logits.argmax(dim=-1)
    probs = torch.softmax(logits / temperature.clamp(min=1e-5)[:, None], dim=-1)
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    outside_nucleus = (sorted_probs.cumsum(dim=-1) - sorted_probs) > top_p[:, None]
    sorted_probs = sorted_probs.masked_fill(outside_nucleus, 0.0)
    choice = torch.multinomial(sorted_probs, 1, generator=generator)
    sampled = order.gather(-1, choice).squeeze(-1)
    return torch.where(temperature > 0, sampled, greedy)
