"""Benchmark prompts: token ids drawn from the model's vocabulary, seeded per (seed, length, iteration)
so every config and engine of a sweep runs exactly the same requests."""
from __future__ import annotations

import numpy as np


def random_prompts(vocab_size: int, input_len: int, num_prompts: int, seed: int, iteration: int = 0) -> list[list[int]]:
    rng = np.random.default_rng([seed, input_len, iteration])
    return rng.integers(0, vocab_size, size=(num_prompts, input_len)).tolist()
