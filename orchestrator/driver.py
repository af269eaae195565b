"""The Ray driver: a sweep's jobs on device-pinned actors, resumable and fault tolerant.

It runs its own `ray.wait` loop rather than an ActorPool because it must send each job to an actor
that already holds the job's model, send jobs only to actors that are up, notice actors that were
lost (their job runs again, a bounded number of times), restart hung ones, and keep the progress
bar moving while it waits. Workers write the results; the driver sees one summary row per job.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import logging
import math
import os
import sys
import time
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass, field

import ray
from ray._private import ray_constants
from ray.exceptions import RayError, RayTaskError
from tqdm import tqdm

from hybench.orchestrator.index_cli import refresh_index
from hybench.orchestrator.sweep import SweepError
from hybench.workers.actor import FORWARDED_ENV, RemoteJobWorker
from hybench.workers.job import job_key, prepare
from hybench.workers.job_spec import JobSpec, project_version
from hybench.workers.records import result_tables
from hybench.workers.store import ResultStore, StoreError

POLL_S = 1.0  # how often the loop wakes without news: progress, timeouts, Ctrl-C
WAIT_HINT_S = 60.0  # when to say that no worker has come up yet


@dataclass(frozen=True)
class DriverOptions:
    """How a sweep runs (see sweep.RUN_OPTIONS for what each means)."""

    results: str
    address: str | None = None
    workers: int | None = None
    gpus_per_worker: float | None = None
    cpus_per_worker: int | None = None
    max_retries: int = 2
    job_timeout: float | None = None
    progress: bool | None = None  # None: a progress bar only on a terminal

    def __post_init__(self) -> None:
        problems = []
        if self.workers is not None and self.workers < 1:
            problems.append(f"workers must be at least 1, got {self.workers}")
        if self.gpus_per_worker is not None and not 0 <= self.gpus_per_worker < math.inf:  # also rejects NaN
            problems.append(f"gpus_per_worker must be >= 0 and finite, got {self.gpus_per_worker}")
        if self.cpus_per_worker is not None and self.cpus_per_worker < 1:
            problems.append(f"cpus_per_worker must be at least 1, got {self.cpus_per_worker}")
        if self.max_retries < 0:
            problems.append(f"max_retries must be >= 0, got {self.max_retries}")
        if self.job_timeout is not None and not 0 < self.job_timeout < math.inf:
            problems.append(f"job_timeout must be a positive number of seconds, got {self.job_timeout}")
        if problems:
            raise SweepError("; ".join(problems))


@dataclass
class SweepSummary:
    jobs: int  # in the sweep
    skipped: int  # already done (ok) in the store
    statuses: Counter = field(default_factory=Counter)  # of the jobs run now: ok, oom, error
    placements: list[dict] = field(default_factory=list)  # where actors came up, in order


def run_sweep(specs: list[JobSpec], options: DriverOptions) -> SweepSummary:
    """Run every job of `specs` whose ok result is not in the store yet."""
    store = ResultStore(options.results)
    store.remove_stale_temps()  # left by writers killed mid-write in an earlier run
    done = store.completed_job_ids()
    todo = [spec for spec in specs if spec.job_id not in done]
    summary = SweepSummary(jobs=len(specs), skipped=len(specs) - len(todo))
    if todo:
        if options.address is None:
            for spec in todo:  # every user mistake surfaces before anything runs
                prepare(spec)
        with ray_session(options.address):
            _Loop(todo, store, options, summary).run()
    refresh_index(store, "hybench sweep", options.progress)
    return summary


@contextlib.contextmanager
def ray_session(address: str | None) -> Iterator[None]:
    """Join the cluster at `address`, or start a private Ray on loopback; leave it on the way out."""
    # Ray's notice that token authentication is on (it turns it on itself) asks nothing of the user.
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
    try:
        if address is None:
            # Never join a cluster by accident; the Ray processes started here inherit this env too.
            stray = os.environ.pop("RAY_ADDRESS", None)
            if stray:
                print(f"hybench sweep: running on this machine, not on RAY_ADDRESS={stray} "
                      "(pass --address auto for that cluster)", file=sys.stderr)
            _loopback_only()
            ray.init(address="local", _node_ip_address="127.0.0.1", include_dashboard=False,
                     logging_level=logging.WARNING)
        else:
            ray.init(address=address, logging_level=logging.WARNING)
    except (ConnectionError, ValueError) as exc:
        raise SweepError(f"cannot connect to Ray at {address}: {_first_line(exc)}") from None
    try:
        yield
    finally:
        ray.shutdown()


def _loopback_only() -> None:
    """Keep a private Ray on 127.0.0.1. On Linux Ray otherwise binds its GCS, raylet, workers and agents
    to every interface (or the machine's outward IP), whatever node IP it is given; its single-machine
    mode, the one it uses on macOS and Windows, binds them to loopback. The switch is read from the
    environment by every process Ray starts, and once, at import, by this one."""
    os.environ[ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False


def _model_key(spec: JobSpec) -> tuple:
    """What an actor keeps loaded between jobs: jobs with the same key reuse its weights."""
    return (spec.model, spec.engine, spec.load_format, spec.dtype, spec.seed, spec.device)


def _cost(spec: JobSpec) -> int:
    return (spec.input_len + spec.output_len) * spec.num_prompts * (spec.num_warmup_iters + spec.num_benchmark_iters)


class _Pending:
    """Jobs not started yet, grouped by model; round by round (every job's first run before any job's
    second, so that repeats are spread over the sweep), the longest first within a round."""

    def __init__(self, specs: list[JobSpec]) -> None:
        self._groups: dict[tuple, deque[JobSpec]] = {}
        for spec in sorted(specs, key=lambda spec: (spec.repeat, -_cost(spec))):
            self._groups.setdefault(_model_key(spec), deque()).append(spec)

    def __len__(self) -> int:
        return sum(len(group) for group in self._groups.values())

    def retry(self, spec: JobSpec) -> None:
        self._groups.setdefault(_model_key(spec), deque()).appendleft(spec)

    def take(self, model: tuple | None) -> JobSpec:
        """A job of `model` if one is left, else one of the largest group."""
        key = model if self._groups.get(model) else max(self._groups, key=lambda k: len(self._groups[k]))
        group = self._groups[key]
        spec = group.popleft()
        if not group:
            del self._groups[key]
        return spec


@dataclass(eq=False)
class _Actor:
    handle: ray.actor.ActorHandle
    model: tuple | None = None  # model key of its last job: the weights it holds


@dataclass
class _Running:
    actor: _Actor
    spec: JobSpec
    since: float | None = None  # when its model was loaded and the job itself began; None while loading
    timed_out: bool = False


class _Loop:
    """One sweep's scheduling state: idle actors take jobs, answers are handled as they land."""

    def __init__(self, todo: list[JobSpec], store: ResultStore, options: DriverOptions,
                 summary: SweepSummary) -> None:
        self.store, self.options, self.summary = store, options, summary
        self.pending = _Pending(todo)
        self.running: dict[ray.ObjectRef, _Running] = {}
        self.starting: dict[ray.ObjectRef, _Actor] = {}  # placement calls of actors not known to be up
        self.loading: dict[ray.ObjectRef, ray.ObjectRef] = {}  # model loads -> the run call queued behind each
        self.attempts: Counter[str] = Counter()
        count, gpus, cpus = _worker_shape(options, len(todo))
        worker = RemoteJobWorker.options(num_gpus=gpus, num_cpus=cpus, **_forwarded_env())
        self.actors = [_Actor(worker.remote(options.results, cpus)) for _ in range(count)]
        for actor in self.actors:
            self._await_start(actor)
        self.hint_at: float | None = time.monotonic() + WAIT_HINT_S
        self.bar = tqdm(total=len(todo), unit="job", desc="sweep", file=sys.stderr, dynamic_ncols=True,
                        disable=None if options.progress is None else not options.progress)
        self._say(f"{len(todo)} jobs to run ({summary.skipped} already done) on {count} "
                  f"{'GPU' if gpus else 'CPU'} workers ({gpus:g} GPU, {cpus} CPU each)")
        if store.is_local and sum(node["Alive"] for node in ray.nodes()) > 1:
            self._say(f"note: every node writes to {store.root}: on a cluster, that must be a shared mount")

    def run(self) -> None:
        try:
            while self.pending or self.running:
                self._dispatch()
                ready, _ = ray.wait([*self.running, *self.loading, *self.starting], num_returns=1,
                                    timeout=self._wait_s())
                for ref in ready:
                    if ref in self.running:
                        self._finished(ref)
                    elif ref in self.loading:
                        self._loaded(ref)
                    else:
                        self._started(ref)
                self._enforce_timeout()
                self._show()
        finally:
            self.bar.close()
            for actor in self.actors:
                ray.kill(actor.handle)

    # -- actors --------------------------------------------------------------------------------
    def _await_start(self, actor: _Actor) -> None:
        """Send jobs to `actor` again only once it answers (Ray may be restarting it elsewhere)."""
        actor.model = None
        # Retried until the restart is over (a call to a restarting actor fails at once otherwise).
        ping = actor.handle.placement.options(max_task_retries=-1).remote()
        self.starting[ping] = actor

    def _started(self, ref: ray.ObjectRef) -> None:
        actor = self.starting.pop(ref)
        try:
            placement = ray.get(ref)
        except RayError as exc:  # it cannot come up: its constructor failed, or it was killed for good
            self._say(f"a worker does not come up, dropping it: {_first_line(exc)}")
            self.actors.remove(actor)
            ray.kill(actor.handle)
            if not self.actors:
                raise SweepError(f"no worker could start: {_first_line(exc)}") from None
            return
        self.summary.placements.append(placement)
        self._say(f"worker up: pid {placement['pid']} on {placement['hostname']}, "
                  f"GPU {','.join(placement['gpu_ids']) or 'none'} "
                  f"(CUDA_VISIBLE_DEVICES={placement['cuda_visible_devices']})")

    def _idle(self) -> list[_Actor]:
        busy = {run.actor for run in self.running.values()} | set(self.starting.values())
        return [actor for actor in self.actors if actor not in busy]

    # -- jobs ----------------------------------------------------------------------------------
    def _dispatch(self) -> None:
        for actor in self._idle():
            if not self.pending:
                return
            spec = self.pending.take(actor.model)
            # The actor runs its calls in order: the load, then the job, whose clock starts once loaded.
            load = actor.handle.load.remote(spec)
            job = actor.handle.run.remote(spec)
            self.loading[load] = job
            self.running[job] = _Running(actor, spec)

    def _loaded(self, ref: ray.ObjectRef) -> None:
        """The model is loaded (or its load failed, which the job then meets and records): the job
        itself starts now, and so does its --job-timeout."""
        run = self.running.get(self.loading.pop(ref))
        if run is not None:
            run.since = time.monotonic()

    def _finished(self, ref: ray.ObjectRef) -> None:
        run = self.running.pop(ref)
        self.loading = {load: job for load, job in self.loading.items() if job != ref}
        try:
            row = ray.get(ref)
        except RayTaskError as exc:  # raised before the job could record itself: retrying cannot help
            cause = exc.cause or exc
            if isinstance(cause, StoreError):  # the store is full or unwritable: so is it for every job
                raise StoreError(str(cause)) from None
            row = self._record_failure(run.spec, f"{type(cause).__name__}: {_first_line(cause)}")
        except RayError as exc:  # the actor was lost: crash, node gone, memory monitor, our timeout
            self._await_start(run.actor)
            self.attempts[run.spec.job_id] += 1
            attempts = self.attempts[run.spec.job_id]
            reason = (f"timed out after {self.options.job_timeout:g} s" if run.timed_out
                      else f"worker lost: {_first_line(exc)}")
            if attempts <= self.options.max_retries:
                self._say(f"retry {_describe(run.spec)} ({reason})")
                self.pending.retry(run.spec)
                return
            row = self._record_failure(run.spec, f"{reason} (gave up after {attempts} attempts)")
        else:
            run.actor.model = _model_key(run.spec)
        self.summary.statuses[row["status"]] += 1
        self.bar.update(1)
        self._say(_describe(run.spec, row))

    def _record_failure(self, spec: JobSpec, error: str) -> dict:
        """A job that could not produce results gets an error row, stored exactly as a worker
        would store it (same files, same job id), so a later success replaces it."""
        now = dt.datetime.now(dt.timezone.utc)
        row = job_key(spec) | {"status": "error", "error": error, "started_at": now, "finished_at": now,
                                "project_version": project_version()}
        self.store.write_result(spec.partition(), spec.job_id, result_tables([], [], [row]))
        return row

    def _wait_s(self) -> float:
        """Until the next news is due: a poll, or the first job to pass its timeout."""
        starts = [run.since for run in self.running.values() if not run.timed_out and run.since is not None]
        if self.options.job_timeout is None or not starts:
            return POLL_S
        return min(POLL_S, max(0.0, min(starts) + self.options.job_timeout - time.monotonic()))

    def _enforce_timeout(self) -> None:
        if self.options.job_timeout is None:
            return
        now = time.monotonic()
        for run in self.running.values():
            if not run.timed_out and run.since is not None and now - run.since > self.options.job_timeout:
                run.timed_out = True
                ray.kill(run.actor.handle, no_restart=False)  # its job then fails as a lost actor

    # -- output --------------------------------------------------------------------------------
    def _show(self) -> None:
        statuses = self.summary.statuses
        self.bar.set_postfix(running=len(self.running), failed=statuses["error"], oom=statuses["oom"])
        if self.hint_at is not None and time.monotonic() > self.hint_at:
            if not self.summary.placements:
                self._say("no worker is up yet: waiting for the cluster to provide the resources they need")
            self.hint_at = None

    def _say(self, line: str) -> None:
        tqdm.write(line, file=sys.stderr)


def _forwarded_env() -> dict:
    """Actor options that give every actor the driver's values of FORWARDED_ENV (none if none is set)."""
    env_vars = {name: os.environ[name] for name in FORWARDED_ENV if name in os.environ}
    return {"runtime_env": {"env_vars": env_vars}} if env_vars else {}


def _worker_shape(options: DriverOptions, jobs: int) -> tuple[int, float, int]:
    """(actors, GPUs each, CPUs each): one actor per GPU; where the cluster has none, CPU actors."""
    gpus = ray.cluster_resources().get("GPU", 0)
    per_worker = options.gpus_per_worker
    if per_worker is None:
        per_worker = 1.0 if gpus else 0.0
    if per_worker > 0:
        count = options.workers or max(1, int(gpus // per_worker))
        cpus = options.cpus_per_worker or 1
    else:
        count = options.workers or 1
        cpus = options.cpus_per_worker or max(1, int(max(
            node["Resources"].get("CPU", 0) for node in ray.nodes() if node["Alive"])))
    return min(count, jobs), per_worker, cpus


def _describe(spec: JobSpec, row: dict | None = None) -> str:
    job = (f"{spec.model} {spec.config:<7} W={spec.window:<5} in={spec.input_len:<5} out={spec.output_len:<4}"
           f"{'' if spec.engine == 'hybrid' else ' engine=' + spec.engine}"
           f"{'' if spec.task == 'throughput' else ' task=' + spec.task} run {spec.repeat + 1}")
    if row is None:
        return job
    if row["status"] == "ok" and spec.task != "throughput":
        return (f"ok    {job} {row['scored_tok_s']:10.1f} tok/s scored, mean NLL {row['nll_mean']:.3f}, "
                f"top-1 {row['top1_accuracy']:.1%} {row['elapsed_s']:7.2f} s")
    if row["status"] == "ok":
        return f"ok    {job} {row['throughput_tok_s']:10.1f} tok/s {row['elapsed_s']:7.2f} s"
    return f"{row['status']:<5} {job} {(row['error'] or '').splitlines()[0]}"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
