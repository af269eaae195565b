"""Local mode keeps Ray on loopback: every socket that the sweep's processes (driver, GCS, raylet,
workers, dashboard and runtime-env agents) listen on is bound to 127.0.0.1, on any Linux machine;
and Ray's notices that ask nothing of the user are not printed.

The sweep runs without RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER in its environment, as a user's does: the
driver must set what keeps Ray's processes on loopback itself."""
from __future__ import annotations

import ipaddress
import os
import signal
import subprocess

import psutil
from ray_helpers import KILL_ARGS, cli, sweep_env, wait_for_done


def _listening(procs: list[psutil.Process]) -> dict[str, set[str]]:
    """Process name -> the addresses it listens on (TCP LISTEN, unconnected UDP)."""
    out: dict[str, set[str]] = {}
    for proc in procs:
        try:
            conns = proc.net_connections(kind="inet")
            name = proc.name()
        except psutil.Error:
            continue
        for conn in conns:
            if conn.status == psutil.CONN_LISTEN or (conn.type == 2 and not conn.raddr):  # 2: SOCK_DGRAM
                out.setdefault(name, set()).add(conn.laddr.ip)
    return out


def _is_loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip)
    return (getattr(address, "ipv4_mapped", None) or address).is_loopback


def test_every_process_of_a_local_sweep_listens_on_loopback_only(tmp_path):
    results = str(tmp_path / "results")
    env = {k: v for k, v in sweep_env().items() if k != "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"}
    proc = subprocess.Popen(cli("sweep", *KILL_ARGS, "--results", results), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True)
    try:
        wait_for_done(results, 1, proc)  # mid-sweep: every Ray process is up
        session = [p for p in psutil.process_iter() if _sid(p.pid) == proc.pid]
        listening = _listening(session)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        printed, _ = proc.communicate()
    assert "Token authentication" not in printed, printed  # Ray's notice, filtered by the driver
    assert {"gcs_server", "raylet"} <= set(listening), listening
    assert any(name.startswith("ray::JobWorker") for name in listening), listening
    outside = {name: ips for name, ips in listening.items() if not all(map(_is_loopback, ips))}
    assert outside == {}, listening


def _sid(pid: int) -> int | None:
    try:
        return os.getsid(pid)
    except OSError:
        return None
