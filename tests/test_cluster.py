"""A study on a real multi-node Ray cluster on this machine: a head and two worker
nodes, each in its own network namespace with its own /tmp/ray; studies in S3 (moto's server) and
Optuna in PostgreSQL, both on the host; submitted with ``ray job submit`` from outside the nodes.
One worker node is SIGKILLed mid-study: its trial resumes from its checkpoint in S3 on the other
node, and every epoch of every trial is stored exactly once. The head node is SIGKILLed mid-study
(its driver with it), a new head starts on its address, and the study is resubmitted with
``--resume``. A VOC study's data index is written to
S3 once by the driver and copied from there by every worker node. A worker node's local disk fills
up mid-study: the trial there moves to the other node. The object store fails for a while
mid-study (503s, resets, latency, through a proxy): the study waits it out and loses no row. The
Optuna database drops its sessions and restarts mid-study: the study rides over it."""
import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import optuna
import pandas as pd
import pyarrow.fs as pafs
import pytest
from data_fixtures import single_year_voc
from netns_cluster import (
    FILLER,
    NODE_TMP,
    all_objects,
    disk_filled,
    in_node,
    node_loss_study,
    ray_logs,
    study_cluster,
    submit,
)

from transcenter.platform import faults
from transcenter.store.results import ResultStore

pytestmark = pytest.mark.slow
PG_SECRET = "Pg-Secr3t-cluster"
TRIALS, EPOCHS = 3, 3
FAULT_TRIALS = 2  # trials of a study with one fault: one per worker node
# The object store's outage: 503s, then reset connections, then 2 s of latency per connection, a
# third each. The study's S3 client retries for about two minutes (store/uri.py); pyarrow's default
# gives up after about 6 s of 503s (tests/test_s3_faults.py). tests/bench/chaos.py makes it 60 s.
S3_OUTAGE_S = 30.0
PG_DOWN_S = 10.0  # PostgreSQL stopped mid-study for this long; the driver retries for two minutes
WORKER_DISK = "512m"  # each worker node's /tmp/ray: its local disk, which one test fills


@pytest.fixture(scope="module")
def trained_log(tmp_path_factory) -> Path:
    """Where the cluster's workers log every epoch they train (``<run folder> <epoch>`` per line:
    fault injection on, with no fault; a host folder every node sees)."""
    faults_file = tmp_path_factory.mktemp("faults") / "faults.json"
    faults_file.write_text("[]")
    return faults_file


@pytest.fixture(scope="module")
def cluster_parts(trained_log):
    with study_cluster(workers=2, pg_password=PG_SECRET, worker_tmp_size=WORKER_DISK,
                       env={faults.ENV: str(trained_log)}) as parts:
        yield parts


@pytest.fixture(scope="module")
def voc_root(tmp_path_factory) -> Path:
    """A VOC folder outside /tmp/ray, so every node sees it (as a shared file system would)."""
    return single_year_voc(tmp_path_factory.mktemp("voc"), length=12)


def test_storage_a_worker_node_cannot_reach_is_refused_up_front(cluster_parts):
    cluster, _, _ = cluster_parts
    job = submit(cluster, "--name", "local", "--storage-path", "/tmp/ray/only-on-the-head")
    out = job.communicate(timeout=300)[0]
    assert job.returncode != 0
    for worker in cluster.workers:
        assert ("is not shared by every Ray node" in out
                and f"node {worker.ip}: the driver's files are not there" in out), out[-3000:]
    assert "Traceback" not in out


def test_head_node_lost_mid_study_resumes_from_object_storage_and_postgres(cluster_parts, voc_root,
                                                                          trained_log):
    cluster, s3, pg = cluster_parts
    args = ["--name", "resume", "--num-samples", "2", "--epochs", str(EPOCHS), "--no-report",
            "--data", "voc", "--data-root", str(voc_root),
            "--storage-path", f"s3://{s3.bucket}/studies",
            "--optuna-url", f"postgresql+psycopg://studies@{pg.host}:{pg.port}/studies",
            "--resume", "auto"]  # one command that starts the study, then continues it
    store = ResultStore(f"{s3.bucket}/studies", "resume", filesystem=s3.filesystem())
    job = submit(cluster, *args)
    try:
        while job.poll() is None and len(store.read_epochs()) < 2:
            time.sleep(1)
        # GCS, raylet, dashboard, job server and the study driver: every process of the head
        assert cluster.head.kill() > 0 and job.poll() is None, "the study ended before the head was lost"
        job.communicate(timeout=300)
    finally:
        if job.poll() is None:
            job.kill()
    cluster.restart()  # the workers, which trained on alone for a while, are stopped with it
    checkpointed = set(store.read_epochs()[["trial_id", "epoch"]].itertuples(index=False, name=None))
    trained_file = trained_log.with_name(f"{trained_log.name}.trained")
    trained_before = len(trained_file.read_text().splitlines())
    resumed = submit(cluster, *args)  # the same command, as KubeRay's backoffLimit resubmits it
    out = resumed.communicate(timeout=600)[0]
    assert resumed.returncode == 0, out[-5000:]
    epochs, trials = store.read_epochs(), store.read_trials()
    assert len(epochs) == 2 * EPOCHS and not epochs.duplicated(["trial_id", "epoch"]).any()
    assert (trials["status"] == "completed").all() and len(trials) == 2
    study = optuna.load_study(study_name="resume", storage=pg.url())
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 2

    index = f"s3://{s3.bucket}/studies/resume/data/index.arrow"
    assert set(epochs["data.index"]) == {index}  # every trial opened the driver's index
    assert s3.filesystem().get_file_info(index.removeprefix("s3://")).size > 0
    assert set(epochs["node_ip"]) == {w.ip for w in cluster.workers}
    for worker in cluster.workers:  # each node copied it from S3 into its own temporary folder
        cache = in_node(worker, f"{NODE_TMP}/transcenter-index")
        assert list(cache.glob("*.arrow")), f"node {worker.ip} has no copy of the data index"
    # Every epoch was trained; none that had reached the driver (each with its checkpoint) was
    # trained again after the restart.
    lines = trained_file.read_text().splitlines()
    trained, after_restart = _trained(lines, "resume"), _trained(lines[trained_before:], "resume")
    assert {(t, e) for t in trials["trial_id"] for e in range(1, EPOCHS + 1)} == trained
    assert not checkpointed & after_restart, (checkpointed, after_restart)


def _trained(lines: list[str], study: str) -> set[tuple[str, int]]:
    """The (trial, epoch) pairs of ``study`` in lines of the workers' training log."""
    pairs = (line.rsplit(" ", 1) for line in lines)
    return {(run.rsplit("/", 1)[-1], int(epoch)) for run, epoch in pairs if f"/studies/{study}/" in run}


@dataclass
class FaultedStudy:
    output: str  # what `ray job submit` printed
    store: ResultStore  # read directly, not through the cluster's S3 proxy
    study: optuna.Study


def _study_with_fault(cluster_parts, name: str, ready: Callable[[pd.DataFrame], bool] | None = None,
                      inject: Callable[[], object] | None = None) -> FaultedStudy:
    """Submits a study of :data:`FAULT_TRIALS` on S3 and PostgreSQL, calls ``inject()`` once
    ``ready(epoch rows stored so far)`` holds (without them: a fault armed in the faults file does
    its own), and returns once the study has ended, having checked that it completed every trial,
    stored each epoch once, and left Optuna's trials COMPLETE."""
    cluster, s3, pg = cluster_parts
    store = ResultStore(f"{s3.bucket}/studies", name, filesystem=s3.filesystem())
    job = submit(cluster, "--name", name, "--num-samples", str(FAULT_TRIALS), "--epochs", str(EPOCHS),
                 "--storage-path", f"s3://{s3.bucket}/studies",
                 "--optuna-url", f"postgresql+psycopg://studies@{pg.host}:{pg.port}/studies")
    injected = inject is None
    try:
        while job.poll() is None and not injected:
            if ready(store.read_epochs()):
                inject()
                injected = True
            time.sleep(1)
        output = job.communicate(timeout=900)[0]
    finally:
        if job.poll() is None:
            job.kill()
    assert injected, "the study ended before the fault"
    assert job.returncode == 0, output[-5000:]
    assert f"trials: {FAULT_TRIALS} completed" in output
    epochs, trials = store.read_epochs(), store.read_trials()
    assert len(trials) == FAULT_TRIALS and (trials["status"] == "completed").all()
    assert len(epochs) == FAULT_TRIALS * EPOCHS and not epochs.duplicated(["trial_id", "epoch"]).any()
    study = optuna.load_study(study_name=name, storage=pg.url())
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * FAULT_TRIALS
    return FaultedStudy(output, store, study)


def test_trials_leave_a_worker_node_whose_disk_is_full(cluster_parts, trained_log):
    cluster = cluster_parts[0]
    # The first trial to register its first epoch fills its node's disk; its next checkpoint finds
    # no space left.
    trained_log.write_text(json.dumps([{"kind": "fill_disk", "epoch": 1, "when": "reported",
                                        "path": FILLER,
                                        "marker": str(trained_log.with_name("disk-filled"))}]))
    try:
        run = _study_with_fault(cluster_parts, "disk")
        (full,) = [node for node in cluster.workers if disk_filled(node)]
        (other,) = [node for node in cluster.workers if node is not full]
        # The trial's line on the driver's console names the node, the cause and what happens next.
        assert (f": worker 0 failed: node {full.ip}: disk full (No space left on device; "
                in run.output), run.output[-5000:]
        assert "drained: the trial retries from its last checkpoint on another node" in run.output
        moved = run.store.read_epochs().groupby("trial_id")["node_ip"].nunique()
        assert (moved == 2).any(), "no trial moved off the full node"
        assert (run.store.read_trials()["node_ip"] == other.ip).all()  # every trial ended there
    finally:
        trained_log.write_text("[]")
        for node in cluster.workers:
            if disk_filled(node):
                cluster.restart_worker(node)


def test_an_object_store_outage_mid_study_delays_it_and_loses_nothing(cluster_parts):
    cluster, s3, _ = cluster_parts
    before = dict(cluster.s3_proxy.served)
    # Once checkpoints and rows are being written, S3 fails for S3_OUTAGE_S (this call blocks).
    _study_with_fault(cluster_parts, "flaky", lambda epochs: len(epochs) > 0,
                      lambda: cluster.s3_proxy.outage(S3_OUTAGE_S))
    during = cluster.s3_proxy.served - Counter(before)
    assert during["503"] and during["reset"], during  # the outage met the study's requests
    fs = s3.filesystem()
    keys = [f.path for f in fs.get_file_info(pafs.FileSelector(f"{s3.bucket}/studies/flaky",
                                                                recursive=True))]
    assert not [k for k in keys if ".tmp" in k.rsplit("/", 1)[-1]], keys  # nothing torn or left over
    assert fs.get_file_info(f"{s3.bucket}/studies/flaky/report.html").size > 10_000


def test_the_optuna_database_dropping_sessions_and_restarting_mid_study(cluster_parts):
    pg = cluster_parts[2]

    def drop_then_restart() -> None:
        pg.end_sessions()  # from the server's side, as an idle timeout or a failover does
        time.sleep(3)
        pg.stop()
        time.sleep(PG_DOWN_S)
        pg.start()

    run = _study_with_fault(cluster_parts, "pgdown", lambda epochs: len(epochs) > 0, drop_then_restart)
    # Every epoch's value reached Optuna once, the outage's ones included.
    assert ([sorted(t.intermediate_values) for t in run.study.trials]
            == [list(range(1, EPOCHS + 1))] * FAULT_TRIALS)


def test_study_survives_losing_a_worker_node(cluster_parts, monkeypatch):
    cluster, s3, pg = cluster_parts
    run = node_loss_study(cluster, s3, pg, "nodes", TRIALS, EPOCHS)
    assert run.killed, "the study ended before a trial ran on the node to lose"
    assert run.returncode == 0, run.output[-5000:]
    assert f"trials: {TRIALS} completed" in run.output

    epochs, trials = run.store.read_epochs(), run.store.read_trials()
    assert len(trials) == TRIALS and (trials["status"] == "completed").all()
    assert len(epochs) == TRIALS * EPOCHS and not epochs.duplicated(["trial_id", "epoch"]).any()
    assert set(epochs["node_ip"]) == {w.ip for w in cluster.workers}  # trials ran on both nodes
    moved = epochs.groupby("trial_id")["node_ip"].nunique()
    assert (moved == 2).any(), "no trial resumed on the surviving node"
    last_node = trials.set_index("trial_id").loc[moved[moved == 2].index, "node_ip"]
    assert (last_node == cluster.workers[1].ip).all()

    study = optuna.load_study(study_name="nodes", storage=pg.url())
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * TRIALS
    assert s3.filesystem().get_file_info(f"{s3.bucket}/studies/nodes/report.html").size > 10_000
    for key, value in s3.env.items():  # pandas reads the study from S3 with the nodes' settings
        monkeypatch.setenv(key, value)
    assert len(pd.read_parquet(f"s3://{s3.bucket}/studies/nodes/epochs")) == TRIALS * EPOCHS

    everything = all_objects(s3) + run.output.encode() + ray_logs(cluster.head)
    assert s3.secret_key.encode() not in everything and PG_SECRET.encode() not in everything
