"""Shared fixtures. Tests stay deterministic by seeding; Ray tests share one local cluster."""
import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

torch.set_num_threads(2)
# Ray 2.60 enables token auth for ray.init("auto") but not for an explicit address; its config is
# read once per process, so say so before anything imports Ray.
os.environ.setdefault("RAY_AUTH_MODE", "token")
REPO = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).with_name("ray"))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class RayCluster:
    address: str  # GCS address for ray.init / --address
    dashboard_url: str  # job server, for `ray job submit --address`


@pytest.fixture(scope="session")
def ray_cluster():
    """One real local Ray head (``ray start --head``, 2 CPUs, dashboard on 127.0.0.1) for the session.

    The test process connects as a driver; subprocess drivers and ``ray job submit`` use the same
    head. Ray is stopped at the end of the session.
    """
    import ray

    from ray.util import get_node_ip_address

    port, dash = free_port(), free_port()
    env = {**os.environ, "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "300",
           # as with an activated venv: job entrypoints' `python` is this interpreter
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    # Ray canonicalises 127.0.0.1 to the node's IP, where the GCS listens; the dashboard and job
    # server stay on 127.0.0.1.
    cluster = RayCluster(f"{get_node_ip_address()}:{port}", f"http://127.0.0.1:{dash}")
    try:
        subprocess.run([RAY, "start", "--head", f"--port={port}",
                        "--num-cpus=2", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}",
                        "--disable-usage-stats"], check=True, env=env, capture_output=True)
        ray.init(address=cluster.address)
        yield cluster
    finally:
        ray.shutdown()
        subprocess.run([RAY, "stop", "--force"], capture_output=True)
