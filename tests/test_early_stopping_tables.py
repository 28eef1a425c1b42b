"""What the tables say about early stopping: an upper limit that is not known, seed replicates
compared by their spread, and the rung audit recomputed from the stored rows."""
import math

import numpy as np
import pytest

from transcenter.dashboards import analysis
from transcenter.dashboards.report import write_report
from transcenter.dashboards.summary import collect, render_text
from transcenter.store.results import ResultStore

SIZE = "model.heatmap_size"


def record(store: ResultStore, trial: str, params: dict, ap50s: list[float], status: str) -> None:
    """Stores a trial's epochs (AP = AP50 / 2) with ``status`` on its last epoch."""
    for epoch, ap50 in enumerate(ap50s, start=1):
        last = epoch == len(ap50s)
        store.record_epoch(trial, epoch, params, {"AP50": ap50, "AP": ap50 / 2},
                           status=status if last else "running")
    store.record_trial(trial, params, status)


def test_a_size_whose_trials_all_stopped_has_no_known_upper_limit(tmp_path):
    store = ResultStore(str(tmp_path), "s")
    record(store, "full", {SIZE: 16}, [40.0, 65.0, 62.0, 64.0], "completed")  # worth 64, not 65
    record(store, "lucky", {SIZE: 16}, [66.0], "stopped")  # a stopped trial's noise: not a limit
    record(store, "slow1", {SIZE: 64}, [20.0], "stopped")
    record(store, "slow2", {SIZE: 64}, [32.0, 30.0], "stopped")  # worth 30, its last epoch
    table = analysis.upper_limit(analysis.load_study(tmp_path / "s"), rank_by="AP50")
    assert table.loc[16, ["trial_id", "epoch", "AP50"]].tolist() == ["full", 4, 64.0]
    assert table.loc[16, ["known", "trials", "complete_trials"]].tolist() == [True, 2, 1]
    assert table.loc[64, ["trial_id", "AP50", "known", "complete_trials"]].tolist() == [
        "slow2", 30.0, False, 0]
    note = analysis.upper_limit_note(table, rank_by="AP50")
    assert note.startswith("model.heatmap_size = 16 leads")
    assert "upper limit of model.heatmap_size = 64 is not known" in note
    assert "its row is a stopped trial's last epoch" in note


def test_seed_replicates_are_compared_by_their_mean_and_spread(tmp_path):
    store = ResultStore(str(tmp_path), "s")
    finals = {16: [60.0, 62.0, 64.0], 64: [61.0, 66.0, 68.0]}  # means 62 and 65
    for size, values in finals.items():
        for seed, value in enumerate(values):
            record(store, f"t{size}-{seed}", {SIZE: size, "train.seed": seed},
                   [value - 10, value + 5, value], "completed")  # each seed's last epoch, not its peak
    table = analysis.upper_limit(analysis.load_study(tmp_path / "s"), rank_by="AP50")
    assert table.loc[64, "AP50"] == pytest.approx(65.0)  # the mean, not the luckiest seed (68)
    assert table.loc[64, "epoch"] == 3
    assert table.loc[64, "AP50.std"] == pytest.approx(float(np.std(finals[64], ddof=1)))
    assert table.loc[64, "seeds"] == 3
    note = analysis.upper_limit_note(table, rank_by="AP50")
    assert "64 leads" in note and "(3.0) does not exceed the spread over seeds" in note


def crossing_study(tmp_path, stopped_at_rung_1: int) -> str:
    """A study whose four complete trials' rung-1 order is the reverse of their final order, and
    ``stopped_at_rung_1`` trials that early stopping stopped at epoch 1."""
    store = ResultStore(str(tmp_path), "crossing")
    store.write_meta({"objectives": {"AP50": "max"}, "settings": {
        "asha": True, "epochs": 6, "grace_period": 1, "reduction_factor": 2,
        "stratify": None, "rung_min_tau": 0.5}})
    for i in range(4):
        end = 80.0 - 5 * i
        curve = [20.0 + 5 * i, 40.0, 50.0, end - 0.1, end + 0.1, end - 0.1]
        record(store, f"c{i}", {"loss.alpha": float(i)}, curve, "completed")
    for i in range(stopped_at_rung_1):
        record(store, f"x{i}", {"loss.alpha": 10.0 + i}, [5.0], "stopped")
    return str(tmp_path / "crossing")


def test_the_rung_audit_finds_where_early_stopping_disagreed(tmp_path):
    path = crossing_study(tmp_path, stopped_at_rung_1=2)
    audit = analysis.rung_audit(analysis.load_study(path), analysis.load_meta(path)["crossing"])
    assert audit.index.tolist() == [1, 2, 4]
    assert audit.loc[1, ["pairs", "tau", "stopped", "agrees"]].tolist() == [6, -1.0, 2, False]
    assert math.isnan(audit.loc[2, "tau"]) and audit.loc[2, "agrees"]  # all tied at epoch 2
    assert audit.loc[4, "tau"] == 1.0
    note = analysis.rung_audit_note(audit)
    assert note.startswith("Early stopping disagreed with the final ranking at epoch 1 (tau -1.00")
    text = render_text(collect(path))
    assert text.startswith("== Early stopping ==\nEarly stopping disagreed")
    assert "== Rung audit" in text
    document = write_report(path, tmp_path / "report.html").read_text(encoding="utf-8")
    top = document.split("<h2>", 1)[0]  # before the first section
    assert "Early stopping disagreed with the final ranking at epoch 1" in top
    assert "<h2>Rung audit" in document


def test_a_study_without_early_stopping_has_no_rung_audit(tmp_path):
    path = crossing_study(tmp_path, stopped_at_rung_1=0)
    meta = analysis.load_meta(path)["crossing"]
    meta["settings"]["asha"] = False
    assert analysis.rung_audit(analysis.load_study(path), meta).empty
