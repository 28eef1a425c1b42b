"""``--resume``'s reconciliation on hand-made stores (no Ray): every combination of Optuna state and
parquet summary row gets the outcome the table in ``platform/reconcile.py`` promises."""
import math
import os

import optuna
import pytest

from transcenter.platform.reconcile import LOST_ERROR, reconcile
from transcenter.platform.trial_files import trial_key, write_failure
from transcenter.store.results import ResultStore

FIXED = {"train.epochs": 2}


def _params(searched: dict) -> dict:
    return {**FIXED, **searched}


S = optuna.trial.TrialState


@pytest.fixture
def stores(tmp_path):
    study = optuna.create_study(study_name="s", storage=f"sqlite:///{tmp_path}/optuna.db",
                                direction="maximize")
    return study, ResultStore(str(tmp_path), "s"), str(tmp_path / "s" / "train")


def _trial(study, store, epochs, size=16):
    t = study.ask()
    t.suggest_categorical("model.heatmap_size", [16, 32])
    key = trial_key(t.number)
    for e in range(1, epochs + 1):
        t.report(10.0 * e, e)
        store.record_epoch(key, e, {**FIXED, "model.heatmap_size": 16}, {"AP50": 10.0 * e})
    return t, key


def test_every_combination_has_its_outcome(stores):
    study, store, train = stores
    t0, k0 = _trial(study, store, 2)
    study.tell(t0, 20.0)                                    # COMPLETE, no summary row
    t1, k1 = _trial(study, store, 1)
    study.tell(t1, state=S.PRUNED)                          # PRUNED, no summary row
    t2, k2 = _trial(study, store, 1)
    study.tell(t2, state=S.FAIL)                            # FAIL, failure line in its run folder
    write_failure(f"{train}/{k2}", "diverged at epoch 2: loss_pos")
    t3, k3 = _trial(study, store, 2)
    store.record_trial(k3, FIXED, "completed")              # RUNNING, parquet says completed
    t4, k4 = _trial(study, store, 1)
    store.record_trial(k4, FIXED, "stopped")                # RUNNING, parquet says stopped
    t5, k5 = _trial(study, store, 1)                        # RUNNING, no summary: to resume
    t6, k6 = _trial(study, store, 2)
    study.tell(t6, 20.0)
    store.record_trial(k6, FIXED, "completed")              # agreeing: untouched
    t7, k7 = _trial(study, store, 0)
    study.tell(t7, state=S.FAIL)                            # FAIL, no failure line
    store.record_trial("stranger", FIXED, "completed")      # a trial Optuna does not know
    leftover = store.root + "/epochs/." + k5 + ".parquet.tmp-" + "0" * 32
    with open(leftover, "wb") as f:
        f.write(b"torn")

    state = reconcile(study, store, train, _params, ["AP50"])

    assert state.finished == 7 and [t.number for t in state.unfinished] == [t5.number]
    trials = store.read_trials().set_index("trial_id")
    epochs = store.read_epochs().set_index(["trial_id", "epoch"])
    assert trials.loc[k0, "status"] == "completed" and epochs.loc[(k0, 2), "status"] == "completed"
    assert epochs.loc[(k0, 1), "status"] == "running"
    assert trials.loc[k1, "status"] == "stopped" and epochs.loc[(k1, 1), "status"] == "stopped"
    assert trials.loc[k2, ["status", "error"]].tolist() == ["error", "diverged at epoch 2: loss_pos"]
    assert trials.loc[k7, ["status", "error"]].tolist() == ["error", LOST_ERROR]
    by_number = {t.number: t for t in study.get_trials()}
    assert by_number[t3.number].state == S.COMPLETE and by_number[t3.number].value == 20.0
    assert by_number[t4.number].state == S.PRUNED
    assert by_number[t5.number].state == S.RUNNING and k5 not in trials.index
    assert "stranger" in trials.index
    assert not any(".tmp-" in p for p in os.listdir(store.root + "/epochs"))
    assert len(state.actions) == 7  # 6 repairs and the removed temporary file

    again = reconcile(study, store, train, _params, ["AP50"])  # idempotent
    assert again.actions == [] and again.finished == 7


def test_a_completed_trial_without_a_finite_value_is_failed(stores):
    study, store, train = stores
    _t, key = _trial(study, store, 1)
    store.record_epoch(key, 1, {**FIXED, "model.heatmap_size": 16}, {"AP50": math.nan})
    store.record_trial(key, FIXED, "completed")
    reconcile(study, store, train, _params, ["AP50"])
    assert study.get_trials()[0].state == S.FAIL
