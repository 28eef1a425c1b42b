"""The study's one placement-group cleaner, in the study driver: removes the worker placement group
that a trial's Train controller leaves behind when the trial ends without the controller shutting
its worker group down.

Tune stops a trial (ASHA, a stopper, the end of the study) by ending its trial actor; the Train
controller, which runs in that actor (:class:`~transcenter.platform.compat.LeanTorchTrainer`),
dies with it, and the worker group's placement group, owned by the study's job, keeps its
CPUs/GPUs until the job ends: later trials would wait for them. The same holds for the group a
finished trial keeps for its actor's next trial (:class:`~transcenter.platform.compat.WarmWorkerGroup`)
when Tune ends that actor instead. Ray Train 2.60 starts a detached cleaner actor per run for
this; a study needs one cleaner, so the trials' controllers only record their group
(:class:`~transcenter.platform.compat.PlacementGroupRecorder`) and this Tune callback removes it
once the trial has ended and the actor its controller ran in is dead, and at the end of the study.
A group whose controller shut it down is already gone; removing it again does nothing.
"""
from __future__ import annotations

import logging
import time

import ray
from ray.tune import Callback
from ray.util.placement_group import PlacementGroup, placement_group_table, remove_placement_group
from ray.util.state import get_actor, list_actors

from transcenter.platform.trial_files import recorded_placement_group, run_dir, split_config

logger = logging.getLogger(__name__)


class PlacementGroupCleaner(Callback):
    """Tune callback: for every trial that ended, removes the placement group recorded in its run
    folder under ``train_dir`` once the controller that created it is dead, and at the end of the
    study every such group still there.

    A trial actor that Tune reuses keeps a finished trial's worker group for its next trial
    (:class:`~transcenter.platform.compat.WarmWorkerGroup`), so a group outlives its trial while
    its actor lives; the cleaner follows each group once, whichever trials used it.

    Args:
        train_dir: ``<study>/train``, the trials' run folders.
        interval_s: Seconds between two looks at the ended trials' groups (Tune's loop runs far
            more often).
        blind_s: After this many seconds without an answer from the State API about the
            controllers, the groups whose trial ended that long ago are removed anyway.
    """

    def __init__(self, train_dir: str, interval_s: float = 1.0, blind_s: float = 60.0) -> None:
        self.train_dir = train_dir
        self.interval_s = interval_s
        self.blind_s = blind_s
        # group id (hex) -> (its controller's actor id, monotonic time its latest trial ended)
        self._groups: dict[str, tuple[str, float]] = {}
        self._last_look = 0.0

    @property
    def pending(self) -> int:
        """Groups of ended trials still to be removed or found gone."""
        return len(self._groups)

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        recorded = recorded_placement_group(run_dir(self.train_dir, split_config(trial.config)[0]))
        if recorded is not None:  # None: stopped before its worker group started
            group, controller = recorded
            self._groups[group] = (controller, time.monotonic())

    on_trial_error = on_trial_complete

    def on_step_begin(self, iteration, trials, **info) -> None:
        now = time.monotonic()
        if not self._groups or now - self._last_look < self.interval_s:
            return
        self._last_look = now
        self._look(now)

    def on_experiment_end(self, trials, **info) -> None:
        # Every trial has ended and Tune has stopped its actors: no group serves a trial any more.
        for group in list(self._groups):
            remove_group(group)
        self._groups.clear()

    def _look(self, now: float) -> None:
        """Forgets the groups already removed, and removes those whose controller is dead."""
        states = placement_group_table()
        for group in [g for g in self._groups if states.get(g, {}).get("state") in (None, "REMOVED")]:
            del self._groups[group]
        if not self._groups:
            return
        alive = _live_actors({controller for controller, _ in self._groups.values()})
        for group, (controller, ended) in list(self._groups.items()):
            if alive is None and now - ended < self.blind_s:
                continue
            if alive is None or controller not in alive:
                remove_group(group)
                del self._groups[group]


def _live_actors(ids: set[str], limit: int = 10_000) -> set[str] | None:
    """Returns which of the actor ids ``ids`` are not dead, or None when the State API does not
    answer. One listing of the cluster's live actors; one question per id where there are more
    live actors than a listing returns."""
    address = ray.get_runtime_context().gcs_address
    try:
        live = list_actors(filters=[("state", "!=", "DEAD")], limit=limit, detail=False,
                           address=address, timeout=5)
        if len(live) < limit:
            return ids & {actor.actor_id for actor in live}
        return {i for i in ids
                if getattr(get_actor(i, address=address, timeout=5), "state", "DEAD") != "DEAD"}
    except Exception as e:
        logger.debug("placement groups: no answer about their controllers (%s)", e)
        return None


def remove_group(group: str) -> None:
    """Removes the placement group with hex id ``group`` (nothing if it is already gone)."""
    remove_placement_group(PlacementGroup(ray.PlacementGroupID(bytes.fromhex(group))))
    logger.debug("removed placement group %s", group)
