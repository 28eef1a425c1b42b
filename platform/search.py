"""Search spaces over dotted config names, and Optuna as the Tune searcher.

A space is declarative (``{"loss.alpha": Float(1, 4)}``); :class:`SearchSpace` is its picklable
define-by-run function (Tune pickles the searcher into its experiment snapshot). Values are validated
against the trial configuration before any trial starts.
"""
from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import optuna
from ray.tune import Callback
from ray.tune.search.optuna import OptunaSearch

from transcenter.model.training.experiment import trial_config
from transcenter.platform.compat import (
    close_optuna_trial,
    held_optuna_trials,
    open_optuna_trial,
    optuna_study,
    suggest_params,
    trial_handle,
)
from transcenter.platform.faults import kill_point
from transcenter.platform.optuna_db import OUTAGE_S, open_storage, retrying
from transcenter.platform.outcome import STOPPED, ended_status
from transcenter.platform.trial_files import TRIAL_NUMBER_KEY

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

    @classmethod
    def from_description(cls, description: dict[str, dict[str, Any]]) -> SearchSpace:
        """Returns the space :meth:`describe` gave ``description`` for (``study.json``'s
        ``search_space``)."""
        params: dict[str, Categorical | Float] = {}
        for name, spec in description.items():
            if spec["type"] == "float":
                params[name] = Float(spec["low"], spec["high"], spec.get("log", False))
            elif spec["type"] == "categorical":
                params[name] = Categorical(spec["values"])
            else:
                raise ValueError(f"search space parameter {name!r}: unknown type {spec['type']!r}")
        return cls(params)

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


@dataclass(frozen=True)
class Constraint:
    """A bound on a reported metric, e.g. ``gmacs<=50``: Optuna's samplers prefer trials that keep it
    (``Trial.set_constraint``: feasible when the violation is <= 0)."""

    metric: str
    op: str  # "<=" or ">="
    bound: float

    @classmethod
    def parse(cls, text: str) -> Constraint:
        """Reads ``<metric><=<number>`` or ``<metric>>=<number>``.

        Raises:
            ValueError: naming the text when it is not of that form.
        """
        for op in ("<=", ">="):
            name, sep, bound = text.partition(op)
            if sep and name.strip():
                try:
                    return cls(name.strip(), op, float(bound))
                except ValueError:
                    break
        raise ValueError(f"--constraint {text!r}: expected <metric><=<number> or <metric>>=<number>, "
                         f"e.g. gmacs<=50")

    def __str__(self) -> str:
        return f"{self.metric}{self.op}{self.bound:g}"

    def violation(self, value: float) -> float:
        """How far ``value`` is past the bound (<= 0: the constraint holds)."""
        return value - self.bound if self.op == "<=" else self.bound - value


class StudySearch(OptunaSearch):
    """``OptunaSearch`` that names each trial by its Optuna number, records early-stopped trials as
    PRUNED, keeps every objective's per-epoch values, sets constraints, and hands a resumed
    study's unfinished trials out again before it asks for new ones.

    Upstream tells Optuna COMPLETE with the last (early-epoch) value when ASHA stops a trial, so
    TPE would treat an epoch-2 AP50 as final. Here a trial whose last reported ``epoch`` is below
    ``total_epochs`` is PRUNED (its intermediate values stay); failed trials are FAIL. Intermediate
    values are reported per ``epoch`` rather than per Tune iteration, each epoch once, so a resumed
    trial continues its curve instead of restarting it. A multi-objective Optuna study cannot store
    intermediate values (upstream drops them): each objective's value of each epoch becomes the
    user attribute ``<metric>@<epoch>``. Each constraint is set once, from the first result that
    reports its metric.

    Every call to the database is retried while its connection is lost, for up to ``outage_s``
    seconds (:func:`~transcenter.platform.optuna_db.retrying`); each is safe to repeat: reports and
    attributes overwrite the same key, an ``ask`` takes over the trial its cut reply created, a
    ``tell`` is skipped when the trial is already finished (the outage cut the reply to a commit),
    and parameters already set are read back.

    Args:
        unfinished: Optuna trials of a resumed study still RUNNING (see
            :mod:`transcenter.platform.reconcile`): the first suggestions are these trials again, with
            the parameters they had, so they resume from their checkpoints under their own names.
        database: The database's URL, for messages.
        outage_s: How long a call waits for a lost database before the study fails.
    """

    def __init__(self, *args, total_epochs: int, constraints: tuple[Constraint, ...] = (),
                 unfinished: tuple[optuna.trial.FrozenTrial, ...] = (), database: str = "",
                 outage_s: float = OUTAGE_S, **kwargs):
        super().__init__(*args, **kwargs)
        self.rdb: optuna.storages.RDBStorage | None = kwargs.get("storage")
        self.total_epochs = total_epochs
        self.constraints = constraints
        self.database, self.outage_s = database, outage_s
        self._unfinished = list(unfinished)
        self._reported: dict[str, set[int]] = {}  # epochs in Optuna, per Tune trial
        self._constrained: dict[str, set[str]] = {}  # constraints already set, per Tune trial

    def suggest(self, trial_id: str) -> dict | None:
        """Returns the Tune config of a new trial: its parameters by dotted name and its Optuna
        number under ``TRIAL_NUMBER_KEY``."""
        held = held_optuna_trials(self)
        if trial_id not in held:
            if self._unfinished:
                frozen = self._unfinished.pop(0)
                held[trial_id] = self._retrying(
                    lambda: trial_handle(optuna_study(self), frozen), "resume a trial")
                self._reported[trial_id] = set(frozen.intermediate_values)
                self._constrained[trial_id] = set(frozen.constraints)  # by name
            else:
                held[trial_id] = self._retrying(self._asker(), "ask")
                kill_point("trial_created")
        ot_trial = held[trial_id]
        params = self._retrying(lambda: suggest_params(self, ot_trial), "suggest")
        return {**params, TRIAL_NUMBER_KEY: ot_trial.number}

    def _asker(self) -> Callable[[], optuna.Trial]:
        """Returns a call that asks Optuna for a new trial. Called again after a lost connection, it
        takes over the trial whose creation the outage committed but cut the reply to (RUNNING,
        without parameters, held by no Tune trial) instead of creating a second one."""
        tries = 0

        def ask() -> optuna.Trial:
            nonlocal tries
            tries += 1
            study = optuna_study(self)
            if tries > 1:
                held = ({t.number for t in held_optuna_trials(self).values()}
                        | {t.number for t in self._unfinished})
                for frozen in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
                    if not frozen.params and frozen.number not in held:
                        return trial_handle(study, frozen)
            return study.ask()

        return ask

    def _retrying(self, call, what: str):
        return retrying(call, what, self.database, self.outage_s)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self._retrying(lambda: self._record(trial_id, result), "report")

    def _record(self, trial_id: str, result: dict) -> None:
        """Reports ``result``'s epoch and sets constraints first met in it (each once)."""
        ot_trial = open_optuna_trial(self, trial_id)
        epoch = result.get("epoch")
        if ot_trial is None or epoch is None:
            return
        done = self._constrained.setdefault(trial_id, set())
        for c in self.constraints:
            value = result.get(c.metric)
            if str(c) not in done and isinstance(value, (int, float)) and math.isfinite(value):
                ot_trial.set_constraint(str(c), c.violation(value))
                done.add(str(c))
        seen = self._reported.setdefault(trial_id, set())
        if int(epoch) in seen:
            return
        metrics = self.metric if isinstance(self.metric, list) else [self.metric]
        values = {m: result.get(m) for m in metrics}
        finite = {m: v for m, v in values.items() if isinstance(v, (int, float)) and math.isfinite(v)}
        if len(metrics) == 1 and finite:
            ot_trial.report(finite[metrics[0]], int(epoch))
        else:
            for m, v in finite.items():
                ot_trial.set_user_attr(f"{m}@{int(epoch)}", v)
        if finite:
            seen.add(int(epoch))
            kill_point("epoch_reported")

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        ot_trial = open_optuna_trial(self, trial_id)
        if ot_trial is None:
            return
        if result:  # the result a scheduler stopped the trial on never went through on_trial_result
            self.on_trial_result(trial_id, result)
        state, values = self._outcome(result, error)
        self._retrying(lambda: self._tell(ot_trial, state, values), "tell")
        close_optuna_trial(self, trial_id)
        kill_point("trial_told")

    def _outcome(self, result: dict | None, error: bool) -> tuple[optuna.trial.TrialState, Any]:
        """Returns the state and values to tell: PRUNED for a trial stopped before
        ``total_epochs``; else, as upstream, COMPLETE with the objectives' values, or FAIL (an
        error) or PRUNED when the result has none."""
        TrialState = optuna.trial.TrialState
        if not error and result is not None and \
                ended_status(int(result.get("epoch", 0)), self.total_epochs) == STOPPED:
            return TrialState.PRUNED, None
        metrics = self.metric if isinstance(self.metric, list) else [self.metric]
        values = [result.get(m) for m in metrics] if result else [None]
        if None in values:
            return (TrialState.FAIL if error else TrialState.PRUNED), None
        return TrialState.COMPLETE, values if isinstance(self.metric, list) else values[0]

    def _tell(self, ot_trial: optuna.Trial, state: optuna.trial.TrialState, values: Any) -> None:
        """Tells Optuna the trial's end, once: a trial already finished is left as it is."""
        try:
            optuna_study(self).tell(ot_trial, values, state=state, skip_if_finished=True)
        except (ValueError, TypeError) as e:  # a value Optuna refuses; reconcile reads the store
            logger.warning("Optuna refused the end of trial %d: %s", ot_trial.number, e)
        except RuntimeError as e:
            # The grid sampler calls Study.stop once its grid is used up, which Optuna refuses
            # outside Study.optimize; the trial's end is stored before that (Tune stops asking at
            # num_samples, the grid's size).
            if "Study.stop" not in str(e):
                raise


class CloseDatabase(Callback):
    """Tune callback: closes the searcher's connections to its Optuna database when the study
    ends, so that a SQLite database is one file again (its write-ahead log folded back in)."""

    def __init__(self, searcher: StudySearch) -> None:
        self.searcher = searcher

    def on_experiment_end(self, trials, **info) -> None:
        if self.searcher.rdb is not None:
            self.searcher.rdb.engine.dispose()


SAMPLERS = ("tpe", "mtpe", "nsga2", "random", "grid")


def make_searcher(space: SearchSpace, objectives: dict[str, str], storage_url: str, study_name: str,
                  total_epochs: int, sampler: str = "tpe", seed: int = 0,
                  constraints: tuple[Constraint, ...] = (),
                  unfinished: tuple[optuna.trial.FrozenTrial, ...] = (),
                  outage_s: float = OUTAGE_S) -> StudySearch:
    """Returns the study's searcher over ``space`` with its Optuna study in ``storage_url``.

    Args:
        objectives: Metric -> ``"max"``/``"min"``; several make a multi-objective Optuna study.
        sampler: ``"grid"`` sweeps the categorical grid with Optuna's ``GridSampler``; ``"tpe"``
            uses seeded TPE (Optuna's default, multi-objective too); ``"mtpe"`` multivariate TPE
            (one model of all parameters together: each ask reads the earlier trials once, not
            once per parameter, about 4× cheaper at 10,000 trials); ``"nsga2"`` NSGA-II;
            ``"random"`` random search. All land every trial in the same RDB, which
            optuna-dashboard reads.
        constraints: Bounds the samplers prefer trials to keep (:class:`Constraint`).
        unfinished: A resumed study's RUNNING trials, suggested again first (:class:`StudySearch`).
        outage_s: How long each database call waits for a lost connection (:class:`StudySearch`).
    """
    if sampler == "grid":
        ot_sampler = optuna.samplers.GridSampler(space.grid(), seed=seed)
    elif sampler in ("tpe", "mtpe"):
        with warnings.catch_warnings():  # multivariate: experimental in Optuna since 2.2
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            ot_sampler = optuna.samplers.TPESampler(seed=seed, multivariate=sampler == "mtpe")
    elif sampler == "nsga2":
        ot_sampler = optuna.samplers.NSGAIISampler(seed=seed)
    elif sampler == "random":
        ot_sampler = optuna.samplers.RandomSampler(seed=seed)
    else:
        raise ValueError(f"sampler={sampler!r}: must be one of {SAMPLERS}")
    metrics, modes = list(objectives), list(objectives.values())
    storage = retrying(lambda: open_storage(storage_url), "open", storage_url, outage_s)
    searcher = StudySearch(space=space, metric=metrics[0] if len(metrics) == 1 else metrics,
                           mode=modes[0] if len(modes) == 1 else modes, sampler=ot_sampler,
                           storage=storage, study_name=study_name, total_epochs=total_epochs,
                           constraints=tuple(constraints), unfinished=tuple(unfinished),
                           database=storage_url, outage_s=outage_s)
    # optuna-dashboard names the objectives by these ("AP50", not "Objective 0"); a resumed
    # study is given the same names again. Experimental in Optuna since 3.2, stable in use.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna_study(searcher).set_metric_names(metrics)
    return searcher
