"""`ray up cluster-local.yaml` over SSH to 127.0.0.1, `hybench submit` to the head it started, `ray down`.

The cluster file is cluster-local.yaml with only what a test on a shared machine must change: the node
(127.0.0.1, reached through the test's own sshd, see sshd_helpers), the installs (a link to this venv
instead of a fresh venv and pip, which take minutes) and the head's ports and temp dir (another Ray on
the machine may hold 6379 and 8265). Its `ray stop` stays: the sshd's PID namespace confines it.
"""
from __future__ import annotations

import getpass
import os
import shutil
import subprocess
import sys
import tempfile

import psutil
import pytest
import yaml
from ray.autoscaler._private.command_runner import SSHCommandRunner
from ray_helpers import (TINY_ARGS, job_files, private_head_flags, processes_naming, stop_ray_started_in, sweep_env,
                         table_rows, tiny_specs)
from sshd_helpers import LoopbackNode, loopback_sshd, unavailable

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)
SHIPPED_HEAD_START = "ray start --head --port=6379"

pytestmark = pytest.mark.skipif(bool(reason := unavailable()), reason=reason or "")


def loopback_cluster_file(node: LoopbackNode, name: str, head_flags: list[str]) -> dict:
    """cluster-local.yaml, pointed at the loopback node, on this venv, with a private head."""
    with open(os.path.join(REPO, "cluster-local.yaml"), encoding="utf-8") as fh:
        config = yaml.safe_load(fh)
    config["cluster_name"] = name
    config["provider"] |= {"head_ip": "127.0.0.1", "worker_ips": []}
    config["auth"] = {"ssh_user": "root", "ssh_private_key": node.key, "ssh_proxy_command": node.proxy_command}
    installs = [c for c in config["setup_commands"] if "pip install" in c or " -m venv " in c]
    assert installs, "cluster-local.yaml no longer installs with pip: update this test's substitution"
    config["setup_commands"] = [f"ln -sfn {sys.prefix} ~/hybench-venv"] + [
        c for c in config["setup_commands"] if c not in installs]
    starts = config["head_start_ray_commands"]
    assert any(SHIPPED_HEAD_START in c for c in starts), f"no `{SHIPPED_HEAD_START}` in cluster-local.yaml"
    private = " ".join(["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 ray start --head", *head_flags])
    config["head_start_ray_commands"] = [c.replace(SHIPPED_HEAD_START, private) for c in starts]
    return config


def test_ray_up_over_ssh_runs_a_submitted_sweep_and_ray_down_leaves_nothing(tmp_path):
    root = tempfile.mkdtemp(prefix="hyb-up-", dir="/tmp")  # short: Ray's socket paths have a length limit
    name = f"hybench-test-{os.path.basename(root)}"
    # `ray up`'s own state (the local provider's node file, its config cache) goes under TMPDIR.
    client_tmp = os.path.join(root, "client")
    os.makedirs(client_tmp)
    env = sweep_env() | {"PATH": "/usr/bin:/bin", "TMPDIR": client_tmp}  # ssh and rsync, no venv on PATH
    ray = os.path.join(BIN, "ray")
    try:
        with loopback_sshd(root) as node:
            ports, flags = private_head_flags(os.path.join(root, "ray"))
            cluster_file = os.path.join(root, "cluster.yaml")
            with open(cluster_file, "w", encoding="utf-8") as fh:
                yaml.safe_dump(loopback_cluster_file(node, name, flags), fh)
            try:
                up = subprocess.run([ray, "up", "-y", cluster_file, "--no-config-cache"], cwd=REPO, env=env,
                                    capture_output=True, text=True, timeout=180)
                assert up.returncode == 0, up.stdout + up.stderr
                # file_mounts synced the project into the node's home
                assert os.path.isfile(os.path.join(node.home, "hybench", "pyproject.toml"))

                results = str(tmp_path / "results")
                args = [*TINY_ARGS, "--input-lengths", "32", "--results", results]
                done = subprocess.run([os.path.join(BIN, "hybench"), "submit", "--ray-address",
                                       f"http://127.0.0.1:{ports['--dashboard-port']}", "--", *args],
                                      env=env, capture_output=True, text=True, timeout=240, cwd=tmp_path)
                out = done.stdout + done.stderr
                assert done.returncode == 0, out
                assert "3 jobs, 0 already done, ran 3 (3 ok, 0 oom, 0 failed)" in out, out
                expected = sorted(spec.job_id for spec in tiny_specs(input_len=(32,)))
                assert job_files(results, "jobs") == expected and job_files(results, "requests") == expected
                assert sorted(row["status"] for row in table_rows(results, "jobs")) == ["ok"] * 3
                # the head runs where the node's `ray stop` looks, and nowhere else
                assert "raylet" in {p.name() for p in node.processes()}
            finally:
                down = subprocess.run([ray, "down", "-y", cluster_file], cwd=REPO, env=env,
                                      capture_output=True, text=True, timeout=120)
            assert down.returncode == 0, down.stdout + down.stderr
            assert node.non_sshd_processes() == [], "left running after ray down"
        # The ssh connections `ray up` keeps open (ControlPersist) end with the sshd.
        _, alive = psutil.wait_procs(processes_naming(root), timeout=10)
        assert not alive, [" ".join(p.cmdline()) for p in alive]
    finally:
        stop_ray_started_in(root)
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(_ssh_control_path(name), ignore_errors=True)


def _ssh_control_path(cluster_name: str) -> str:
    """The folder of the cluster's ssh control sockets, as Ray names it (under /tmp, per cluster)."""
    runner = SSHCommandRunner("", None, None, {"ssh_user": getpass.getuser()}, cluster_name, None, True)
    return runner.ssh_control_path
