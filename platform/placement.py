"""The study's one placement-group cleaner, in the study driver: removes the worker placement group
that a trial's Train controller leaves behind when the trial ends without the controller shutting
its worker group down.

Tune stops a trial (ASHA, a stopper, the end of the study) by ending its trial actor; the Train
controller, which runs in that actor (:class:`~transcenter.platform.compat.LeanTorchTrainer`),
dies with it, and the worker group's placement group, owned by
the study's job, keeps its CPUs/GPUs until the job ends: later trials would wait for them. Ray
Train 2.60 starts a detached cleaner actor per run for this; a study needs one cleaner, so the
trials' controllers only record their group (:class:`~transcenter.platform.compat.PlacementGroupRecorder`)
and this Tune callback removes it once the trial has ended and the actor its controller ran in
is dead. A group
whose controller ended normally is already gone; removing it again does nothing.
"""
from __future__ import annotations

import logging
import time

import ray
from ray.tune import Callback
from ray.util.placement_group import PlacementGroup, remove_placement_group
from ray.util.state import get_actor

from transcenter.platform.trial_files import recorded_placement_group, run_dir, split_config

logger = logging.getLogger(__name__)


class PlacementGroupCleaner(Callback):
    """Tune callback: for every trial that ended, removes the placement group recorded in its run
    folder under ``train_dir`` once the controller that created it is dead.

    Args:
        train_dir: ``<study>/train``, the trials' run folders.
        interval_s: Seconds between two looks at the ended trials (Tune's loop runs far more often).
        blind_s: After this many seconds without an answer from the State API about a controller,
            its group is removed anyway.
    """

    def __init__(self, train_dir: str, interval_s: float = 1.0, blind_s: float = 60.0) -> None:
        self.train_dir = train_dir
        self.interval_s = interval_s
        self.blind_s = blind_s
        self._ended: dict[str, float] = {}  # run folder -> monotonic time its trial ended
        self._last_look = 0.0

    @property
    def pending(self) -> int:
        """Ended trials whose group is still to be looked at."""
        return len(self._ended)

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self._ended[run_dir(self.train_dir, split_config(trial.config)[0])] = time.monotonic()

    on_trial_error = on_trial_complete

    def on_step_begin(self, iteration, trials, **info) -> None:
        now = time.monotonic()
        if not self._ended or now - self._last_look < self.interval_s:
            return
        self._last_look = now
        for run, ended in list(self._ended.items()):
            if self._release(run, now - ended):
                del self._ended[run]

    def _release(self, run: str, waited_s: float) -> bool:
        """Removes the group of run folder ``run`` if its controller is dead; returns whether the
        run needs no further look (removed, or no group recorded)."""
        recorded = recorded_placement_group(run)
        if recorded is None:
            return True
        group_id, controller_id = recorded
        try:
            controller = get_actor(controller_id, address=ray.get_runtime_context().gcs_address,
                                   timeout=5)
        except Exception as e:
            logger.debug("placement group of %s: no answer about its controller (%s)", run, e)
            if waited_s < self.blind_s:
                return False
        else:
            if controller is not None and controller.state != "DEAD":
                return False
        remove_placement_group(PlacementGroup(ray.PlacementGroupID(bytes.fromhex(group_id))))
        logger.debug("removed placement group %s of %s", group_id, run)
        return True
