"""MLflow tracking (``--mlflow``, platform/tracking.py) against a real ``mlflow server``.

A smoke study with ASHA (one trial diverges) runs through the CLI, its driver is killed once
mid-study and resumed; then MLflow, read through its client, must hold what the parquet store holds:
one run per trial with its parameters, every epoch once at step = epoch, each trial's end, and the
study run's artifacts; the MLflow UI, in headless Chromium, lists the trials. Without Ray: the sync
from a store and a replayed epoch log nothing twice, and a server that does not answer is refused
up front with its URL masked.
"""
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest
from browser import ARTIFACTS, Browser, require_chromium
from crash_resume import REPO, SMALL, fault, run_to_the_end

from transcenter.platform import faults
from transcenter.platform.tracking import (
    MlflowCallback,
    Tracker,
    split_credentials,
    tracking_uri,
)
from transcenter.platform.trial_files import REPLAY_KEY, TRIAL_NUMBER_KEY
from transcenter.store.results import ResultStore, is_param_column
from transcenter.store.uri import display, mask

pytest.importorskip("mlflow", reason="the mlflow extra: pip install '.[mlflow]'")
from mlflow.tracking import MlflowClient

RUN_STATUS = {"completed": "FINISHED", "stopped": "KILLED", "error": "FAILED"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """A real ``mlflow server`` (SQLite backend, proxied artifacts) on a free port; yields its URL;
    stopped with its worker processes (its own process group) at the end."""
    root = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    log = open(root / "server.log", "wb")  # noqa: SIM115
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "mlflow"), "server", "--backend-store-uri",
         f"sqlite:///{root}/mlflow.db", "--artifacts-destination", str(root / "artifacts"),
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2):
                    break
            except OSError:
                assert process.poll() is None, (root / "server.log").read_text()[-3000:]
                assert time.monotonic() < deadline, "mlflow server: no /health in 120 s"
                time.sleep(0.5)
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=15)
        log.close()


def trial_runs(client: MlflowClient, experiment_id: str) -> dict:
    runs = client.search_runs([experiment_id], "tags.`transcenter.role` = 'trial'")
    by_trial = {r.data.tags["transcenter.trial_id"]: r for r in runs}
    assert len(by_trial) == len(runs), "a trial has two runs"
    return by_trial


def steps(client: MlflowClient, run, metric: str = "epoch") -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run.info.run_id, metric))


@pytest.mark.slow
def test_sync_and_replayed_epochs_log_each_epoch_once(mlflow_server, tmp_path):
    """A store with a completed, a stopped, a failed and a running trial: the sync logs what MLflow
    lacks, a second tracker (a restarted driver) logs nothing again, and a replayed epoch reported
    to the callback is not logged twice while a new one is."""
    store = ResultStore(str(tmp_path), "synced")
    params = {"model.heatmap_size": 32, "loss.alpha": 0.25, "train.amp": False}
    ends = {"trial-00000": (3, "completed"), "trial-00001": (2, "stopped"),
            "trial-00002": (1, "error"), "trial-00003": (2, None)}
    for trial, (n, end) in ends.items():
        for epoch in range(1, n + 1):
            store.record_epoch(trial, epoch, params, {"loss": 1.0 / epoch, "AP": 10.0 * epoch,
                                                      "AP50": float("nan")}, time_s=1.5)
        if end:
            store.record_trial(trial, params, end,
                               error="RuntimeError: at http://u:secret@host/x" if end == "error" else None)
    directory = str(tmp_path / "synced")
    tracker = Tracker(mlflow_server, "synced", directory)
    assert tracker.log_epoch("trial-00000", 1, {"loss": 1.0, "epoch": 1.0}, lambda: params)
    assert tracker.sync(store) == 7  # 8 epochs, one of them logged live
    assert Tracker(mlflow_server, "synced", directory).sync(store) == 0

    callback = MlflowCallback(mlflow_server, store, directory, 3, lambda searched: params)
    trial = SimpleNamespace(config={TRIAL_NUMBER_KEY: 3, "model.heatmap_size": 32})
    for epoch, flags in ((1, {REPLAY_KEY: 1}), (2, {}), (3, {})):
        callback.on_trial_result(0, [], trial, {"epoch": epoch, "loss": 0.1, "AP": 1.0, **flags})
    assert not callback._failed

    client = MlflowClient(mlflow_server)
    runs = trial_runs(client, tracker.experiment_id)
    assert {k: r.info.status for k, r in runs.items()} == {
        "trial-00000": "FINISHED", "trial-00001": "KILLED", "trial-00002": "FAILED",
        "trial-00003": "RUNNING"}
    assert runs["trial-00002"].data.tags["transcenter.error"] == "RuntimeError: at http://u:***@host/x"
    assert {k: steps(client, r) for k, r in runs.items()} == {
        "trial-00000": [1, 2, 3], "trial-00001": [1, 2], "trial-00002": [1], "trial-00003": [1, 2, 3]}
    assert steps(client, runs["trial-00000"], "AP") == [2, 3]  # epoch 1 as logged live, no AP
    assert "AP50" not in runs["trial-00000"].data.metrics  # NaN: skipped
    assert runs["trial-00001"].data.params == {k: str(v) for k, v in params.items()}
    parents = {r.data.tags["mlflow.parentRunId"] for r in runs.values()}
    assert parents == {tracker.study_run_id}


@pytest.mark.ray
@pytest.mark.slow
def test_study_killed_and_resumed_is_in_mlflow_as_in_the_store(ray_cluster, inject_faults,
                                                                mlflow_server, tmp_path):
    # Killed right after parquet stored an epoch that MLflow has not logged yet; the first trial
    # to train its second epoch diverges (a failed trial).
    inject_faults([fault("epoch_stored", tmp_path / "killed", nth=3),
                   {"match": {}, "kind": "nan", "epoch": 2, "when": "after",
                    "marker": str(tmp_path / "diverged")}])
    env = {**os.environ, faults.ENV: str(inject_faults.path)}
    cmd = [sys.executable, str(REPO / "studies" / "heatmap_size.py"), "--preset", "smoke",
           "--storage-path", str(tmp_path), "--name", "tracked", "--address", ray_cluster.address,
           *SMALL, "--num-samples", "3", "--epochs", "3", "--asha", "--mlflow", mlflow_server]
    runs = run_to_the_end(cmd, env, tmp_path / "driver.log", max_runs=3)
    assert runs.returncodes == [-signal.SIGKILL, 1], runs.stderr[-3000:]  # 1: a trial failed

    store = ResultStore(str(tmp_path), "tracked")
    epochs, trials = store.read_epochs(), store.read_trials().set_index("trial_id")
    client = MlflowClient(mlflow_server)
    experiment = client.get_experiment_by_name("tracked")
    by_trial = trial_runs(client, experiment.experiment_id)
    assert sorted(by_trial) == sorted(trials.index) and len(by_trial) == 3
    for key, run in by_trial.items():
        assert run.info.run_name == key
        want = {k: str(v) for k, v in trials.loc[key].items() if is_param_column(k)}
        assert run.data.params == want
        stored = sorted(epochs.loc[epochs.trial_id == key, "epoch"])
        assert stored == list(range(1, len(stored) + 1))
        assert steps(client, run) == stored and steps(client, run, "loss") == stored, key
        assert run.info.status == RUN_STATUS[trials.loc[key, "status"]], key
        error = trials.loc[key, "error"]
        assert run.data.tags.get("transcenter.error") == (mask(error) if isinstance(error, str) else None)
    assert "FAILED" in {r.info.status for r in by_trial.values()}
    study_runs = client.search_runs([experiment.experiment_id], "tags.`transcenter.role` = 'study'")
    assert len(study_runs) == 1 and study_runs[0].info.status == "FINISHED"
    assert study_runs[0].data.tags["transcenter.storage"] == str(tmp_path / "tracked")
    artifacts = {a.path for a in client.list_artifacts(study_runs[0].info.run_id)}
    assert {"report.html", "study.json"} <= artifacts

    require_chromium()
    with Browser(width=1600, height=1200) as browser:
        browser.open(f"{mlflow_server}/#/experiments/{experiment.experiment_id}/runs")
        # Trial runs are nested under the study run: expand it.
        browser.wait_for("""(() => {
            const cell = Array.from(document.querySelectorAll('[role=gridcell]'))
                .find(c => c.innerText.trim().endsWith('study'));
            const expand = cell && cell.querySelector('button');
            if (expand) expand.click();
            return !!expand; })()""", timeout_s=60)
        names = " && ".join(f"t.includes({k!r})" for k in by_trial)
        browser.wait_for(f"(t => {names})(document.body.innerText)", timeout_s=30)
        browser.screenshot(ARTIFACTS / "mlflow-runs.png", full_page=False)


def test_a_server_that_does_not_answer_is_refused_up_front(tmp_path, capsys, monkeypatch):
    from transcenter.platform.cli import main
    from transcenter.platform.search import Categorical, SearchSpace

    space = SearchSpace({"model.heatmap_size": Categorical([16, 32])})
    url = f"http://user:secret@127.0.0.1:{free_port()}"
    argv = ["--preset", "smoke", "--storage-path", str(tmp_path), "--mlflow", url]
    assert main("refused", space, "", argv=argv) == 2
    assert not (tmp_path / "refused" / "tune").exists()  # refused before Tune started
    err = capsys.readouterr().err
    assert "secret" not in err
    assert f"the MLflow tracking server http://user:***@127.0.0.1:{url.rsplit(':', 1)[1]} does not answer" in err

    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if the extra were not installed
    assert main("refused", space, "", argv=argv + ["--name", "other"]) == 2
    assert "mlflow is not installed: pip install '.[mlflow]'" in capsys.readouterr().err


def test_the_flag_the_environment_and_a_password():
    env = {"MLFLOW_TRACKING_URI": "http://env:5000"}
    assert tracking_uri(None, {}) is None
    assert tracking_uri(None, env) == "http://env:5000"
    assert tracking_uri("http://flag:5000", env) == "http://flag:5000"
    assert tracking_uri("none", env) is None
    clean, password = split_credentials("http://me:p%40ss@host:5000")
    assert (clean, password) == ("http://me@host:5000", "p@ss")
    assert display(clean, password is not None) == "http://me:***@host:5000"
    with pytest.raises(ValueError, match="password in a postgresql"):
        split_credentials("postgresql://me:secret@host/db")
