"""The study's trial schedulers: FIFO, Ray's ASHA (multi-objective ASHA on several objectives), or
the audited, stratified successive halving of :mod:`~transcenter.platform.audited_asha`.

The ASHA variants skip results flagged as replayed (:data:`~transcenter.platform.trial_files.REPLAY_KEY`):
a resumed trial reports its checkpoint's earlier epochs again so that the stores get them, and a
scheduler deciding on those would stop a trial for an epoch it has long passed. The trial's latest
epoch comes unflagged, and the scheduler decides on it.
"""
from __future__ import annotations

from dataclasses import dataclass

from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler

from transcenter.platform.audited_asha import AUDIT_SCOPES, AuditedASHA
from transcenter.platform.mo_asha import MultiObjectiveASHA
from transcenter.platform.trial_files import REPLAY_KEY

POLICIES = ("none", "asha", "audited")


@dataclass(frozen=True)
class Stopping:
    """How a study stops trials early.

    Attributes:
        policy: ``"none"`` (every trial trains every epoch), ``"asha"`` (Ray's ASHA; multi-objective
            ASHA with several objectives: every rung decides over every trial) or ``"audited"``
            (:class:`~transcenter.platform.audited_asha.AuditedASHA`: rungs per stratum, audited
            by sentinels).
        grace_period: The first rung, epochs.
        reduction_factor: About ``1/rf`` of the trials at a rung continue.
        stratify: ``"audited"``: the searched field whose values are the strata (None: one).
        sentinel_every: ``"audited"``: every n-th trial of a stratum is never stopped (0: none).
        min_tau: ``"audited"``: a rung whose Kendall τ against the final ranking falls below it
            stops deciding.
        audit_scope: ``"audited"``: ``"borrowed"`` (a stratum without enough audited pairs of its
            own is judged on every stratum's) or ``"own"`` (its rungs decide only once its own
            pairs agree) (:class:`~transcenter.platform.audited_asha.AuditedASHA`).
    """

    policy: str = "audited"
    grace_period: int = 1
    reduction_factor: int = 3
    stratify: str | None = None
    sentinel_every: int = 16
    min_tau: float = 0.5
    audit_scope: str = "borrowed"

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ValueError(f"--stopping {self.policy!r}: must be one of {', '.join(POLICIES)}")
        if self.grace_period < 1:
            raise ValueError(f"--grace-period {self.grace_period}: must be >= 1")
        if self.reduction_factor < 2:
            raise ValueError(f"--reduction-factor {self.reduction_factor}: must be >= 2")
        if self.sentinel_every < 0:
            raise ValueError(f"--sentinel-every {self.sentinel_every}: must be >= 0 (0: none)")
        if not -1.0 <= self.min_tau <= 1.0:
            raise ValueError(f"--rung-min-tau {self.min_tau}: must be in [-1, 1]")
        if self.audit_scope not in AUDIT_SCOPES:
            raise ValueError(f"--audit-scope {self.audit_scope!r}: must be one of "
                             f"{', '.join(AUDIT_SCOPES)}")

    def describe(self) -> str:
        """Returns the policy in a few words, e.g. ``audited ASHA, strata by model.heatmap_size``."""
        if self.policy == "none":
            return "no early stopping"
        if self.policy == "asha":
            return f"ASHA (grace {self.grace_period}, rf {self.reduction_factor})"
        strata = f"strata by {self.stratify}" if self.stratify else "one stratum"
        own = ", each stratum on its own pairs" if self.audit_scope == "own" else ""
        sentinels = (f"every {self.sentinel_every}th trial a sentinel, rungs below tau "
                     f"{self.min_tau:g} stop deciding{own}" if self.sentinel_every else "no sentinels")
        return (f"audited ASHA (grace {self.grace_period}, rf {self.reduction_factor}, {strata}, "
                f"{sentinels})")


class _SkipsReplayed:
    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        if result.get(REPLAY_KEY):
            return TrialScheduler.CONTINUE
        return super().on_trial_result(tune_controller, trial, result)


class StudyASHA(_SkipsReplayed, ASHAScheduler):
    """Ray's ``ASHAScheduler``, blind to replayed results."""


class StudyMultiObjectiveASHA(_SkipsReplayed, MultiObjectiveASHA):
    """:class:`~transcenter.platform.mo_asha.MultiObjectiveASHA`, blind to replayed results."""


def make_scheduler(objectives: dict[str, str], epochs: int, stopping: Stopping) -> TrialScheduler:
    """Returns FIFO for ``"none"``; Ray's ASHA (multi-objective ASHA when ``objectives`` has several
    metrics) over ``epoch`` for ``"asha"``; :class:`AuditedASHA` for ``"audited"``. The last epoch
    is never a rung."""
    if stopping.policy == "none":
        return FIFOScheduler()
    if stopping.policy == "audited":
        return AuditedASHA(objectives, epochs, stopping.grace_period, stopping.reduction_factor,
                           stopping.stratify, stopping.sentinel_every, stopping.min_tau,
                           audit_scope=stopping.audit_scope)
    # Both ASHAs answer STOP to a result at epoch >= max_t. max_t one above the last epoch lets a
    # trial that passed its rungs end by finishing (recorded completed), not by a STOP at its last
    # epoch (which the store and Optuna would record as stopped / pruned).
    rungs = dict(time_attr="epoch", max_t=epochs + 1, grace_period=stopping.grace_period,
                 reduction_factor=stopping.reduction_factor)
    if len(objectives) > 1:
        return StudyMultiObjectiveASHA(objectives, **rungs)
    (metric, mode), = objectives.items()
    return StudyASHA(metric=metric, mode=mode, **rungs)
