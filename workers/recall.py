"""Long-range recall sequences: a random block, a filler, the block again, as token ids.

Recall needs no tokenizer and no data, so it works for any checkpoint. Layout of one sequence of
exactly `input_len` tokens, the repeat placed at the end so that it is read with the longest context:

    [prefix: input_len - 2b - d] [block: b] [filler: d] [block again: b]

The block's tokens are distinct and appear nowhere else before the repeat (prefix and filler draw
from the rest of the vocabulary), so the token that follows each block token is unambiguous: a model
that copies (an induction head) predicts the repeat's tokens 2..b; the repeat's first token is not
predictable and is not scored. Query and copied key lie b + d - 1 positions apart, so sliding
attention with a window W <= b + d - 1 cannot see the source of what it should copy.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hybench.engine.scoring import TokenScores

# Filler lengths in units of the window W that a recall task measures by default.
DISTANCE_MULTIPLES = (0.5, 1.0, 2.0, 4.0)
# A trailing non-zero word keeps recall draws apart from the benchmark prompts of the same seed.
_RECALL_STREAM = 0x7265636C


class RecallInputError(ValueError):
    """A recall sequence that cannot be built as asked; the message names the offending value."""


@dataclass(frozen=True, slots=True)
class RecallSequence:
    tokens: list[int]
    block_start: int  # position of the block's first token
    repeat_start: int  # position of the repeated block's first token
    block_len: int
    distance: int  # filler tokens between the block and its repeat

    @property
    def scored_positions(self) -> range:
        """Positions whose token is scored: the repeat's tokens after its first (len b - 1)."""
        return range(self.repeat_start + 1, self.repeat_start + self.block_len)


def distance_tokens(multiple: float, window: int) -> int:
    """A filler length given in units of W, rounded to a whole number of tokens."""
    if window < 1:
        raise RecallInputError(f"window must be at least 1, got {window}")
    if multiple < 0:
        raise RecallInputError(f"recall distance must be >= 0 windows, got {multiple}")
    return round(multiple * window)


def distances_that_fit(window: int, input_len: int, block_len: int,
                       multiples: tuple[float, ...] = DISTANCE_MULTIPLES) -> list[tuple[float, int]]:
    """(multiple of W, filler tokens) of each multiple whose sequence fits in `input_len`."""
    fitting = []
    for multiple in multiples:
        tokens = distance_tokens(multiple, window)
        if 2 * block_len + tokens <= input_len:
            fitting.append((multiple, tokens))
    return fitting


def recall_sequence(vocab_size: int, input_len: int, block_len: int, distance: int, seed: int) -> RecallSequence:
    """One seeded recall sequence of exactly `input_len` tokens; the same arguments give the same ids."""
    if block_len < 2:
        raise RecallInputError(f"recall block length must be at least 2 (its first token is not scored), "
                               f"got {block_len}")
    if distance < 0:
        raise RecallInputError(f"recall distance must be >= 0 tokens, got {distance}")
    needed = 2 * block_len + distance
    if needed > input_len:
        raise RecallInputError(
            f"recall distance {distance} with block length {block_len} needs an input of at least "
            f"2 x {block_len} + {distance} = {needed} tokens, the input length is {input_len}")
    others_len = input_len - 2 * block_len
    if block_len + (1 if others_len else 0) > vocab_size:
        raise RecallInputError(f"recall block length {block_len} needs a vocabulary of more than {block_len} "
                               f"tokens, the model has {vocab_size}")
    rng = np.random.default_rng([seed, input_len, block_len, distance, _RECALL_STREAM])
    block = rng.choice(vocab_size, size=block_len, replace=False)
    rest = np.setdiff1d(np.arange(vocab_size), block)  # prefix and filler never hold a block token
    others = rest[rng.integers(0, len(rest), size=others_len)] if others_len else np.empty(0, dtype=np.int64)
    prefix_len = others_len - distance
    tokens = np.concatenate([others[:prefix_len], block, others[prefix_len:], block])
    return RecallSequence(tokens=tokens.tolist(), block_start=prefix_len, repeat_start=prefix_len + block_len + distance,
                          block_len=block_len, distance=distance)


def recall_outcome(seq: RecallSequence, scores: TokenScores) -> tuple[float, float]:
    """(mean NLL, top-1 accuracy) over the repeat's scored tokens, from the sequence's teacher-forced scores."""
    nll, correct = scores.at(seq.scored_positions)
    return nll.mean().item(), correct.float().mean().item()
