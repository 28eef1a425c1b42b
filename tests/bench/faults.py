"""Fault matrix, run once on a local Ray head: prints one JSON object.

Injects a SIGKILLed Train worker, a diverging trial (NaN), an out-of-memory trial, a study
driver SIGKILLed mid-study then resumed with ``--resume``, and (``node_lost``) a worker node of a
three-node cluster on S3 + PostgreSQL SIGKILLed mid-study (needs root); reports faults injected, studies
completed, parquet rows expected vs found, duplicated and lost rows (the target is 0 and 0).

    python tests/bench/faults.py
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import ray

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the local head helper
from local_cluster import local_head
from netns_cluster import node_loss_study, study_cluster

from transcenter.platform import faults as fault_injection
from transcenter.platform.search import Categorical, SearchSpace
from transcenter.platform.study import StudySpec, run_study
from transcenter.store.results import ResultStore

EPOCHS = 3
SMALL = {"data.num_train": 16, "data.num_val": 8, "train.epochs": EPOCHS, "train.threads": 1}
STUDY_SCRIPT = Path(__file__).resolve().parents[2] / "studies" / "heatmap_size.py"


def row_counts(store: ResultStore, expected: int) -> dict:
    """Rows expected, found, duplicated and lost in a study's store."""
    epochs = store.read_epochs()
    unique = len(epochs.drop_duplicates(["trial_id", "epoch"]))
    return {"expected": expected, "found": len(epochs), "duplicates": len(epochs) - unique,
            "lost": max(0, expected - unique)}


def trial_faults(root: Path) -> tuple[dict, int]:
    """Worker SIGKILL, NaN at epoch 2 and OOM at epoch 1 in one study with a healthy trial."""
    faults = [{"match": {"loss.cls_weight": 1.0}, "kind": "kill", "epoch": 2, "marker": str(root / "k")},
              {"match": {"loss.cls_weight": 2.0}, "kind": "nan", "epoch": 2, "when": "before",
               "marker": str(root / "n")},
              {"match": {"loss.cls_weight": 3.0}, "kind": "oom", "epoch": 1, "when": "before",
               "marker": str(root / "o")}]
    (root / "faults.json").write_text(json.dumps(faults))  # the head's workers read it
    spec = StudySpec.create(name="trial_faults", space=SearchSpace({"loss.cls_weight": Categorical(
        [1.0, 2.0, 3.0, 4.0])}), sampler="grid", preset="smoke",
        overrides=SMALL, storage_path=str(root))
    store = run_study(spec)
    expected = EPOCHS + 1 + 0 + EPOCHS  # killed resumes to the end; NaN keeps epoch 1; OOM none
    statuses = sorted(store.read_trials()["status"])
    fired = sum((root / m).exists() for m in "kno")
    return {**row_counts(store, expected), "statuses": statuses}, fired


def driver_kill(root: Path, address: str) -> dict:
    """SIGKILL the study driver once rows exist, then finish it with --resume."""
    cmd = [sys.executable, str(STUDY_SCRIPT), "--preset", "smoke", "--storage-path", str(root),
           "--name", "driver_kill", "--num-samples", "3", "--epochs", str(EPOCHS),
           "--address", address, "--no-report", "--set", "data.num_train=16",
           "--set", "data.num_val=8"]
    store = ResultStore(str(root), "driver_kill")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while proc.poll() is None and len(store.read_epochs()) < 2:
        time.sleep(1)
    killed = proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    resumed = subprocess.run(cmd + ["--resume"], capture_output=True, text=True)
    return {**row_counts(store, 3 * EPOCHS), "killed_mid_study": killed,
            "resume_exit_code": resumed.returncode}


def node_lost() -> dict:
    """SIGKILL every process of a worker node of a three-node cluster mid-study (S3 + PostgreSQL)."""
    with study_cluster(workers=2, pg_password="bench-secret") as (cluster, s3, pg):
        run = node_loss_study(cluster, s3, pg, "node_lost", 4, EPOCHS)
        return {**row_counts(run.store, 4 * EPOCHS), "killed": run.killed,
                "completed": run.returncode == 0}


def main() -> None:
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp, \
            local_head(env={fault_injection.ENV: f"{tmp}/faults.json"}) as cluster:
        root = Path(tmp)
        ray.init(address=cluster.address)
        faults, fired = trial_faults(root)
        ray.shutdown()
        driver = driver_kill(root, cluster.address)
    node = node_lost()
    runs = (faults, driver, node)
    print(json.dumps({
        "faults_injected": fired + int(driver["killed_mid_study"]) + int(node["killed"]),
        "studies_completed": 1 + int(driver["resume_exit_code"] == 0) + int(node["completed"]),
        "rows_expected": sum(r["expected"] for r in runs),
        "rows_found": sum(r["found"] for r in runs),
        "duplicates": sum(r["duplicates"] for r in runs),
        "lost_rows": sum(r["lost"] for r in runs),
        "trial_statuses": faults["statuses"],
        "wall_s": round(time.perf_counter() - start, 1)}))


if __name__ == "__main__":
    main()
