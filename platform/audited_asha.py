"""Early stopping that stays right when learning curves cross: stratified rungs and a rung audit.

Successive halving ranks trials at early epochs. Where learning curves cross (the paper's small
heatmaps lead early, larger ones end higher), that early ranking is the reverse of the final one and
ASHA stops the configurations that would have won. :class:`AuditedASHA` adds two safeguards to
asynchronous successive halving (:class:`~transcenter.platform.mo_asha.MultiObjectiveASHA`'s
rungs: non-dominated sorting, which on one objective is ASHA's quantile rule):

- **Strata.** A trial is compared at a rung only with trials that share its value of the study's
  factor of interest (``stratify``: the heatmap size in the heatmap studies). Each value is tuned
  on its own terms, so a slow-starting heatmap size keeps its best configurations to the end.
- **A rung audit.** Every ``sentinel_every``-th trial of each stratum, from its first, is a
  sentinel: never stopped. Each rung's ranking is checked against the final ranking of the trials
  that trained every epoch (sentinels, and trials the rungs kept): Kendall's τ over the pairs of
  such trials in the same stratum whose final values differ by more than the noise of a
  difference (:mod:`transcenter.store.agreement`; the noise is estimated from the finished trials'
  last epochs), counting a pair concordant when the rung orders it as the last epoch does (several
  objectives: the lowest τ of those with enough pairs). A rung whose τ is below ``min_tau`` stops
  deciding for that stratum: its trials continue, so the grace period grows by itself; it decides
  again once τ recovers. ``audit_scope`` says which pairs judge a stratum's rung: ``"borrowed"``
  (its own once it has ``min_pairs``, before that every stratum's together; before any stratum
  has ``min_pairs``, the rung decides) or ``"own"`` (only its own: the rung decides once the
  stratum has ``min_pairs`` pairs and τ is at least ``min_tau``, never before).

The audit is recounted only when a trial finishes (O(finished trials in a stratum²) numpy work,
cached until the next one), never per result.
"""
from __future__ import annotations

import pickle
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from transcenter.platform.mo_asha import MultiObjectiveASHA, Point
from transcenter.platform.trial_files import REPLAY_KEY
from transcenter.store.agreement import clear_margin, concordance, epoch_noise, kendall_tau

if TYPE_CHECKING:
    from ray.tune.execution.tune_controller import TuneController
    from ray.tune.experiment import Trial


@dataclass(frozen=True)
class RungAudit:
    """What a rung has decided and how far its ranking held.

    Attributes:
        milestone: The rung's epoch.
        pairs: Pairs of same-stratum trials that trained every epoch and were recorded here.
        tau: Kendall's τ of the rung's ranking against the final one over those pairs (the lowest
            over the objectives that vary); None before any untied pair.
        deciding: Whether the rung stops trials now.
        recorded: Trials recorded at the rung, over every stratum.
        stopped: Trials it stopped.
    """

    milestone: float
    pairs: int
    tau: float | None
    deciding: bool
    recorded: int
    stopped: int


POOLED = object()  # the audit over every stratum's pairs together
AUDIT_SCOPES = ("borrowed", "own")


class AuditedASHA(FIFOScheduler):
    """Asynchronous successive halving in strata, with sentinels auditing each rung (see the module
    docstring).

    Args:
        objectives: Metric -> ``"max"`` or ``"min"``; several rank by non-dominated sorting.
        epochs: A trial's epochs; rungs sit at ``grace_period * reduction_factor**k`` below it (a
            trial at its last epoch has finished, never stopped).
        grace_period: The first rung (epochs).
        reduction_factor: About ``1/rf`` of a stratum's trials at a rung continue.
        stratify: The config field whose value splits trials into strata (None: one stratum).
        sentinel_every: Every n-th trial of a stratum, from its first, is never stopped (0: none,
            and then no audit: every rung decides).
        min_tau: A rung whose τ falls below it stops deciding.
        min_pairs: Audited pairs a rung needs before τ can stop it deciding (``"own"``: before it
            decides at all).
        audit_scope: ``"borrowed"`` or ``"own"`` (see the module docstring).
        time_attr: The result key counting epochs.
    """

    def __init__(self, objectives: dict[str, str], epochs: int, grace_period: int = 1,
                 reduction_factor: float = 3, stratify: str | None = None,
                 sentinel_every: int = 16, min_tau: float = 0.5, min_pairs: int = 6,
                 audit_scope: str = "borrowed", time_attr: str = "epoch") -> None:
        if (sentinel_every < 0 or min_pairs < 1 or not -1.0 <= min_tau <= 1.0
                or audit_scope not in AUDIT_SCOPES):
            raise ValueError(f"sentinel_every={sentinel_every}, min_pairs={min_pairs}, "
                             f"min_tau={min_tau}, audit_scope={audit_scope!r}: need "
                             f"sentinel_every >= 0, min_pairs >= 1, -1 <= min_tau <= 1 and "
                             f"audit_scope in {AUDIT_SCOPES}")
        super().__init__()
        # One bracket per stratum; max_t above the last epoch: a trial that passed its rungs ends
        # by finishing (completed), never by a STOP at its last epoch.
        self._rules = dict(objectives=objectives, time_attr=time_attr, max_t=epochs + 1,
                           grace_period=grace_period, reduction_factor=reduction_factor)
        template = MultiObjectiveASHA(**self._rules)  # validates the rules
        self.objectives, self.epochs, self.time_attr = dict(objectives), epochs, time_attr
        self.milestones = [rung.milestone for rung in template.rungs if rung.milestone < epochs]
        self.stratify, self.sentinel_every = stratify, sentinel_every
        self.min_tau, self.min_pairs, self.audit_scope = min_tau, min_pairs, audit_scope
        self._template = template
        self.brackets: dict[Any, MultiObjectiveASHA] = {}
        self.stratum: dict[str, Any] = {}
        self.sentinels: set[str] = set()
        self._added: dict[Any, int] = {}  # trials per stratum
        self._at_rung: dict[str, dict[float, Point]] = {}  # trial -> milestone -> minimised values
        self._tail: dict[str, list[tuple[float, Point]]] = {}  # trial -> its last 3 epochs
        self._final: dict[str, Point] = {}  # trials that trained every epoch: last values, minimised
        self._finished: dict[Any, list[str]] = {}  # stratum -> its trials in _final
        self._jitter: list[list[float]] = []  # per finished trial: last second difference per objective
        self._cache: dict[tuple, tuple[list[int], list[int]]] = {}  # (milestone, stratum) -> pairs
        self.stopped = dict.fromkeys(self.milestones, 0)

    def set_search_properties(self, metric: str | None, mode: str | None, **spec) -> bool:
        """Accepts what :meth:`MultiObjectiveASHA.set_search_properties` accepts."""
        return self._template.set_search_properties(metric, mode, **spec)

    def _register(self, trial: Trial) -> Any:
        """Returns the trial's stratum, assigning it (and whether it is a sentinel) on first sight."""
        if trial.trial_id not in self.stratum:
            value = (trial.config or {}).get(self.stratify) if self.stratify else None
            key = value.item() if hasattr(value, "item") else value
            order = self._added.get(key, 0)
            self._added[key] = order + 1
            self.stratum[trial.trial_id] = key
            if self.sentinel_every and order % self.sentinel_every == 0:
                self.sentinels.add(trial.trial_id)
        return self.stratum[trial.trial_id]

    def on_trial_add(self, tune_controller: TuneController, trial: Trial) -> None:
        self._register(trial)

    def _bracket(self, key: Any) -> MultiObjectiveASHA:
        if key not in self.brackets:
            self.brackets[key] = MultiObjectiveASHA(**self._rules)
        return self.brackets[key]

    def _observe(self, trial_id: str, key: Any, t: float, values: Point) -> None:
        """Keeps the trial's values at each rung it reaches and its last three epochs' values; at
        its last epoch, adds it to the audit."""
        minimised = self._template.minimised(values)
        seen = self._at_rung.setdefault(trial_id, {})
        for m in self.milestones:
            if t >= m and m not in seen:
                seen[m] = minimised
        tail = self._tail.setdefault(trial_id, [])
        if not tail or t > tail[-1][0]:
            tail[:] = [*tail[-2:], (t, minimised)]
        if t < self.epochs or trial_id in self._final:
            return
        self._final[trial_id] = minimised
        self._finished.setdefault(key, []).append(trial_id)
        if len(tail) == 3:
            (_, a), (_, b), (_, c) = tail
            self._jitter.append([z - 2 * y + x for x, y, z in zip(a, b, c)])
        self._cache.clear()

    def noise(self) -> np.ndarray:
        """Returns each objective's estimated per-epoch noise (:func:`epoch_noise` of the finished
        trials' last three epochs)."""
        return epoch_noise(np.array(self._jitter).reshape(-1, len(self.objectives)))

    def _concordance(self, milestone: float, stratum: Any) -> tuple[np.ndarray, np.ndarray]:
        """Returns per objective the concordant and discordant pairs of the rung in ``stratum``
        (:data:`POOLED`: every stratum): trials of one stratum that trained every epoch, compared
        by their values at the rung and at their last epoch (:func:`concordance`)."""
        if (milestone, stratum) in self._cache:
            return self._cache[milestone, stratum]
        margin = clear_margin(self.noise())  # (k,)
        counts = np.zeros((2, len(self.objectives)), dtype=int)  # concordant, discordant
        groups = self._finished.values() if stratum is POOLED else [self._finished.get(stratum, [])]
        for trials in groups:
            audited = [x for x in trials if milestone in self._at_rung[x]]
            if len(audited) > 1:
                counts += np.array(concordance(
                    np.array([self._at_rung[x][milestone] for x in audited]),  # (n, k)
                    np.array([self._final[x] for x in audited]), margin))  # (n, k)
        self._cache[milestone, stratum] = (counts[0], counts[1])
        return counts[0], counts[1]

    def tau_and_pairs(self, milestone: float, stratum: Any = POOLED) -> tuple[float | None, int]:
        """Returns the rung's Kendall τ against the final ranking and how many pairs it rests on
        (:func:`kendall_tau`): the stratum's own (``"borrowed"``: once it has ``min_pairs`` pairs,
        else every stratum's together; ``stratum`` :data:`POOLED`: always those)."""
        if stratum is POOLED:
            scopes: tuple = (POOLED,)
        else:
            scopes = (stratum,) if self.audit_scope == "own" else (stratum, POOLED)
        for scope in scopes:
            tau, pairs = kendall_tau(*self._concordance(milestone, scope), self.min_pairs)
            if pairs >= self.min_pairs:
                break
        return tau, pairs

    def deciding(self, milestone: float, stratum: Any = POOLED) -> bool:
        """Whether the rung stops trials of ``stratum`` now (:data:`POOLED`: judged on every
        stratum's pairs): no sentinels (no audit), or τ at least ``min_tau``, or (``"borrowed"``)
        fewer than ``min_pairs`` audited pairs; ``"own"`` decides only on ``min_pairs`` pairs."""
        if not self.sentinel_every:
            return True
        tau, pairs = self.tau_and_pairs(milestone, stratum)
        if pairs < self.min_pairs:
            return self.audit_scope == "borrowed"
        return tau >= self.min_tau

    def on_trial_result(self, tune_controller: TuneController, trial: Trial, result: dict) -> str:
        """Returns ``STOP`` when the trial's stratum's rung ranks it out, the trial is no sentinel
        and the rung is deciding; else ``CONTINUE``. A replayed result (a resumed trial reporting
        its checkpoint's epochs again) is audited, never decided on."""
        t = result.get(self.time_attr)
        if t is None:
            return TrialScheduler.CONTINUE
        key = self._register(trial)
        values = self._template.objective_values(result)
        self._observe(trial.trial_id, key, t, values)
        if result.get(REPLAY_KEY) or t >= self.epochs:  # the last epoch is no rung
            return TrialScheduler.CONTINUE
        bracket = self._bracket(key)
        rung = bracket.rung_reached(t)
        if bracket.record(trial.trial_id, t, values) or trial.trial_id in self.sentinels:
            return TrialScheduler.CONTINUE
        if not self.deciding(rung.milestone, key):
            return TrialScheduler.CONTINUE
        self.stopped[rung.milestone] += 1
        return TrialScheduler.STOP

    def on_trial_complete(self, tune_controller: TuneController, trial: Trial,
                          result: dict | None) -> None:
        """Audits and records a last result the scheduler has not seen (as MO-ASHA does)."""
        result = result or {}
        t = result.get(self.time_attr)
        if t is None or any(result.get(n) is None for n in self.objectives):
            return
        key = self._register(trial)
        self._observe(trial.trial_id, key, t, self._template.objective_values(result))
        if t < self.epochs:
            self._bracket(key).on_trial_complete(tune_controller, trial, result)

    def audit(self) -> list[RungAudit]:
        """Returns each rung's audit, lowest rung first."""
        audits = []
        for i, m in enumerate(self.milestones):
            tau, pairs = self.tau_and_pairs(m)
            audits.append(RungAudit(m, pairs, tau, self.deciding(m),
                                    sum(len(b.rungs[i].recorded) for b in self.brackets.values()),
                                    self.stopped[m]))
        return audits

    def debug_string(self) -> str:
        lines = [f"Using AuditedASHA (strata by {self.stratify or 'nothing'}, "
                 f"{len(self.sentinels)} sentinels)"]
        for a in self.audit():
            tau = "-" if a.tau is None else f"{a.tau:+.2f}"
            lines.append(f"  rung epoch>={a.milestone:g}: {a.recorded} recorded, {a.stopped} "
                         f"stopped, tau {tau} over {a.pairs} pairs, "
                         f"{'deciding' if a.deciding else 'not deciding'}")
        return "\n".join(lines)

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.__dict__, f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.__dict__.update(pickle.load(f))
