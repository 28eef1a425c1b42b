"""Chaos: one long study on the netns cluster, faults at random times from a seeded schedule.

The cluster is ``tests/test_cluster.py``'s (``tests/netns_cluster.py``): a head and two 1-CPU worker
nodes in network namespaces, S3 (moto, reached through a fault proxy) and PostgreSQL on the host,
the study submitted with ``ray job submit`` (``--resume auto``, so the same command starts and
resumes it). Faults, each at least once, in a seeded random order with random gaps:

- ``worker_kill``: SIGKILL one Train worker process;
- ``node_lost``: SIGKILL every process of a worker node; the node is started again 20 s later;
- ``head_lost``: SIGKILL every process of the head, the study driver with it; the cluster is
  restarted and the same command submitted again (``studies_resumed``);
- ``db_restart``: PostgreSQL ends the study's sessions, then stops for 10 s;
- ``s3_outage``: the object store answers 503s, then resets connections, then adds 2 s of latency,
  for ``--outage-s`` in all;
- ``disk_full``: a worker node's local disk (a 512 MB /tmp/ray) is filled; 30 s later the node is
  started again (its disk empty), as an operator would.

A job that ends with an error is submitted again, up to 3 times (also counted in
``studies_resumed``; ``resubmits`` says how many of them), and faults go on.
At the end it prints one JSON object: faults injected per kind, studies resumed, trials, rows
expected/found/duplicated/lost in parquet, whether Optuna holds every trial once as COMPLETE, how
many secrets (the S3 secret key, the PostgreSQL password) were found in any S3 object, job output,
Optuna attribute or Ray log of a node, and the wall time. Needs root.

    python tests/bench/chaos.py --seed 0 [--trials 32] [--epochs 8] [--faults 10] [--outage-s 60]
        [--job-log FILE]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import optuna

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the cluster helpers
from faults import row_counts
from netns_cluster import NetnsCluster, Node, all_objects, fill_disk, ray_job, ray_logs, study_cluster, submit
from postgres import Postgres
from s3_server import S3

from transcenter.platform import faults
from transcenter.store.results import ResultStore

NAME = "chaos"
PG_SECRET = "Pg-Secr3t-chaos"
GRID = 4  # heatmap sizes of studies/heatmap_size.py: trials = GRID × seeds
KINDS = ("worker_kill", "node_lost", "head_lost", "db_restart", "s3_outage", "disk_full")
RESUBMITS = 3


@dataclass
class Chaos:
    """The cluster, the running job and what has happened so far."""

    cluster: NetnsCluster
    s3: S3
    pg: Postgres
    command: list[str]
    rng: random.Random
    outage_s: float
    job_id: str = ""
    status: str = ""  # the job's last status: PENDING, RUNNING, SUCCEEDED, FAILED, STOPPED
    outputs: list[str] = field(default_factory=list)
    resumed: int = 0  # submissions after the first: after a head lost, or a job that failed
    resubmits: int = 0  # of those, after a job that failed

    def submit(self) -> None:
        """Submits the study (``--no-wait``: ``ray job submit``'s log tail can outlive its job)."""
        out = submit(self.cluster, *self.command, wait=False).communicate(timeout=300)[0]
        self.job_id = re.search(r"raysubmit_\w+", out).group(0)
        self.status = "PENDING"

    def poll(self) -> str:
        """Returns the job's status, asked from the head (UNKNOWN when the head does not answer)."""
        found = re.search(rf"submission_id='{self.job_id}'.*?status=<JobStatus\.(\w+)",
                          ray_job(self.cluster, "list"), re.DOTALL)
        self.status = found.group(1) if found else "UNKNOWN"
        return self.status

    def keep_running(self) -> bool:
        """False once the study has ended well (or failed :data:`RESUBMITS` times more); a job that
        ended with an error is submitted again (counted as a resume)."""
        if self.poll() in ("PENDING", "RUNNING", "UNKNOWN"):
            return True
        self.outputs.append(ray_job(self.cluster, "logs", self.job_id))
        if self.status == "SUCCEEDED" or self.resubmits >= RESUBMITS:
            return False
        self.resubmits += 1
        self.resumed += 1
        self.submit()
        return True

    def train_workers(self) -> dict[int, Node]:
        """Returns pid -> node of every Ray Train worker process now running."""
        found = {}
        for node in self.cluster.workers:
            for pid in node.pids():
                try:
                    title = Path(f"/proc/{pid}/cmdline").read_bytes()
                except OSError:
                    continue
                if title.startswith(b"ray::RayTrainWorker"):
                    found[pid] = node
        return found

    def wait_for_training(self, timeout_s: float = 120) -> dict[int, Node]:
        """Returns :meth:`train_workers` once there is one (empty after ``timeout_s``)."""
        deadline = time.monotonic() + timeout_s
        while not (workers := self.train_workers()) and time.monotonic() < deadline:
            time.sleep(0.5)
        return workers


def worker_kill(chaos: Chaos) -> None:
    workers = chaos.wait_for_training()
    if workers:
        os.kill(chaos.rng.choice(sorted(workers)), signal.SIGKILL)


def node_lost(chaos: Chaos) -> None:
    node = chaos.rng.choice(chaos.cluster.workers)
    node.kill()
    time.sleep(20)
    chaos.cluster.restart_worker(node)


def head_lost(chaos: Chaos) -> None:
    chaos.outputs.append(ray_job(chaos.cluster, "logs", chaos.job_id))  # what the head still has
    chaos.cluster.head.kill()
    chaos.cluster.restart()
    chaos.submit()
    chaos.resumed += 1


def db_restart(chaos: Chaos) -> None:
    chaos.pg.end_sessions()
    time.sleep(2)
    chaos.pg.stop()
    time.sleep(10)
    chaos.pg.start()


def s3_outage(chaos: Chaos) -> None:
    chaos.cluster.s3_proxy.outage(chaos.outage_s)


def disk_full(chaos: Chaos) -> None:
    training = {node.name: node for node in chaos.wait_for_training().values()}
    nodes = training or {node.name: node for node in chaos.cluster.workers}
    node = nodes[chaos.rng.choice(sorted(nodes))]
    fill_disk(node)
    time.sleep(30)
    chaos.cluster.restart_worker(node)


INJECT: dict[str, Callable[[Chaos], None]] = {
    "worker_kill": worker_kill, "node_lost": node_lost, "head_lost": head_lost,
    "db_restart": db_restart, "s3_outage": s3_outage, "disk_full": disk_full}


def schedule(seed: int, count: int, min_gap_s: float, max_gap_s: float) -> list[tuple[float, str]]:
    """Returns ``count`` (at least one of each kind) faults as (seconds to wait before it, kind),
    in a random order drawn from ``seed``."""
    rng = random.Random(seed)
    kinds = list(KINDS) + [rng.choice(KINDS) for _ in range(max(0, count - len(KINDS)))]
    rng.shuffle(kinds)
    return [(rng.uniform(min_gap_s, max_gap_s), kind) for kind in kinds]


def secrets_found(chaos: Chaos) -> int:
    """How many of the secrets appear anywhere a user or an operator could read them."""
    study = optuna.load_study(study_name=NAME, storage=chaos.pg.url())
    attributes = json.dumps([[t.params, t.user_attrs, t.system_attrs] for t in study.trials],
                            default=str).encode()
    everything = b"".join([all_objects(chaos.s3), attributes, *(o.encode() for o in chaos.outputs),
                           *(ray_logs(n) for n in [chaos.cluster.head, *chaos.cluster.workers])])
    return sum(secret.encode() in everything for secret in (chaos.s3.secret_key, PG_SECRET))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--trials", type=int, default=32, help="a multiple of 4 (the grid of sizes)")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--faults", type=int, default=10)
    p.add_argument("--outage-s", type=float, default=60.0)
    p.add_argument("--min-gap-s", type=float, default=3.0)
    p.add_argument("--max-gap-s", type=float, default=12.0)
    p.add_argument("--job-log", help="write every job's output (``ray job logs``) to this file")
    args = p.parse_args()
    if args.trials % GRID:
        p.error(f"--trials {args.trials}: must be a multiple of {GRID}")
    plan = schedule(args.seed, args.faults, args.min_gap_s, args.max_gap_s)
    injected: Counter = Counter()
    with tempfile.TemporaryDirectory() as tmp:
        faults_file = Path(tmp) / "faults.json"  # fault injection on with no fault: nothing fires
        faults_file.write_text("[]")
        with study_cluster(workers=2, pg_password=PG_SECRET, worker_tmp_size="512m",
                           env={faults.ENV: str(faults_file)}) as (cluster, s3, pg):
            command = ["--name", NAME, "--seeds", str(args.trials // GRID), "--epochs", str(args.epochs),
                       "--no-report", "--storage-path", f"s3://{s3.bucket}/studies",
                       "--optuna-url", f"postgresql+psycopg://studies@{pg.host}:{pg.port}/studies",
                       "--resume", "auto"]
            chaos = Chaos(cluster, s3, pg, command, random.Random(args.seed), args.outage_s)
            start = time.monotonic()
            chaos.submit()
            for gap_s, kind in plan:
                time.sleep(gap_s)
                if not chaos.keep_running():
                    break
                INJECT[kind](chaos)
                injected[kind] += 1
                print(f"[{time.monotonic() - start:6.0f} s] {kind}", file=sys.stderr, flush=True)
            while chaos.keep_running():
                time.sleep(10)
            wall_s = time.monotonic() - start
            if args.job_log:
                Path(args.job_log).write_text("\n".join(chaos.outputs))
            store = ResultStore(f"{s3.bucket}/studies", NAME, filesystem=s3.filesystem())
            rows = row_counts(store, args.trials * args.epochs)
            study = optuna.load_study(study_name=NAME, storage=pg.url())
            states = Counter(t.state.name for t in study.trials)
            print(json.dumps({
                "seed": args.seed, "faults": dict(injected), "studies_resumed": chaos.resumed,
                "resubmits": chaos.resubmits,
                "last_job": chaos.status, "trials": args.trials,
                "rows_expected": rows["expected"], "rows_found": rows["found"],
                "duplicates": rows["duplicates"], "lost_rows": rows["lost"],
                "optuna_trials_ok": states == Counter({"COMPLETE": args.trials}),
                "optuna_states": dict(states), "secrets_found": secrets_found(chaos),
                "wall_s": round(wall_s, 1)}))


if __name__ == "__main__":
    main()
