"""Bounded reading of the files users hand hybench: sweep YAML, JSON datasets and headers, config.json,
safetensors indexes and tokenizer files.

A hostile or broken file must fail in a second with one line, not exhaust memory or the stack: every
file is size-capped before it is parsed, nesting deeper than MAX_DEPTH is refused before the parser
recurses (Python's json and PyYAML's composer recurse per level, so a deep file would otherwise end in a
RecursionError), and YAML aliases are counted as the tree they expand to, so a "billion laughs" file of
a few hundred bytes is refused instead of growing to gigabytes in whoever walks it.
"""
from __future__ import annotations

import json
import os
from typing import Any

import yaml

MAX_DEPTH = 64  # nested lists/objects; real configs, indexes and datasets use fewer than 10
MAX_YAML_NODES = 100_000  # scalars and collections after alias expansion; a sweep file has dozens
MIB = 1 << 20
# Largest file read per kind: a sweep file and config.json are a few KiB, an index some 100 KiB,
# a tokenizer.json up to ~20 MiB; datasets are generous.
MAX_BYTES = {"sweep": 1 * MIB, "config": 4 * MIB, "index": 64 * MIB, "tokenizer": 256 * MIB,
             "dataset": 1024 * MIB}


class InputLimitError(ValueError):
    """A file past a size, nesting or alias limit; the message says which and is prefixed by the caller."""


def read_text(path: str, kind: str) -> str:
    """The file as text, refused (InputLimitError) past its kind's size; OSError and UnicodeDecodeError
    pass through for the caller to name."""
    limit = MAX_BYTES[kind]
    with open(path, "rb") as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise InputLimitError(f"larger than the {limit // MIB} MiB a {kind} file may be")
    return data.decode("utf-8")


def check_json_depth(text: str | bytes) -> None:
    """Refuse nesting deeper than MAX_DEPTH, counted outside strings, in one pass without recursion."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    depth, in_string, escaped = 0, False, False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                raise InputLimitError(f"nested deeper than {MAX_DEPTH} levels")
        elif char in "]}":
            depth -= 1


def loads_json(text: str | bytes) -> Any:
    """json.loads after the depth check; json.JSONDecodeError passes through."""
    check_json_depth(text)
    return json.loads(text)


def load_json(path: str, kind: str) -> Any:
    """A JSON file of `kind` (a key of MAX_BYTES), size- and depth-checked."""
    return loads_json(read_text(path, kind))


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that refuses deep nesting while composing and counts aliases as their expansion."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise InputLimitError(f"nested deeper than {MAX_DEPTH} levels")
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _expanded_size(root: yaml.Node) -> int:
    """Nodes in the tree `root` stands for once every alias is expanded, memoized per shared node,
    so a bomb is measured without being expanded; stops counting past MAX_YAML_NODES."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()  # on the current path: meeting one again is a recursive alias
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        children = [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else (
            node.value if isinstance(node, yaml.SequenceNode) else [])
        if children_done:
            open_nodes.discard(id(node))
            sizes[id(node)] = min(1 + sum(sizes[id(c)] for c in children), MAX_YAML_NODES + 1)
        elif id(node) in open_nodes:
            raise InputLimitError("holds an alias that contains itself")
        elif id(node) not in sizes:
            open_nodes.add(id(node))
            stack.append((node, True))
            stack.extend((c, False) for c in children if id(c) not in sizes)
    return sizes[id(root)]


def load_yaml(path: str, kind: str) -> Any:
    """A YAML file of `kind`, size-, depth- and alias-checked; yaml.YAMLError passes through."""
    loader = _BoundedLoader(read_text(path, kind))
    try:
        root = loader.get_single_node()
        if root is None:
            return None
        if _expanded_size(root) > MAX_YAML_NODES:
            raise InputLimitError(f"expands to more than {MAX_YAML_NODES} values (aliases nested in aliases?)")
        return loader.construct_document(root)
    finally:
        loader.dispose()


def file_kind_limit(path: str, kind: str) -> None:
    """Refuse a file of `kind` past its size without reading it (for files a library parses itself)."""
    if os.path.getsize(path) > MAX_BYTES[kind]:
        raise InputLimitError(f"larger than the {MAX_BYTES[kind] // MIB} MiB a {kind} file may be")
