"""How a trial ended, decided in one place for every record of it: the result store, Optuna, MLflow
and the console."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

COMPLETED, STOPPED = "completed", "stopped"
_ERROR_LINE = re.compile(r"^\s*([\w.]*(?:Error|Exception|Failure)): (.+)$")


def error_summary(text: str | None) -> str | None:
    """Returns the innermost ``Type: message`` line of a (Ray-wrapped) traceback, or its tail; a
    :class:`~transcenter.platform.errors.TrialFailure` is its message alone (it says what failed)."""
    if not text:
        return None
    lines = [m for m in (_ERROR_LINE.match(line) for line in text.splitlines()) if m]
    own = [m for m in lines if not m.group(1).startswith("ray.")]
    chosen = (own or lines)
    if chosen:
        kind, message = chosen[-1].group(1).rsplit(".", 1)[-1], chosen[-1].group(2)
        return (message if kind == "TrialFailure" else f"{kind}: {message}")[:2000]
    return text.strip().splitlines()[-1][:2000]


def ended_status(epoch: int, total_epochs: int) -> str:
    """Returns how a trial that ended without an error after ``epoch`` epochs ended:
    :data:`COMPLETED` when it trained every one of ``total_epochs``, else :data:`STOPPED` (early
    stopping ended it first)."""
    return COMPLETED if epoch >= total_epochs else STOPPED


def trial_error(trial: Any) -> str | None:
    """Returns :func:`error_summary` of a failed Tune trial's error file, or None when Tune wrote
    none. Tune writes the file locally before it calls a callback's ``on_trial_error``; its copy in
    storage comes later."""
    path = Path(trial.error_file) if getattr(trial, "error_file", None) else None
    return error_summary(path.read_text() if path and path.exists() else None)
