"""Prefix caching for all three configs (plain Python; the runner does the copies).

Prompts are hashed in blocks of `block_size` tokens, each hash chained to the one before (as vLLM
does), so a hash names a whole block-aligned prefix. An entry is a snapshot of a sequence's cache
at one block boundary L, kept in a row of its own:
  full:    K/V of positions 0..L-1 (grows with L);
  sliding: the ring of the last W tokens before L, at their absolute positions (constant size);
  hybrid:  that ring plus the SSM state and dt ring at L (constant size, however long the prefix).
A windowed cache cannot be rewound, so the snapshot must be taken when the prefill passes L: the
cache counts, for every block-aligned prefix, how many live requests (waiting or running) share
it, and a sequence is snapshotted at the longest prefix it shares with another one (a radix-tree
fork point, as SGLang finds it). A new request whose prompt starts with a cached prefix gets the
snapshot copied into its row and prefills only the rest. A request whose fork point another
running sequence is about to snapshot waits for it instead of computing the same prefix again
(cache-aware admission), so requests that arrive together share too.
Copying (instead of sharing blocks through a block table) keeps every sequence's cache one
contiguous row, which FlashAttention-2 reads directly; the saving is the prefill compute, i.e.
TTFT. No running sequence reads an entry's row, so an entry can go as soon as its copies are
queued: entries need no reference count, and the least recently used go first whenever a
sequence needs a row.
"""
from __future__ import annotations

from collections import Counter, OrderedDict
from dataclasses import dataclass

from hybench.engine.row_manager import RowManager

DEFAULT_BLOCK_SIZE = 16


@dataclass(slots=True)
class PrefixEntry:
    row: int
    length: int  # tokens the snapshot covers (a multiple of the block size)


@dataclass(slots=True)
class PrefixCacheStats:
    lookups: int = 0
    hits: int = 0
    prompt_tokens: int = 0
    hit_tokens: int = 0
    peak_entries: int = 0

    @property
    def hit_rate(self) -> float:
        """Share of prompt tokens served from the cache."""
        return self.hit_tokens / self.prompt_tokens if self.prompt_tokens else 0.0


def prefix_hashes(prompt: list[int], block_size: int) -> list[int]:
    """hashes[i] names prompt[: (i + 1) * block_size], for the blocks before the prompt's last token
    (that token is always recomputed: its logits start the output)."""
    out, prev = [], 0
    for end in range(block_size, len(prompt), block_size):
        prev = hash((prev, tuple(prompt[end - block_size:end])))
        out.append(prev)
    return out


class PrefixCache:
    def __init__(self, rows: RowManager, block_size: int = DEFAULT_BLOCK_SIZE) -> None:
        self.rows = rows
        self.block_size = block_size
        self._entries: OrderedDict[int, PrefixEntry] = OrderedDict()  # least recently used first
        self._live = Counter()  # prefix hash -> live requests whose prompt starts with it
        self._pending: set[int] = set()  # prefixes a running sequence will snapshot
        self.stats = PrefixCacheStats()

    @property
    def num_entries(self) -> int:
        return len(self._entries)

    def register(self, hashes: list[int]) -> None:
        self._live.update(hashes)

    def unregister(self, hashes: list[int]) -> None:
        self._live.subtract(hashes)
        for key in hashes:
            if self._live[key] <= 0:
                del self._live[key]

    def longest_cached(self, hashes: list[int]) -> PrefixEntry | None:
        for key in reversed(hashes):
            if key in self._entries:
                return self._entries[key]
        return None

    def snapshot_point(self, hashes: list[int], cached: int) -> int:
        """The longest prefix (beyond `cached` tokens, not cached yet) that another live request
        shares; 0 when there is none."""
        for i in range(len(hashes) - 1, -1, -1):
            length = (i + 1) * self.block_size
            if length <= cached:
                return 0
            if self._live[hashes[i]] >= 2 and hashes[i] not in self._entries:
                return length
        return 0

    def should_wait(self, hashes: list[int]) -> bool:
        """True when a running sequence will soon snapshot this prompt's fork point."""
        entry = self.longest_cached(hashes)
        point = self.snapshot_point(hashes, entry.length if entry else 0)
        return bool(point) and hashes[point // self.block_size - 1] in self._pending

    def admit(self, hashes: list[int], prompt_len: int) -> tuple[PrefixEntry | None, int]:
        """For a request being admitted: the entry to restore from (marked as just used) and the
        prefix length to snapshot it at (0: none), which becomes pending."""
        self.stats.lookups += 1
        self.stats.prompt_tokens += prompt_len
        entry = self.longest_cached(hashes)
        if entry is not None:
            self._entries.move_to_end(hashes[entry.length // self.block_size - 1])
            self.stats.hits += 1
            self.stats.hit_tokens += entry.length
        point = self.snapshot_point(hashes, entry.length if entry else 0)
        if point:
            self._pending.add(hashes[point // self.block_size - 1])
        return entry, point

    def insert(self, hashes: list[int], length: int) -> int | None:
        """Reserve a row for the snapshot of the prefix of `length` tokens; None when it is cached
        already (a sequence with the same prefix got there first) or no row can be had."""
        key = hashes[length // self.block_size - 1]
        self._pending.discard(key)
        if key in self._entries or (not self.rows.num_free and not self.evict_one()):
            return None
        entry = PrefixEntry(self.rows.take(), length)
        self._entries[key] = entry
        self.stats.peak_entries = max(self.stats.peak_entries, len(self._entries))
        return entry.row

    def evict_one(self) -> bool:
        """Free the least recently used entry's row; False when there is none."""
        if not self._entries:
            return False
        _, entry = self._entries.popitem(last=False)
        self.rows.give_back(entry.row)
        return True
