"""Every process keeps its Triton kernels in one folder that Inductor and Triton's JIT agree on, so a
second process finds what the first compiled (engine/kernels/compile_caches.py)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("triton")

PROBE = """
import json, os
import hybench.engine.kernels  # noqa: F401  (pins the caches)
import triton
from torch._inductor.runtime.cache_dir_utils import triton_cache_dir
print(json.dumps({"triton": triton.knobs.cache.dir, "inductor": triton_cache_dir(0),
                  "autotune": triton.knobs.autotuning.cache}))
"""


def _probe(tmp_path, **env: str) -> dict:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TRITON_CACHE") and k != "TRITON_HOME"}
    out = subprocess.run([sys.executable, "-c", PROBE], env=clean | {"HOME": str(tmp_path)} | env,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_triton_and_inductor_share_one_folder_when_unset(tmp_path):
    seen = _probe(tmp_path)
    assert seen["triton"] == seen["inductor"] == str(tmp_path / ".triton" / "cache")
    assert seen["autotune"] is True


def test_a_users_settings_win(tmp_path):
    mine = str(tmp_path / "mine")
    seen = _probe(tmp_path, TRITON_CACHE_DIR=mine, TRITON_CACHE_AUTOTUNING="0")
    assert seen["triton"] == seen["inductor"] == mine
    assert seen["autotune"] is False
