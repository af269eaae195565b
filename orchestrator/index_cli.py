"""`hybench index`: bring a results store's index up to date (workers/store_index.py).

A sweep does this itself when it ends; the command is for a store written by an older hybench or by
sweeps that were killed before their end, so that `report`, `query` and the next done-check open a few
large files instead of every result file. It writes only below ``<store>/_index/``.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Iterable

from tqdm import tqdm

from hybench.workers.store import ResultStore, StoreError

INDEX_BAR_FILES = 500  # below this, indexing takes a second or two: no bar


def add_index_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "index", help="index a results store so that report, query and sweep read it fast",
        description="Add the result files that the store's index does not hold yet (read and checked as "
        "report and query read them), and merge the index into one file set when it has many. A sweep does "
        "this when it ends. The index is trusted only for files whose size and modification time are "
        "unchanged, so it can never change a number, only how fast it comes.",
    )
    parser.add_argument("--results-dir", default="results", metavar="DIR_OR_URI",
                        help="the results store: a folder, or an s3:// / gs:// URI (default: results)")
    parser.add_argument("--no-progress", dest="progress", action="store_false", default=None,
                        help="no progress bar (default: shown on a terminal)")
    parser.set_defaults(func=run_index_command)


def run_index_command(args: argparse.Namespace) -> int:
    began = time.monotonic()
    store = ResultStore(args.results_dir)
    if store.is_local and not os.path.isdir(store.root):
        raise StoreError(f"results dir {args.results_dir} does not exist (--results-dir)")
    added = store.refresh_index(_bar(args.progress))
    print(f"hybench index: {added} result files added to the index of {args.results_dir} "
          f"in {time.monotonic() - began:.1f} s")
    return 0


def refresh_index(store: ResultStore, prog: str, progress: bool | None) -> int:
    """Add what the store's index lacks; a store whose index cannot be written (read-only, a link where
    it goes) stays correct, only slower, so that is a note, not a failure."""
    try:
        return store.refresh_index(_bar(progress))
    except StoreError as exc:
        print(f"{prog}: note: the store's index was not updated ({exc}); readers read every result file "
              "instead, which is slower and gives the same numbers", file=sys.stderr)
        return 0


def _bar(progress: bool | None):
    def bar(files: list) -> Iterable:
        disable = True if len(files) < INDEX_BAR_FILES else (None if progress is None else not progress)
        return tqdm(files, desc="index", unit="file", file=sys.stderr, dynamic_ncols=True, disable=disable)
    return bar
