"""Multi-objective asynchronous successive halving (MO-ASHA) for Ray Tune.

Ray's ASHA compares one scalar per trial at each rung. Here a trial reports several objectives (AP
to maximise, GMACs to minimise, ...); at each rung the recorded objective vectors are ordered by
non-dominated sorting, then by NSGA-II crowding distance (the idea of Syne Tune's MOASHA, written
anew), and a trial continues when it is near enough the front of that order.

The ordering functions are pure (no Ray) and work on objectives to be MINIMISED; the scheduler
flips the sign of ``"max"`` objectives before calling them.
"""
from __future__ import annotations

import math
import pickle
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ray.tune.schedulers import FIFOScheduler, TrialScheduler

if TYPE_CHECKING:
    from ray.tune.execution.tune_controller import TuneController
    from ray.tune.experiment import Trial

Point = tuple[float, ...]


def _as_points(points: Sequence[Sequence[float]]) -> list[Point]:
    pts = [tuple(float(v) for v in p) for p in points]
    if pts and (len(pts[0]) == 0 or any(len(p) != len(pts[0]) for p in pts)):
        raise ValueError("every point needs the same number (at least one) of objectives; got "
                         f"lengths {sorted({len(p) for p in pts})}")
    return pts


def _is_finite(p: Point) -> bool:
    return all(math.isfinite(v) for v in p)


def _dominates(a: Point, b: Point) -> bool:
    """Whether ``a`` Pareto-dominates ``b`` (minimisation): no worse anywhere, better somewhere."""
    return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))


def non_dominated_ranks(points: Sequence[Sequence[float]]) -> list[int]:
    """Returns the non-dominated front of each point, all objectives MINIMISED.

    Args:
        points: ``n`` points of ``k >= 1`` objectives each (callers negate maximised objectives).

    Returns:
        ``n`` front indices: 0 for the points no other point dominates, 1 for those dominated only
        by front-0 points, and so on (Deb's fast non-dominated sort, O(k n²)). Equal points do not
        dominate each other, so they share a front. A point with any non-finite coordinate (NaN,
        +inf or -inf: a diverged or missing measurement) is not compared: all such points share
        one front after every front of finite points (front 0 when no point is finite).
    """
    pts = _as_points(points)
    finite = [i for i, p in enumerate(pts) if _is_finite(p)]
    dominated_by = dict.fromkeys(finite, 0)  # how many points dominate i
    dominates: dict[int, list[int]] = {i: [] for i in finite}
    for a_pos, a in enumerate(finite):
        for b in finite[a_pos + 1:]:
            if _dominates(pts[a], pts[b]):
                dominates[a].append(b)
                dominated_by[b] += 1
            elif _dominates(pts[b], pts[a]):
                dominates[b].append(a)
                dominated_by[a] += 1
    ranks = [0] * len(pts)
    front = [i for i in finite if dominated_by[i] == 0]
    level = 0
    while front:
        following = []
        for i in front:
            ranks[i] = level
            for j in dominates[i]:
                dominated_by[j] -= 1
                if dominated_by[j] == 0:
                    following.append(j)
        front, level = following, level + 1
    for i, p in enumerate(pts):
        if not _is_finite(p):
            ranks[i] = level
    return ranks


def crowding_distances(points: Sequence[Sequence[float]]) -> list[float]:
    """Returns the NSGA-II crowding distance of each point of one front.

    Args:
        points: ``n`` points of ``k`` objectives, normally one front of :func:`non_dominated_ranks`.

    Returns:
        ``n`` distances: per objective, the points sorted by it, the two ends get ``inf`` and each
        other point the gap between its two neighbours divided by the objective's range; the
        distance is the sum over objectives. An objective on which all points are equal adds
        nothing. Identical points get identical distances (the distance is computed over distinct
        points), and ties on an objective are sorted by the whole vector, so the result does not
        depend on the order of ``points``. Points with a non-finite coordinate get ``0.0`` and
        take no part in the others' distances.
    """
    pts = _as_points(points)
    distinct = sorted({p for p in pts if _is_finite(p)})
    distance = dict.fromkeys(distinct, 0.0)
    if len(distinct) <= 2:
        distance = dict.fromkeys(distinct, math.inf)
    else:
        for j in range(len(distinct[0])):
            order = sorted(distinct, key=lambda p: (p[j], p))
            lo, hi = order[0][j], order[-1][j]
            if hi == lo:
                continue
            distance[order[0]] = distance[order[-1]] = math.inf
            for prev, p, nxt in zip(order, order[1:], order[2:]):
                distance[p] += (nxt[j] - prev[j]) / (hi - lo)
    return [distance.get(p, 0.0) for p in pts]


def rank_order(points: Sequence[Sequence[float]]) -> list[int]:
    """Returns the indices of ``points`` best first, all objectives MINIMISED.

    Args:
        points: ``n`` points of ``k`` objectives.

    Returns:
        A permutation of ``range(n)`` sorted by front (:func:`non_dominated_ranks`, ascending),
        then by crowding distance within the front (:func:`crowding_distances`, descending: the
        less crowded, the better), then by index (ascending), which makes the order deterministic.
    """
    pts = _as_points(points)
    ranks = non_dominated_ranks(pts)
    crowding = [0.0] * len(pts)
    for level in set(ranks):
        members = [i for i, r in enumerate(ranks) if r == level]
        for i, d in zip(members, crowding_distances([pts[i] for i in members])):
            crowding[i] = d
    return sorted(range(len(pts)), key=lambda i: (ranks[i], -crowding[i], i))


def continue_quota(num_earlier: int, reduction_factor: float) -> int:
    """Returns how many of the first places of :func:`rank_order` continue at a rung.

    Args:
        num_earlier: ``m``, the trials recorded at the rung before the one being decided.
        reduction_factor: ``rf > 1``.

    Returns:
        ``1`` when ``m == 0`` (a trial alone at a rung continues), else ``floor((m - 1) / rf) + 1``.
        This is Ray's ASHA rule in places: Ray continues a trial when its value is at least the
        ``1 - 1/rf`` quantile (linear interpolation) of the ``m`` earlier values; whatever the
        values, that keeps exactly the trials with at most ``floor((m - 1) / rf)`` earlier trials
        strictly better. Where the quantile falls between two values Ray may also keep the next
        place, depending on the gap; ranks carry no gap, so here that place stops.
    """
    if num_earlier == 0:
        return 1
    return math.floor((num_earlier - 1) / reduction_factor) + 1


def continues_at_rung(point: Sequence[float], earlier: Sequence[Sequence[float]],
                      reduction_factor: float) -> bool:
    """Returns whether a trial continues at a rung, all objectives MINIMISED.

    Args:
        point: the trial's objective vector at the rung.
        earlier: the vectors recorded at that rung before it, in arrival order.
        reduction_factor: ``rf > 1``.

    Returns:
        Whether the trial's place in ``rank_order([point, *earlier])`` is below
        ``continue_quota(len(earlier), rf)``. The trial goes first in the list, so on a full tie
        (same front, same crowding distance) it wins, as Ray's ASHA continues a trial equal to its
        cutoff.
    """
    place = rank_order([point, *earlier]).index(0)
    return place < continue_quota(len(earlier), reduction_factor)


@dataclass
class Rung:
    """One rung: the trials whose ``time_attr`` reached ``milestone``, in arrival order.

    ``recorded`` holds each trial's objective values as reported (in the scheduler's objective
    order, not sign-flipped); ``continued`` the decision taken for it. Replaying the entries in
    order through :func:`continues_at_rung` reproduces every decision.
    """

    milestone: float
    recorded: dict[str, Point] = field(default_factory=dict)
    continued: dict[str, bool] = field(default_factory=dict)


class MultiObjectiveASHA(FIFOScheduler):
    """Asynchronous successive halving on several objectives, one bracket.

    Rungs sit at ``grace_period * reduction_factor**k`` for every ``k >= 0`` below ``max_t``. When
    a trial's ``time_attr`` first reaches a rung (the highest one its value has reached; rungs it
    jumped over stay without it) its objective vector is recorded there and it continues iff
    :func:`continues_at_rung` says so against the vectors recorded there before it (maximised
    objectives negated). A result at ``time_attr >= max_t`` stops the trial, as in Ray's ASHA.

    Args:
        objectives: metric name -> ``"max"`` or ``"min"``, e.g. ``{"AP": "max", "gmacs": "min"}``.
        time_attr: the result key measuring progress, increasing (``"epoch"``).
        max_t: trials stop once ``time_attr`` reaches it.
        grace_period: the first rung; no trial stops before it.
        reduction_factor: ``rf > 1``; about ``1/rf`` of the trials at a rung continue.
    """

    def __init__(self, objectives: dict[str, str], time_attr: str = "epoch", max_t: float = 100,
                 grace_period: float = 1, reduction_factor: float = 2):
        if not objectives:
            raise ValueError("MultiObjectiveASHA needs at least one objective")
        bad = {name: mode for name, mode in objectives.items() if mode not in ("max", "min")}
        if bad:
            raise ValueError(f"objective modes must be 'max' or 'min'; got {bad}")
        if not grace_period > 0 or not max_t >= grace_period or not reduction_factor > 1:
            raise ValueError("need 0 < grace_period <= max_t and reduction_factor > 1; got "
                             f"grace_period={grace_period}, max_t={max_t}, "
                             f"reduction_factor={reduction_factor}")
        super().__init__()
        self.objectives = dict(objectives)
        self.time_attr = time_attr
        self.max_t = max_t
        self.reduction_factor = reduction_factor
        self._signs = [1.0 if mode == "min" else -1.0 for mode in self.objectives.values()]
        self.rungs: list[Rung] = []  # ascending milestones
        k = 0
        while grace_period * reduction_factor**k < max_t:
            self.rungs.append(Rung(grace_period * reduction_factor**k))
            k += 1
        self.num_stopped = 0

    def set_search_properties(self, metric: str | None, mode: str | None, **spec) -> bool:
        """Tune passes ``TuneConfig(metric=, mode=)`` here (``None`` when unset, the usual case with
        a multi-objective searcher). The objectives come from the constructor: this accepts
        ``None`` or a metric (or list of metrics) among them with matching modes, and changes
        nothing; anything else returns ``False``, on which Tune raises its "scheduler already has
        its own metric and mode" error."""
        if metric is None:
            return mode is None
        metrics = [metric] if isinstance(metric, str) else list(metric)
        modes = [mode] * len(metrics) if mode is None or isinstance(mode, str) else list(mode)
        return len(modes) == len(metrics) and all(
            m in self.objectives and md in (None, self.objectives[m])
            for m, md in zip(metrics, modes))

    def objective_values(self, result: dict[str, Any]) -> Point:
        """Returns the result's objectives in constructor order, as reported; ``ValueError`` naming
        the ones missing (or ``None``)."""
        missing = [name for name in self.objectives if result.get(name) is None]
        if missing:
            raise ValueError(
                f"MultiObjectiveASHA: the trial's result has no {', '.join(map(repr, missing))} "
                f"(objectives {list(self.objectives)}). Report every objective with "
                f"'{self.time_attr}' in tune.report()/ray.train.report(). "
                f"Result keys: {sorted(result)}")
        return tuple(float(result[name]) for name in self.objectives)

    def minimised(self, values: Sequence[float]) -> Point:
        """Returns ``values`` (constructor order) with maximised objectives negated."""
        return tuple(s * v for s, v in zip(self._signs, values))

    def rung_reached(self, t: float) -> Rung | None:
        """Returns the highest rung ``t`` has reached, None below the first."""
        reached = [rung for rung in self.rungs if t >= rung.milestone]
        return reached[-1] if reached else None

    def record(self, trial_id: str, t: float, values: Point) -> bool:
        """Records the trial at the highest rung ``t`` reached, if new there; returns whether it
        continues (``True`` when nothing was recorded)."""
        rung = self.rung_reached(t)
        if rung is None or trial_id in rung.recorded:
            return True
        earlier = [self.minimised(v) for v in rung.recorded.values()]
        keep = continues_at_rung(self.minimised(values), earlier, self.reduction_factor)
        rung.recorded[trial_id] = values
        rung.continued[trial_id] = keep
        return keep

    def on_trial_result(self, tune_controller: TuneController, trial: Trial,
                        result: dict) -> str:
        """Returns ``STOP`` or ``CONTINUE`` for this result (see the class docstring). A result
        without ``time_attr`` continues; one with it but without an objective raises
        ``ValueError``."""
        if result.get(self.time_attr) is None:
            return TrialScheduler.CONTINUE
        values = self.objective_values(result)
        t = result[self.time_attr]
        if t >= self.max_t or not self.record(trial.trial_id, t, values):
            self.num_stopped += 1
            return TrialScheduler.STOP
        return TrialScheduler.CONTINUE

    def on_trial_complete(self, tune_controller: TuneController, trial: Trial,
                          result: dict | None):
        """Records a last result that reached a new rung (a trial ended by a stopper never had it
        through :meth:`on_trial_result`), as Ray's ASHA does; a result without ``time_attr`` or an
        objective is ignored."""
        result = result or {}
        t = result.get(self.time_attr)
        if t is None or t >= self.max_t or any(result.get(n) is None for n in self.objectives):
            return
        self.record(trial.trial_id, t, self.objective_values(result))

    def debug_string(self) -> str:
        objectives = ", ".join(f"{name}:{mode}" for name, mode in self.objectives.items())
        lines = [f"Using MultiObjectiveASHA ({objectives}): num_stopped={self.num_stopped}"]
        for rung in self.rungs:
            kept = sum(rung.continued.values())
            lines.append(f"  rung {self.time_attr}>={rung.milestone:g}: "
                         f"{len(rung.recorded)} recorded, {kept} continued")
        return "\n".join(lines)

    def save(self, checkpoint_path: str):
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.__dict__, f)

    def restore(self, checkpoint_path: str):
        with open(checkpoint_path, "rb") as f:
            self.__dict__.update(pickle.load(f))
