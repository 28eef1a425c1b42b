"""Smoke-preset studies on the shared local Ray: parquet rows, Optuna records, ASHA, resume."""
import os
import random
import shlex
import signal
import subprocess
import time
from pathlib import Path

import optuna
import pandas as pd
import psutil
import pytest
import ray
from crash_resume import audit, run_to_the_end, study_command
from isolated import fresh_shell, kill, typed
from local_cluster import trial_actors

from transcenter.platform import faults
from transcenter.platform.replay import Setting, replay
from transcenter.platform.schedulers import Stopping
from transcenter.platform.search import Categorical, SearchSpace
from transcenter.platform.study import StudySpec, run_study
from transcenter.store.results import ResultStore

pytestmark = [pytest.mark.ray, pytest.mark.slow]
TINY = {"data.num_train": 16, "data.num_val": 8, "train.threads": 1}


def _optuna_trials(storage: Path, name: str):
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{storage}/{name}/optuna.db")
    return study.trials


def test_asha_stops_trials_and_later_trials_still_run(ray_cluster, tmp_path):
    # Rigged: a 50x classification weight makes the loss far worse, so ASHA (on loss) stops such
    # trials at the first rung, and trials started after a stop must still get workers (Ray leaks
    # the placement groups of stopped Train runs without ray[default]'s cleaner).
    space = SearchSpace({"loss.cls_weight": Categorical([1.0, 50.0]),
                         "loss.offset_weight": Categorical([1.0, 2.0])})
    spec = StudySpec.create(name="asha", space=space, sampler="grid", metric="loss", mode="min",
                            asha=True, stopping="asha", grace_period=1, reduction_factor=2,
                            max_concurrent_trials=1,
                            num_samples=3,
                            preset="smoke", overrides={**TINY, "train.epochs": 3},
                            storage_path=str(tmp_path), seed=0)
    trial_actors_before = len(trial_actors())
    store = run_study(spec)
    # Tune reuses a trial's actor for the next trial, and a trial ASHA stopped takes its Train
    # workers with it: once the study has ended, nothing of it holds a CPU.
    assert len(trial_actors()) - trial_actors_before < 3
    deadline = time.monotonic() + 30
    while ray.available_resources().get("CPU", 0) < ray.cluster_resources()["CPU"]:
        assert time.monotonic() < deadline, f"CPUs still held after the study: {ray.available_resources()}"
        time.sleep(0.5)
    trials = store.read_trials().set_index("trial_id")
    epochs = store.read_epochs()
    assert len(trials) == 3
    # The console's `tensorboard --logdir <study>/tune` has every trial's curves to show.
    assert len(list((tmp_path / "asha" / "tune").rglob("events.out.tfevents*"))) == 3
    stopped = trials[trials["status"] == "stopped"]
    assert len(stopped) >= 1 and (stopped["loss.cls_weight"] == 50.0).all()
    assert (stopped["n_epochs"] < 3).all()
    assert len(epochs) == trials["n_epochs"].sum()  # every reported epoch, once
    # Rows and study.json say what trained on these CPU workers, not the defaults as asked.
    for rows in (trials, epochs):
        assert (~rows["train.amp"]).all() and (rows["train.device"] == "cpu").all()
    assert {k: store.read_meta()["trial_config"][k] for k in ("train.amp", "train.device")} \
        == {"train.amp": False, "train.device": "cpu"}
    ot = _optuna_trials(tmp_path, "asha")
    study = optuna.load_study(study_name="asha", storage=f"sqlite:///{tmp_path}/asha/optuna.db")
    assert study.metric_names == ["loss"]  # optuna-dashboard's label of the objective
    pruned = [t for t in ot if t.state == optuna.trial.TrialState.PRUNED]
    complete = [t for t in ot if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(pruned) == len(stopped) and len(complete) == 3 - len(stopped)
    assert all(t.intermediate_values for t in pruned)  # pruned, not COMPLETE with an early value
    first_stop = min(t.datetime_complete for t in pruned)
    assert any(t.datetime_start > first_stop for t in complete + pruned)

    # Its replay finds the same best trial at the same cost, and the same study
    # without ASHA would have cost more: its stopped trials' later epochs are predicted.
    out = replay(str(tmp_path / "asha"), [Setting("grid", Stopping("none"), 3, 1)], seeds=1)
    finished = epochs[epochs["trial_id"].isin(trials.index[trials["status"] == "completed"])]
    last = finished[finished["epoch"] == 3].set_index("trial_id")["loss"]
    assert out["actual"]["best_trial"] == last.idxmin()
    assert out["actual"]["best"] == pytest.approx(last.min())
    assert out["actual"]["gpu_hours"] == pytest.approx(epochs["time_s"].sum() / 3600, rel=0.1)
    assert out["settings"][0]["gpu_hours"] > out["actual"]["gpu_hours"]


def test_study_killed_and_resumed_has_every_epoch_once_typed_and_in_optuna(ray_cluster,
                                                                         inject_faults, tmp_path):
    """The real CLI path, as a user's crashes: a grid study's driver is SIGKILLed once it has two
    epoch rows, then twice more at seeded random instants of its resumed runs; ``--resume``
    finishes it."""
    inject_faults([])  # no faults: the workers record the epochs they train, for the audit
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = study_command("grid", tmp_path, "resume", ray_cluster.address)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    store = ResultStore(str(tmp_path), "resume")
    deadline = time.time() + 400
    while time.time() < deadline and proc.poll() is None and len(store.read_epochs()) < 2:
        time.sleep(1)
    assert proc.poll() is None, "study finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert 2 <= len(store.read_epochs()) < 3 * 2

    again = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert again.returncode == 2 and "already exists" in again.stderr  # no silent overwrite
    rng = random.Random(21)
    runs = run_to_the_end(cmd, env, tmp_path / "driver.log", resume=True,
                          kill_after=[rng.uniform(2, 12) for _ in range(2)],
                          store_dir=tmp_path / "resume")
    assert runs.returncodes[-1] == 0, runs.stderr[-3000:]
    assert audit(tmp_path, "resume", samples=3, epochs=2, kills=runs.kills + 1,
                 faults_file=inject_faults.path)["problems"] == []

    epochs = pd.read_parquet(tmp_path / "resume" / "epochs")  # no project code needed to read it
    assert len(epochs) == 3 * 2  # Σ reported epochs: 3 trials × 2 epochs, none lost
    assert not epochs.duplicated(["trial_id", "epoch"]).any()
    assert epochs["model.heatmap_size"].dtype == "int64" and epochs["epoch"].dtype == "int64"
    for col in ("loss", "loss_pos", "AP50", "loss.alpha", "matcher.cost_giou", "optim.lr", "time_s"):
        assert epochs[col].dtype == "float64", col
    assert set(epochs.loc[epochs["epoch"] == 2, "status"]) == {"completed"}
    trials = pd.read_parquet(tmp_path / "resume" / "trials")
    assert len(trials) == 3 and set(trials["status"]) == {"completed"}
    ot = _optuna_trials(tmp_path, "resume")
    complete = [t for t in ot if t.state == optuna.trial.TrialState.COMPLETE]
    sizes = sorted(t.params["model.heatmap_size"] for t in complete)
    assert sizes == sorted(epochs.groupby("trial_id")["model.heatmap_size"].first())
    assert len(set(sizes)) == 3  # the grid, each point once
    assert all(sorted(t.intermediate_values) == [1, 2] for t in complete)  # AP50 of every epoch


def _processes_running(pid: int, script: str) -> list[psutil.Process]:
    """Returns the Python processes below ``pid`` whose command line names ``script`` (processes
    that end while they are looked at are skipped)."""
    found = []
    for process in psutil.Process(pid).children(recursive=True):
        try:
            if process.name().startswith("python") and script in " ".join(process.cmdline()):
                found.append(process)
        except psutil.Error:
            continue
    return found


def test_ctrl_c_says_what_was_stored_and_the_command_that_continues_it(inject_faults, tmp_path):
    """Typed into a fresh shell, as a user runs it on their own machine (its own local Ray):
    SIGINT, what Ctrl-C sends, after the first epoch row; then the command it prints, typed into
    another fresh shell, finishes the study with every epoch once. Workers record the epochs they
    train for the audit (the fault file, with no faults in it)."""
    inject_faults([])
    # One trial at a time: the first epoch row comes with most of the study still to run.
    cmd = study_command("grid", tmp_path, "ctrlc", None, "--max-concurrent-trials", "1")[1:]
    script = f"{faults.ENV}={inject_faults.path} python {shlex.join(cmd)}"
    shell = fresh_shell(script, cwd=tmp_path, home=tmp_path / "home", ray_tmp=tmp_path / "ray1",
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        store = ResultStore(str(tmp_path), "ctrlc")
        deadline = time.time() + 400
        while time.time() < deadline and shell.poll() is None and len(store.read_epochs()) < 1:
            time.sleep(0.5)
        assert shell.poll() is None, "study finished before it could be interrupted"
        [driver] = _processes_running(shell.pid, "heatmap_size.py")
        driver.send_signal(signal.SIGINT)  # what Ctrl-C in its terminal sends
        out, err = shell.communicate(timeout=120)
    finally:
        kill(shell)
    assert shell.returncode == 130, err[-3000:]
    assert "Tuner.restore" not in out + err and "Traceback" not in err
    rows = store.read_epochs()
    assert f"interrupted: {len(rows)} epoch rows of {rows['trial_id'].nunique()} trials" in err
    command = err.split("continue the study with:\n  ", 1)[1].splitlines()[0]
    assert command.endswith(" --resume") and "heatmap_size.py" in command
    again = typed(f"{faults.ENV}={inject_faults.path} {command}", tmp_path, tmp_path / "ray2", timeout=400)
    assert again.returncode == 0, again.stdout[-3000:]
    assert audit(tmp_path, "ctrlc", samples=3, epochs=2, kills=1,
                 faults_file=inject_faults.path)["problems"] == []


def test_multi_objective_study_with_mo_asha_and_a_constraint(ray_cluster, tmp_path):
    """AP against GMACs: every objective lands in parquet at every epoch, Optuna holds
    both directions, the per-epoch values as user attributes, the constraint, and a front; the
    multi-objective ASHA stops trials it ranks low, and Optuna records those PRUNED."""
    space = SearchSpace({"model.heatmap_size": Categorical([16, 32]),
                         "model.head_width": Categorical([16, 64])})
    spec = StudySpec.create(name="mo", space=space, sampler="grid", objectives=("AP:max", "gmacs:min"),
                            constraints=("gmacs<=0.2",), asha=True, grace_period=1, reduction_factor=2,
                            max_concurrent_trials=2, preset="smoke",
                            overrides={**TINY, "train.epochs": 3}, storage_path=str(tmp_path), seed=0)
    store = run_study(spec)
    epochs, trials = store.read_epochs(), store.read_trials()
    assert len(trials) == 4 and len(epochs) == trials["n_epochs"].sum()
    for name in ("AP", "gmacs", "params", "infer_images_per_s", "latency_ms"):
        assert epochs[name].notna().all(), name
    assert (epochs.groupby("trial_id")["gmacs"].nunique() == 1).all()  # from the configuration
    assert (epochs["device"] == "cpu x1").all()
    assert store.read_meta()["objectives"] == {"AP": "max", "gmacs": "min"}
    study = optuna.load_study(study_name="mo", storage=f"sqlite:///{tmp_path}/mo/optuna.db")
    assert study.directions == [optuna.study.StudyDirection.MAXIMIZE, optuna.study.StudyDirection.MINIMIZE]
    finished = [t for t in study.trials if t.state in (optuna.trial.TrialState.COMPLETE,
                                                       optuna.trial.TrialState.PRUNED)]
    assert len(finished) == 4 and all("AP@1" in t.user_attrs and "gmacs@1" in t.user_attrs for t in finished)
    assert all(set(t.constraints) == {"gmacs<=0.2"} for t in finished)
    stopped = trials[trials["status"] == "stopped"]
    pruned = [t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
    assert len(pruned) == len(stopped)
    assert study.best_trials  # the front of the completed trials
