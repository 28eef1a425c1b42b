"""Simulated time: the study's own searcher and scheduler driven by a discrete-event clock.

No Ray, no sleeping. The same :class:`~transcenter.platform.search.StudySearch` (with its Optuna
study) and the same scheduler (:func:`~transcenter.platform.schedulers.make_scheduler`) that a
real study uses are called through their public callbacks, in the order Tune calls them, at the
instants a simulated clock gives: ``slots`` trials at once, each epoch taking the learning curve's
simulated seconds. This is how Syne Tune's simulator back-end works; a study of thousands of
trials runs in seconds. ``tests/test_simulate.py`` checks that its decisions (stops, suggested
configurations) equal those of the real-time simulated study on the same curves.

Tune's order per result: the scheduler decides; unless it stops the trial, the searcher gets the
result; a trial that stops (or reports its last epoch) is then completed in the scheduler and
the searcher, and a new trial starts in its slot.
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Any

from ray.tune.schedulers import TrialScheduler

from transcenter.platform.audited_asha import AuditedASHA, RungAudit
from transcenter.platform.schedulers import Stopping, make_scheduler
from transcenter.platform.search import Constraint, SearchSpace, make_searcher
from transcenter.platform.simulate import SimulationSpec
from transcenter.platform.trial_files import split_config

NO_STOPPING = Stopping("none")


@dataclass
class _Trial:
    """What Tune's schedulers read of a trial."""

    trial_id: str
    config: dict[str, Any] = field(default_factory=dict)
    status: str = "RUNNING"


@dataclass(frozen=True)
class SimulatedTrial:
    """One trial of a simulated-time study.

    Attributes:
        key: The trial's name (``trial-00007`` for Optuna trial 7).
        params: Its searched parameters.
        epochs: Epochs it ran before it stopped or finished.
        start_s, end_s: When it started and ended on the simulated clock, seconds.
        last: The metrics of its last epoch.
    """

    key: str
    params: dict[str, Any]
    epochs: int
    start_s: float
    end_s: float
    last: dict[str, float]


@dataclass(frozen=True)
class SimulatedStudy:
    """The outcome of :func:`run_simulated_time`: its trials in the order they ended, the
    simulated wall time (seconds) from the first start to the last end, and the scheduler's rung
    audit (:meth:`~transcenter.platform.audited_asha.AuditedASHA.audit`; empty for other
    schedulers)."""

    trials: list[SimulatedTrial]
    wall_s: float
    audit: list[RungAudit] = field(default_factory=list)

    @property
    def busy_s(self) -> float:
        """Seconds of slot time the trials used (their summed durations)."""
        return sum(t.end_s - t.start_s for t in self.trials)


def run_simulated_time(space: SearchSpace, objectives: dict[str, str], sim: SimulationSpec,
                       samples: int, slots: int, storage_url: str, study_name: str,
                       sampler: str = "tpe", seed: int = 0, stopping: Stopping = NO_STOPPING,
                       constraints: tuple[Constraint, ...] = ()) -> SimulatedStudy:
    """Runs a study of ``samples`` simulated trials, ``slots`` at once, on a simulated clock with
    the real searcher (its Optuna study in ``storage_url``) and scheduler; returns its trials.

    Ties on the clock are broken by the order the events were scheduled, so a run is
    deterministic for a seeded sampler.
    """
    if samples < 1 or slots < 1:
        raise ValueError(f"samples={samples}, slots={slots}: both must be >= 1")
    curves = sim.curves()
    searcher = make_searcher(space, objectives, storage_url, study_name, sim.epochs, sampler,
                             seed, constraints)
    scheduler = make_scheduler(objectives, sim.epochs, stopping)
    events: list[tuple[float, int, str, int, dict]] = []  # (clock s, order, trial, epoch, metrics)
    running: dict[str, tuple[_Trial, str, dict[str, Any], float]] = {}
    ended: list[SimulatedTrial] = []
    order = 0

    def schedule(clock: float, trial_id: str, params: dict[str, Any], epoch: int) -> None:
        nonlocal order
        metrics = curves.metrics(params, epoch)
        heapq.heappush(events, (clock + metrics["time_s"], order, trial_id, epoch, metrics))
        order += 1

    def start(clock: float) -> None:
        trial_id = f"sim_{len(running) + len(ended):06d}"
        config = searcher.suggest(trial_id)
        key, params = split_config(config)
        trial = _Trial(trial_id, config)
        scheduler.on_trial_add(None, trial)
        running[trial_id] = (trial, key, params, clock)
        schedule(clock, trial_id, params, 1)

    for _ in range(min(slots, samples)):
        start(0.0)
    clock = 0.0
    while events:
        clock, _, trial_id, epoch, metrics = heapq.heappop(events)
        trial, key, params, began = running[trial_id]
        result = {**metrics, "training_iteration": epoch}
        decision = scheduler.on_trial_result(None, trial, result)
        if decision != TrialScheduler.STOP:
            searcher.on_trial_result(trial_id, result)
        if decision == TrialScheduler.STOP or epoch == sim.epochs:
            scheduler.on_trial_complete(None, trial, result)
            searcher.on_trial_complete(trial_id, result)
            del running[trial_id]
            ended.append(SimulatedTrial(key, params, epoch, began, clock, result))
            if len(running) + len(ended) < samples:
                start(clock)
        else:
            schedule(clock, trial_id, params, epoch + 1)
    audit = scheduler.audit() if isinstance(scheduler, AuditedASHA) else []
    return SimulatedStudy(ended, clock, audit)
