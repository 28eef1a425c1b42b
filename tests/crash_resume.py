"""Kill a study driver, resume it, and audit the result: shared by the crash tests and
``tests/bench/crash_sweep.py``.

A study here is the real CLI (``studies/<script>.py --preset smoke``) on a running Ray cluster. Kills
come from the fault file (:mod:`transcenter.platform.faults`: driver kill points, and workers that
kill the driver) or from outside (SIGKILL after a delay). The audit reads only the study's files
and the fault file's record of epochs trained, and lists every inconsistency it finds.
"""
from __future__ import annotations

import posixpath
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import optuna
import pandas as pd

from transcenter.platform import faults

REPO = Path(__file__).resolve().parents[1]
SMALL = ("--set", "data.num_train=16", "--set", "data.num_val=8", "--set", "train.threads=1")
# The kinds of study the sweep covers: script and flags.
KINDS = {
    "grid": ("heatmap_size", ("--num-samples", "3", "--epochs", "2")),
    "tpe_asha": ("focal_loss", ("--sampler", "tpe", "--asha", "--objective", "loss:min",
                                "--num-samples", "3", "--epochs", "2")),
    "multi_objective": ("accuracy_vs_compute", ("--asha", "--num-samples", "4", "--epochs", "3")),
}
# Every kind of write the driver can be killed after: its own kill points, and a worker that
# kills it once its checkpoint file is written (not yet Ray Train's) or registered (not yet
# reported to the driver).
WORKER_POINTS = ("checkpoint_written", "reported")
ALL_POINTS = faults.POINTS + WORKER_POINTS


def fault(point: str, marker: Path, nth: int = 1) -> dict:
    """Returns the fault that kills the driver at ``point`` (a driver kill point, or a
    :data:`WORKER_POINTS` entry: the first trial's epoch ``nth``)."""
    if point in WORKER_POINTS:
        return {"match": {}, "kind": "kill_driver", "epoch": nth, "when": point,
                "marker": str(marker)}
    return {"point": point, "nth": nth, "marker": str(marker)}


def study_command(kind: str, storage: Path, name: str, address: str | None, *extra: str) -> list[str]:
    """Returns the CLI command of a smoke study of ``kind`` (see :data:`KINDS`) on the Ray cluster
    at ``address`` (None: the study's own local Ray)."""
    script, flags = KINDS[kind]
    return [sys.executable, str(REPO / "studies" / f"{script}.py"), "--preset", "smoke",
            "--storage-path", str(storage), "--name", name, *(("--address", address) if address else ()),
            "--no-report", *SMALL, *flags, *extra]


@dataclass
class Runs:
    """What running a study to the end took."""

    returncodes: list[int] = field(default_factory=list)  # one per driver run, the last 0 if done
    stderr: str = ""  # of the last run

    @property
    def kills(self) -> int:
        return sum(rc == -signal.SIGKILL for rc in self.returncodes)


def run_to_the_end(cmd: list[str], env: dict, log: Path, max_runs: int = 20,
                   timeout: float = 600, kill_after: list[float] | None = None,
                   store_dir: Path | None = None, resume: bool = False) -> Runs:
    """Runs ``cmd`` (with ``--resume`` if ``resume``), then ``cmd --resume`` after every SIGKILL,
    until a run exits otherwise; each run's stderr goes to ``log``.

    ``kill_after``: one delay per run, in seconds after the study's first epoch row exists
    (``store_dir/epochs``), at which that run is SIGKILLed from outside; later runs are left alone.
    """
    runs = Runs()
    delays = list(kill_after or [])
    while len(runs.returncodes) < max_runs:
        args = cmd + (["--resume"] if resume or runs.returncodes else [])
        with open(log, "w") as err:
            proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=err)
            deadline = time.time() + timeout
            if delays:
                _kill_later(proc, delays.pop(0), store_dir, deadline)
            proc.wait(timeout=max(1.0, deadline - time.time()))
        runs.stderr = log.read_text(errors="replace")
        runs.returncodes.append(proc.returncode)
        if proc.returncode != -signal.SIGKILL:
            break
    return runs


def _kill_later(proc: subprocess.Popen, delay: float, store_dir: Path, deadline: float) -> None:
    while (proc.poll() is None and time.time() < deadline
           and not list((store_dir / "epochs").glob("*.parquet"))):
        time.sleep(0.2)
    end = time.time() + delay
    while proc.poll() is None and time.time() < end:
        time.sleep(0.1)
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)


def trained_epochs(study_dir: Path, faults_file: Path) -> Counter:
    """Returns how many times each (trial, epoch) of the study in ``study_dir`` was trained, from
    the lines rank 0 appends to ``<faults file>.trained``
    (:func:`transcenter.platform.faults.record_trained`)."""
    path = Path(f"{faults_file}.trained")
    lines = path.read_text().split("\n") if path.exists() else []
    train = f"{study_dir}/train"
    return Counter((posixpath.basename(run), int(e)) for run, e in (line.rsplit(" ", 1)
                                                                    for line in lines if line)
                   if posixpath.dirname(run) == train)


def audit(storage: Path, name: str, samples: int, epochs: int, kills: int, faults_file: Path,
          concurrency: int = 2) -> dict:
    """Checks a finished study against its stores; returns counts and ``problems`` (empty when
    every trial-epoch is in parquet once, every trial in Optuna once with the state and per-epoch
    values parquet has, and no epoch before a kill's last checkpoint was trained again)."""
    problems: list[str] = []
    rows = pd.read_parquet(storage / name / "epochs")
    trials = pd.read_parquet(storage / name / "trials").set_index("trial_id")
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{storage}/{name}/optuna.db")
    ot = {f"trial-{t.number:05d}": t for t in study.trials}
    duplicates = int(rows.duplicated(["trial_id", "epoch"]).sum())
    if duplicates:
        problems.append(f"{duplicates} duplicated epoch rows")
    if len(ot) != samples:
        problems.append(f"{len(ot)} Optuna trials, expected {samples}")
    if set(trials.index) != set(ot):
        problems.append(f"trial rows {sorted(trials.index)} vs Optuna {sorted(ot)}")
    want = {"COMPLETE": "completed", "PRUNED": "stopped", "FAIL": "error"}
    lost = 0
    multi = len(study.directions) > 1
    for key, t in ot.items():
        got = sorted(rows.loc[rows.trial_id == key, "epoch"])
        n = epochs if t.state.name == "COMPLETE" else len(got)
        lost += max(0, n - len(got))
        if got != list(range(1, n + 1)):
            problems.append(f"{key} ({t.state.name}): epochs {got}")
        if want.get(t.state.name) != (trials.loc[key, "status"] if key in trials.index else None):
            problems.append(f"{key}: Optuna {t.state.name}, parquet "
                            f"{trials.loc[key, 'status'] if key in trials.index else 'no row'}")
        steps = (sorted({int(k.split("@")[1]) for k in t.user_attrs if "@" in k}) if multi
                 else sorted(t.intermediate_values))
        if t.state.name != "FAIL" and steps != got:
            problems.append(f"{key}: Optuna has epochs {steps}, parquet {got}")
    trained = trained_epochs(storage / name, faults_file)
    missing = [k for k in zip(rows.trial_id, rows.epoch) if trained[k] == 0]
    if missing:
        problems.append(f"epochs stored but never trained: {missing[:5]}")
    retrained = sum(c - 1 for c in trained.values() if c > 1)
    if retrained > kills * concurrency:
        problems.append(f"{retrained} epochs trained twice after {kills} kills: more than the "
                        f"work in flight ({concurrency} trials at once)")
    return {"rows": len(rows), "duplicates": duplicates, "lost": lost, "retrained": retrained,
            "optuna_states": dict(Counter(t.state.name for t in ot.values())), "problems": problems}
