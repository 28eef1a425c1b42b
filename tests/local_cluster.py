"""A throwaway local Ray head for tests and benchmarks: ``ray start --head`` … ``ray stop``."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from transcenter.platform.compat import WORKER_ENV, enable_token_auth_if_token_available


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
    """Starts a Ray head (dashboard and job server on 127.0.0.1) and stops Ray on exit.

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
    try:
        subprocess.run([ray_cli, "start", "--head", f"--port={port}", f"--num-cpus={num_cpus}",
                        "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}",
                        "--disable-usage-stats"], check=True, env=env, capture_output=True)
        enable_token_auth_if_token_available()  # the head made a token if there was none
        yield cluster
    finally:
        subprocess.run([ray_cli, "stop", "--force"], capture_output=True)


def trial_actors() -> list:
    """Every Tune trial actor the connected Ray has started, alive or not (the State API)."""
    from ray.util.state import list_actors

    return list_actors(filters=[("class_name", "=", "ImplicitFunc")], limit=10_000, detail=False)
