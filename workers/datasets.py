"""Prompt datasets on disk: what `hybench data` writes and `--dataset` reads.

A dataset holds prompt sets for one or more input lengths as token ids, the source of truth: the
engine runs exactly these ids, so lengths never drift through a tokenizer round trip. Text rides
along when a tokenizer made the ids; shared-prefix sets also record the prefix length and which
prefix each prompt begins with. JSON and Parquet hold the same records, one per prompt:
`input_len`, `token_ids`, `prefix_len` (0: no shared prefix), `prefix_index` (null: none) and
`text` (null: none), plus a header (the JSON object's other keys; the Parquet schema's `hybench`
metadata) saying how the ids were made.

A job names its dataset with a DatasetRef: the path to read and the sha256 of the token ids. The
hash, not the path, enters the job id, so editing the ids makes a new job, while moving the file,
converting it between JSON and Parquet or re-decoding its text does not.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from hybench.engine.bounded_input import file_kind_limit, load_json, loads_json
from hybench.workers.prompts import PATTERNS, PromptSet

FORMAT = "hybench-prompts"
VERSION = 1
SUFFIXES = (".json", ".parquet")
_PARQUET_SCHEMA = pa.schema([
    ("input_len", pa.int64()),
    ("token_ids", pa.list_(pa.int64())),
    ("prefix_len", pa.int64()),
    ("prefix_index", pa.int64()),
    ("text", pa.string()),
])
_HEADER_KEYS = ("pattern", "seed", "vocab_size", "vocab_source")
_MAX_VOCAB = 2**63 - 1


class DatasetError(ValueError):
    """A dataset that cannot be made, read or used as asked; the message is one line."""


@dataclass(frozen=True, slots=True)
class Dataset:
    """Prompt sets by input length, and how their ids were made."""

    pattern: str
    seed: int
    vocab_size: int  # every id is below it
    vocab_source: str  # the tokenizer or model config the ids were drawn from
    sets: tuple[PromptSet, ...]  # ascending input length, one set per length

    @property
    def sha256(self) -> str:
        """Hash of the token ids by input length: what a job runs, nothing else."""
        digest = hashlib.sha256()
        for s in self.sets:
            for ids in s.token_ids:
                digest.update(np.array([s.input_len, len(ids)], dtype="<i8").tobytes())
                digest.update(np.array(ids, dtype="<i8").tobytes())
        return digest.hexdigest()


@dataclass(frozen=True, slots=True)
class DatasetRef:
    """A job's dataset: where to read it, and the hash of the ids it held when the job was defined."""

    path: str
    sha256: str

    @classmethod
    def open(cls, path: str) -> DatasetRef:
        return cls(path, load_dataset(path).sha256)

    def load(self) -> Dataset:
        """The dataset, provided its ids are still the ones the job was defined with."""
        dataset = load_dataset(self.path)
        if dataset.sha256 != self.sha256:
            raise DatasetError(f"{self.path}: its token ids changed since the job was defined "
                               f"(sha256 {self.sha256[:12]}... then, {dataset.sha256[:12]}... now)")
        return dataset

    def prompts(self, input_len: int, num_prompts: int, vocab_size: int, model: str) -> list[list[int]]:
        """A job's prompts: the first `num_prompts` of `input_len` tokens, checked against its model's vocabulary."""
        dataset = self.load()
        found = next((s for s in dataset.sets if s.input_len == input_len), None)
        if found is None:
            lengths = ",".join(str(s.input_len) for s in dataset.sets)
            raise DatasetError(f"{self.path} has no prompts of {input_len} tokens (it has --input-lengths {lengths})")
        if len(found.token_ids) < num_prompts:
            raise DatasetError(f"{self.path} has {len(found.token_ids)} prompts of {input_len} tokens, "
                               f"fewer than --num-prompts {num_prompts}")
        chosen = found.token_ids[:num_prompts]
        top = max(max(ids) for ids in chosen)
        if top >= vocab_size:
            raise DatasetError(f"{self.path} holds token id {top}, outside {model}'s vocabulary of {vocab_size} "
                               f"ids (its ids come from the {dataset.vocab_source})")
        return chosen


def check_suffix(path: str) -> None:
    if not path.endswith(SUFFIXES):
        raise DatasetError(f"{path}: a dataset file ends in {' or '.join(SUFFIXES)}")


def write_dataset(dataset: Dataset, path: str) -> None:
    """Write atomically (temp file, then rename): a reader never sees half a dataset."""
    check_suffix(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = f"{path}.tmp"
    try:
        if path.endswith(".json"):
            with open(tmp, "w", encoding="utf-8") as fh:
                json.dump(_header(dataset) | {"prompts": _records(dataset)}, fh, separators=(",", ":"))
        else:
            meta = {b"hybench": json.dumps(_header(dataset)).encode()}
            pq.write_table(pa.Table.from_pylist(_records(dataset), schema=_PARQUET_SCHEMA.with_metadata(meta)), tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _header(dataset: Dataset) -> dict[str, Any]:
    return {"format": FORMAT, "version": VERSION} | {key: getattr(dataset, key) for key in _HEADER_KEYS}


def _records(dataset: Dataset) -> list[dict[str, Any]]:
    return [
        {"input_len": s.input_len, "token_ids": ids, "prefix_len": s.prefix_len,
         "prefix_index": s.prefix_index[i] if s.prefix_index is not None else None,
         "text": s.texts[i] if s.texts is not None else None}
        for s in dataset.sets for i, ids in enumerate(s.token_ids)
    ]


def load_dataset(path: str) -> Dataset:
    """Read and check a dataset file; every problem is a DatasetError naming the file."""
    check_suffix(path)
    try:
        header, records = _read_json(path) if path.endswith(".json") else _read_parquet(path)
        return _build(header, records)
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except (ValueError, pa.ArrowException) as exc:
        raise DatasetError(f"{path}: {exc}") from None


def _read_json(path: str) -> tuple[dict, list]:
    try:
        data = load_json(path, "dataset")
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON (line {exc.lineno}: {exc.msg})") from None
    if not isinstance(data, dict) or not isinstance(data.get("prompts"), list):
        raise ValueError(f"not a {FORMAT} file: expected an object with a \"prompts\" list")
    return data, data["prompts"]


def _read_parquet(path: str) -> tuple[dict, list]:
    file_kind_limit(path, "dataset")
    try:
        table = pq.read_table(path)
    except pa.ArrowInvalid as exc:
        raise ValueError(f"not a Parquet file ({exc})") from None
    raw = (table.schema.metadata or {}).get(b"hybench")
    if raw is None:
        raise ValueError(f"not a {FORMAT} file: no hybench metadata in the Parquet schema")
    missing = [name for name in _PARQUET_SCHEMA.names if name not in table.schema.names]
    if missing:
        raise ValueError(f"not a {FORMAT} file: no column {', '.join(missing)}")
    try:
        header = loads_json(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not a {FORMAT} file: its hybench metadata is not valid JSON ({exc.msg})") from None
    if not isinstance(header, dict):
        raise ValueError(f"not a {FORMAT} file: its hybench metadata is not a JSON object")
    return header, table.select(_PARQUET_SCHEMA.names).to_pylist()


def _build(header: dict, records: list) -> Dataset:
    """Check the header and every record, and group the prompts by input length."""
    if header.get("format") != FORMAT or header.get("version") != VERSION:
        raise ValueError(f"not a {FORMAT} version {VERSION} file (format {header.get('format')!r}, "
                         f"version {header.get('version')!r})")
    missing = [key for key in _HEADER_KEYS if key not in header]
    if missing:
        raise ValueError(f"header lacks {', '.join(missing)}")
    if header["pattern"] not in PATTERNS:
        raise ValueError(f"pattern must be one of {', '.join(PATTERNS)}, got {header['pattern']!r}")
    vocab_size = header["vocab_size"]
    if not _is_int(vocab_size) or not 1 <= vocab_size <= _MAX_VOCAB:  # ids are stored as int64
        raise ValueError(f"vocab_size must be an integer in 1..{_MAX_VOCAB}, got {vocab_size!r}")
    if not _is_int(header["seed"]):
        raise ValueError(f"seed must be an integer, got {header['seed']!r}")
    if not records:
        raise ValueError("holds no prompts")
    by_length: dict[int, list[tuple[int, dict]]] = {}
    for number, record in enumerate(records):
        _check_record(number, record, vocab_size)
        by_length.setdefault(record["input_len"], []).append((number, record))
    sets = tuple(_prompt_set(n, by_length[n]) for n in sorted(by_length))
    return Dataset(header["pattern"], header["seed"], vocab_size, str(header["vocab_source"]), sets)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_record(number: int, record: Any, vocab_size: int) -> None:
    where = f"prompt {number}"
    if not isinstance(record, dict):
        raise ValueError(f"{where} is not an object")
    ids, input_len = record.get("token_ids"), record.get("input_len")
    if not isinstance(ids, list) or not all(_is_int(i) for i in ids):
        raise ValueError(f"{where}: token_ids must be a list of integers")
    if not ids:
        raise ValueError(f"{where} is empty (no token ids)")
    if not _is_int(input_len) or input_len != len(ids):
        raise ValueError(f"{where}: input_len {input_len!r} is not its {len(ids)} token ids")
    if min(ids) < 0 or max(ids) >= vocab_size:
        raise ValueError(f"{where}: token ids must lie in 0..{vocab_size - 1} (the file's vocab_size), "
                         f"found {min(ids) if min(ids) < 0 else max(ids)}")
    prefix_len, prefix_index = record.get("prefix_len", 0), record.get("prefix_index")
    if not _is_int(prefix_len) or not 0 <= prefix_len <= input_len:
        raise ValueError(f"{where}: prefix_len must be 0..{input_len}, got {prefix_len!r}")
    if (prefix_len > 0) != (prefix_index is not None) or not (prefix_index is None or _is_int(prefix_index)):
        raise ValueError(f"{where}: a prompt has both a prefix_len > 0 and an integer prefix_index, or neither")
    if record.get("text") is not None and not isinstance(record["text"], str):
        raise ValueError(f"{where}: text must be a string or null")


def _prompt_set(input_len: int, numbered: list[tuple[int, dict]]) -> PromptSet:
    """One length's prompts; prompts naming the same prefix must really begin with the same tokens."""
    records = [r for _, r in numbered]
    prefix_lens = {r.get("prefix_len", 0) for r in records}
    if len(prefix_lens) > 1:
        raise ValueError(f"the prompts of {input_len} tokens disagree on prefix_len ({sorted(prefix_lens)})")
    prefix_len = prefix_lens.pop()
    first_of: dict[int, list[int]] = {}
    for number, r in numbered:
        if prefix_len:
            prefix = first_of.setdefault(r["prefix_index"], r["token_ids"][:prefix_len])
            if r["token_ids"][:prefix_len] != prefix:
                raise ValueError(f"prompt {number} does not begin with prefix {r['prefix_index']} "
                                 f"({prefix_len} tokens) as the others naming it do")
    texts = [r.get("text") for r in records]
    return PromptSet(
        input_len, [r["token_ids"] for r in records], prefix_len,
        [r["prefix_index"] for r in records] if prefix_len else None,
        texts if all(t is not None for t in texts) else None)
