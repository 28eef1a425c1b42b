"""Tune driver-side callback that writes every reported epoch to the parquet result store."""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from ray.tune import Callback

from transcenter.platform.faults import kill_point
from transcenter.platform.outcome import ended_status, trial_error
from transcenter.platform.trial_files import DEVICE_KEY, NODE_KEY, split_config
from transcenter.store.metric_names import AP_KEYS, COST_KEYS, EXTRA_KEYS, LOSS_KEYS, PER_CLASS_AP50_PREFIX
from transcenter.store.results import ResultStore

logger = logging.getLogger(__name__)

class ResultStoreCallback(Callback):
    """Writes one parquet row per (trial, epoch) as results arrive, and one trial row at the end.

    Rows are keyed by the trial's name (its Optuna number, :func:`trial_key`) and epoch: a resumed
    trial re-reporting an epoch replaces that epoch's row, so a retried or resumed study neither
    loses nor duplicates rows. Tune calls the searcher before this callback, so Optuna hears of an
    epoch or a trial's end before parquet does (:mod:`transcenter.platform.reconcile` relies on it).


    Args:
        params_of: a trial's searched values -> its rows' hyperparameters (every scalar field of
            the configuration it trained: :class:`~transcenter.platform.columns.TrialColumns`).
    """

    def __init__(self, store: ResultStore, total_epochs: int,
                 params_of: Callable[[dict[str, Any]], dict[str, Any]]):
        self.store = store
        self.total_epochs = total_epochs
        self.params_of = params_of

    def _key_params(self, trial) -> tuple[str, dict[str, Any]]:
        key, params = split_config(trial.config)
        return key, self.params_of(params)

    @staticmethod
    def _metrics(result: dict[str, Any]) -> dict[str, float]:
        keys = LOSS_KEYS + AP_KEYS + EXTRA_KEYS + COST_KEYS
        per_class = [k for k in result if k.startswith(PER_CLASS_AP50_PREFIX)]
        return {k: float(result[k]) for k in (*keys, *per_class)
                if isinstance(result.get(k), (int, float))}

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        if "epoch" not in result:
            return
        key, params = self._key_params(trial)
        self.store.record_epoch(key, int(result["epoch"]), params, self._metrics(result),
                                status="running", time_s=result.get("time_s"),
                                node_ip=result.get(NODE_KEY), device=result.get(DEVICE_KEY))
        kill_point("epoch_stored")

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        last = trial.last_result or {}
        epoch = int(last.get("epoch", 0))
        status = ended_status(epoch, self.total_epochs)
        key, params = self._key_params(trial)
        if epoch:
            self.store.record_epoch(key, epoch, params, self._metrics(last), status=status,
                                    time_s=last.get("time_s"), node_ip=last.get(NODE_KEY),
                                    device=last.get(DEVICE_KEY))
        self.store.record_trial(key, params, status)
        kill_point("trial_stored")

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        message = trial_error(trial)
        key, params = self._key_params(trial)
        logger.warning("trial %s failed: %s", key, message)
        self.store.record_trial(key, params, "error", error=message)
        kill_point("trial_stored")

    def get_state(self) -> None:
        # Tune calls this as it saves its experiment snapshot, after the snapshot's trial states.
        kill_point("snapshot_saved")
        return

