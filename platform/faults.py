"""Fault injection for the platform's own fault tests and benchmarks; off unless switched on.

Switched on by ``TRANSCENTER_FAULTS=<path of a JSON file>`` in the environment of Ray's worker
processes (the test cluster's ``ray start`` sets it) and, for faults in the study driver, of the
driver; nothing in production does. The file holds a list of faults; each fires once (its
``marker`` file remembers). Two kinds of entry:

**Worker faults** fire on rank 0 of the first trial whose configuration matches (each trial
checks every matching fault)::

    {"match": {"loss.cls_weight": 1.0},   # dotted config values selecting the trials (may be empty)
     "kind": "kill",                      # raise | kill | nan | oom | missing_file | kill_driver |
                                          # fill_disk
     "epoch": 2, "when": "after",         # before: as the epoch starts; after: trained, not
                                          # checkpointed; checkpoint_written: checkpoint file
                                          # written, not yet handed to Ray Train; reported:
                                          # checkpoint registered by Ray Train
     "marker": "/tmp/x/killed"}

``raise`` raises a RuntimeError (an infrastructure fault: Ray Train retries it), ``kill`` SIGKILLs
the worker process, ``nan``, ``oom`` and ``missing_file`` raise what a diverged epoch, an
out-of-memory epoch and bad input raise (the trial fails at once), and ``kill_driver`` SIGKILLs the
study driver (its pid is in ``<faults file>.driver-pid``, written by :func:`arm_driver`), and
``fill_disk`` fills the file system of the fault's ``"path"`` (a file it writes) and lets the trial go
on into the full disk. While
injection is on, rank 0 also records every epoch it trains (:func:`record_trained`).

**Driver kill points** SIGKILL the study driver right after one of its writes (:data:`POINTS`)::

    {"point": "epoch_stored", "nth": 2, "marker": "/tmp/x/epoch_stored"}

fires the ``nth`` (default 1st) time the driver passes that point in one run.
"""
from __future__ import annotations

import errno
import json
import os
import signal
from collections import Counter
from pathlib import Path
from typing import Any

ENV = "TRANSCENTER_FAULTS"

# Where the study driver can be killed, each right after the write it names.
POINTS = (
    "trial_created",   # Optuna asked for the trial (the trial exists in Optuna only)
    "epoch_reported",  # an epoch's value went to Optuna (not yet to parquet)
    "epoch_stored",    # an epoch's row was written to parquet
    "parquet_write",   # a parquet file was written to its temporary name, not yet moved in place
    "trial_told",      # Optuna was told the trial's end (COMPLETE / PRUNED / FAIL)
    "trial_stored",    # the trial's summary row was written to parquet
    "snapshot_saved",  # Tune saved its experiment snapshot
)
_passed: Counter = Counter()  # driver kill points passed in this process
_read: tuple[tuple, list[dict]] = ((), [])  # (path, mtime, size) of the fault file read, its faults


def _faults() -> list[dict]:
    """Returns the fault file's faults: none while ``ENV`` is unset (no file access); the file is
    parsed again only when its path, modification time or size changes."""
    global _read
    path = os.environ.get(ENV)
    if not path:
        return []
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return []
    key = (path, stat.st_mtime_ns, stat.st_size)
    if _read[0] != key:
        _read = (key, json.loads(Path(path).read_text()))
    return _read[1]


def _fire_once(fault: dict) -> bool:
    """True the first time ``fault`` fires (its marker did not exist); leaves the marker."""
    marker = Path(fault["marker"])
    if marker.exists():
        return False
    marker.write_text(json.dumps(fault))
    return True


def arm_driver() -> None:
    """Records this process as the study driver that ``kill_driver`` faults kill (no-op while
    fault injection is off)."""
    path = os.environ.get(ENV)
    if path:
        Path(f"{path}.driver-pid").write_text(str(os.getpid()))


def kill_point(point: str) -> None:
    """SIGKILLs this process (the study driver) if a fault is due at ``point`` (one of
    :data:`POINTS`); returns at once while fault injection is off."""
    if point not in POINTS:
        raise ValueError(f"kill point {point!r}: not one of {POINTS}")
    faults = [f for f in _faults() if f.get("point") == point]
    if not faults:
        return
    _passed[point] += 1
    for fault in faults:
        if fault.get("nth", 1) == _passed[point] and _fire_once(fault):
            os.kill(os.getpid(), signal.SIGKILL)


def record_trained(run_dir: str, epoch: int) -> None:
    """Appends ``<trial's run folder> <epoch>`` to ``<faults file>.trained`` (no-op while fault
    injection is off): the fault tests count from it how often each epoch was trained. A local
    append, so a line written survives the process being killed right after."""
    path = os.environ.get(ENV)
    if path:
        with open(f"{path}.trained", "a") as f:
            f.write(f"{run_dir} {epoch}\n")


def faults_for(overrides: dict[str, Any]) -> list[dict]:
    """Returns the worker faults whose ``match`` the trial's ``overrides`` satisfy (always none
    while fault injection is off)."""
    return [f for f in _faults() if "point" not in f
            and all(overrides.get(k) == v for k, v in f.get("match", {}).items())]


def maybe_inject(trial_faults: list[dict], epoch: int, when: str, rank: int) -> None:
    """Fires the first of ``trial_faults`` due at ``epoch`` (1-based) and ``when``, on rank 0,
    once."""
    due = [f for f in trial_faults if f.get("epoch") == epoch and f.get("when", "after") == when]
    if rank != 0 or not due or not _fire_once(due[0]):
        return
    fault = due[0]
    import torch

    from transcenter.model.training.engine import DivergedError

    kind = fault.get("kind", "raise")
    if kind == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if kind == "kill_driver":
        os.kill(int(Path(f"{os.environ[ENV]}.driver-pid").read_text()), signal.SIGKILL)
        return
    if kind == "nan":
        raise DivergedError(f"loss diverged (NaN/inf) at epoch {epoch}, step 1: loss_pos (injected)")
    if kind == "oom":
        raise torch.OutOfMemoryError(f"CUDA out of memory at epoch {epoch} (injected)")
    if kind == "fill_disk":
        fill(fault["path"])
        return
    if kind == "missing_file":
        raise FileNotFoundError(f"injected: no such file at epoch {epoch}")
    raise RuntimeError(f"injected fault at epoch {epoch}")


def fill(path: str) -> int:
    """Writes zeros to the file ``path`` until its file system has no space left; returns the bytes
    written."""
    written, chunk = 0, b"\0" * 2**20
    with open(path, "wb", buffering=0) as f:
        try:
            while True:
                written += f.write(chunk)
        except OSError as e:
            if e.errno != errno.ENOSPC:
                raise
    return written
