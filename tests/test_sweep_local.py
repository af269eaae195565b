"""`hybench sweep` in local mode (a private Ray on 127.0.0.1), end to end through the CLI: resume
after a finished sweep, after truncated files and after the driver was killed."""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time

import pytest
from ray_helpers import (KILL_ARGS, TINY_ARGS, cli, deterministic, job_files, run_cli, settled_done, start_cli,
                         sweep_env, table_rows, wait_for_done)

from hybench.workers.store import ResultStore


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> str:
    """A tiny sweep run to the end once; tests work on copies of its store."""
    results = str(tmp_path_factory.mktemp("sweep") / "results")
    done = run_cli("sweep", *TINY_ARGS, "--results", results)
    assert done.returncode == 0, done.stderr
    assert "6 jobs, 0 already done, ran 6 (6 ok, 0 oom, 0 failed)" in done.stdout, done.stdout
    assert "1 CPU workers" in done.stderr  # no GPU here: CPU actors
    return results


def test_local_sweep_writes_each_job_once_and_a_rerun_skips_it(finished):
    ids = job_files(finished, "jobs")
    assert len(ids) == 6 and ids == job_files(finished, "requests") and len(set(ids)) == 6
    tmp_files = [f for _, _, fs in os.walk(finished) for f in fs if not f.endswith(".parquet")]
    assert tmp_files == []
    rows = table_rows(finished, "jobs")
    assert {r["status"] for r in rows} == {"ok"} and len({r["sweep_id"] for r in rows}) == 1
    assert {(r["config"], r["window"]) for r in rows} == {("full", 16), ("sliding", 16), ("hybrid", 16)}
    # The sweep indexed what it wrote: readers of the store open the index, not each file.
    scanned = ResultStore(finished).scan()
    assert sum(len(good) for good, _ in scanned.values()) == 24
    assert all(stored.segment is not None for good, _ in scanned.values() for stored in good)

    mtimes = {p: os.stat(os.path.join(d, p)).st_mtime_ns for d, _, fs in os.walk(finished) for p in fs}
    again = run_cli("sweep", *TINY_ARGS, "--results", finished)
    assert again.returncode == 0 and "6 jobs, 6 already done, ran 0" in again.stdout
    assert {p: os.stat(os.path.join(d, p)).st_mtime_ns for d, _, fs in os.walk(finished) for p in fs} == mtimes


def test_truncated_files_are_detected_and_their_jobs_rerun(finished, tmp_path):
    results = str(tmp_path / "results")
    shutil.copytree(finished, results)
    store = ResultStore(results)
    jobs, requests = store.files("jobs"), store.files("requests")
    broken = {jobs[0].job_id, next(f.job_id for f in requests if f.job_id != jobs[0].job_id)}
    for path in (jobs[0].path, next(f.path for f in requests if f.job_id != jobs[0].job_id)):
        with open(path, "r+b") as fh:
            fh.truncate(os.path.getsize(path) // 2)
    assert store.completed_job_ids() == set(job_files(finished, "jobs")) - broken

    query = run_cli("query", "SELECT job_id, status FROM jobs", "--results-dir", results, "--format", "csv")
    assert query.returncode == 0, query.stderr
    assert jobs[0].job_id not in query.stdout

    rerun = run_cli("sweep", *TINY_ARGS, "--results", results)
    assert rerun.returncode == 0, rerun.stderr
    assert "6 jobs, 4 already done, ran 2 (2 ok" in rerun.stdout
    assert deterministic(results) == deterministic(finished)  # all readable again, same results


def test_killed_driver_resumes_with_only_the_missing_jobs(tmp_path):
    results = str(tmp_path / "results")
    args = [*KILL_ARGS, "--results", results]
    proc = start_cli("sweep", *args)
    try:
        wait_for_done(results, 2, proc)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and every Ray process it started
        proc.wait()
    settled = settled_done(results)
    done = {r["job_id"]: r["started_at"] for r in table_rows(results, "jobs") if r["status"] == "ok"}
    assert set(done) == settled and 2 <= len(done) < 12

    rerun = run_cli("sweep", *args)
    assert rerun.returncode == 0, rerun.stderr
    assert f"12 jobs, {len(done)} already done, ran {12 - len(done)} ({12 - len(done)} ok" in rerun.stdout
    rows = table_rows(results, "jobs")
    assert sorted(r["job_id"] for r in rows) == job_files(results, "requests") and len(rows) == 12
    assert all(r["started_at"] == done[r["job_id"]] for r in rows if r["job_id"] in done)  # not run again


def test_ctrl_c_stops_cleanly_and_a_rerun_finishes(tmp_path):
    results = str(tmp_path / "results")
    proc = start_cli("sweep", *KILL_ARGS, "--results", results)
    try:
        wait_for_done(results, 1, proc)
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal sends to the whole foreground group
        out, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130 and "interrupted; completed jobs are kept, re-run to resume" in out
    assert "Traceback" not in out, out
    time.sleep(1)
    done = len(ResultStore(results).completed_job_ids())
    rerun = run_cli("sweep", *KILL_ARGS, "--results", results)
    assert rerun.returncode == 0 and f"12 jobs, {done} already done, ran {12 - done} ({12 - done} ok" in rerun.stdout



def test_one_actor_per_gpu_each_pinned_to_its_own_and_the_jobs_spread(tmp_path):
    """Local mode on a machine with two (fake) GPUs: two actors, CUDA_VISIBLE_DEVICES 0 and 1, the eight
    equal jobs (one per seed) shared between them, each jobs row naming its worker and GPU (what
    docs/benchmarks/multi_gpu_sweep.sh runs on real GPUs)."""
    results = str(tmp_path / "results")
    env = sweep_env() | {"RAY_OVERRIDE_RESOURCES": '{"GPU": 2}', "NCCL_NVLS_ENABLE": "0",
                         "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}
    args = [*TINY_ARGS, "--configs", "sliding", "--input-lengths", "32", "--seed", "1,2,3,4,5,6,7,8"]
    done = subprocess.run(cli("sweep", *args, "--results", results), capture_output=True, text=True, env=env,
                          timeout=150)
    assert done.returncode == 0, done.stderr
    assert "8 jobs, 0 already done, ran 8 (8 ok" in done.stdout
    assert "on 2 GPU workers (1 GPU, 1 CPU each)" in done.stderr
    up = dict(re.findall(r"worker up: pid (\d+) on \S+, GPU (\d+) \(CUDA_VISIBLE_DEVICES=\2\)", done.stderr))
    assert sorted(up.values()) == ["0", "1"], done.stderr

    rows = table_rows(results, "jobs")
    assert len(rows) == 8 and {r["seed"] for r in rows} == set(range(1, 9))
    used = {(str(r["worker_pid"]), r["cuda_visible_devices"]) for r in rows}
    assert used == set(up.items())  # both workers ran jobs, each on its own GPU only
    assert all(r["gpu_uuid"] is None for r in rows)  # fake GPUs: the engine ran on CPU


SLOW_LOAD_SWEEP = """
import sys, time
import ray
from hybench.orchestrator import driver
from hybench.orchestrator.sweep import expand, resolve
from hybench.workers.actor import JobWorker

class SlowLoad(JobWorker):
    '''A worker whose model builds take LOAD_S seconds (a large checkpoint on a slow disk).'''
    def __init__(self, *args):
        super().__init__(*args)
        from hybench.workers import job
        build = job.build_model
        def slow_build(*a, **k):
            time.sleep(LOAD_S)
            return build(*a, **k)
        job.build_model = slow_build

LOAD_S = float(sys.argv[3])  # captured with the class: an actor's own sys.argv is Ray's
driver.RemoteJobWorker = ray.remote(max_restarts=-1, max_task_retries=0)(SlowLoad)
given = {"model": ("tiny-llama",), "config": ("hybrid",), "window": (16,), "input_len": (32,), "num_prompts": (2,),
         "output_len": (4,), "num_warmup_iters": (0,), "num_benchmark_iters": (1,), "repeats": 1}
options = driver.DriverOptions(results=sys.argv[1], job_timeout=float(sys.argv[2]), max_retries=0, progress=False)
print(dict(driver.run_sweep(expand(resolve(given, None)), options).statuses))
"""


def test_job_timeout_counts_the_job_not_the_model_load(tmp_path):
    """A model load longer than --job-timeout, before a job well within it: the job is ok."""
    results = str(tmp_path / "results")
    done = subprocess.run([*cli()[:1], "-c", SLOW_LOAD_SWEEP, results, "5", "8"], capture_output=True, text=True,
                          env=sweep_env(), timeout=150)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "{'ok': 1}", done.stdout + done.stderr[-3000:]
    assert [r["status"] for r in table_rows(results, "jobs")] == ["ok"]
