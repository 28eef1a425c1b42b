"""A study on a real multi-node Ray cluster on this machine (issue 14): a head and two worker
nodes, each in its own network namespace with its own /tmp/ray; studies in S3 (moto's server) and
Optuna in PostgreSQL, both on the host; submitted with ``ray job submit`` from outside the nodes.
One worker node is SIGKILLed mid-study: its trial resumes from its checkpoint in S3 on the other
node, and every epoch of every trial is stored exactly once."""
import os
import signal
import subprocess
import time
from pathlib import Path

import optuna
import pandas as pd
import pyarrow.fs as pafs
import pytest
from isolated import REPO
from netns_cluster import HOST_IP, SUBNET, VENV_BIN, namespaces, start_ray_nodes
from postgres import postgres_server
from s3_server import s3_server

from transcenter.store.results import ResultStore

pytestmark = pytest.mark.slow
PG_SECRET = "Pg-Secr3t-cluster"
TRIALS, EPOCHS = 4, 3


@pytest.fixture(scope="module")
def cluster_parts():
    """(cluster, s3, pg): Ray nodes with S3 credentials and PGPASSWORD, as a cluster config
    would give them."""
    with namespaces(3) as nodes, postgres_server(PG_SECRET, host=HOST_IP,
                                                   clients=f"{SUBNET}.0/24") as pg, \
            s3_server(HOST_IP) as s3, start_ray_nodes(nodes, {**s3.env, "PGPASSWORD": PG_SECRET}) as c:
        yield c, s3, pg


def _s3_store(s3, monkeypatch, study: str) -> ResultStore:
    for key, value in s3.env.items():
        monkeypatch.setenv(key, value)
    return ResultStore(f"s3://{s3.bucket}/studies", study)


def _submit(cluster, *args: str) -> subprocess.Popen:
    """``ray job submit`` of a smoke heatmap-size study, from the host."""
    cmd = [str(VENV_BIN / "ray"), "job", "submit", "--address", cluster.dashboard_url,
           "--working-dir", ".", "--", "python", "studies/heatmap_size.py", "--preset", "smoke",
           "--set", "data.num_train=16", "--set", "data.num_val=8", *args]
    return subprocess.Popen(cmd, cwd=REPO, env=cluster.env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _all_objects(s3) -> bytes:
    fs = pafs.S3FileSystem(endpoint_override=s3.endpoint, access_key=s3.access_key,
                           secret_key=s3.secret_key, region="us-east-1")
    files = fs.get_file_info(pafs.FileSelector(s3.bucket, recursive=True))
    return b"".join(fs.open_input_stream(f.path).read() for f in files
                    if f.type == pafs.FileType.File)


def test_storage_a_worker_node_cannot_reach_is_refused_up_front(cluster_parts):
    cluster, _, _ = cluster_parts
    job = _submit(cluster, "--name", "local", "--storage-path", "/tmp/ray/only-on-the-head")
    out = job.communicate(timeout=300)[0]
    assert job.returncode != 0
    for worker in cluster.workers:
        assert ("is not shared by every Ray node" in out
                and f"node {worker.ip}: the driver's files are not there" in out), out[-3000:]
    assert "Traceback" not in out


def _driver_pids(cluster) -> list[int]:
    """The study drivers' processes on the head (entrypoints of ``ray job submit``)."""
    return [pid for pid in cluster.head.pids()
            if b"studies/heatmap_size.py" in Path(f"/proc/{pid}/cmdline").read_bytes()]


def test_killed_driver_resumes_from_object_storage_and_postgres(cluster_parts, monkeypatch):
    cluster, s3, pg = cluster_parts
    args = ["--name", "resume", "--num-samples", "2", "--epochs", str(EPOCHS), "--no-report",
            "--storage-path", f"s3://{s3.bucket}/studies",
            "--optuna-url", f"postgresql+psycopg://studies@{pg.host}:{pg.port}/studies"]
    store = _s3_store(s3, monkeypatch, "resume")
    job = _submit(cluster, *args)
    try:
        while job.poll() is None and len(store.read_epochs()) < 2:
            time.sleep(1)
        pids = _driver_pids(cluster)
        assert pids, "no study driver on the head"
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        job.communicate(timeout=300)
    finally:
        if job.poll() is None:
            job.kill()
    resumed = _submit(cluster, *args, "--resume")
    out = resumed.communicate(timeout=600)[0]
    assert resumed.returncode == 0, out[-5000:]
    epochs, trials = store.read_epochs(), store.read_trials()
    assert len(epochs) == 2 * EPOCHS and not epochs.duplicated(["trial_id", "epoch"]).any()
    assert (trials["status"] == "completed").all() and len(trials) == 2
    study = optuna.load_study(study_name="resume", storage=pg.url())
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 2


def test_study_survives_losing_a_worker_node(cluster_parts, monkeypatch):
    cluster, s3, pg = cluster_parts
    optuna_url = f"postgresql+psycopg://studies@{pg.host}:{pg.port}/studies"
    job = _submit(cluster, "--name", "nodes", "--num-samples", str(TRIALS), "--epochs", str(EPOCHS),
                  "--storage-path", f"s3://{s3.bucket}/studies", "--optuna-url", optuna_url)
    store = _s3_store(s3, monkeypatch, "nodes")
    victim = cluster.workers[0]
    try:
        while job.poll() is None:  # lose the node once a trial there has an epoch in S3
            epochs = store.read_epochs()
            if (epochs["node_ip"] == victim.ip).any():
                assert victim.kill() > 0
                break
            time.sleep(1)
        out = job.communicate(timeout=600)[0]
    finally:
        if job.poll() is None:
            job.kill()
    assert job.returncode == 0, out[-5000:]
    assert f"trials: {TRIALS} completed" in out

    epochs, trials = store.read_epochs(), store.read_trials()
    assert len(trials) == TRIALS and (trials["status"] == "completed").all()
    assert len(epochs) == TRIALS * EPOCHS and not epochs.duplicated(["trial_id", "epoch"]).any()
    assert set(epochs["node_ip"]) == {w.ip for w in cluster.workers}  # trials ran on both nodes
    moved = epochs.groupby("trial_id")["node_ip"].nunique()
    assert (moved == 2).any(), "no trial resumed on the surviving node"
    last_node = trials.set_index("trial_id").loc[moved[moved == 2].index, "node_ip"]
    assert (last_node == cluster.workers[1].ip).all()

    study = optuna.load_study(study_name="nodes", storage=pg.url())
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * TRIALS
    report = pafs.S3FileSystem(endpoint_override=s3.endpoint, access_key=s3.access_key,
                               secret_key=s3.secret_key, region="us-east-1")
    assert report.get_file_info(f"{s3.bucket}/studies/nodes/report.html").size > 10_000
    # pandas reads the study straight from S3, configured by the same environment as the nodes.
    assert len(pd.read_parquet(f"s3://{s3.bucket}/studies/nodes/epochs")) == TRIALS * EPOCHS

    everything = _all_objects(s3) + out.encode()
    assert s3.secret_key.encode() not in everything and PG_SECRET.encode() not in everything
