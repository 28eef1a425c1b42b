"""A multi-node Ray cluster on one machine: each node in its own Linux network namespace.

Layout (all addresses on a bridge this module creates, never anything outside the machine)::

    host (root namespace)   10.211.0.1   the tests, an S3 server (moto), PostgreSQL, ray job submit
    tc-head                 10.211.0.10  Ray head: GCS, dashboard + job server, study drivers
    tc-w1, tc-w2            10.211.0.11+ Ray worker nodes, 1 CPU each: the trials' Train workers

Each node also has a private ``/tmp/ray`` (its own mount namespace), as separate machines would:
nothing a node writes there is visible to another, so a study must keep its files in object
storage. Nodes are started with ``ray start`` and stopped by killing every process in their
namespace by pid (``ip netns pids``), which is also how a test loses a node. Needs root (CI is).
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.fs as pafs
from fault_proxy import FaultProxy, fault_proxy
from postgres import Postgres, postgres_server
from s3_server import S3, s3_server

from transcenter.platform import faults
from transcenter.platform.compat import WORKER_ENV
from transcenter.store.results import ResultStore

SUBNET = "10.211.0"
HOST_IP = f"{SUBNET}.1"
BRIDGE = "tcbr0"
VENV_BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[1]


# Each node's temporary folder (``TMPDIR`` of its processes), private as on separate machines;
# Ray's own folder stays /tmp/ray (``RAY_TMPDIR``).
NODE_TMP = "/tmp/ray/tmp"
FILLER = "/tmp/ray/filler"  # in a node: the file that fills its /tmp/ray (its local disk)


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@dataclass
class Node:
    name: str  # namespace name, e.g. "tc-w1"
    ip: str

    def pids(self) -> list[int]:
        out = subprocess.run(["ip", "netns", "pids", self.name], capture_output=True, text=True)
        return [int(p) for p in out.stdout.split()]

    def kill(self) -> int:
        """SIGKILLs every process of this node; returns how many there were."""
        pids = self.pids()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return len(pids)

    def run(self, command: str, env: dict[str, str], tmp_size: str | None = None,
            **kwargs) -> subprocess.CompletedProcess:
        """Runs ``command`` (bash) in this node's namespaces with ``env`` and a private /tmp/ray
        (``tmp_size``: its size, e.g. ``"512m"``; half the memory if None), which also holds the
        node's temporary folder (:data:`NODE_TMP`)."""
        size = f"-o size={tmp_size} " if tmp_size else ""
        script = (f"mkdir -p /tmp/ray && mount -t tmpfs {size}tmpfs /tmp/ray && mkdir -p {NODE_TMP} "
                  f"&& exec {command}")
        setup = ["ip", "netns", "exec", self.name, "unshare", "--mount", "--propagation", "private",
                 "bash", "-c", script]
        return subprocess.run(setup, env=env, capture_output=True, text=True, **kwargs)


@dataclass
class NetnsCluster:
    head: Node
    workers: list[Node]
    env: dict[str, str] = field(default_factory=dict)  # of every Ray node's processes
    worker_tmp_size: str | None = None  # of each worker node's /tmp/ray
    s3_proxy: FaultProxy | None = None  # between the nodes and S3 (study_cluster)

    @property
    def address(self) -> str:
        return f"{self.head.ip}:6379"

    @property
    def dashboard_url(self) -> str:
        return f"http://{self.head.ip}:8265"

    def stop(self) -> None:
        for node in [*self.workers, self.head]:
            node.kill()

    def start_head(self) -> None:
        """Starts the Ray head (no CPUs: it runs the study drivers) on :attr:`head`."""
        _ray(self.head, f"--head --node-ip-address={self.head.ip} --port=6379 --num-cpus=0 "
                        f"--dashboard-host={self.head.ip} --dashboard-port=8265", self.env)

    def restart(self) -> None:
        """Brings the cluster back after its head was lost, as an operator does: the worker nodes'
        Ray, which cannot join a new head, is stopped (its processes killed), a new head starts on
        the same address and the workers join it; returns once every node is alive."""
        for node in [*self.workers, self.head]:
            node.kill()
        time.sleep(1)
        self.start_head()
        for node in self.workers:
            self.start_worker(node)
        _wait_for_nodes(self, 1 + len(self.workers))

    def start_worker(self, node: Node) -> None:
        """Starts a Ray worker node with 1 CPU on ``node`` and joins it to the head."""
        _ray(node, f"--address={self.address} --node-ip-address={node.ip} --num-cpus=1", self.env,
             self.worker_tmp_size)

    def restart_worker(self, node: Node) -> None:
        """Kills every process of ``node`` (its /tmp/ray goes with them) and starts it again as a
        new Ray worker node; returns once the cluster has all its nodes alive."""
        node.kill()
        time.sleep(1)
        self.start_worker(node)
        _wait_for_nodes(self, 1 + len(self.workers))


def _teardown_network(names: list[str]) -> None:
    for name in names:
        Node(name, "").kill()
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
        subprocess.run(["ip", "link", "del", f"v{name}"], capture_output=True)
    subprocess.run(["ip", "link", "del", BRIDGE], capture_output=True)


def _network(names: list[str]) -> list[Node]:
    """Creates the bridge (with the host's address) and one namespace per name, veth-attached."""
    _teardown_network(names)  # a run killed before its teardown
    _ip("link", "add", BRIDGE, "type", "bridge")
    _ip("addr", "add", f"{HOST_IP}/24", "dev", BRIDGE)
    _ip("link", "set", BRIDGE, "up")
    nodes = []
    for i, name in enumerate(names):
        address = f"{SUBNET}.{10 + i}"
        _ip("netns", "add", name)
        _ip("link", "add", f"v{name}", "type", "veth", "peer", "name", "eth0", "netns", name)
        _ip("link", "set", f"v{name}", "master", BRIDGE, "up")
        _ip("-n", name, "addr", "add", f"{address}/24", "dev", "eth0")
        _ip("-n", name, "link", "set", "eth0", "up")
        _ip("-n", name, "link", "set", "lo", "up")
        nodes.append(Node(name, address))
    return nodes


def _ray(node: Node, args: str, env: dict[str, str], tmp_size: str | None = None) -> None:
    done = node.run(f"{VENV_BIN}/ray start {args} --disable-usage-stats", env, tmp_size, timeout=300)
    if done.returncode:
        raise RuntimeError(f"ray start on {node.name} failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")


@contextlib.contextmanager
def namespaces(nodes: int) -> Iterator[list[Node]]:
    """Creates the bridge (the host's address :data:`HOST_IP`) and ``nodes`` namespaces: the first
    is the head (``tc-head``), the others workers (``tc-w1``, ...). On exit every process in them
    is killed and the network deleted."""
    names = ["tc-head"] + [f"tc-w{i}" for i in range(1, nodes)]
    made = _network(names)
    try:
        yield made
    finally:
        for node in made:
            node.kill()
        time.sleep(1)
        _teardown_network(names)


@contextlib.contextmanager
def start_ray_nodes(nodes: list[Node], env: dict[str, str] | None = None,
                    worker_tmp_size: str | None = None) -> Iterator[NetnsCluster]:
    """Starts a Ray head on ``nodes[0]`` (no CPUs: it runs the study drivers) and a worker node
    with 1 CPU on each of the others (``worker_tmp_size``: the size of their /tmp/ray); stops them
    all on exit.

    ``env`` is added to every node's environment (object-store credentials, PGPASSWORD, ...); Ray's
    token authentication is on, with this user's token (``~/.ray/auth_token``, made if missing).
    """
    node_env = {**os.environ, **WORKER_ENV, **(env or {}), "RAY_AUTH_MODE": "token",
                "TMPDIR": NODE_TMP, "RAY_TMPDIR": "/tmp",
                "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    subprocess.run([str(VENV_BIN / "ray"), "get-auth-token", "--generate"], env=node_env,
                   capture_output=True, check=True)
    cluster = NetnsCluster(nodes[0], nodes[1:], node_env, worker_tmp_size)
    try:
        cluster.start_head()
        for node in cluster.workers:
            cluster.start_worker(node)
        _wait_for_nodes(cluster, len(nodes))
        yield cluster
    finally:
        cluster.stop()


def ray_job(cluster: NetnsCluster, *args: str) -> str:
    """Runs ``ray job <args>`` against the cluster's head from the host; returns its output."""
    done = subprocess.run([str(VENV_BIN / "ray"), "job", *args, "--address", cluster.dashboard_url],
                          env=cluster.env, capture_output=True, text=True, timeout=120)
    return done.stdout + done.stderr


def alive_nodes(cluster: NetnsCluster) -> list[str]:
    """Returns the addresses of the cluster's alive nodes, asked from outside (the State API of
    the head's dashboard, as ``ray list nodes`` does)."""
    done = subprocess.run([str(VENV_BIN / "ray"), "list", "nodes", "--address",
                           cluster.dashboard_url, "--format", "json", "--filter", "state=ALIVE"],
                          env=cluster.env, capture_output=True, text=True)
    if done.returncode:
        return []
    return sorted(n["node_ip"] for n in json.loads(done.stdout))


def _wait_for_nodes(cluster: NetnsCluster, expected: int, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        alive = alive_nodes(cluster)
        if len(alive) == expected:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{expected} Ray nodes did not come up: alive {alive}")
        time.sleep(2)


@contextlib.contextmanager
def study_cluster(workers: int, pg_password: str, worker_tmp_size: str | None = None,
                  env: dict[str, str] | None = None) -> Iterator[tuple[NetnsCluster, S3, Postgres]]:
    """A Ray head and ``workers`` worker nodes with the parts a production cluster has: S3 (moto,
    on the host) and PostgreSQL (on the host); every node gets the S3 credentials and
    ``PGPASSWORD``, as a cluster's secrets would give them, and ``env``. The nodes reach S3
    through a :class:`~fault_proxy.FaultProxy` (``cluster.s3_proxy``: passing traffic unless a test
    makes the object store fail); the tests' own S3 clients go to the server directly.
    ``worker_tmp_size``: the size of each worker node's /tmp/ray (its local disk)."""
    with namespaces(1 + workers) as nodes, \
            postgres_server(pg_password, host=HOST_IP, clients=f"{SUBNET}.0/24") as pg, \
            s3_server(HOST_IP) as s3, \
            fault_proxy(HOST_IP, s3.endpoint.removeprefix("http://")) as proxy, \
            start_ray_nodes(nodes, {**s3.env, "AWS_ENDPOINT_URL": proxy.endpoint,
                                    "PGPASSWORD": pg_password, **(env or {})},
                            worker_tmp_size) as cluster:
        cluster.s3_proxy = proxy
        yield cluster, s3, pg


def submit(cluster: NetnsCluster, *args: str, wait: bool = True) -> subprocess.Popen:
    """Starts ``ray job submit`` of a smoke heatmap-size study from the host; output on stdout.
    ``wait=False``: it returns once the job is submitted (``--no-wait``), printing its id."""
    cmd = [str(VENV_BIN / "ray"), "job", "submit", "--address", cluster.dashboard_url,
           *([] if wait else ["--no-wait"]),
           "--working-dir", ".", "--", "python", "studies/heatmap_size.py", "--preset", "smoke",
           "--set", "data.num_train=16", "--set", "data.num_val=8", *args]
    return subprocess.Popen(cmd, cwd=REPO, env=cluster.env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


@dataclass
class NodeLossRun:
    returncode: int
    output: str
    store: ResultStore
    killed: bool  # the node died mid-study
    wall_s: float


def node_loss_study(cluster: NetnsCluster, s3: S3, pg: Postgres, name: str, trials: int,
                    epochs: int) -> NodeLossRun:
    """Runs a study on S3 + PostgreSQL and SIGKILLs every process of the first worker node as soon
    as a trial there has an epoch in S3; returns once the study has ended."""
    store = ResultStore(f"{s3.bucket}/studies", name, filesystem=s3.filesystem())
    victim, killed = cluster.workers[0], False
    started = time.monotonic()
    job = submit(cluster, "--name", name, "--num-samples", str(trials), "--epochs", str(epochs),
                 "--storage-path", f"s3://{s3.bucket}/studies",
                 "--optuna-url", f"postgresql+psycopg://studies@{pg.host}:{pg.port}/studies")
    try:
        while job.poll() is None and not killed:
            if (store.read_epochs()["node_ip"] == victim.ip).any():
                killed = victim.kill() > 0
            time.sleep(1)
        output = job.communicate(timeout=900)[0]
    finally:
        if job.poll() is None:
            job.kill()
    return NodeLossRun(job.returncode, output, store, killed, time.monotonic() - started)


def all_objects(s3: S3) -> bytes:
    """Every object in the S3 server's bucket, concatenated (to look for secrets in)."""
    fs = s3.filesystem()
    files = fs.get_file_info(pafs.FileSelector(s3.bucket, recursive=True))
    return b"".join(fs.open_input_stream(f.path).read() for f in files
                    if f.type == pafs.FileType.File)


def in_node(node: Node, path: str) -> Path | None:
    """Returns ``path`` of ``node``'s own file system (its private /tmp/ray included) as the host
    reaches it, through one of the node's processes; None when the node has no process."""
    pids = node.pids()
    return Path(f"/proc/{pids[0]}/root{path}") if pids else None


def ray_logs(node: Node) -> bytes:
    """Every Ray log file of ``node``, concatenated; empty when the node has no process."""
    root = in_node(node, "/tmp/ray")
    if root is None:
        return b""
    return b"".join(p.read_bytes() for p in root.glob("session_*/logs/**/*") if p.is_file())


def fill_disk(node: Node) -> int:
    """Writes :data:`FILLER` into ``node``'s /tmp/ray (its local disk, with :data:`NODE_TMP` in it)
    until no space is left; returns the bytes written."""
    return faults.fill(str(in_node(node, FILLER)))


def disk_filled(node: Node) -> bool:
    """True when ``node``'s /tmp/ray holds :data:`FILLER` (written by :func:`fill_disk` or a
    ``fill_disk`` fault)."""
    path = in_node(node, FILLER)
    return path is not None and path.exists()
