"""The worker under faults (issue 7), in process: the JobWorker the Ray actor wraps, given a GPU out of
memory inside a job, or a model that fails to load. The failed job is one row (oom or error), what it
held is given back at once, and the same worker runs the next job. test_reliability_chaos.py checks the
same through a real Ray actor."""
from __future__ import annotations

import dataclasses
import json
import shutil
import weakref

import pytest
import torch
from ray_helpers import table_rows, tiny_specs

from hybench.engine import CheckpointError, kv_cache, llm_engine, model_runner
from hybench.engine.model_config import PRESET_DIR
from hybench.workers import job as job_module
from hybench.workers.actor import JobWorker
from hybench.workers.store import ResultStore

def oom() -> torch.OutOfMemoryError:  # a new one each time: a raised exception holds its frames
    return torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (injected by the test)")


@pytest.fixture
def pools(monkeypatch) -> list:
    """Weak references to the KV pool of every engine the test creates."""
    refs = []
    init = kv_cache.KVCache.__init__

    def tracking_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        refs.append(weakref.ref(self.kv))

    monkeypatch.setattr(kv_cache.KVCache, "__init__", tracking_init)
    return refs


def _is_target(config) -> bool:
    return config.attention == "hybrid" and config.max_model_len == 64 + 4


@pytest.mark.parametrize("where", ["first step", "engine setup"])
def test_out_of_memory_in_a_job_is_an_oom_row_its_memory_is_freed_and_the_next_job_runs(
        tmp_path, monkeypatch, pools, where):
    if where == "first step":  # the pool is allocated, the first forward runs out of memory
        step = llm_engine.LLMEngine.step

        def step_or_oom(self):
            if _is_target(self.config):
                raise oom()
            return step(self)

        monkeypatch.setattr(llm_engine.LLMEngine, "step", step_or_oom)
    else:  # the pool is allocated and wired into the model's layers, then graph capture runs out
        init = model_runner.ModelRunner.__init__

        def init_or_oom(self, model, config, cache):
            if _is_target(config):
                raise oom()
            init(self, model, config, cache)

        monkeypatch.setattr(model_runner.ModelRunner, "__init__", init_or_oom)

    worker = JobWorker(str(tmp_path / "results"), threads=1)
    specs = tiny_specs(config=("hybrid",), input_len=(64, 32))
    failed = worker.run(specs[0])
    assert failed["status"] == "oom" and failed["error"].startswith("OutOfMemoryError: CUDA out of memory")
    assert [ref() is None for ref in pools] == [True]  # the failed job's KV pool is gone already
    assert worker.run(specs[1])["status"] == "ok"  # the same worker, the next job
    rows = {r["job_id"]: r["status"] for r in table_rows(str(tmp_path / "results"), "jobs")}
    assert rows == {specs[0].job_id: "oom", specs[1].job_id: "ok"}
    store = ResultStore(str(tmp_path / "results"))
    assert store.completed_job_ids() == {specs[1].job_id}  # an oom row is re-run by the next sweep
    assert store.completed_job_ids(("oom",)) == {specs[0].job_id}
    assert [r for r in table_rows(str(tmp_path / "results"), "requests") if r["job_id"] == specs[0].job_id] == []


def test_a_model_that_fails_to_load_does_not_break_the_next_job(tmp_path, monkeypatch):
    """The worker keeps its last model; a load that failed half way used to leave the cache claiming the
    previous model while holding none, so every later job of that model failed."""
    broken = tmp_path / "broken-checkpoint"
    broken.mkdir()
    shutil.copy(f"{PRESET_DIR}/tiny-llama.json", broken / "config.json")
    (broken / "model.safetensors").write_bytes(b"\x10" + b"\x00" * 7 + json.dumps({}).encode())
    worker = JobWorker(str(tmp_path / "results"), threads=1)
    [spec] = tiny_specs(config=("full",), input_len=(32,))
    bad = dataclasses.replace(spec, model=str(broken))
    assert worker.run(spec)["status"] == "ok"
    with pytest.raises(CheckpointError, match="broken-checkpoint/model.safetensors"):
        worker.run(bad)  # the header check stops it before any work (the driver records an error row)
    # A checkpoint that breaks after that check fails at load time instead: an error row, then the next job.
    monkeypatch.setattr(job_module, "check_weights", lambda resolved: None)
    row = worker.run(bad)
    assert row["status"] == "error" and "broken-checkpoint/model.safetensors" in row["error"]
    assert worker.run(spec)["status"] == "ok"
