"""Shared fixtures. Tests stay deterministic by seeding; Ray tests share one local cluster."""
import json
import os
import signal
import tempfile
from pathlib import Path

# Idle OpenMP threads sleep instead of spinning (read when torch loads its OpenMP runtime, so set
# before torch is imported; inherited by the drivers and Ray heads the tests start). The suite runs
# two pytest processes on two cores: a 2-thread torch step whose threads spin-wait for a core the
# other process holds ran 2-3 times slower (tests/test_overfit.py beside a busy core: 90 s spinning,
# 42 s passive).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest
import torch

from transcenter.platform import faults

torch.set_num_threads(2)
# SIGTERM (`make test` stopping the cluster tests it runs in the background) ends the session as
# Ctrl-C does, so fixtures stop the servers and clusters they started.
signal.signal(signal.SIGTERM, signal.default_int_handler)
# Fault injection (platform/faults.py) for the session cluster's workers; empty unless a test
# injects faults through the inject_faults fixture.
FAULTS_FILE = Path(tempfile.gettempdir()) / f"transcenter-faults-{os.getpid()}.json"


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def ray_cluster():
    """One real local Ray head (``ray start --head``, 2 CPUs, dashboard on 127.0.0.1) for the session.

    The test process connects as a driver; subprocess drivers and ``ray job submit`` use the same
    head. Ray is stopped at the end of the session.
    """
    import ray
    from local_cluster import local_head

    with local_head(num_cpus=2, env={faults.ENV: str(FAULTS_FILE)}) as cluster:
        ray.init(address=cluster.address)
        try:
            yield cluster
        finally:
            ray.shutdown()
            for suffix in (".trained", ".driver-pid"):
                Path(f"{FAULTS_FILE}{suffix}").unlink(missing_ok=True)


@pytest.fixture
def inject_faults():
    """Returns ``inject(list of faults)`` (see :mod:`transcenter.platform.faults`): the session
    cluster's workers fire them until the test ends."""
    def inject(fault_list: list[dict]) -> None:
        FAULTS_FILE.write_text(json.dumps(fault_list))

    inject.path = FAULTS_FILE  # also for a study driver's environment (driver kill points)
    yield inject
    FAULTS_FILE.unlink(missing_ok=True)
