"""What a resumed study trusts, and how ``--resume`` brings the stores into agreement.

A study keeps state in four places, written in this order for every epoch and every trial end:

1. the trial's **Ray Train checkpoint** (``train/<trial>/``): the model and every epoch's report so
   far, written before the epoch is reported;
2. the **Optuna database**: the trial (asked before it starts), each epoch's objective value, and
   its end (told COMPLETE, PRUNED or FAIL); each write is one database transaction;
3. the **parquet store** (``epochs/``, ``trials/``): each epoch's row, then the trial's summary row;
4. **Tune's experiment snapshot** (``tune/``), saved every few seconds.

Source of truth:

- *Which trials exist, their parameters and whether they have ended*: Optuna. A trial is named by
  its Optuna number (``trial-00007``) in parquet and in ``train/``, so a name survives any restart.
- *What each epoch measured*: the checkpoint. Parquet and Optuna's intermediate values are copies;
  a resumed trial reports its checkpoint's epochs again, and both fill what they miss (keyed by
  epoch, so nothing doubles).
- *How a trial ended*: Optuna's state; where Optuna still says RUNNING, a summary row in parquet
  (Optuna refused the tell, e.g. a NaN value).
- Tune's snapshot is never read: it can lag the other stores by seconds. Every ``--resume`` runs a
  new Tune experiment over what the stores say is left.

:func:`reconcile` runs before any trial of a resumed study. Each combination has one outcome:

=========================  ============================  =========================================
Optuna                     parquet                       outcome
=========================  ============================  =========================================
COMPLETE / PRUNED          summary row missing or        last epoch row marked ``completed`` /
                           saying otherwise              ``stopped``, summary row written
FAIL                       summary row missing or        summary row ``error`` with the trial's
                           saying otherwise              failure line, if it left one
ended, agreeing            anything                      nothing
RUNNING                    summary row with an end       Optuna told that end (FAIL if it refuses)
RUNNING                    no summary row                resumed from its checkpoint under its own
                                                         name, its epochs reported again; a trial
                                                         with no checkpoint starts over
=========================  ============================  =========================================

Temporary files of interrupted parquet writes are deleted. Rows of trials Optuna does not know are
left alone, with a warning.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import TrialState

from transcenter.platform.trial_files import read_failure, run_dir, trial_key
from transcenter.store.results import ResultStore

logger = logging.getLogger(__name__)

_END_STATUS = {TrialState.COMPLETE: "completed", TrialState.PRUNED: "stopped",
               TrialState.FAIL: "error"}
_STATE_OF_STATUS = {status: state for state, status in _END_STATUS.items()}
LOST_ERROR = "failed; the study driver stopped before it recorded the error"


@dataclass
class Reconciled:
    """What :func:`reconcile` found and did."""

    finished: int = 0  # trials that have ended (COMPLETE, PRUNED, FAIL)
    unfinished: tuple[optuna.trial.FrozenTrial, ...] = ()  # RUNNING: to resume, by number
    actions: list[str] = field(default_factory=list)  # one line per repair, for the log


def reconcile(study: optuna.Study, store: ResultStore, train_dir: str,
              params_of: Callable[[dict[str, Any]], dict[str, Any]], metrics: list[str]) -> Reconciled:
    """Brings parquet and Optuna into agreement (see the module docstring) and returns what is left.

    Args:
        study: The study's Optuna study.
        store: Its result store.
        train_dir: The folder of its Ray Train runs (``<study>/train``), for failure lines.
        params_of: A trial's searched values -> its rows' hyperparameters, as the study's
            :class:`~transcenter.platform.callbacks.ResultStoreCallback` stores them.
        metrics: The objective metric names, in the Optuna study's direction order.
    """
    out = Reconciled()
    removed = store.remove_temporaries()
    if removed:
        out.actions.append(f"removed {removed} temporary file(s) of interrupted writes")
    rows = store.read_trials()
    ended = dict(zip(rows["trial_id"], rows["status"])) if len(rows) else {}
    finals = rows.set_index("trial_id") if len(rows) else None
    known = set()
    unfinished = []
    for trial in study.get_trials(deepcopy=False):
        key = trial_key(trial.number)
        known.add(key)
        params = params_of(trial.params)
        status = ended.get(key)
        if trial.state in _END_STATUS:
            out.finished += 1
            want = _END_STATUS[trial.state]
            if status == want:
                continue
            error = None
            if want == "error":
                error = read_failure(run_dir(train_dir, key)) or LOST_ERROR
            else:
                store.mark_last_epoch(key, want)
            store.record_trial(key, params, want, error=error)
            out.actions.append(f"{key}: Optuna {trial.state.name}, parquet "
                               f"{status or 'without a summary'}: summary written ({want})")
        elif trial.state == TrialState.RUNNING and status in _STATE_OF_STATUS:
            out.finished += 1
            state = _tell(study, trial, status, finals.loc[key], metrics)
            out.actions.append(f"{key}: parquet {status}, Optuna RUNNING: told {state.name}")
        elif trial.state == TrialState.RUNNING:
            unfinished.append(trial)
    out.unfinished = tuple(sorted(unfinished, key=lambda t: t.number))
    strangers = sorted(set(ended) - known)
    if strangers:
        logger.warning("parquet has %d trial(s) Optuna does not know, left as they are: %s",
                       len(strangers), ", ".join(strangers[:5]))
    for line in out.actions:
        logger.warning("resume: %s", line)
    return out


def _tell(study: optuna.Study, trial: optuna.trial.FrozenTrial, status: str, final, metrics):
    """Tells Optuna the end parquet recorded; FAIL when Optuna refuses the values. Returns the
    state told."""
    state = _STATE_OF_STATUS[status]
    values = None
    if state == TrialState.COMPLETE:
        values = [final.get(f"final.{m}") for m in metrics]
        if not all(isinstance(v, float) and math.isfinite(v) for v in values):
            state, values = TrialState.FAIL, None
    study.tell(trial.number, values, state=state)
    return state
