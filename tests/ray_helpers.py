"""Shared pieces of the sweep tests: Ray on loopback, tiny jobs, the CLI in a subprocess, store readers.

Importing this module sets the environment every Ray process of the tests needs.
"""
from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time

import pyarrow.parquet as pq
from ray._private import ray_constants

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
# Ray reads that variable once, on its first import, and a test module collected earlier may have
# imported Ray already: without this, a driver in this process dials the machine's outward IP instead
# of the loopback the test clusters listen on, and hangs.
ray_constants.ENABLE_RAY_CLUSTER = False

from ray.cluster_utils import Cluster  # noqa: E402

from hybench.orchestrator.sweep import expand, resolve  # noqa: E402
from hybench.workers.job_spec import JobSpec  # noqa: E402
from hybench.workers.store import ResultStore  # noqa: E402

# The smallest jobs that still exercise every config: windows shorter than the prompts.
TINY_ARGS = ["--models", "tiny-llama", "--configs", "full,sliding,hybrid", "--windows", "16",
             "--input-lengths", "32,64", "--num-prompts", "2", "--output-len", "4",
             "--num-warmup-iters", "0", "--num-benchmark-iters", "1", "--repeats", "1", "--no-report", "--no-progress"]
# Twelve jobs that each last long enough for a test to kill something while others are still queued.
KILL_ARGS = [*TINY_ARGS, "--input-lengths", "32,64,128,256", "--output-len", "64"]
TINY = {"model": ("tiny-llama",), "config": ("full", "sliding", "hybrid"), "window": (16,),
        "input_len": (32, 64), "num_prompts": (2,), "output_len": (4,), "num_warmup_iters": (0,),
        "num_benchmark_iters": (1,), "repeats": 1}


def tiny_specs(**overrides: tuple) -> list[JobSpec]:
    return expand(resolve(TINY | overrides, None))


def sweep_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return env | {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "PYTHONUNBUFFERED": "1"}


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "hybench.orchestrator.cli", *args]


def run_cli(*args: str, timeout: float = 150) -> subprocess.CompletedProcess:
    return subprocess.run(cli(*args), capture_output=True, text=True, env=sweep_env(), timeout=timeout)


def start_cli(*args: str) -> subprocess.Popen:
    """The CLI in its own process group, so the test can kill it with every Ray process it started."""
    return subprocess.Popen(cli(*args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=sweep_env(), start_new_session=True)


def wait_for_done(results: str, count: int, proc: subprocess.Popen, timeout: float = 120) -> set[str]:
    """Block until at least `count` jobs are complete in the store (fails if the sweep ends first)."""
    store = ResultStore(results)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = store.completed_job_ids()
        if len(done) >= count:
            return done
        assert proc.poll() is None, f"sweep ended before {count} jobs were done:\n{proc.stdout.read()}"
        time.sleep(0.1)
    raise AssertionError(f"fewer than {count} jobs done after {timeout} s")


NODE = {"num_cpus": 1, "num_gpus": 1, "node_ip_address": "127.0.0.1"}  # a worker node with one fake GPU


def loopback_cluster(nodes: int) -> Cluster:
    """A head with no resources and `nodes` fake-GPU nodes, all on loopback; a removed node is
    noticed within seconds."""
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "node_ip_address": "127.0.0.1", "include_dashboard": False,
        "_system_config": {"health_check_period_ms": 500, "health_check_failure_threshold": 3}})
    for _ in range(nodes):
        cluster.add_node(**NODE)
    cluster.wait_for_nodes()
    return cluster


def settled_done(results: str, quiet: float = 3.0, timeout: float = 60) -> set[str]:
    """Completed job ids once no more land for `quiet` seconds: after the driver is killed, an actor
    whose process outlives it for a moment may still finish the job it was writing."""
    store = ResultStore(results)
    done, since, deadline = store.completed_job_ids(), time.monotonic(), time.monotonic() + timeout
    while time.monotonic() - since < quiet and time.monotonic() < deadline:
        time.sleep(0.25)
        now = store.completed_job_ids()
        if now != done:
            done, since = now, time.monotonic()
    return done


def table_rows(results: str, table: str) -> list[dict]:
    store = ResultStore(results)
    good, bad = store.valid_files(table)
    assert not bad, f"unreadable {table} files: {bad}"
    # The folder as any Parquet reader opens it: the partition columns come from the paths.
    return pq.read_table(store.table_root(table)).to_pylist() if good else []


def job_files(results: str, table: str) -> list[str]:
    """Job ids of a table's files, one entry per file (so a duplicate shows)."""
    return sorted(stored.job_id for stored in ResultStore(results).files(table))


def deterministic(results: str) -> dict[str, tuple]:
    """Per job: what does not depend on timing (status and the exact token counts of each request)."""
    tokens: dict[str, list] = {}
    for row in table_rows(results, "requests"):
        tokens.setdefault(row["job_id"], []).append(
            (row["iteration"], row["request_id"], row["prompt_tokens"], row["output_tokens"]))
    return {row["job_id"]: (row["status"], row["config"], row["window"], row["input_len"],
                            tuple(sorted(tokens.get(row["job_id"], []))))
            for row in table_rows(results, "jobs")}


HEAD_PORT_FLAGS = ("--port", "--dashboard-port", "--node-manager-port", "--object-manager-port",
                   "--dashboard-agent-listen-port", "--dashboard-agent-grpc-port", "--runtime-env-agent-port",
                   "--metrics-export-port", "--ray-client-server-port")


def free_ports(count: int) -> list[int]:
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]


def private_head_flags(temp_dir: str) -> tuple[dict[str, int], list[str]]:
    """`ray start --head` flags (after --head) for a head that shares nothing with another Ray of the
    machine: on 127.0.0.1, a free port for each of its servers, its own temp dir (keep the path short:
    Ray's socket paths have a length limit). Returns the ports by flag and the flags."""
    ports = dict(zip(HEAD_PORT_FLAGS, free_ports(len(HEAD_PORT_FLAGS))))
    flags = ["--node-ip-address", "127.0.0.1", "--include-dashboard", "true", "--temp-dir", temp_dir,
             "--num-cpus", "2", "--disable-usage-stats"]
    for flag, port in ports.items():
        flags += [flag, str(port)]
    return ports, flags


def processes_naming(text: str) -> list:
    """The processes (psutil) whose command line contains `text`, this one excepted."""
    import psutil

    return [p for p in psutil.process_iter(["cmdline"])
            if text in " ".join(p.info["cmdline"] or ()) and p.pid != os.getpid()]


def stop_ray_started_in(temp_dir: str, grace: float = 10) -> None:
    """`ray stop` for one `ray start`: ends the processes whose command line names `temp_dir`, with
    their children (workers, agents), and leaves every other Ray on the machine alone."""
    import psutil

    procs = {}
    for root in processes_naming(temp_dir):
        try:
            procs |= {p.pid: p for p in (root, *root.children(recursive=True))}
        except psutil.NoSuchProcess:
            continue
    for proc in procs.values():
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.terminate()
    _, alive = psutil.wait_procs(list(procs.values()), timeout=grace)
    for proc in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    psutil.wait_procs(alive, timeout=grace)
