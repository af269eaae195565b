"""Repack a Ray wheel without the parts a hybench sweep never loads, so that it fits a device call.

The device machine has no registry and takes at most 64 MiB of carried files per call; Ray's wheel is
about 79 MB, 32 MB of it the Java worker (ray/jars). A hybench sweep uses core Ray only (ray.init,
actors, ray.wait/get/kill, the raylet, GCS, dashboard *agent* and runtime-env agent that every node
starts), so this drops:

  ray/jars/                    the Java worker (ray_dist.jar)
  ray/dashboard/client/build/  the dashboard's web front end (the dashboard head is not started)
  ray/rllib, ray/serve, ray/tune, ray/train, ray/data, ray/llm   the libraries on top of core Ray
                               (only the dashboard head and `ray serve ...` CLI commands import them)

It also strips the symbol tables of the ELF files (gcs_server, raylet, _raylet.so, ...: `strip
--strip-unneeded`, which keeps what the dynamic linker needs; only symbolized C++ backtraces in Ray's
crash logs are lost), and rewrites RECORD: without the dropped files, with the stripped files' new
hashes. Members are deflated at level 9 (--lzma: LZMA, zip method 14, which Python's zipfile and so
pip read, about 25% smaller but a minute to write). Usage:

    python3 docs/benchmarks/slim_ray_wheel.py IN.whl OUT_DIR [--lzma]
"""
from __future__ import annotations

import argparse
import base64
import csv
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile

DROP = ("ray/jars/", "ray/dashboard/client/build/", "ray/rllib/", "ray/serve/", "ray/tune/", "ray/train/",
        "ray/data/", "ray/llm/")


def _strip(data: bytes) -> bytes:
    """The ELF file without its symbol tables (unchanged if `strip` is missing or refuses it)."""
    if not data.startswith(b"\x7fELF") or shutil.which("strip") is None:
        return data
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "f")
        with open(path, "wb") as fh:
            fh.write(data)
        if subprocess.run(["strip", "--strip-unneeded", path], capture_output=True).returncode != 0:
            return data
        with open(path, "rb") as fh:
            return fh.read()


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def slim(src: str, out_dir: str, method: int) -> str:
    dst = os.path.join(out_dir, os.path.basename(src))
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", allowZip64=True) as zout:
        infos = [i for i in zin.infolist() if not i.filename.startswith(DROP)]
        record = next(i for i in infos if i.filename.endswith(".dist-info/RECORD"))
        changed: dict[str, bytes] = {}
        for info in infos:
            if info is record:
                continue
            data = zin.read(info)
            stripped = _strip(data)
            if stripped is not data:
                changed[info.filename] = stripped
            _write(zout, info, stripped, method)
        rows = []
        for row in csv.reader(io.StringIO(zin.read(record).decode())):
            if row[0].startswith(DROP):
                continue
            if row[0] in changed:
                row = [row[0], _record_hash(changed[row[0]]), str(len(changed[row[0]]))]
            rows.append(row)
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows(rows)
        _write(zout, record, buf.getvalue().encode(), method)  # RECORD goes last, as in a built wheel
    return dst


def _write(zout: zipfile.ZipFile, info: zipfile.ZipInfo, data: bytes, method: int) -> None:
    out = zipfile.ZipInfo(info.filename, info.date_time)
    out.external_attr = info.external_attr  # keeps the executables (raylet, gcs_server) executable
    out.compress_type = method
    zout.writestr(out, data, compresslevel=9 if method == zipfile.ZIP_DEFLATED else None)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("wheel")
    parser.add_argument("out_dir")
    parser.add_argument("--lzma", action="store_true", help="LZMA instead of deflate (smaller, slower)")
    args = parser.parse_args()
    os.makedirs(args.out_dir, exist_ok=True)
    method = zipfile.ZIP_LZMA if args.lzma else zipfile.ZIP_DEFLATED
    dst = slim(args.wheel, args.out_dir, method)
    print(f"{dst}: {os.path.getsize(args.wheel) / 1e6:.1f} MB -> {os.path.getsize(dst) / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
