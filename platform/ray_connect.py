"""Connecting a study's driver to Ray: an explicit cluster, the one ``ray start`` recorded, or a
fresh local one; each checked within seconds rather than retried for minutes."""
from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable
from typing import Any, TypeVar

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from transcenter.platform.compat import (
    WORKER_ENV,
    enable_token_auth_if_token_available,
    recorded_cluster_address,
)
from transcenter.platform.errors import StudyError

logger = logging.getLogger(__name__)
T = TypeVar("T")


def answers(address: str, timeout_s: float = 3.0) -> bool:
    """True when ``[scheme://]host:port`` accepts a TCP connection within ``timeout_s`` seconds."""
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise StudyError(f"Ray address {address!r}: expected host:port")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError:
        return False
    return True


def check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Raises :class:`StudyError` unless ``[scheme://]host:port`` accepts a TCP connection."""
    if address != "auto" and not answers(address, timeout_s):
        raise StudyError(f"cannot reach the Ray cluster at {address!r}: nothing answers there "
                         f"within {timeout_s:g} s")


def _local_address() -> str:
    """Returns the address ``ray.init()`` should take with no ``--address``/``RAY_ADDRESS``:
    the cluster ``ray start`` recorded when it answers, else ``"local"`` (start a fresh one)."""
    recorded, record_file = recorded_cluster_address()
    if recorded is None:
        return "local"
    if answers(recorded):
        return recorded
    logger.warning("the Ray cluster recorded in %s (%s) does not answer: starting a fresh local "
                   "Ray instead (`ray stop --force` clears the stale record)", record_file, recorded)
    return "local"


def connect(address: str | None) -> str | None:
    """Connects to ``address`` (or ``RAY_ADDRESS``, as under ``ray job submit``), else to the
    cluster ``ray start`` recorded, else starts a local Ray with :data:`WORKER_ENV`.

    Returns:
        The Ray dashboard's URL (``http://host:port``), or None when the cluster runs none or this
        driver was already connected.

    Raises:
        StudyError: Within seconds when the given cluster does not answer.
    """
    if ray.is_initialized():
        return None
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        check_reachable(address)
    else:
        address = _local_address()  # checked there
    try:
        if address == "local":
            context = ray.init(address="local", runtime_env={"env_vars": WORKER_ENV})
        else:
            enable_token_auth_if_token_available()
            context = ray.init(address=address)
    except (ConnectionError, TimeoutError, RuntimeError) as e:
        raise StudyError(f"cannot reach the Ray cluster at {address!r}: {e}") from e
    url = context.dashboard_url
    if not url:
        return None
    return url if "://" in url else f"http://{url}"


def alive_nodes() -> list[dict[str, Any]]:
    """Returns ``ray.nodes()`` entries of the connected cluster's alive nodes."""
    return [n for n in ray.nodes() if n["Alive"]]


def on_every_node(fn: Callable[..., T], *args: Any) -> dict[str, T]:
    """Runs ``fn(*args)`` once on every alive node of the connected cluster (no CPU taken) and
    returns ``{node address: result}``; a node that leaves the cluster meanwhile is left out, with
    a warning."""
    nodes = alive_nodes()
    remote = ray.remote(num_cpus=0)(fn)
    refs = {n["NodeManagerAddress"]: remote.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
        n["NodeID"], soft=False)).remote(*args) for n in nodes}
    results = {}
    for node, ref in refs.items():
        try:
            results[node] = ray.get(ref, timeout=120)
        except (ray.exceptions.TaskUnschedulableError, ray.exceptions.NodeDiedError) as e:
            logger.warning("node %s left the cluster while it was checked: %s", node,
                           str(e).splitlines()[0])
    return results
