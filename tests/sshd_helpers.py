"""An sshd of the test's own on 127.0.0.1, standing in for a cluster machine that `ray up` reaches by SSH.

It shares nothing with the machine's own sshd: a free port, its own config, host key and authorized
key, and it runs in a PID namespace of its own. That namespace is what makes `ray up` / `ray down` safe
on a shared machine: both run a bare `ray stop` on the node, which ends every Ray process it can see;
inside the namespace it sees only the Ray that this sshd's sessions started. Each session also gets a
home and TMPDIR of its own (the node's ~/ray_bootstrap_config.yaml, ~/hybench, ~/.bashrc land there).
"""
from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass

import psutil
from ray_helpers import free_ports

SSHD = "/usr/sbin/sshd"
# Options that keep the client quiet and away from the user's known_hosts and keys.
CLIENT_OPTIONS = ("-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o IdentitiesOnly=yes "
                  "-o BatchMode=yes -o LogLevel=ERROR")


def unavailable() -> str | None:
    """Why this machine cannot host the test's sshd (None when it can)."""
    missing = [name for name, found in (("sshd", os.access(SSHD, os.X_OK)), ("rsync", shutil.which("rsync")),
                                        ("ssh", shutil.which("ssh")), ("ssh-keygen", shutil.which("ssh-keygen")))
               if not found]
    if missing:
        return (f"{', '.join(missing)} not installed (make test installs openssh-server and rsync where it "
                "runs as root with apt-get)")
    if os.geteuid() != 0:
        return "needs root: its sshd runs in a PID namespace of its own, so that ray down's ray stop ends only its Ray"
    probe = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"cannot make a PID namespace for its sshd: {probe.stderr.strip()}"
    return None


@dataclass(frozen=True)
class LoopbackNode:
    """What a cluster file needs to reach the sshd, and where the sessions' home is."""

    port: int
    key: str
    home: str
    namespace: str

    @property
    def proxy_command(self) -> str:
        """ProxyCommand for this port: Ray's cluster files have no SSH port setting, so its `ssh` dials
        port 22 through a second `ssh -W` that opens the connection to the sshd's port."""
        return f"ssh -i {self.key} {CLIENT_OPTIONS} -p {self.port} -W %h:{self.port} root@%h"

    def processes(self) -> list[psutil.Process]:
        """Every process in the sshd's PID namespace (the sshd and its sessions included)."""
        found = []
        for proc in psutil.process_iter():
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{proc.pid}/ns/pid") == self.namespace:
                    found.append(proc)
        return found

    def non_sshd_processes(self, settle: float = 5) -> list[str]:
        """What runs in the namespace besides sshd, once it stops changing for a moment (a process
        that `ray stop` just signalled may take that long to go)."""
        deadline = time.monotonic() + settle
        while True:
            left = []
            for proc in self.processes():
                with contextlib.suppress(psutil.NoSuchProcess):
                    if proc.name() != "sshd":
                        left.append(f"{proc.pid} {' '.join(proc.cmdline()) or proc.name()}")
            if not left or time.monotonic() > deadline:
                return left
            time.sleep(0.25)


@contextlib.contextmanager
def loopback_sshd(root: str) -> Iterator[LoopbackNode]:
    """Runs `sshd -D` for root logins by a fresh key, on a free 127.0.0.1 port, in a PID namespace;
    yields the node; on exit kills the namespace with everything in it."""
    home, tmp = os.path.join(root, "home"), os.path.join(root, "tmp")
    os.makedirs(home)
    os.makedirs(tmp)
    for name in ("host_key", "key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", os.path.join(root, name)], check=True)
    shutil.copy(os.path.join(root, "key.pub"), os.path.join(root, "authorized_keys"))
    (port,) = free_ports(1)
    config = os.path.join(root, "sshd_config")
    with open(config, "w", encoding="utf-8") as fh:
        fh.write(f"ListenAddress 127.0.0.1:{port}\nHostKey {root}/host_key\n"
                 f"AuthorizedKeysFile {root}/authorized_keys\nPidFile none\nUsePAM no\nStrictModes no\n"
                 "PasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n"
                 f"SetEnv HOME={home} TMPDIR={tmp}\n")
    # sshd refuses to start without its privilege separation folder, a fixed path that the system's
    # ssh service creates when it starts (an empty folder; nothing of the system's sshd is read).
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
    log = os.path.join(root, "sshd.log")
    # --kill-child: the namespace dies with `unshare`, even when the test process is killed. sshd is the
    # namespace's init and reaps the daemons that `ray start` leaves behind.
    with open(log, "w", encoding="utf-8") as out:
        unshare = subprocess.Popen(["unshare", "--pid", "--fork", "--mount-proc", "--kill-child",
                                    SSHD, "-D", "-e", "-f", config], stdout=out, stderr=subprocess.STDOUT)
    try:
        sshd = _wait_listening(unshare, port, log)
        yield LoopbackNode(port, os.path.join(root, "key"), home, os.readlink(f"/proc/{sshd}/ns/pid"))
    finally:
        unshare.kill()
        unshare.wait()


def _wait_listening(unshare: subprocess.Popen, port: int, log: str, timeout: float = 20) -> int:
    """The sshd's pid (as this process sees it) once it accepts connections on `port`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if unshare.poll() is not None:
            with open(log, encoding="utf-8") as fh:
                raise AssertionError(f"sshd exited with {unshare.returncode}: {fh.read()}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            children = psutil.Process(unshare.pid).children()
            if children:
                return children[0].pid
        time.sleep(0.1)
    raise AssertionError(f"sshd not listening on 127.0.0.1:{port} after {timeout} s")
