"""Chaos on a simulated cluster (issue 7): sweeps keep exactly one result set per job while actors,
a whole node, the driver, a second driver, the GPU's memory and the disk fail under them.

The cluster is Ray on loopback: a head without resources and three nodes with one fake GPU and one
CPU each; jobs run on the CPU. Every process of it, and every `hybench sweep` driver the tests
start, loads chaos_site/sitecustomize.py, whose faults the tests switch on and off while they run.
Each test prints its figures (pytest -s shows them) and asserts them.
"""
from __future__ import annotations

import glob
import os
import random
import re
import signal
import time

import pytest
from chaos_helpers import Chaos, WorkerKiller, audit, job_worker_pids, kill, raylet_pid, show
from ray_helpers import NODE, TINY_ARGS, loopback_cluster, run_cli, start_cli, table_rows, tiny_specs

from hybench.workers.store import ResultStore

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="finds and kills processes via /proc")
# 60 jobs: 12 input lengths x (full + sliding and hybrid at two windows), each a few tenths of a second.
CHAOS_LENGTHS = tuple(range(32, 128, 8))
CHAOS_ARGS = [*TINY_ARGS, "--windows", "16,24", "--input-lengths", ",".join(map(str, CHAOS_LENGTHS)),
              "--output-len", "64"]


def chaos_specs(lengths=CHAOS_LENGTHS, windows=(16, 24), output_len=64):
    return tiny_specs(window=windows, input_len=lengths, output_len=(output_len,))


def summary_line(out: str) -> str:
    found = re.findall(r"^sweep \S+: .*$", out, re.M)
    assert found, out
    return found[-1]


@pytest.fixture(scope="module")
def chaos(tmp_path_factory):
    return Chaos(str(tmp_path_factory.mktemp("chaos")))


@pytest.fixture(scope="module")
def cluster(chaos):
    saved = {key: os.environ.get(key) for key in chaos.env()}
    os.environ.update(chaos.env())  # the raylets, and so every worker, inherit it
    cluster = loopback_cluster(3)
    yield cluster
    cluster.shutdown()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(autouse=True)
def no_faults(chaos):
    chaos.set()
    chaos.clear_events()
    yield
    chaos.set()


def assert_exactly_once(results: str, specs, statuses=None) -> None:
    found = audit(results, specs)
    assert not found.problems, found.problems
    assert found.complete == {s.job_id for s in specs}
    if statuses is not None:
        assert found.statuses == statuses


def worker_pids(cluster) -> list[int]:
    return job_worker_pids({raylet_pid(node) for node in cluster.worker_nodes})


def wait_until(condition, timeout: float, proc=None, poll: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc is None or proc.poll() is None, f"the sweep ended first:\n{proc.stdout.read()}"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(poll)


@pytest.mark.parametrize("lengths,kills,nodes", [
    pytest.param(CHAOS_LENGTHS, 8, 1, id="ci"),
    pytest.param(tuple(range(32, 416, 8)), 30, 3, marks=pytest.mark.soak, id="soak"),
])
def test_killed_workers_and_a_lost_node_lose_no_job_and_count_none_twice(cluster, chaos, tmp_path, lengths, kills,
                                                                          nodes):
    """SIGKILL random actors (seeded) while the sweep runs, and take whole nodes away (their actors with
    them; a replacement joins a little later): every job ends with exactly one result set."""
    results = str(tmp_path / "results")
    specs = chaos_specs(lengths)
    assert len(specs) == 5 * len(lengths) >= 60
    args = [*CHAOS_ARGS, "--input-lengths", ",".join(map(str, lengths))]
    chaos.set(write_delay_s=0.02)  # some kills land inside a write
    began = time.monotonic()
    proc = start_cli("sweep", *args, "--results", results, "--address", cluster.address, "--max-retries", "50")
    store = ResultStore(results)
    killer = WorkerKiller(cluster, seed=7, interval=(0.8, 2.0), max_kills=kills)
    try:
        wait_until(lambda: len(store.completed_job_ids()) >= 3, 120, proc)
        killer.start()
        for node_kill in range(nodes):
            at = len(specs) * (node_kill + 1) // (nodes + 2)
            wait_until(lambda: len(store.completed_job_ids()) >= at, 300, proc)
            node = next(iter(cluster.worker_nodes))
            for pid in job_worker_pids({raylet_pid(node)}):  # the machine goes, with what runs on it
                kill(pid)
            cluster.remove_node(node, allow_graceful=False)
            time.sleep(2)
            cluster.add_node(**NODE)  # a replacement joins later, as an autoscaler would add one
        out, _ = proc.communicate(timeout=600)
    finally:
        killer.stop()
        proc.kill()
    wall = time.monotonic() - began
    retries = len(re.findall(r"^retry ", out, re.M))
    found = audit(results, specs)
    show("workers and nodes killed", jobs=len(specs), worker_kills=len(killer.kills), node_kills=nodes,
         retries=retries, lost=len(found.lost), duplicated=len(found.duplicated), wall_s=f"{wall:.1f}")
    assert proc.returncode == 0, out
    n = len(specs)
    assert f"{n} jobs, 0 already done, ran {n} ({n} ok, 0 oom, 0 failed)" in summary_line(out), out
    assert len(killer.kills) >= kills // 2 and retries >= 1
    assert_exactly_once(results, specs, {"ok": n})


def test_killed_workers_leave_quality_rows_exactly_once(cluster, chaos, tmp_path):
    """Recall jobs beside throughput jobs while actors are SIGKILLed, some inside a write: each job ends
    with one quality file of the attempt that wrote its jobs row, holding each (request, distance) once."""
    results = str(tmp_path / "results")
    lengths = tuple(range(48, 112, 8))  # 40 tokens at least: a block of 16 twice and 0.5W of filler
    specs = tiny_specs(input_len=lengths, output_len=(64,), task=("throughput", "recall"))
    assert sum(s.task == "recall" for s in specs) == len(specs) // 2 == 3 * len(lengths)
    args = [*CHAOS_ARGS, "--windows", "16", "--input-lengths", ",".join(map(str, lengths)), "--tasks",
            "throughput,recall"]
    # Each file's write lasts 0.1 s, so a job lasts 0.4 s at least however fast the machine: the sweep
    # outlives three kills on a quiet machine too, and kills land inside writes.
    chaos.set(write_delay_s=0.1)
    proc = start_cli("sweep", *args, "--results", results, "--address", cluster.address, "--max-retries", "50")
    store = ResultStore(results)
    killer = WorkerKiller(cluster, seed=11, interval=(0.5, 1.2), max_kills=6)
    try:
        wait_until(lambda: len(store.completed_job_ids()) >= 1, 120, proc)
        killer.start()
        out, _ = proc.communicate(timeout=600)
    finally:
        killer.stop()
        proc.kill()
    found = audit(results, specs)
    show("workers killed under quality jobs", jobs=len(specs), worker_kills=len(killer.kills),
         lost=len(found.lost), duplicated=len(found.duplicated), inconsistent=len(found.inconsistent))
    assert proc.returncode == 0, out
    assert len(killer.kills) >= 3
    assert_exactly_once(results, specs, {"ok": len(specs)})


# -- the driver, killed and restarted ----------------------------------------------------------------
# 24 jobs on two actors: long enough for several kills, short enough for CI.
DRIVER_LENGTHS = tuple(range(32, 96, 8))
DRIVER_ARGS = [*TINY_ARGS, "--input-lengths", ",".join(map(str, DRIVER_LENGTHS)), "--output-len", "64",
               "--workers", "2"]


def temp_files(results: str) -> list[str]:
    return [name for _, _, names in os.walk(results) for name in names if name.endswith(".tmp")]


def kill_driver(cluster, proc) -> None:
    """The driver's machine goes: its actors and the driver, all at once (SIGKILL)."""
    for pid in worker_pids(cluster):
        kill(pid)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def run_killed_drivers(cluster, chaos, results: str, rounds: list[str], seed: int, args: list[str]) -> dict:
    """Start the sweep once per round and SIGKILL it: `before` its first write (a random moment early
    on), `during` a write (while a results file is half written), or `after` one (as soon as a job is
    complete). Returns the figures; asserts that what was complete at each kill stays so, untouched."""
    rng = random.Random(seed)
    store = ResultStore(results)
    figures = {"before": 0, "during": 0, "after": 0, "temporary_files_left": 0}
    kept: dict[str, object] = {}
    chaos.set(write_delay_s=0.15)  # a write takes long enough to be caught in the middle
    for strategy in rounds:
        done_at_start = len(store.completed_job_ids())
        proc = start_cli("sweep", *args, "--results", results, "--address", cluster.address)
        try:
            if strategy == "before":
                time.sleep(rng.uniform(0.2, 3.0))
            elif strategy == "during":
                wait_until(lambda: temp_files(results), 120, proc, poll=0.01)
                time.sleep(rng.uniform(0, 0.05))  # well inside the write's 0.15 s
            else:
                wait_until(lambda: len(store.completed_job_ids()) > done_at_start, 120, proc, poll=0.01)
            if strategy == "before" and len(store.completed_job_ids()) > done_at_start:
                strategy = "after"  # it was quicker than the draw: count the kill for what it was
            kill_driver(cluster, proc)
        finally:
            proc.kill()
        figures[strategy] += 1
        figures["temporary_files_left"] += len(temp_files(results))
        for row in table_rows(results, "jobs"):
            if row["job_id"] in store.completed_job_ids():
                started = kept.setdefault(row["job_id"], row["started_at"])
                assert started == row["started_at"], "a complete job ran again"
    return figures | {"kept": kept}


@pytest.mark.parametrize("lengths,rounds", [
    pytest.param(DRIVER_LENGTHS, ["before", "during", "after", "during"], id="ci"),
    pytest.param(tuple(range(32, 160, 8)), ["before", "during", "after"] * 4, marks=pytest.mark.soak, id="soak"),
])
def test_driver_killed_before_during_and_after_writes_resumes_to_exactly_one_result_set(cluster, chaos, tmp_path,
                                                                                        lengths, rounds):
    results = str(tmp_path / "results")
    specs = tiny_specs(input_len=lengths, output_len=(64,))
    args = [*DRIVER_ARGS, "--input-lengths", ",".join(map(str, lengths))]
    n = len(specs)
    began = time.monotonic()
    figures = run_killed_drivers(cluster, chaos, results, random.Random(5).sample(rounds, len(rounds)), seed=3,
                                 args=args)
    chaos.set()
    done = len(ResultStore(results).completed_job_ids())
    final = run_cli("sweep", *args, "--results", results, "--address", cluster.address, timeout=600)
    wall = time.monotonic() - began
    found = audit(results, specs)
    show("driver killed", jobs=n, driver_kills=len(rounds), before_writes=figures["before"],
         during_writes=figures["during"], after_writes=figures["after"],
         temporary_files_left_by_kills=figures["temporary_files_left"], lost=len(found.lost),
         duplicated=len(found.duplicated), wall_s=f"{wall:.1f}")
    assert final.returncode == 0, final.stdout + final.stderr
    assert f"{n} jobs, {done} already done, ran {n - done} ({n - done} ok" in summary_line(final.stdout)
    assert figures["during"] >= 1 and figures["after"] >= 1 and figures["temporary_files_left"] >= 1
    assert_exactly_once(results, specs, {"ok": n})
    rows = {r["job_id"]: r["started_at"] for r in table_rows(results, "jobs")}
    assert all(rows[job_id] == started for job_id, started in figures["kept"].items())  # not run again


# -- two drivers at once -------------------------------------------------------------------------------
def test_two_drivers_on_one_store_leave_one_result_set_per_job(cluster, chaos, tmp_path):
    results = str(tmp_path / "results")
    args = [*TINY_ARGS, "--input-lengths", "32,48,64,80", "--output-len", "32", "--workers", "1",
            "--results", results, "--address", cluster.address]
    specs = tiny_specs(input_len=(32, 48, 64, 80), output_len=(32,))
    gate = str(tmp_path / "gate")
    # Both actors start together and run the same jobs in the same order: they write the same files at
    # the same moments, each write held open a random while (so one attempt's two writes may fall
    # between the other's, which without the store's lock leaves a mix of two attempts).
    chaos.set(write_delay_s=[0, 0.1], gate=gate)
    began = time.monotonic()
    procs = [start_cli("sweep", *args) for _ in range(2)]
    try:
        wait_until(lambda: len(glob.glob(gate + ".waiting.*")) == 2, 120, procs[0])
        open(gate, "w").close()
        outs = [proc.communicate(timeout=180)[0] for proc in procs]
    finally:
        for proc in procs:
            proc.kill()
    wall = time.monotonic() - began
    executions = len(chaos.events())
    found = audit(results, specs)
    show("two drivers", jobs=len(specs), drivers=2, executions=executions, lost=len(found.lost),
         duplicated=len(found.duplicated), inconsistent=len(found.inconsistent), wall_s=f"{wall:.1f}")
    assert [proc.returncode for proc in procs] == [0, 0], outs
    assert executions > len(specs)  # both ran jobs: at least once, sometimes twice
    assert_exactly_once(results, specs, {"ok": len(specs)})


# -- a GPU out of memory inside a job -------------------------------------------------------------------
def test_out_of_memory_in_a_job_is_an_oom_row_and_the_actor_runs_the_next_job(cluster, chaos, tmp_path):
    results = str(tmp_path / "results")
    args = [*TINY_ARGS, "--workers", "1", "--results", results, "--address", cluster.address]
    specs = tiny_specs()
    oom = next(s for s in specs if s.config == "hybrid" and s.input_len == 64)
    chaos.set(oom=[{"config": "hybrid", "input_len": 64}])
    first = run_cli("sweep", *args)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "6 jobs, 0 already done, ran 6 (5 ok, 1 oom, 0 failed)" in summary_line(first.stdout)
    [row] = [r for r in table_rows(results, "jobs") if r["job_id"] == oom.job_id]
    assert row["status"] == "oom" and row["error"].startswith("OutOfMemoryError: CUDA out of memory")
    events = chaos.events()
    order = [e["job_id"] for e in events]
    assert len({e["pid"] for e in events}) == 1 and len(events) == 6  # one actor ran them all, none died
    assert order.index(oom.job_id) < 5  # ... including jobs after the OOM
    assert all(e["pools_alive_before"] == 0 for e in events)  # the OOM job's KV pool was freed

    chaos.set()
    again = run_cli("sweep", *args)  # an oom row is not a result a re-run keeps
    assert "6 jobs, 5 already done, ran 1 (1 ok" in summary_line(again.stdout), again.stdout + again.stderr
    show("GPU out of memory", jobs=6, injected_oom=1, oom_rows=1, actor_restarts=0,
         jobs_after_oom=5 - order.index(oom.job_id), lost=0, duplicated=0)
    assert_exactly_once(results, specs, {"ok": 6})


# -- the store full or unwritable midway ----------------------------------------------------------------
def test_full_or_unwritable_store_stops_with_a_clear_error_and_the_rerun_completes(cluster, chaos, tmp_path):
    results = str(tmp_path / "results")
    args = [*DRIVER_ARGS, "--workers", "1", "--results", results, "--address", cluster.address]
    specs = tiny_specs(input_len=DRIVER_LENGTHS, output_len=(64,))
    store = ResultStore(results)

    proc = start_cli("sweep", *args)  # the disk fills up after a few jobs
    try:
        wait_until(lambda: len(store.completed_job_ids()) >= 3, 120, proc)
        chaos.set(enospc=True)
        out, _ = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 2, out
    last = out.strip().splitlines()[-1]
    assert re.fullmatch(r"hybench sweep: error: cannot write \S+\.parquet: \[Errno 28\] No space left on device",
                        last), out
    assert "Traceback" not in out
    partial = audit(results, specs, partial=True)
    assert not partial.problems, partial.problems
    full_done = len(partial.complete)

    chaos.set()  # space is back; now a folder a later job needs cannot be created (a file is in the way)
    blocked = next(folder for folder in (os.path.dirname(store.job_path("requests", s.partition(), s.job_id))
                                         for s in specs) if not os.path.exists(folder))
    os.makedirs(os.path.dirname(blocked), exist_ok=True)
    with open(blocked, "w", encoding="utf-8") as fh:
        fh.write("not a folder")
    second = run_cli("sweep", *args)
    assert second.returncode == 2, second.stdout + second.stderr
    last = second.stderr.strip().splitlines()[-1]
    assert re.fullmatch(rf"hybench sweep: error: cannot write {re.escape(blocked)}\S*: .*", last), second.stderr
    partial = audit(results, specs, partial=True)
    assert not partial.problems, partial.problems

    os.unlink(blocked)
    final = run_cli("sweep", *args)
    assert final.returncode == 0, final.stdout + final.stderr
    show("store full, then unwritable", jobs=len(specs), faults=2, complete_after_full=full_done,
         complete_after_unwritable=len(partial.complete), lost=0, duplicated=0)
    assert_exactly_once(results, specs, {"ok": len(specs)})


# -- a changed sweep ----------------------------------------------------------------------------------
def test_a_changed_sweep_runs_only_its_new_jobs(cluster, tmp_path):
    results = str(tmp_path / "results")
    args = [*TINY_ARGS, "--results", results, "--address", cluster.address, "--workers", "1"]
    first = run_cli("sweep", *args)
    assert "6 jobs, 0 already done, ran 6 (6 ok" in summary_line(first.stdout), first.stdout + first.stderr
    store = ResultStore(results)
    before = {f.path: os.stat(f.path).st_mtime_ns for table in ("requests", "jobs") for f in store.files(table)}

    # One more input length and one more window: full keeps its first window, so its old jobs stay valid.
    changed = run_cli("sweep", *args, "--input-lengths", "32,64,96", "--windows", "16,24")
    assert "15 jobs, 6 already done, ran 9 (9 ok" in summary_line(changed.stdout), changed.stdout + changed.stderr
    assert {path: os.stat(path).st_mtime_ns for path in before} == before  # the done jobs were not touched
    specs = tiny_specs(input_len=(32, 64, 96), window=(16, 24))
    show("changed sweep", jobs=len(specs), already_done=6, ran=9, lost=0, duplicated=0)
    assert_exactly_once(results, specs, {"ok": 15})
