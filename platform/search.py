"""Search spaces over dotted config names, and Optuna as the Tune searcher.

A space is declarative (``{"loss.alpha": Float(1, 4)}``); :class:`SearchSpace` is its picklable
define-by-run function, so ``Tuner.restore`` can unpickle the searcher. Values are validated
against the trial configuration before any trial starts.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import optuna
from ray.tune.search.optuna import OptunaSearch

from transcenter.model.training.experiment import trial_config
from transcenter.platform.compat import close_optuna_trial, open_optuna_trial, optuna_study

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Categorical:
    """A choice among ``values`` (a grid axis when the study uses the grid sampler)."""

    values: tuple

    def __post_init__(self) -> None:
        object.__setattr__(self, "values", tuple(self.values))
        if not self.values:
            raise ValueError("Categorical needs at least one value")

    def suggest(self, trial: optuna.Trial, name: str) -> Any:
        return trial.suggest_categorical(name, list(self.values))

    def extremes(self) -> tuple:
        return self.values

    def describe(self) -> dict[str, Any]:
        """Returns ``{"type": "categorical", "values": [...]}`` (JSON-serialisable)."""
        return {"type": "categorical", "values": list(self.values)}

    def store_type(self) -> str | None:
        """Returns the result store's column type when the values mix ints and floats, else None."""
        numbers = [v for v in self.values if isinstance(v, (int, float)) and not isinstance(v, bool)]
        mixed = len(numbers) == len(self.values) and any(isinstance(v, float) for v in numbers)
        return "float64" if mixed else None


@dataclass(frozen=True)
class Float:
    """A float in ``[low, high]``, log-uniform when ``log``."""

    low: float
    high: float
    log: bool = False

    def __post_init__(self) -> None:
        if not (math.isfinite(self.low) and math.isfinite(self.high) and self.low <= self.high):
            raise ValueError(f"Float({self.low}, {self.high}): need finite low <= high")
        if self.log and self.low <= 0:
            raise ValueError(f"Float({self.low}, {self.high}, log=True): low must be > 0")

    def suggest(self, trial: optuna.Trial, name: str) -> float:
        return trial.suggest_float(name, self.low, self.high, log=self.log)

    def extremes(self) -> tuple:
        return (self.low, self.high)

    def describe(self) -> dict[str, Any]:
        """Returns ``{"type": "float", "low", "high", "log"}`` (JSON-serialisable)."""
        return {"type": "float", "low": self.low, "high": self.high, "log": self.log}

    def store_type(self) -> str:
        """Returns the result store's column type: always float64."""
        return "float64"


@dataclass(frozen=True)
class SearchSpace:
    """Dotted config name → parameter; callable as Optuna's define-by-run function."""

    params: dict[str, Categorical | Float] = field(default_factory=dict)

    def validate(self, preset: str | None, overrides: dict[str, Any]) -> None:
        """Raises ``ValueError`` naming the parameter for unknown names or invalid values."""
        for name, spec in self.params.items():
            for value in spec.extremes():
                try:
                    trial_config(preset, {**overrides, name: value})
                except ValueError as e:
                    raise ValueError(f"search space parameter {name!r} value {value!r}: {e}") from e

    def grid(self) -> dict[str, list]:
        """Returns the grid for Optuna's ``GridSampler``; every parameter must be categorical."""
        bad = [n for n, s in self.params.items() if not isinstance(s, Categorical)]
        if bad:
            raise ValueError(f"grid sampler needs categorical parameters; {bad} are not")
        return {n: list(s.values) for n, s in self.params.items()}

    def describe(self) -> dict[str, dict[str, Any]]:
        """Returns each parameter's description, stored with the study (``study.json``)."""
        return {name: spec.describe() for name, spec in self.params.items()}

    def store_types(self) -> dict[str, str]:
        """Returns the result store's declared column types of the parameters that need one."""
        return {name: t for name, spec in self.params.items() if (t := spec.store_type())}

    @property
    def grid_size(self) -> int:
        return math.prod(len(v) for v in self.grid().values())

    def __call__(self, trial: optuna.Trial) -> None:
        for name, spec in self.params.items():
            spec.suggest(trial, name)


class StudySearch(OptunaSearch):
    """``OptunaSearch`` that records early-stopped trials as PRUNED, not COMPLETE.

    Upstream tells Optuna COMPLETE with the last (early-epoch) value when ASHA stops a trial, so
    TPE would treat an epoch-2 AP50 as final. Here a trial whose last reported ``epoch`` is below
    ``total_epochs`` is PRUNED (its intermediate values stay); failed trials are FAIL. Intermediate
    values are reported per ``epoch`` rather than per Tune iteration, so a resumed trial continues
    its curve instead of restarting it.
    """

    def __init__(self, *args, total_epochs: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.total_epochs = total_epochs
        self._reported: dict[str, set[int]] = {}  # epochs already reported, per trial

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        ot_trial = open_optuna_trial(self, trial_id)
        value, epoch = result.get(self.metric), result.get("epoch")
        if ot_trial is None or value is None or epoch is None or not math.isfinite(value):
            return
        seen = self._reported.setdefault(trial_id, set())
        if int(epoch) not in seen:
            ot_trial.report(value, int(epoch))
            seen.add(int(epoch))

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        ot_trial = open_optuna_trial(self, trial_id)
        if ot_trial is None:
            return
        if result:  # the result a scheduler stopped the trial on never went through on_trial_result
            self.on_trial_result(trial_id, result)
        stopped_early = (not error and result is not None
                         and int(result.get("epoch", 0)) < self.total_epochs)
        if not stopped_early:
            super().on_trial_complete(trial_id, result, error)
            return
        optuna_study(self).tell(ot_trial, state=optuna.trial.TrialState.PRUNED)
        close_optuna_trial(self, trial_id)


def make_searcher(space: SearchSpace, metric: str, mode: str, storage_url: str, study_name: str,
                  total_epochs: int, sampler: str = "tpe", seed: int = 0) -> StudySearch:
    """Returns the study's searcher over ``space`` with its Optuna study in ``storage_url``.

    ``sampler="grid"`` sweeps the categorical grid with Optuna's ``GridSampler``; ``"tpe"``
    uses seeded TPE. Both land every trial in the same RDB, which optuna-dashboard reads.
    """
    if sampler == "grid":
        ot_sampler = optuna.samplers.GridSampler(space.grid(), seed=seed)
    elif sampler == "tpe":
        ot_sampler = optuna.samplers.TPESampler(seed=seed)
    else:
        raise ValueError(f"sampler={sampler!r}: must be 'tpe' or 'grid'")
    storage = optuna.storages.RDBStorage(storage_url)
    return StudySearch(space=space, metric=metric, mode=mode, sampler=ot_sampler,
                       storage=storage, study_name=study_name, total_epochs=total_epochs)
