"""The cluster path end to end on this machine: a Ray head started with `ray start --head` on 127.0.0.1
(its own ports and temp dir), `hybench submit` against its job server, the job's results in the store.
Neither command is on PATH, as after `make demo` without activating the venv."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile

import pytest
from ray_helpers import (TINY_ARGS, job_files, private_head_flags, stop_ray_started_in, sweep_env, table_rows,
                         tiny_specs)

BIN = os.path.dirname(sys.executable)


@pytest.fixture
def ray_head():
    """A head on loopback, private in every port and its temp dir; yields the job server's URL and the
    environment, then stops exactly that head."""
    temp_dir = tempfile.mkdtemp(prefix="hyb-ray-", dir="/tmp")
    env = sweep_env() | {"PATH": "/usr/bin:/bin"}  # neither `ray` nor `hybench` on PATH
    ports, flags = private_head_flags(temp_dir)
    command = [os.path.join(BIN, "ray"), "start", "--head", "--dashboard-host", "127.0.0.1", *flags]
    try:
        started = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
        assert started.returncode == 0, started.stdout + started.stderr
        yield f"http://127.0.0.1:{ports['--dashboard-port']}", env
    finally:
        stop_ray_started_in(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_submit_runs_the_sweep_on_a_ray_start_head_and_stores_each_job_once(ray_head, tmp_path):
    address, env = ray_head
    results = str(tmp_path / "results")
    args = [*TINY_ARGS, "--input-lengths", "32", "--results", results]
    done = subprocess.run([os.path.join(BIN, "hybench"), "submit", "--ray-address", address, "--", *args],
                          env=env, capture_output=True, text=True, timeout=240, cwd=tmp_path)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert "3 jobs, 0 already done, ran 3 (3 ok, 0 oom, 0 failed)" in out and "succeeded" in out, out
    expected = sorted(spec.job_id for spec in tiny_specs(input_len=(32,)))
    assert job_files(results, "jobs") == expected and job_files(results, "requests") == expected
    assert sorted(row["status"] for row in table_rows(results, "jobs")) == ["ok"] * 3
