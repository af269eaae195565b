"""Text for perplexity jobs (`--eval-text`): a .txt file, .jsonl with a `text` field per line, or
Parquet with a `text` column, tokenized with the job's model's own tokenizer.

The file's bytes (their sha256) define the job; the path only says where to read it, as for
`--dataset`. Documents are tokenized one by one without special tokens and joined by the tokenizer's
EOS token where it has one, then cut into consecutive sequences of the input length, so that the
sequences of a job never overlap and every one is scored from its first token.
"""
from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from hybench.workers.datasets import DatasetError
from hybench.workers.vocabulary import is_local_preset, load_tokenizer

SUFFIXES = (".txt", ".jsonl", ".parquet")


class EvalTextError(DatasetError):
    """An --eval-text file that cannot serve a job; the message is one line."""


@dataclass(frozen=True, slots=True)
class EvalTextRef:
    """A job's text: where to read it, and the sha256 of the bytes it held when the job was defined."""

    path: str
    sha256: str

    @classmethod
    def open(cls, path: str) -> EvalTextRef:
        """Read, hash and parse the file now, so that a bad file is refused before any job runs."""
        data = _read(path)
        documents(path, data)
        return cls(path, hashlib.sha256(data).hexdigest())


def _read(path: str) -> bytes:
    if not path.endswith(SUFFIXES):
        raise EvalTextError(f"--eval-text {path}: the file must end in {', '.join(SUFFIXES)}")
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise EvalTextError(f"--eval-text {path}: cannot read it ({exc.strerror})") from None


def documents(path: str, data: bytes) -> list[str]:
    """The file's documents: the whole .txt, each .jsonl line's `text`, each Parquet row's `text`."""
    if path.endswith(".parquet"):
        try:
            table = pq.read_table(pa.BufferReader(data))
        except (pa.ArrowException, OSError) as exc:
            raise EvalTextError(f"--eval-text {path}: not a readable Parquet file ({str(exc).splitlines()[0]})") from None
        if "text" not in table.column_names or not pa.types.is_string(table.schema.field("text").type) \
                and not pa.types.is_large_string(table.schema.field("text").type):
            raise EvalTextError(f"--eval-text {path}: needs a string column named text")
        return [text for text in table.column("text").to_pylist() if text]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise EvalTextError(f"--eval-text {path}: not UTF-8 text") from None
    if path.endswith(".txt"):
        return [text] if text else []
    out = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            raise EvalTextError(f"--eval-text {path}: line {number} is not JSON") from None
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            raise EvalTextError(f"--eval-text {path}: line {number} has no string field text")
        out.append(record["text"])
    return out


def model_tokenizer(model: str) -> Any:
    """The model's tokenizer (its folder, the local Hub cache, then the Hub when it answers)."""
    hint = "--task recall and calibration without --eval-text need none"
    if is_local_preset(model):
        raise EvalTextError(f"--eval-text needs a tokenizer and {model} has none (a built-in preset); {hint}")
    try:
        tokenizer = load_tokenizer(model)
    except DatasetError:
        tokenizer = None
    if tokenizer is None:
        raise EvalTextError(f"--eval-text needs {model}'s tokenizer, and none is in its folder or reachable "
                            f"(offline?); {hint}")
    return tokenizer


@functools.lru_cache(maxsize=4)
def text_tokens(path: str, sha256: str, model: str) -> tuple[int, ...]:
    """The file's token ids under the model's tokenizer (kept: a sweep cuts many jobs from one text)."""
    data = _read(path)
    if hashlib.sha256(data).hexdigest() != sha256:
        raise EvalTextError(f"--eval-text {path}: the file changed since the job was defined")
    tokenizer = model_tokenizer(model)
    separator = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    ids: list[int] = []
    for document in documents(path, data):
        if ids:
            ids += separator
        ids += tokenizer(document, add_special_tokens=False)["input_ids"]
    return tuple(ids)


def text_sequences(ref: EvalTextRef, model: str, vocab_size: int, input_len: int, num_prompts: int) -> list[list[int]]:
    """`num_prompts` consecutive sequences of `input_len` tokens from the start of the text."""
    tokens = text_tokens(ref.path, ref.sha256, model)
    needed = input_len * num_prompts
    if len(tokens) < needed:
        raise EvalTextError(f"--eval-text {ref.path}: {len(tokens)} tokens with {model}'s tokenizer, fewer than the "
                            f"{needed} needed (--num-prompts {num_prompts} x input length {input_len})")
    if max(tokens[:needed]) >= vocab_size:
        raise EvalTextError(f"--eval-text {ref.path}: {model}'s tokenizer gives token id {max(tokens[:needed])}, "
                            f"outside the model's vocabulary of {vocab_size}")
    return [list(tokens[i * input_len:(i + 1) * input_len]) for i in range(num_prompts)]
