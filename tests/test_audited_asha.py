"""Audited ASHA on small hand-made cases: a crossing pair, a non-crossing pair, a rung whose
sentinels disagree with the final ranking, and the crossing surrogate's curves."""
from dataclasses import dataclass, field

import pytest
from ray.tune.schedulers import TrialScheduler

from transcenter.platform.audited_asha import AuditedASHA
from transcenter.platform.schedulers import Stopping, make_scheduler
from transcenter.platform.simulate import CrossingSurrogate
from transcenter.platform.trial_files import REPLAY_KEY

SIZE = "model.heatmap_size"


@dataclass
class FakeTrial:
    trial_id: str
    config: dict = field(default_factory=dict)


def train(scheduler, trials: list[tuple[str, dict, list[float]]], metric: str = "AP50") -> dict:
    """Trains the trials one after the other, each reporting its curve until the scheduler stops
    it; returns trial -> epochs trained."""
    trained = {}
    for trial_id, config, curve in trials:
        trial = FakeTrial(trial_id, config)
        scheduler.on_trial_add(None, trial)
        for epoch, value in enumerate(curve, start=1):
            decision = scheduler.on_trial_result(None, trial, {"epoch": epoch, metric: value})
            trained[trial_id] = epoch
            if decision == TrialScheduler.STOP:
                break
        scheduler.on_trial_complete(None, trial, {"epoch": trained[trial_id], metric: value})
    return trained


# A fast starter that plateaus low (S = 16) and a slow starter that ends higher (S = 64).
FAST = [40.0, 60.0, 70.0, 72.0]
SLOW = [20.0, 40.0, 60.0, 78.0]


def test_a_crossing_pair_keeps_the_slow_starter_when_strata_separate_them():
    pair = [("fast", {SIZE: 16}, FAST), ("slow", {SIZE: 64}, SLOW)]
    asha = make_scheduler({"AP50": "max"}, 4, Stopping("asha"))
    assert train(asha, pair)["slow"] == 1  # Ray's ASHA stops the eventual winner at rung 1
    audited = AuditedASHA({"AP50": "max"}, 4, stratify=SIZE, sentinel_every=0)
    assert train(audited, pair) == {"fast": 4, "slow": 4}


def test_a_non_crossing_pair_is_stopped_as_asha_stops_it():
    good, bad = [40.0, 60.0, 70.0, 78.0], [20.0, 30.0, 40.0, 50.0]
    pair = [("good", {SIZE: 64}, good), ("bad", {SIZE: 64}, bad)]
    asha = make_scheduler({"AP50": "max"}, 4, Stopping("asha"))
    audited = AuditedASHA({"AP50": "max"}, 4, stratify=SIZE, sentinel_every=0)
    assert train(asha, pair) == train(audited, pair) == {"good": 4, "bad": 1}


def noisy(curve: list[float], wiggle: float) -> list[float]:
    """The curve with an alternating wiggle: the audit's noise estimate is about ``wiggle``."""
    return [v + (wiggle if i % 2 else -wiggle) for i, v in enumerate(curve)]


def train_in_lockstep(scheduler, trials: list[tuple[str, dict, list[float]]]) -> dict:
    """Trains the trials side by side, epoch by epoch, each epoch's reports worst first (so that at
    a rung each arrival is the best so far and continues); returns trial -> epochs trained."""
    running = {trial_id: FakeTrial(trial_id, config) for trial_id, config, _ in trials}
    curves = {trial_id: curve for trial_id, _, curve in trials}
    for trial in running.values():
        scheduler.on_trial_add(None, trial)
    trained = {}
    for epoch in range(1, max(len(c) for c in curves.values()) + 1):
        for trial_id in sorted(running, key=lambda t: curves[t][epoch - 1]):
            result = {"epoch": epoch, "AP50": curves[trial_id][epoch - 1]}
            trained[trial_id] = epoch
            if scheduler.on_trial_result(None, running[trial_id], result) == TrialScheduler.STOP:
                scheduler.on_trial_complete(None, running.pop(trial_id), result)
    return trained


# Four curves whose rung-1 order is the reverse of their final order, flat (but for a wiggle of
# 0.1) over their last epochs, and a trial last at rung 1 that would end first.
CROSSING = [(f"s{i}", {}, noisy([20.0 + 5 * i, 40.0, 50.0, 80.0 - 5 * i, 80.0 - 5 * i,
                                 80.0 - 5 * i], 0.1)) for i in range(4)]
LATE = ("late", {}, [10.0, 41.0, 60.0, 90.0, 90.0, 90.0])


def test_a_rung_whose_sentinels_disagree_stops_deciding():
    audited = AuditedASHA({"AP50": "max"}, 6, reduction_factor=2, sentinel_every=100, min_pairs=3)
    assert train_in_lockstep(audited, CROSSING) == {f"s{i}": 6 for i in range(4)}
    rung = audited.audit()[0]
    assert rung.milestone == 1 and rung.tau == -1.0 and rung.pairs == 6 and not rung.deciding
    assert audited.audit()[1].deciding  # rung 2: every trial tied, no evidence against it
    assert train(audited, [LATE])["late"] == 6
    # Without the audit (no sentinels), the same trial is stopped at rung 1.
    blind = AuditedASHA({"AP50": "max"}, 6, sentinel_every=0)
    train_in_lockstep(blind, CROSSING)
    assert train(blind, [LATE])["late"] == 1


def test_sentinels_agreeing_with_the_final_ranking_keep_the_rung_deciding():
    agreeing = [(f"s{i}", {}, noisy([20.0 + 5 * i, 40.0 + 5 * i, 50.0 + 5 * i, 60.0 + 5 * i,
                                     60.0 + 5 * i, 60.0 + 5 * i], 0.1)) for i in range(4)]
    audited = AuditedASHA({"AP50": "max"}, 6, reduction_factor=2, sentinel_every=100, min_pairs=3)
    train_in_lockstep(audited, agreeing)
    assert [(a.tau, a.deciding) for a in audited.audit()] == [(1.0, True)] * 3
    assert train(audited, [("poor", {}, [5.0] * 6)])["poor"] == 1


@pytest.mark.parametrize("scope, poor_trains", [("borrowed", 1), ("own", 6)])
def test_a_stratum_without_pairs_of_its_own_borrows_the_audit_only_when_told(scope, poor_trains):
    """S = 16's four trials agree with their final ranking at every rung; S = 64 has one finished
    trial (its sentinel), so no pair: "borrowed" lets S = 16's audit decide for it, "own" does not."""
    agreeing = [(f"s{i}", {SIZE: 16}, noisy([20.0 + 5 * i, 40.0 + 5 * i, 50.0 + 5 * i, 60.0 + 5 * i,
                                              60.0 + 5 * i, 60.0 + 5 * i], 0.1)) for i in range(4)]
    audited = AuditedASHA({"AP50": "max"}, 6, reduction_factor=2, stratify=SIZE, sentinel_every=2,
                          min_pairs=3, audit_scope=scope)
    train_in_lockstep(audited, agreeing)
    assert audited.tau_and_pairs(1, 16) == (1.0, 6)
    trained = train(audited, [("first", {SIZE: 64}, [50.0] * 6), ("poor", {SIZE: 64}, [5.0] * 6)])
    assert trained == {"first": 6, "poor": poor_trains}
    # "own": the poor trial trained to the end, so S = 64 now has one pair of its own.
    assert audited.tau_and_pairs(1, 64) == ((1.0, 6) if scope == "borrowed" else (1.0, 1))


def test_pairs_within_the_noise_are_not_evidence():
    # Final values 0.1 apart with an epoch-to-epoch noise of about 1: no pair is clear.
    close = [(f"s{i}", {}, noisy([20.0 + i, 40.0, 50.0, 60.0 - 0.1 * i, 60.0 - 0.1 * i,
                                  60.0 - 0.1 * i], 1.0)) for i in range(4)]
    audited = AuditedASHA({"AP50": "max"}, 6, sentinel_every=100, min_pairs=1)
    train_in_lockstep(audited, close)
    assert audited.audit()[0].pairs == 0 and audited.audit()[0].deciding


def test_several_objectives_rank_by_fronts_within_a_stratum():
    objectives = {"AP": "max", "gmacs": "min"}
    audited = AuditedASHA(objectives, 4, stratify=SIZE, sentinel_every=0)
    first, second = FakeTrial("a", {SIZE: 64}), FakeTrial("b", {SIZE: 64})
    for trial in (first, second):
        audited.on_trial_add(None, trial)
    assert audited.on_trial_result(None, first, {"epoch": 1, "AP": 30, "gmacs": 5}) == "CONTINUE"
    # dominated by the first trial at rung 1 of its stratum
    assert audited.on_trial_result(None, second, {"epoch": 1, "AP": 20, "gmacs": 6}) == "STOP"


def test_a_replayed_result_is_never_decided_on():
    audited = AuditedASHA({"AP50": "max"}, 4, sentinel_every=0)
    train(audited, [("good", {}, [50.0, 60.0, 70.0, 80.0])])
    trial = FakeTrial("resumed")
    result = {"epoch": 1, "AP50": 1.0, REPLAY_KEY: True}
    assert audited.on_trial_result(None, trial, result) == TrialScheduler.CONTINUE


@pytest.mark.parametrize("bad, message", [
    ({"policy": "sometimes"}, "--stopping"), ({"grace_period": 0}, "--grace-period"),
    ({"reduction_factor": 1}, "--reduction-factor"), ({"sentinel_every": -1}, "--sentinel-every"),
    ({"min_tau": 2.0}, "--rung-min-tau"), ({"audit_scope": "all"}, "--audit-scope")])
def test_a_bad_stopping_setting_is_refused_naming_its_flag(bad, message):
    with pytest.raises(ValueError, match=message):
        Stopping(**bad)


def test_the_crossing_surrogate_crosses_in_the_papers_way():
    space = {SIZE: {"type": "categorical", "values": [16, 32, 64, 128]}}
    curves = CrossingSurrogate(space, noise=0.0)

    def ap50(size, epoch):
        return curves.metrics({SIZE: size}, epoch)["AP50"]

    assert ap50(16, 1) > ap50(32, 1) > ap50(64, 1) > ap50(128, 1)  # Fig. 6: small S learns fastest
    assert max((16, 32, 64, 128), key=lambda s: ap50(s, 30)) == 64  # Table 4: S = 64 ends highest
    crossing = next(e for e in range(1, 31) if ap50(64, e) > ap50(16, e))
    assert 5 <= crossing <= 20


def test_the_last_epoch_is_no_rung():
    audited = AuditedASHA({"AP50": "max"}, 4, reduction_factor=2, sentinel_every=0)
    assert audited.milestones == [1, 2]  # 4 = grace · rf² is the last epoch: the trial finished
    pair = [("good", {}, [10.0, 20.0, 30.0, 80.0]), ("late_loser", {}, [10.0, 20.0, 30.0, 5.0])]
    assert train(audited, pair) == {"good": 4, "late_loser": 4}
