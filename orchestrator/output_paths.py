"""Output paths checked before any work: a benchmark that runs for an hour and then cannot write its
results has wasted the hour. Each check names the flag the user typed and the path, and leaves
nothing behind (the probe file it writes is removed, no folder is created)."""
from __future__ import annotations

import os
import tempfile


class OutputPathError(ValueError):
    """An output flag names a path that cannot be written."""


def check_output_folder(flag: str, path: str) -> None:
    """The folder `path` (created later if missing) can be written. An object-store URI is left to
    the results store, which opens its filesystem before any work."""
    if "://" in path and not path.startswith("file://"):
        return
    local = path.removeprefix("file://")
    if os.path.exists(local) and not os.path.isdir(local):
        raise OutputPathError(f"{flag} {path}: not a folder")
    _check_creatable(flag, path, local)


def check_output_file(flag: str, path: str) -> None:
    """The file `path` can be written: not a folder, and its folder (created later if missing) writable."""
    if os.path.isdir(path):
        raise OutputPathError(f"{flag} {path}: is a folder, not a file")
    _check_creatable(flag, path, os.path.dirname(os.path.abspath(path)))


def _check_creatable(flag: str, path: str, folder: str) -> None:
    """The nearest existing folder at or above `folder` is a folder this process can write into."""
    existing = os.path.abspath(folder)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise OutputPathError(f"{flag} {path}: {existing} is not a folder")
    try:
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".hybench-probe-"):
            pass
    except OSError as exc:
        raise OutputPathError(f"{flag} {path}: cannot write into {existing} ({exc.strerror or exc})") from None
