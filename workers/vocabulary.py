"""Where a dataset's token ids come from: a tokenizer's ordinary tokens, or a model config's vocabulary.

With a tokenizer, ids are drawn from its vocabulary less its special tokens (a stray BOS or EOS in
the middle of a prompt would change what a model does with it), and prompts get their decoded text.
Without one (none given, or not reachable offline), ids are drawn from 0..vocab_size-1 of a model
config, which the engine accepts just the same; there is simply no text.
"""
from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from hybench.engine import resolve_model
from hybench.engine.bounded_input import load_json
from hybench.engine.hub import hub_online
from hybench.engine.model_config import PRESETS
from hybench.workers.datasets import DatasetError
from hybench.workers.prompts import Pool

DEFAULT_MODEL = "tiny-llama"


@dataclass(frozen=True, slots=True)
class Vocabulary:
    pool: Pool  # the ids prompts are drawn from
    size: int  # every id is below it
    source: str  # recorded in the dataset: which tokenizer or model config
    tokenizer: Any | None = None  # a transformers tokenizer, when there is one to decode with

    def decode(self, token_ids: list[list[int]]) -> list[str] | None:
        return None if self.tokenizer is None else [self.tokenizer.decode(ids) for ids in token_ids]


def choose_vocabulary(tokenizer: str | None, model: str | None) -> tuple[Vocabulary, str | None]:
    """The tokenizer's vocabulary, else the model config's; the second item is the note to print when
    there is no tokenizer. `model` None: the tokenizer's own preset config if it names one, else tiny-llama."""
    if tokenizer is not None and not is_local_preset(tokenizer):
        loaded = load_tokenizer(tokenizer)
        if loaded is not None:
            return _tokenizer_vocabulary(tokenizer, loaded), None
    model = model or (tokenizer if tokenizer in PRESETS else DEFAULT_MODEL)
    vocab_size = resolve_model(model, "dummy").config.vocab_size
    if tokenizer is None:
        why = "no --tokenizer given"
    elif is_local_preset(tokenizer):
        why = f"{tokenizer} is a built-in preset without a tokenizer"
    else:
        why = f"tokenizer {tokenizer} is not reachable"
    note = (f"note: {why}; drawing token ids from the {model} config's vocabulary "
            f"(0..{vocab_size - 1}), and the prompts have no text")
    return Vocabulary(vocab_size, vocab_size, f"model config {model}"), note


def is_local_preset(name: str) -> bool:
    """A preset that is no Hub id (tiny-llama): it has no tokenizer anywhere, so the Hub is not asked."""
    return name in PRESETS and "/" not in name and not os.path.isdir(name)


def load_tokenizer(name: str) -> Any | None:
    """A local folder must hold a tokenizer (else it is the user's mistake); a Hub id is looked up in
    the local cache first, then online only when the Hub answers (engine.hub), and is None when
    neither has it."""
    from transformers import AutoTokenizer  # slow to import; only `hybench data --tokenizer` and --eval-text need it

    if os.path.isdir(name):
        _check_tokenizer_files(name)
        try:
            return AutoTokenizer.from_pretrained(name, trust_remote_code=False)  # never a checkpoint's code
        except (OSError, ValueError) as exc:
            first_line = str(exc).splitlines()[0]
            raise DatasetError(f"--tokenizer {name}: no tokenizer in this folder ({first_line})") from None
    for local_only in (True,) if not hub_online() else (True, False):
        try:
            return AutoTokenizer.from_pretrained(name, local_files_only=local_only, trust_remote_code=False)
        except (OSError, ValueError):
            continue
    return None


def _check_tokenizer_files(folder: str) -> None:
    """Every JSON file of a tokenizer folder within the size and nesting limits, before transformers
    (and its Rust tokenizer) parse them without either."""
    for path in sorted(glob.glob(os.path.join(folder, "*.json"))):
        try:
            load_json(path, "tokenizer")
        except (OSError, ValueError) as exc:  # InputLimitError, JSONDecodeError, UnicodeDecodeError
            raise DatasetError(f"--tokenizer {folder}: {os.path.basename(path)}: "
                               f"{getattr(exc, 'strerror', None) or exc}") from None


def _tokenizer_vocabulary(name: str, tokenizer: Any) -> Vocabulary:
    size = len(tokenizer)
    special = set(tokenizer.all_special_ids)
    special |= {i for i, token in tokenizer.added_tokens_decoder.items() if token.special}
    pool = np.setdiff1d(np.arange(size), np.fromiter(special, dtype=np.int64, count=len(special)))
    if pool.size == 0:
        raise DatasetError(f"--tokenizer {name}: every token is a special token")
    return Vocabulary(pool, size, f"tokenizer {name} ({pool.size} ordinary tokens)", tokenizer)
