"""Sequence: one request's tokens, progress and timestamps as it moves through the engine."""
from __future__ import annotations

import enum
from dataclasses import dataclass, field


class Status(enum.Enum):
    WAITING = "waiting"  # not admitted: holds no cache row
    PREFILLING = "prefilling"  # admitted, prompt partly in the cache
    DECODING = "decoding"
    FINISHED = "finished"


@dataclass(frozen=True, slots=True)
class SamplingParams:
    max_tokens: int  # generated exactly: EOS does not stop a benchmark request
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0


@dataclass(slots=True)
class Sequence:
    request_id: int
    prompt: list[int]
    sampling: SamplingParams
    arrival_ns: int
    status: Status = Status.WAITING
    row: int | None = None
    num_cached: int = 0  # tokens whose K/V (and history) are in the cache
    snapshot_at: int = 0  # prefix caching: prompt length to snapshot the cache at (0: none)
    prefix_hashes: list[int] = field(default_factory=list)  # prefix caching: block hashes of the prompt
    output: list[int] = field(default_factory=list)
    token_ns: list[int] = field(default_factory=list)  # host time each output token was ready

    @property
    def prompt_len(self) -> int:
        return len(self.prompt)

    @property
    def num_tokens(self) -> int:
        return len(self.prompt) + len(self.output)

    @property
    def total_len(self) -> int:
        """Tokens the sequence will have held when it finishes (sizes its cache need)."""
        return len(self.prompt) + self.sampling.max_tokens

    @property
    def last_token(self) -> int:
        return self.output[-1] if self.output else self.prompt[-1]

    @property
    def is_finished(self) -> bool:
        return len(self.output) >= self.sampling.max_tokens
