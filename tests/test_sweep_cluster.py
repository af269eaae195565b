"""The driver on a simulated cluster: a head with no resources and two nodes with one fake GPU each
(Ray on loopback). The engine still runs on CPU: a job's device `auto` finds no CUDA here."""
from __future__ import annotations

import pytest
from ray_helpers import (KILL_ARGS, NODE, TINY_ARGS, deterministic, job_files, loopback_cluster, run_cli, start_cli,
                         table_rows, tiny_specs, wait_for_done)

from hybench.orchestrator.driver import DriverOptions, run_sweep
from hybench.workers.store import ResultStore


@pytest.fixture(scope="module")
def cluster():
    cluster = loopback_cluster(2)
    yield cluster
    cluster.shutdown()


def test_one_actor_per_gpu_on_its_own_node_and_results_equal_local_mode(cluster, tmp_path):
    specs = tiny_specs()
    on_cluster = run_sweep(specs, DriverOptions(results=str(tmp_path / "cluster"), address=cluster.address))
    assert on_cluster.statuses == {"ok": 6}
    placements = on_cluster.placements
    assert len(placements) == 2 and len({p["node_id"] for p in placements}) == 2
    for p in placements:
        assert p["gpu_ids"] and p["cuda_visible_devices"] == ",".join(p["gpu_ids"])
        assert p["torch_threads"] == 1

    # Local mode in a process of its own: after a local Ray session, Ray 2.60 drops the actors of this
    # process's next session on the cluster as unreferenced (one session per process, as the CLI runs).
    local = run_cli("sweep", *TINY_ARGS, "--results", str(tmp_path / "local"))
    assert local.returncode == 0 and "1 CPU workers" in local.stderr, local.stderr
    assert deterministic(str(tmp_path / "cluster")) == deterministic(str(tmp_path / "local"))


def test_the_drivers_multicast_switches_reach_actors_on_other_nodes(cluster, tmp_path, monkeypatch):
    """The nodes were started before these were set, so only the driver's forwarding can bring them."""
    forwarded = {"NCCL_NVLS_ENABLE": "fwd-0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "fwd-1",
                 "NVSHMEM_DISABLE_NVLS": "fwd-2"}
    for name, value in forwarded.items():
        monkeypatch.setenv(name, value)
    summary = run_sweep(tiny_specs(config=("sliding",), input_len=(32,)),
                        DriverOptions(results=str(tmp_path / "results"), address=cluster.address))
    assert summary.statuses == {"ok": 1}
    assert [p["env"] for p in summary.placements] == [forwarded]


def test_a_job_that_keeps_timing_out_is_a_failed_row_a_rerun_replaces(cluster, tmp_path):
    results = str(tmp_path / "results")
    [spec] = tiny_specs(config=("hybrid",), input_len=(64,))
    options = DriverOptions(results=results, address=cluster.address, job_timeout=0.01, max_retries=1)
    assert run_sweep([spec], options).statuses == {"error": 1}
    [row] = table_rows(results, "jobs")
    assert row["job_id"] == spec.job_id and row["status"] == "error"
    assert row["error"] == "timed out after 0.01 s (gave up after 2 attempts)"
    store = ResultStore(results)
    assert [f.path for f in store.files("jobs")] == [store.job_path("jobs", spec.partition(), spec.job_id)]

    assert run_sweep([spec], DriverOptions(results=results, address=cluster.address)).statuses == {"ok": 1}
    assert [r["status"] for r in table_rows(results, "jobs")] == ["ok"]
    assert job_files(results, "requests") == [spec.job_id]


def test_a_lost_node_loses_no_job_and_runs_none_twice(cluster, tmp_path):
    results = str(tmp_path / "results")
    proc = start_cli("sweep", *KILL_ARGS, "--results", results, "--address", cluster.address)
    try:
        wait_for_done(results, 1, proc)
        cluster.remove_node(next(iter(cluster.worker_nodes)))  # kills its actor mid-job
        cluster.add_node(**NODE)  # where Ray restarts the lost actor
        out, _ = proc.communicate(timeout=150)
    finally:
        proc.kill()
    assert proc.returncode == 0, out
    assert "retry" in out and "worker lost" in out, out
    assert "12 jobs, 0 already done, ran 12 (12 ok, 0 oom, 0 failed)" in out, out
    ids = job_files(results, "jobs")
    assert len(ids) == 12 and len(set(ids)) == 12 and job_files(results, "requests") == ids
    assert {r["status"] for r in table_rows(results, "jobs")} == {"ok"}
