"""Fault injection for the reliability tests, loaded by every Python process that has this folder on
PYTHONPATH and HYBENCH_CHAOS_CONTROL set: the test's `hybench sweep` drivers and, through the
environment their raylets inherit, every Ray worker of the test cluster.

Nothing is imported or patched at start-up: when (and only when) a process imports
hybench.workers.store or hybench.workers.job, the module is patched right after it loads. The
patches read the control file (JSON, written by chaos_helpers.Chaos) on every call, so a test turns
faults on and off while the processes run:

- write_delay_s: sleep after a results file's bytes are written to its temporary name and before it
  is renamed, so that a kill lands inside a write (a number, or [low, high] for a random delay);
- enospc: true (every table) or a list of tables: a write fails half way with ENOSPC, as on a full disk;
- oom: a list of {"config": c, "input_len": n}: jobs that match raise torch.OutOfMemoryError from the
  engine's first step (after the engine allocated its KV pool), as a GPU that runs out of memory does;
- gate: a path: a process's first job waits until that file exists (and says so with a file named
  <gate>.waiting.<pid>), so that the jobs of several processes start at the same moment.

Each job a patched process runs appends one line to HYBENCH_CHAOS_EVENTS: pid, job id, config, input
length, status, and how many KV pools of earlier jobs were still alive when it started.
"""
from __future__ import annotations

import errno
import importlib.abc
import json
import os
import random
import sys
import time
import weakref

_CONTROL = os.environ.get("HYBENCH_CHAOS_CONTROL")
_EVENTS = os.environ.get("HYBENCH_CHAOS_EVENTS")


def _control() -> dict:
    try:
        with open(_CONTROL, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return {}


class _ParquetWithFaults:
    """Stands in for pyarrow.parquet inside hybench.workers.store."""

    def __init__(self, pq) -> None:
        self._pq = pq

    def __getattr__(self, name):
        return getattr(self._pq, name)

    def write_table(self, table, where, *args, **kwargs):
        name = getattr(where, "name", where)
        control = _control()
        enospc = control.get("enospc")
        table_name = next((t for t in ("requests", "jobs") if f"/{t}/" in str(name)), None)
        if enospc is True or (isinstance(enospc, list) and table_name in enospc):
            self._pq.write_table(table.slice(0, table.num_rows // 2), where, *args, **kwargs)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._pq.write_table(table, where, *args, **kwargs)
        if hasattr(where, "flush"):
            where.flush()
        delay = control.get("write_delay_s")
        if isinstance(delay, list):
            delay = random.uniform(*delay)
        if delay:
            time.sleep(delay)


def _patch_store(module) -> None:
    module.pq = _ParquetWithFaults(module.pq)


_pools: list = []  # weak references to the KV pools of the jobs this process ran
_current: list = [None]  # the spec of the job this process is running


def _patch_job(module) -> None:
    import torch
    from hybench.engine import kv_cache

    cache_init = kv_cache.KVCache.__init__

    def init(self, *args, **kwargs):
        cache_init(self, *args, **kwargs)
        _pools.append(weakref.ref(self.kv))

    kv_cache.KVCache.__init__ = init

    engine_step = module.LLMEngine.step

    def step(self):
        spec = _current[0]
        for match in _control().get("oom", []):
            if spec is not None and spec.config == match["config"] and spec.input_len == match["input_len"]:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (injected by the test)")
        return engine_step(self)

    module.LLMEngine.step = step

    run_job = module.run_job

    def run_job_logged(spec, *args, **kwargs):
        gate = _control().get("gate")
        if gate and not os.path.exists(gate):  # wait with the other processes, then all start at once
            open(f"{gate}.waiting.{os.getpid()}", "w").close()
            while not os.path.exists(gate):
                time.sleep(0.005)
        alive_before = sum(ref() is not None for ref in _pools)
        started = time.time()
        _current[0] = spec
        status = "raised"
        try:
            row = run_job(spec, *args, **kwargs)
            status = row["status"]
            return row
        finally:
            _current[0] = None
            if _EVENTS:
                line = json.dumps({"pid": os.getpid(), "job_id": spec.job_id, "config": spec.config,
                                   "input_len": spec.input_len, "status": status, "pools_alive_before": alive_before,
                                   "started": started, "finished": time.time()})
                with open(_EVENTS, "a", encoding="utf-8") as fh:
                    fh.write(line + "\n")

    module.run_job = run_job_logged
    # The actor imported run_job by name before this patch could run, if it was imported first.
    actor = sys.modules.get("hybench.workers.actor")
    if actor is not None:
        actor.run_job = run_job_logged


_PATCHES = {"hybench.workers.store": _patch_store, "hybench.workers.job": _patch_job}


class _PatchAfterImport(importlib.abc.MetaPathFinder):
    """Finds the targets with the other finders, then patches each module once it has executed."""

    def find_spec(self, name, path, target=None):
        patch = _PATCHES.get(name)
        if patch is None:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                break
        else:
            return None
        exec_module = spec.loader.exec_module

        def exec_and_patch(module):
            exec_module(module)
            patch(module)

        spec.loader.exec_module = exec_and_patch
        return spec


if _CONTROL:
    sys.meta_path.insert(0, _PatchAfterImport())
