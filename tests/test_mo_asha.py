"""MO-ASHA (platform/mo_asha.py) against brute-force definitions written here, and against Ray's
own ASHA on one objective. No Ray cluster: the scheduler methods only read ``trial.trial_id``."""
import itertools
import math
import pickle
import random
from dataclasses import dataclass

import numpy as np
import pytest
from ray.tune.schedulers import AsyncHyperBandScheduler, TrialScheduler

from transcenter.platform.mo_asha import (
    MultiObjectiveASHA,
    continue_quota,
    crowding_distances,
    non_dominated_ranks,
    rank_order,
)

STOP, CONTINUE = TrialScheduler.STOP, TrialScheduler.CONTINUE
NAN, INF = float("nan"), float("inf")


@dataclass(frozen=True)
class FakeTrial:
    trial_id: str


# --- brute force, independent of the module -------------------------------------------------

def brute_dominates(a, b):
    better = False
    for x, y in zip(a, b):
        if x > y:
            return False
        better = better or x < y
    return better


def brute_ranks(points):
    """Peels fronts: the remaining finite points no remaining point dominates, again and again;
    points with a non-finite coordinate form one front after all of them."""
    finite = {i for i, p in enumerate(points) if all(math.isfinite(v) for v in p)}
    ranks, remaining, level = {}, set(finite), 0
    while remaining:
        front = {i for i in remaining
                 if not any(brute_dominates(points[j], points[i]) for j in remaining)}
        ranks.update(dict.fromkeys(front, level))
        remaining -= front
        level += 1
    ranks.update({i: level for i in range(len(points)) if i not in finite})
    return [ranks[i] for i in range(len(points))]


def brute_crowding(points):
    """NSGA-II distance over the distinct finite points, neighbours found by search, not sorting:
    on objective j, p's neighbours are the nearest distinct points before and after it in the order
    of (value on j, whole vector)."""
    distinct = {tuple(p) for p in points if all(math.isfinite(v) for v in p)}
    out = []
    for p in map(tuple, points):
        if p not in distinct:
            out.append(0.0)
            continue
        if len(distinct) <= 2:
            out.append(INF)
            continue
        d = 0.0
        for j in range(len(p)):
            lo, hi = min(q[j] for q in distinct), max(q[j] for q in distinct)
            if lo == hi:
                continue
            below = [(q[j], q) for q in distinct if (q[j], q) < (p[j], p)]
            above = [(q[j], q) for q in distinct if (q[j], q) > (p[j], p)]
            d += INF if not below or not above else (min(above)[0] - max(below)[0]) / (hi - lo)
        out.append(d)
    return out


def brute_order(points):
    ranks = brute_ranks(points)
    crowd = [0.0] * len(points)
    for level in set(ranks):
        members = [i for i in range(len(points)) if ranks[i] == level]
        for i, d in zip(members, brute_crowding([points[i] for i in members])):
            crowd[i] = d
    return sorted(range(len(points)), key=lambda i: (ranks[i], -crowd[i], i))


def brute_continues(point, earlier, rf):
    """Ray's ASHA rule on scores: the new trial continues iff its score is at least the
    ``1 - 1/rf`` quantile of the earlier scores, taking the higher value where the quantile falls
    between two (ranks have no gap to interpolate). Score: minus the place in the order."""
    if not earlier:
        return True
    order = brute_order([point, *earlier])
    score = {i: -order.index(i) for i in order}
    cutoff = np.percentile([score[i] for i in range(1, len(order))], (1 - 1 / rf) * 100,
                           method="higher")
    return score[0] >= cutoff


def random_points(rng, n, k, levels):
    """Points on a coarse grid (``levels`` values per objective), so ties and duplicates occur."""
    return [tuple(float(rng.randrange(levels)) for _ in range(k)) for _ in range(n)]


# --- pure functions ----------------------------------------------------------------------------

HAND_MADE = [
    [],
    [(1.0, 2.0)],
    [(1.0, 2.0), (1.0, 2.0)],                              # duplicates: same front
    [(1.0, 2.0), (2.0, 1.0), (2.0, 2.0), (3.0, 3.0)],      # two fronts of one, a chain
    [(0.0, 0.0), (0.0, 1.0), (1.0, 0.0), (1.0, 1.0)],      # weak dominance on one coordinate
    [(1, 1, 1), (1, 1, 2), (2, 1, 1), (0, 5, 0), (1, 1, 1)],
    [(NAN, 0.0), (5.0, 5.0), (0.0, 0.0), (INF, -1.0), (1.0, -INF)],  # non-finite: last front
    [(NAN, NAN), (NAN, 1.0)],                              # nothing finite: front 0
]


@pytest.mark.parametrize("points", HAND_MADE)
def test_ranks_hand_made(points):
    assert non_dominated_ranks(points) == brute_ranks(points)
    assert rank_order(points) == brute_order(points)


def test_ranks_hand_made_values():
    assert non_dominated_ranks([(1, 2), (2, 1), (2, 2), (3, 3)]) == [0, 0, 1, 2]
    assert non_dominated_ranks([(NAN, 0), (5, 5), (0, 0), (INF, -1)]) == [2, 1, 0, 2]
    assert non_dominated_ranks([(NAN, NAN)]) == [0]


@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.parametrize("seed", range(15))
def test_ranks_order_crowding_equal_brute_force(k, seed):
    rng = random.Random(seed)
    points = random_points(rng, rng.randrange(1, 30), k, levels=rng.choice([3, 6, 50]))
    if seed % 3 == 0:  # a few invalid measurements
        points[0] = (NAN,) + points[0][1:]
    assert non_dominated_ranks(points) == brute_ranks(points)
    assert rank_order(points) == brute_order(points)
    ranks = non_dominated_ranks(points)
    for level in set(ranks):
        front = [p for p, r in zip(points, ranks) if r == level]
        assert crowding_distances(front) == pytest.approx(brute_crowding(front))


@pytest.mark.parametrize("seed", range(5))
def test_ranks_and_crowding_do_not_depend_on_order(seed):
    rng = random.Random(seed)
    points = random_points(rng, 20, 3, levels=4)
    perm = list(range(20))
    rng.shuffle(perm)
    shuffled = [points[i] for i in perm]
    assert non_dominated_ranks(shuffled) == [non_dominated_ranks(points)[i] for i in perm]
    assert crowding_distances(shuffled) == [crowding_distances(points)[i] for i in perm]


def test_crowding_hand_computed():
    # ranges 4 and 4; (1, 2): 2/4 + 2.5/4; (2, 1.5): 3/4 + 2/4; ends inf; duplicate shares.
    d = crowding_distances([(0, 4), (1, 2), (2, 1.5), (4, 0), (1, 2)])
    assert d == [INF, 1.125, 1.25, INF, 1.125]
    assert crowding_distances([(1, 1), (3, 0)]) == [INF, INF]
    assert crowding_distances([(1, NAN), (0, 1)]) == [0.0, INF]


def test_rank_order_ties_by_index():
    assert rank_order([(1, 1), (1, 1), (1, 1)]) == [0, 1, 2]
    assert rank_order([(2, 2), (1, 1), (NAN, 0), (1, 1)]) == [1, 3, 0, 2]


def test_points_of_different_lengths_are_refused():
    with pytest.raises(ValueError, match="same number"):
        non_dominated_ranks([(1, 2), (1,)])


@pytest.mark.parametrize("rf", [2, 3, 4, 1.5])
def test_quota_is_rays_quantile_where_it_falls_on_a_value(rf):
    for m in range(40):
        assert continue_quota(m, rf) == (1 if m == 0 else
                                         m - math.ceil(round((m - 1) * (1 - 1 / rf), 9)))
    assert [continue_quota(m, 2) for m in range(8)] == [1, 1, 1, 2, 2, 3, 3, 4]


# --- the scheduler -----------------------------------------------------------------------------

OBJECTIVES = {"AP": "max", "gmacs": "min"}


def result(epoch, ap, gmacs, **extra):
    return {"epoch": epoch, "AP": ap, "gmacs": gmacs, **extra}


def feed(scheduler, trial_id, epoch, ap, gmacs):
    return scheduler.on_trial_result(None, FakeTrial(trial_id), result(epoch, ap, gmacs))


def asynchronous_stream(rng, n_trials, epochs, values):
    """Results of ``n_trials`` trials, each starting at a random time and running at its own
    speed, merged by time: ``(trial_id, epoch, AP, gmacs)``, where ``values(trial, epoch)`` gives
    the objectives."""
    events = []
    for t in range(n_trials):
        start, speed = rng.uniform(0, 5), rng.uniform(0.5, 2)
        last = rng.choice([epochs, epochs, rng.randrange(0, epochs + 1)])  # some end early
        events += [(start + e * speed, f"t{t}", e, *values(t, e)) for e in range(last + 1)]
    return [e[1:] for e in sorted(events)]


def replay(scheduler, stream, rf, max_t, grace):
    """Feeds ``stream`` to ``scheduler`` (a trial stops at its first STOP) and checks each decision
    against the brute force; returns the brute force's rungs {milestone: [(trial, point)]}."""
    milestones = [grace * rf**k for k in range(20) if grace * rf**k < max_t]
    rungs = {m: [] for m in milestones}
    stopped = set()
    for trial, epoch, ap, gmacs in stream:
        if trial in stopped:
            continue
        point = (-ap, gmacs)
        expected = CONTINUE
        reached = [m for m in milestones if epoch >= m]
        if epoch >= max_t:
            expected = STOP
        elif reached and trial not in dict(rungs[reached[-1]]):
            earlier = [p for _, p in rungs[reached[-1]]]
            expected = CONTINUE if brute_continues(point, earlier, rf) else STOP
            rungs[reached[-1]].append((trial, point))
        assert feed(scheduler, trial, epoch, ap, gmacs) == expected, (trial, epoch)
        if expected == STOP:
            stopped.add(trial)
    return rungs


@pytest.mark.parametrize("rf", [2, 3])
@pytest.mark.parametrize("seed", range(12))
def test_decisions_equal_brute_force_on_asynchronous_results(seed, rf):
    rng = random.Random(seed)
    levels = rng.choice([3, 5, 100])  # coarse levels: ties and duplicates at rungs
    table = {(t, e): (rng.randrange(levels) / levels, float(rng.randrange(1, levels + 1)))
             for t in range(8) for e in range(10)}
    max_t, grace = 9, 1
    stream = asynchronous_stream(rng, 8, 9, lambda t, e: table[t, e])
    sched = MultiObjectiveASHA(OBJECTIVES, max_t=max_t, grace_period=grace, reduction_factor=rf)
    rungs = replay(sched, stream, rf, max_t, grace)
    assert [r.milestone for r in sched.rungs] == list(rungs)
    for rung in sched.rungs:
        assert [(t, sched.minimised(v)) for t, v in rung.recorded.items()] == rungs[rung.milestone]
    assert "num_stopped" in sched.debug_string()


def test_rung_state_replays_to_the_same_decisions():
    rng = random.Random(7)
    stream = asynchronous_stream(rng, 8, 7, lambda t, e: (rng.random(), rng.random()))
    sched = MultiObjectiveASHA(OBJECTIVES, max_t=8, grace_period=1, reduction_factor=2)
    for trial, epoch, ap, gmacs in stream:
        feed(sched, trial, epoch, ap, gmacs)
    for rung in sched.rungs:
        points = [sched.minimised(v) for v in rung.recorded.values()]
        for i, trial in enumerate(rung.recorded):
            assert rung.continued[trial] == brute_continues(points[i], points[:i], 2)


def test_a_trial_alone_at_a_rung_continues():
    sched = MultiObjectiveASHA(OBJECTIVES, max_t=10)
    assert feed(sched, "a", 1, 0.0, 1e9) == CONTINUE  # the worst imaginable, but alone
    assert feed(sched, "a", 2, NAN, 1.0) == CONTINUE   # alone at rung 2 too, even NaN
    assert list(sched.rungs[1].recorded) == ["a"] and math.isnan(sched.rungs[1].recorded["a"][0])


def test_a_trial_dominated_by_every_earlier_one_stops():
    sched = MultiObjectiveASHA(OBJECTIVES, max_t=10)
    for t, (ap, gmacs) in enumerate([(0.5, 10), (0.6, 30), (0.9, 50)]):
        feed(sched, f"t{t}", 1, ap, gmacs)
    assert feed(sched, "worse", 1, 0.4, 60) == STOP
    assert sched.rungs[0].continued["worse"] is False
    assert feed(sched, "nan", 1, NAN, 1) == STOP  # NaN ranks after every finite point


def test_first_front_trials_continue_and_the_crowded_middle_stops():
    # Earlier, minimised: A=(-0.3, 10), B=(-0.5, 20). Quota with m=2, rf=2: one place.
    def with_earlier():
        sched = MultiObjectiveASHA(OBJECTIVES, max_t=10)
        assert feed(sched, "A", 1, 0.3, 10) == CONTINUE
        assert feed(sched, "B", 1, 0.5, 20) == CONTINUE  # trade-off with A: a tie, B goes first
        return sched

    assert feed(with_earlier(), "best", 1, 0.6, 5) == CONTINUE      # dominates both
    assert feed(with_earlier(), "extreme", 1, 0.7, 30) == CONTINUE  # front 0, an end: crowding inf
    # front 0 too, but between A and B it is the most crowded point: the one place goes to an end.
    assert feed(with_earlier(), "middle", 1, 0.4, 15) == STOP


def test_ties_go_to_the_newcomer_as_in_rays_asha():
    sched = MultiObjectiveASHA(OBJECTIVES, max_t=10)
    assert feed(sched, "a", 1, 0.5, 10) == CONTINUE
    assert feed(sched, "twin", 1, 0.5, 10) == CONTINUE
    assert feed(sched, "b", 1, 0.1, 90) == STOP
    assert feed(sched, "twin2", 1, 0.5, 10) == CONTINUE  # ties a and twin on the first front


def test_trials_that_never_reach_a_rung_are_not_recorded():
    sched = MultiObjectiveASHA(OBJECTIVES, max_t=10, grace_period=2)
    assert feed(sched, "young", 0, 0.1, 99) == CONTINUE
    assert feed(sched, "young", 1, 0.1, 99) == CONTINUE
    assert sched.on_trial_result(None, FakeTrial("no-epoch"), {"AP": 0.1}) == CONTINUE
    assert all(not rung.recorded for rung in sched.rungs)
    assert feed(sched, "old", 2, 0.5, 1) == CONTINUE
    assert list(sched.rungs[0].recorded) == ["old"]


def test_a_jump_over_rungs_records_only_the_highest_reached():
    sched = MultiObjectiveASHA(OBJECTIVES, max_t=10)
    assert feed(sched, "a", 5, 0.5, 1) == CONTINUE
    assert [list(r.recorded) for r in sched.rungs] == [[], [], ["a"], []]
    assert feed(sched, "a", 6, 0.1, 1) == CONTINUE  # rung 4 already has it: no new decision


def test_results_at_max_t_stop_and_are_not_recorded():
    sched = MultiObjectiveASHA(OBJECTIVES, max_t=4, grace_period=1)
    assert [r.milestone for r in sched.rungs] == [1, 2]
    assert feed(sched, "a", 4, 1.0, 1) == STOP
    assert feed(sched, "b", 7, 1.0, 1) == STOP
    assert all(not rung.recorded for rung in sched.rungs) and sched.num_stopped == 2


def test_a_missing_objective_names_the_metric():
    sched = MultiObjectiveASHA(OBJECTIVES, max_t=10)
    with pytest.raises(ValueError, match="'gmacs'"):
        sched.on_trial_result(None, FakeTrial("a"), {"epoch": 1, "AP": 0.5})
    with pytest.raises(ValueError, match="'AP'"):
        sched.on_trial_result(None, FakeTrial("a"), {"epoch": 3, "AP": None, "gmacs": 1.0})


def test_max_and_min_objectives_mix_by_negation():
    rng = random.Random(3)
    stream = asynchronous_stream(rng, 8, 8, lambda t, e: (rng.random(), rng.randrange(5)))
    variants = [
        ({"AP": "max", "gmacs": "min"}, lambda ap, g: {"AP": ap, "gmacs": g}),
        ({"negAP": "min", "gmacs": "min"}, lambda ap, g: {"negAP": -ap, "gmacs": g}),
        ({"AP": "max", "neg_gmacs": "max"}, lambda ap, g: {"AP": ap, "neg_gmacs": -g}),
        ({"gmacs": "min", "AP": "max"}, lambda ap, g: {"AP": ap, "gmacs": g}),  # order irrelevant
    ]
    decisions = []
    for objectives, values in variants:
        sched = MultiObjectiveASHA(objectives, max_t=9)
        decisions.append([sched.on_trial_result(None, FakeTrial(t), {"epoch": e, **values(ap, g)})
                          for t, e, ap, g in stream])
    assert STOP in decisions[0] and all(d == decisions[0] for d in decisions)


@pytest.mark.parametrize("rf", [2, 3, 4])
@pytest.mark.parametrize("seed", range(6))
def test_one_objective_agrees_with_rays_asha(seed, rf):
    """One objective: ours continues => Ray's continues; equal where Ray's quantile falls on a
    recorded value ((m - 1)(1 - 1/rf) whole, m = trials recorded before)."""
    rng = random.Random(seed)
    stream = asynchronous_stream(rng, 12, 9, lambda t, e: (rng.randrange(6) / 6, 0.0))
    ours = MultiObjectiveASHA({"AP": "max"}, max_t=10, reduction_factor=rf)
    ray = AsyncHyperBandScheduler(time_attr="epoch", metric="AP", mode="max", max_t=10,
                                  grace_period=1, reduction_factor=rf)
    stopped, seen = set(), {}
    for trial, epoch, ap, _ in stream:
        if trial in stopped:
            continue
        if trial not in seen:
            seen[trial] = FakeTrial(trial)
            ray.on_trial_add(None, seen[trial])
        rung = next((r for r in reversed(ours.rungs) if epoch >= r.milestone), None)
        m = len(rung.recorded) if rung and trial not in rung.recorded else None
        mine = ours.on_trial_result(None, seen[trial], {"epoch": epoch, "AP": ap})
        theirs = ray.on_trial_result(None, seen[trial], {"epoch": epoch, "AP": ap})
        if mine == CONTINUE:
            assert theirs == CONTINUE
        if m is None or m == 0 or ((m - 1) * (rf - 1)) % rf == 0:
            assert mine == theirs, (trial, epoch, m)
        if mine == STOP:
            stopped.add(trial)


def test_search_properties_accept_none_or_our_own_objectives():
    sched = MultiObjectiveASHA(OBJECTIVES)
    assert sched.set_search_properties(None, None)
    assert sched.set_search_properties(None, None, config={}, stop={})
    assert sched.set_search_properties("AP", "max")
    assert sched.set_search_properties(["AP", "gmacs"], ["max", "min"])
    assert not sched.set_search_properties("AP", "min")
    assert not sched.set_search_properties("loss", "min")
    assert not sched.set_search_properties(None, "max")
    # Tune's strict result check does `scheduler.metric not in result`: must stay None, not a list.
    assert sched.metric is None


def test_complete_and_remove_do_not_break(tmp_path):
    sched = MultiObjectiveASHA(OBJECTIVES, max_t=10)
    trial = FakeTrial("a")
    sched.on_trial_add(None, trial)
    sched.on_trial_complete(None, trial, None)
    sched.on_trial_complete(None, trial, {})
    sched.on_trial_complete(None, trial, {"epoch": 3, "AP": 0.4})  # an objective missing: ignored
    sched.on_trial_complete(None, trial, result(3, 0.4, 2.0))      # a stopper's last result
    assert sched.rungs[1].recorded == {"a": (0.4, 2.0)}
    sched.on_trial_remove(None, FakeTrial("never-seen"))
    sched.on_trial_error(None, trial)
    sched.save(str(tmp_path / "s.pkl"))
    other = MultiObjectiveASHA({"x": "min"})
    other.restore(str(tmp_path / "s.pkl"))
    assert other.rungs == sched.rungs and other.objectives == OBJECTIVES
    assert pickle.loads(pickle.dumps(sched)).rungs == sched.rungs


@pytest.mark.parametrize("kwargs", [dict(objectives={}), dict(objectives={"AP": "maximize"}),
                                    dict(objectives=OBJECTIVES, reduction_factor=1),
                                    dict(objectives=OBJECTIVES, grace_period=5, max_t=4)])
def test_bad_arguments_are_refused(kwargs):
    with pytest.raises(ValueError):
        MultiObjectiveASHA(**kwargs)


def test_rungs_are_below_max_t():
    for rf, grace, max_t in itertools.product([2, 3], [1, 2], [4, 9, 10]):
        sched = MultiObjectiveASHA(OBJECTIVES, grace_period=grace, max_t=max_t, reduction_factor=rf)
        assert [r.milestone for r in sched.rungs] == [grace * rf**k for k in range(10)
                                                      if grace * rf**k < max_t]
