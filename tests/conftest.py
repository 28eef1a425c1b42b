"""Shared fixtures. Tests stay deterministic by seeding; Ray tests share one local cluster."""
import pytest
import torch

torch.set_num_threads(2)


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

    from transcenter.platform.local_cluster import local_head

    with local_head(num_cpus=2) as cluster:
        ray.init(address=cluster.address)
        try:
            yield cluster
        finally:
            ray.shutdown()
