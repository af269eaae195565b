"""Benchmark prompts as token ids: the engine runs ids, so a prompt's length is exact by construction.

Two patterns. `random`: every token drawn independently (the original suite's workload). A job
without a dataset runs these, seeded per (seed, length, iteration) so every config and engine of
a sweep runs the same requests. `shared_prefix`: K prefixes, each prompt one of them (round robin)
plus a random suffix, the workload prefix caching is measured on. Both draw from a pool of ids:
the whole vocabulary for jobs, a tokenizer's ordinary (non-special) tokens for `hybench data`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PATTERNS = ("random", "shared_prefix")
# A trailing non-zero word in the seed keeps shared-prefix draws apart from random ones of the same
# (seed, length, iteration): numpy's SeedSequence ignores trailing zeros, not other words.
_SHARED_PREFIX_STREAM = 0x73686172

Pool = int | np.ndarray  # a vocabulary size n (ids 0..n-1), or the ids to draw from


@dataclass(frozen=True, slots=True)
class PromptSet:
    """The prompts of one input length; for shared-prefix sets, which prefix each begins with."""

    input_len: int
    token_ids: list[list[int]]
    prefix_len: int = 0  # tokens every prompt shares with the others of its prefix; 0: none
    prefix_index: list[int] | None = None  # per prompt: which of the set's prefixes it begins with
    texts: list[str] | None = None  # per prompt, when a tokenizer decoded the ids


def _draw(rng: np.random.Generator, pool: Pool, shape: tuple[int, int]) -> np.ndarray:
    if isinstance(pool, int):
        return rng.integers(0, pool, size=shape)
    return pool[rng.integers(0, len(pool), size=shape)]


def random_prompts(pool: Pool, input_len: int, num_prompts: int, seed: int, iteration: int = 0) -> list[list[int]]:
    rng = np.random.default_rng([seed, input_len, iteration])
    return _draw(rng, pool, (num_prompts, input_len)).tolist()


def check_shared_prefix(input_len: int, num_prompts: int, prefix_len: int, num_prefixes: int) -> None:
    """Raise ValueError unless every prefix fits the prompts and every prefix is used."""
    if prefix_len > input_len:
        raise ValueError(f"a shared prefix of {prefix_len} tokens is longer than the {input_len}-token prompts")
    if prefix_len < 1:
        raise ValueError(f"the shared prefix of the {input_len}-token prompts would have {prefix_len} tokens; "
                         "it needs at least 1")
    if not 1 <= num_prefixes <= num_prompts:
        raise ValueError(f"{num_prefixes} shared prefixes for {num_prompts} prompts: give 1 to {num_prompts}")


def shared_prefix_prompts(pool: Pool, input_len: int, num_prompts: int, prefix_len: int, num_prefixes: int,
                          seed: int) -> PromptSet:
    """`num_prefixes` random prefixes of `prefix_len` tokens; prompt i is prefix i mod K plus a random
    suffix, `input_len` tokens in all."""
    check_shared_prefix(input_len, num_prompts, prefix_len, num_prefixes)
    rng = np.random.default_rng([seed, input_len, 0, _SHARED_PREFIX_STREAM])
    prefixes = _draw(rng, pool, (num_prefixes, prefix_len))
    prefix_index = np.arange(num_prompts) % num_prefixes
    suffixes = _draw(rng, pool, (num_prompts, input_len - prefix_len))
    token_ids = np.concatenate([prefixes[prefix_index], suffixes], axis=1)
    return PromptSet(input_len, token_ids.tolist(), prefix_len, prefix_index.tolist())
