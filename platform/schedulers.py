"""The study's trial schedulers: FIFO, Ray's ASHA on one objective, or multi-objective ASHA.

The ASHA variants skip results flagged as replayed (:data:`~transcenter.platform.trial_files.REPLAY_KEY`):
a resumed trial reports its checkpoint's earlier epochs again so that the stores get them, and a
scheduler deciding on those would stop a trial for an epoch it has long passed. The trial's latest
epoch comes unflagged, and the scheduler decides on it.
"""
from __future__ import annotations

from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler

from transcenter.platform.mo_asha import MultiObjectiveASHA
from transcenter.platform.trial_files import REPLAY_KEY


class _SkipsReplayed:
    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        if result.get(REPLAY_KEY):
            return TrialScheduler.CONTINUE
        return super().on_trial_result(tune_controller, trial, result)


class StudyASHA(_SkipsReplayed, ASHAScheduler):
    """Ray's ``ASHAScheduler``, blind to replayed results."""


class StudyMultiObjectiveASHA(_SkipsReplayed, MultiObjectiveASHA):
    """:class:`~transcenter.platform.mo_asha.MultiObjectiveASHA`, blind to replayed results."""


def make_scheduler(objectives: dict[str, str], asha: bool, epochs: int, grace_period: int,
                   reduction_factor: int) -> TrialScheduler:
    """Returns FIFO without ``asha``; else ASHA over ``epoch`` (rungs from ``grace_period``,
    ``max_t`` above ``epochs`` so the last epoch is never a rung), multi-objective when
    ``objectives`` has several metrics."""
    if not asha:
        return FIFOScheduler()
    # Both ASHAs answer STOP to a result at epoch >= max_t. max_t one above the last epoch lets a
    # trial that passed its rungs end by finishing (recorded completed), not by a STOP at its last
    # epoch (which the store and Optuna would record as stopped / pruned).
    rungs = dict(time_attr="epoch", max_t=epochs + 1, grace_period=grace_period,
                 reduction_factor=reduction_factor)
    if len(objectives) > 1:
        return StudyMultiObjectiveASHA(objectives, **rungs)
    (metric, mode), = objectives.items()
    return StudyASHA(metric=metric, mode=mode, **rungs)
