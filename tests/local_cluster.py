"""A throwaway local Ray head for tests and benchmarks: ``ray start --head``, stopped by killing
the processes it started (not ``ray stop``, which kills every Ray process on the machine: another
test session's nodes too)."""
from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil

from transcenter.platform.compat import (
    WORKER_ENV,
    enable_token_auth_if_token_available,
    recorded_cluster_address,
)


@dataclass(frozen=True)
class LocalCluster:
    address: str  # GCS address, for ray.init / --address
    dashboard_url: str  # job server, for `ray job submit --address`


def free_port() -> int:
    """Returns a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def local_head(num_cpus: int = 2, env: dict[str, str] | None = None) -> Iterator[LocalCluster]:
    """Starts a Ray head (dashboard and job server on 127.0.0.1) and, on exit, kills its processes
    (:func:`kill_process_group`) and removes Ray's record of it as the machine's current cluster,
    which a later ``ray.init()`` on the machine would otherwise try to join.

    Ray canonicalises 127.0.0.1 to the node's IP, where the GCS listens, so the address uses it.
    Job entrypoints' ``python`` is this interpreter, as with an activated virtualenv. ``env`` is
    added to the environment of Ray's processes (e.g. ``TRANSCENTER_FAULTS``).
    """
    from ray.util import get_node_ip_address

    ray_cli = str(Path(sys.executable).with_name("ray"))
    port, dash = free_port(), free_port()
    env = {**os.environ, **WORKER_ENV, **(env or {}),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    cluster = LocalCluster(f"{get_node_ip_address()}:{port}", f"http://127.0.0.1:{dash}")
    # A session of its own: the head's daemons inherit its process group, whose id is its pid.
    start = subprocess.Popen([ray_cli, "start", "--head", f"--port={port}", f"--num-cpus={num_cpus}",
                              "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}",
                              "--disable-usage-stats"], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = start.communicate(timeout=300)
        if start.returncode:
            raise RuntimeError(f"ray start --head failed:\n{output[-3000:]}")
        enable_token_auth_if_token_available()  # the head made a token if there was none
        yield cluster
    finally:
        kill_process_group(start.pid)
        recorded, record = recorded_cluster_address()
        if recorded == cluster.address:
            Path(record).unlink(missing_ok=True)


def kill_process_group(pgid: int) -> None:
    """SIGKILLs every process of process group ``pgid`` and every descendant of theirs (a Ray head's
    daemons; its workers, which raylet starts in groups of their own; the jobs they run), by pid,
    and waits for them to end."""
    def group(process: psutil.Process) -> int | None:
        with contextlib.suppress(psutil.Error, ProcessLookupError):
            return os.getpgid(process.pid)
        return None

    members = [p for p in psutil.process_iter() if group(p) == pgid]
    victims = {p.pid: p for p in members}
    for member in members:
        with contextlib.suppress(psutil.Error):
            victims.update((c.pid, c) for c in member.children(recursive=True))
    for victim in victims.values():
        with contextlib.suppress(psutil.Error):
            victim.kill()
    psutil.wait_procs(list(victims.values()), timeout=30)


def trial_actors() -> list:
    """Every Tune trial actor the connected Ray has started, alive or not (the State API of that
    cluster, by its address: another cluster started later on the machine is not asked)."""
    import ray
    from ray.util.state import list_actors

    address = ray.get_runtime_context().gcs_address
    return list_actors(address=address, filters=[("class_name", "=", "ImplicitFunc")],
                       limit=10_000, detail=False)
