"""Tune driver-side callback that writes every reported epoch to the parquet result store."""
from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from ray.tune import Callback

from transcenter.model.metric_names import (AP_KEYS, COST_KEYS, EXTRA_KEYS, LOSS_KEYS,
                                           PER_CLASS_AP50_PREFIX)
from transcenter.platform.trial_files import DEVICE_KEY, NODE_KEY
from transcenter.store.results import ResultStore

logger = logging.getLogger(__name__)

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


class ResultStoreCallback(Callback):
    """Writes one parquet row per (trial, epoch) as results arrive, and one trial row at the end.

    A resumed trial re-reporting an epoch replaces that epoch's row (the store is keyed by
    epoch), so a retried or resumed study neither loses nor duplicates rows.
    """

    def __init__(self, store: ResultStore, total_epochs: int, fixed_params: dict[str, Any]):
        self.store = store
        self.total_epochs = total_epochs
        self.fixed_params = fixed_params  # study hyperparameters not searched, stored as columns

    def _params(self, trial) -> dict[str, Any]:
        return {**self.fixed_params, **trial.config}

    @staticmethod
    def _metrics(result: dict[str, Any]) -> dict[str, float]:
        keys = LOSS_KEYS + AP_KEYS + EXTRA_KEYS + COST_KEYS
        per_class = [k for k in result if k.startswith(PER_CLASS_AP50_PREFIX)]
        return {k: float(result[k]) for k in (*keys, *per_class)
                if isinstance(result.get(k), (int, float))}

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        if "epoch" not in result:
            return
        self.store.record_epoch(trial.trial_id, int(result["epoch"]), self._params(trial),
                                self._metrics(result), status="running",
                                time_s=result.get("time_s"), node_ip=result.get(NODE_KEY),
                                device=result.get(DEVICE_KEY))

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        last = trial.last_result or {}
        epoch = int(last.get("epoch", 0))
        status = "completed" if epoch >= self.total_epochs else "stopped"
        if epoch:
            self.store.record_epoch(trial.trial_id, epoch, self._params(trial), self._metrics(last),
                                    status=status, time_s=last.get("time_s"),
                                    node_ip=last.get(NODE_KEY), device=last.get(DEVICE_KEY))
        self.store.record_trial(trial.trial_id, self._params(trial), status)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        # Tune writes the error file locally before this call; its copy in storage comes later.
        path = Path(trial.error_file) if trial.error_file else None
        message = error_summary(path.read_text() if path and path.exists() else None)
        logger.warning("trial %s failed: %s", trial.trial_id, message)
        self.store.record_trial(trial.trial_id, self._params(trial), "error", error=message)

