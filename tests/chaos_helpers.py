"""The reliability tests' tools: fault injection switches, a process killer, and the store audit that
says whether every job of a sweep ended with exactly one result set.

Fault injection lives in chaos_site/sitecustomize.py; `Chaos` writes the control file it reads and
gives the environment that loads it. Processes are found through /proc (Linux), always as
descendants of processes the test started, so nothing else on the machine is touched.
"""
from __future__ import annotations

import json
import os
import random
import signal
import threading
from collections import Counter
from dataclasses import dataclass, field

import pyarrow.parquet as pq

from hybench.workers.job_spec import JobSpec
from hybench.workers.recall import distances_that_fit
from hybench.workers.recall_task import BLOCK_LEN
from hybench.workers.store import TABLES, ResultStore

CHAOS_SITE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "chaos_site")


class Chaos:
    """The switches of chaos_site/sitecustomize.py for every process started with `env()`."""

    def __init__(self, folder: str) -> None:
        self.control = os.path.join(folder, "chaos-control.json")
        self.events_path = os.path.join(folder, "chaos-events.log")
        self.set()

    def env(self) -> dict[str, str]:
        path = os.environ.get("PYTHONPATH")
        return {"PYTHONPATH": CHAOS_SITE + (os.pathsep + path if path else ""),
                "HYBENCH_CHAOS_CONTROL": self.control, "HYBENCH_CHAOS_EVENTS": self.events_path}

    def set(self, **faults) -> None:
        """Replace the active faults (none when called without arguments)."""
        tmp = self.control + ".new"
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(faults, fh)
        os.replace(tmp, self.control)

    def events(self) -> list[dict]:
        """One dict per job run by a patched process, in order."""
        if not os.path.exists(self.events_path):
            return []
        with open(self.events_path, encoding="utf-8") as fh:
            return [json.loads(line) for line in fh if line.strip()]

    def clear_events(self) -> None:
        if os.path.exists(self.events_path):
            os.unlink(self.events_path)


# -- processes --------------------------------------------------------------------------------------
def _parent(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as fh:
            stat = fh.read()
    except OSError:
        return None
    return int(stat[stat.rindex(")") + 2:].split()[1])


def _title(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def descendants(roots: set[int]) -> set[int]:
    """Every live process below `roots` (not the roots themselves)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            parent = _parent(int(entry))
            if parent is not None:
                children.setdefault(parent, []).append(int(entry))
    found, todo = set(), list(roots)
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def raylet_pid(node) -> int:
    return node.all_processes["raylet"][0].process.pid


def job_worker_pids(roots: set[int]) -> list[int]:
    """The hybench actors (Ray titles their processes ray::JobWorker...) below `roots`."""
    return sorted(pid for pid in descendants(roots) if _title(pid).startswith("ray::JobWorker"))


def kill(pid: int) -> bool:
    try:
        os.kill(pid, signal.SIGKILL)
        return True
    except ProcessLookupError:
        return False


class WorkerKiller(threading.Thread):
    """SIGKILLs one random hybench actor of the cluster every `interval` (seeded), up to `max_kills`."""

    def __init__(self, cluster, seed: int, interval: tuple[float, float], max_kills: int) -> None:
        super().__init__(daemon=True)
        self.cluster, self.rng, self.interval, self.max_kills = cluster, random.Random(seed), interval, max_kills
        self.kills: list[int] = []
        self._halt = threading.Event()

    def run(self) -> None:
        while len(self.kills) < self.max_kills and not self._halt.wait(self.rng.uniform(*self.interval)):
            roots = {raylet_pid(node) for node in list(self.cluster.worker_nodes)}
            pids = job_worker_pids(roots)
            if pids:
                pid = self.rng.choice(pids)
                if kill(pid):
                    self.kills.append(pid)

    def stop(self) -> None:
        self._halt.set()
        if self.is_alive():
            self.join()


# -- the store --------------------------------------------------------------------------------------
@dataclass
class Audit:
    """What a store holds for a sweep, against what the sweep expands to."""

    jobs: int  # in the sweep
    complete: set[str] = field(default_factory=set)  # one readable requests and jobs file, consistent
    statuses: Counter = field(default_factory=Counter)
    lost: list[str] = field(default_factory=list)  # in the sweep, without a complete result set
    duplicated: list[str] = field(default_factory=list)  # more than one file, row or request per job
    unexpected: list[str] = field(default_factory=list)  # files of jobs not in the sweep
    temporary: list[str] = field(default_factory=list)  # leftover temporary or hidden files
    unreadable: list[str] = field(default_factory=list)
    inconsistent: list[str] = field(default_factory=list)  # tables of one job written by different attempts

    @property
    def problems(self) -> dict[str, list]:
        return {name: value for name, value in (
            ("lost", self.lost), ("duplicated", self.duplicated), ("unexpected", self.unexpected),
            ("temporary", self.temporary), ("unreadable", self.unreadable), ("inconsistent", self.inconsistent),
        ) if value}


def _iterations(spec: JobSpec) -> int:
    return spec.num_warmup_iters + spec.num_benchmark_iters


def _quality_rows(spec: JobSpec) -> int:
    """Quality rows an ok job writes: one per request and recall distance (recall), none for throughput."""
    if spec.task == "throughput":
        return 0
    assert spec.task == "recall", "the chaos sweeps run throughput and recall jobs"
    return spec.num_prompts * len(distances_that_fit(spec.window, spec.input_len, BLOCK_LEN))


def audit(results: str, specs: list[JobSpec], partial: bool = False) -> Audit:
    """Check the store of a sweep: exactly one file of every table per job id (one attempt), each
    readable, one jobs row naming the job, one requests row per request and iteration of a throughput
    job, one quality row per request and distance of a recall job (none for a failed job), no files of
    other jobs, no temporary files. `partial`: a sweep that was stopped, so
    jobs without any file are not lost (a job with files must still be whole)."""
    store = ResultStore(results)
    by_id = {spec.job_id: spec for spec in specs}
    result = Audit(jobs=len(specs))
    files: dict[str, dict[str, list]] = {table: {} for table in TABLES}
    for table in TABLES:
        for stored in store.files(table):
            files[table].setdefault(stored.job_id, []).append(stored.path)
    for folder, _, names in os.walk(results):
        for name in names:
            if name.startswith(".") or name.endswith(".tmp"):
                result.temporary.append(os.path.join(folder, name))
    for job_id in sorted(set(files["requests"]) | set(files["jobs"]) | set(by_id)):
        spec = by_id.get(job_id)
        paths = {table: files[table].get(job_id, []) for table in TABLES}
        if spec is None:
            result.unexpected.append(job_id)
            continue
        if any(len(p) > 1 for p in paths.values()):
            result.duplicated.append(job_id)
            continue
        if not all(paths.values()):
            if not (partial and not paths["jobs"]):
                result.lost.append(job_id)
            continue
        tables, attempts = {}, {}
        for table in TABLES:
            try:
                with store.fs.open_input_file(paths[table][0]) as fh:
                    tables[table] = pq.read_table(fh)
                    attempts[table] = (tables[table].schema.metadata or {}).get(b"hybench.attempt")
            except Exception:  # noqa: BLE001 - any failure to read is what this records
                result.unreadable.append(paths[table][0])
        if len(tables) < len(TABLES):
            continue
        jobs_rows, request_rows = tables["jobs"].to_pylist(), tables["requests"].to_pylist()
        if len(jobs_rows) != 1 or jobs_rows[0]["job_id"] != job_id:
            result.duplicated.append(job_id)
            continue
        status = jobs_rows[0]["status"]
        keys = [(r["iteration"], r["request_id"]) for r in request_rows]
        want = spec.num_prompts * _iterations(spec) if status == "ok" and spec.task == "throughput" else 0
        if len(set(keys)) != len(keys) or len(keys) != want or any(r["job_id"] != job_id for r in request_rows):
            result.duplicated.append(job_id)
            continue
        quality_rows = tables["quality"].to_pylist()
        quality_keys = {(r["request_id"], r["distance"]) for r in quality_rows}
        want = _quality_rows(spec) if status == "ok" else 0
        if len(quality_keys) != len(quality_rows) or len(quality_rows) != want \
                or any(r["job_id"] != job_id for r in quality_rows):
            result.duplicated.append(job_id)
            continue
        if len(set(attempts.values())) != 1:
            result.inconsistent.append(job_id)
            continue
        result.complete.add(job_id)
        result.statuses[status] += 1
    return result


def show(title: str, **figures) -> None:
    """The figure a reliability test prints (run pytest with -s to see it)."""
    print(f"\n[{title}] " + ", ".join(f"{name.replace('_', ' ')}: {value}" for name, value in figures.items()))
