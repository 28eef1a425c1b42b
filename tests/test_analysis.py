"""Dashboard tables on studies written by the store from planted numbers."""

import math

import numpy as np
import optuna
import pytest

from transcenter.dashboards import analysis, pareto
from transcenter.platform.search import Categorical, Float
from transcenter.store.results import ResultStore

# trial: (heatmap size, AP50 per epoch, AP per epoch), in percent as the evaluator reports them;
# a peaks at epoch 3 above where b ends, but a trial's value is its last epoch's: b ranks first.
PLANTED = {
    "a": (16, [40.0, 50.0, 80.0, 55.0], [20.0, 25.0, 40.0, 28.0]),
    "b": (16, [20.0, 30.0, 40.0, 70.0], [10.0, 15.0, 20.0, 35.0]),
    "c": (32, [10.0, 30.0, 50.0, 60.0], [5.0, 15.0, 25.0, 31.0]),
    "d": (32, [30.0, 30.0, 30.0, 30.0], [15.0, 15.0, 15.0, math.inf]),  # diverged at epoch 4
    "e": (64, [25.0], [12.0]),
}


def params(size):
    return {"model.heatmap_size": size, "optim.lr": 3e-4, "loss.alpha": 2.0}


def metrics(size, epoch, ap50, ap):
    return {"AP": ap, "AP50": ap50, "AP75": ap / 2, "APs": ap / 4, "APm": ap / 3, "APl": ap * 1.5,
            "loss_pos": size / 16 / epoch, "loss_size": 2 * size / 16 / epoch}


@pytest.fixture
def study_dir(tmp_path):
    store = ResultStore(str(tmp_path), "planted")
    for trial, (size, ap50s, aps) in PLANTED.items():
        for epoch, (ap50, ap) in enumerate(zip(ap50s, aps), start=1):
            store.record_epoch(trial, epoch, params(size), metrics(size, epoch, ap50, ap))
        if trial != "e":
            store.record_trial(trial, params(size), "completed")
    return tmp_path / "planted"


def test_load_study_one_and_several(study_dir, tmp_path):
    df = analysis.load_study(study_dir)
    assert len(df) == 17 and df["study"].unique().tolist() == ["planted"]
    assert df.dtypes["model.heatmap_size"] == "int64" and df.dtypes["epoch"] == "int64"
    other = ResultStore(str(tmp_path), "other")
    other.record_epoch("x", 1, params(128), metrics(128, 1, 20.0, 10.0))
    both = analysis.load_study([str(study_dir), str(tmp_path / "other")])
    assert len(both) == 18 and sorted(both["study"].unique()) == ["other", "planted"]
    assert both.dtypes["model.heatmap_size"] == "int64"


def test_lower_limit_exact(study_dir):
    table = analysis.lower_limit(analysis.load_study(study_dir))
    assert table.index.names == ["model.heatmap_size", "epoch"]
    row = table.loc[(16, 1)]
    assert row["mean"] == pytest.approx(30.0) and row["std"] == pytest.approx(math.sqrt(200))
    assert (row["min"], row["max"], row["n_trials"]) == (20.0, 40.0, 2)
    assert table.loc[(32, 3), "mean"] == pytest.approx(40.0)
    assert table.loc[(64, 1), "n_trials"] == 1 and math.isnan(table.loc[(64, 1), "std"])
    assert (64, 2) not in table.index and (16, 4) not in table.index
    # the paper's Fig. 6 numbers as printed, in percent like ours
    assert table.loc[(16, 2), "paper.AP50"] == pytest.approx(44.9)
    assert table.loc[(64, 1), "paper.AP50"] == pytest.approx(40.5)


def test_upper_limit_is_the_last_epoch_of_the_best_trial(study_dir):
    table = analysis.upper_limit(analysis.load_study(study_dir))
    assert table.index.tolist() == [16, 32, 64]
    assert table.loc[16, ["trial_id", "epoch"]].tolist() == ["b", 4]  # not a's peak (AP 40)
    assert table.loc[16, ["AP", "AP50", "AP75"]].tolist() == pytest.approx([35.0, 70.0, 17.5])
    assert table.loc[32, ["trial_id", "epoch"]].tolist() == ["c", 4]  # d's inf is not a result
    assert table.loc[16, ["paper.AP", "paper.AP50", "paper.AP75"]].tolist() == pytest.approx(
        [50.5, 73.5, 56.3])
    assert math.isnan(table.loc[16, "paper.APs"])
    assert table.loc[64, ["paper.APs", "paper.APm", "paper.APl"]].tolist() == pytest.approx(
        [17.4, 32.3, 64.9])


def test_loss_curves_exact(study_dir):
    table = analysis.loss_curves(analysis.load_study(study_dir))
    assert table.loc[(16, 2)].tolist() == pytest.approx([0.5, 1.0, 2])
    assert table.loc[(32, 4)].tolist() == pytest.approx([0.5, 1.0, 2])
    assert table.loc[(64, 1)].tolist() == pytest.approx([4.0, 8.0, 1])


def test_trial_status_includes_running_trials(study_dir):
    status = analysis.trial_status(analysis.load_study(study_dir), analysis.load_trials(study_dir))
    assert status["trial_id"].tolist() == ["a", "b", "c", "d", "e"]
    status = status.set_index("trial_id")
    assert list(status.columns) == ["study", "status", "error", "n_epochs", "final.AP", "final.AP50"]
    assert status.loc["e", ["status", "n_epochs", "final.AP"]].tolist() == ["running", 1, 12.0]
    assert status.loc["a", ["n_epochs", "final.AP", "final.AP50"]].tolist() == [4, 28.0, 55.0]
    assert math.isinf(status.loc["d", "final.AP"])  # as stored


def rigged_study(tmp_path, n=30):
    """AP depends on loss.alpha alone; lr, beta, heatmap size and a string option are noise."""
    rng = np.random.default_rng(0)
    store = ResultStore(str(tmp_path), "rigged")
    store.write_meta({"search_space": {  # as a study writes it: its scale comes from here
        "loss.alpha": Float(1, 3).describe(), "loss.beta": Float(2, 6).describe(),
        "optim.lr": Float(1e-4, 1e-3, log=True).describe(),
        "model.heatmap_size": Categorical([16, 32, 64, 128]).describe(),
        "loss.bg_weight_mode": Categorical(["paper", "single"]).describe()}})
    for i in range(n):
        p = {"loss.alpha": float(rng.uniform(1, 3)), "loss.beta": float(rng.uniform(2, 6)),
             "optim.lr": float(10 ** rng.uniform(-4, -3)),
             "model.heatmap_size": int(rng.choice([16, 32, 64, 128])),
             "loss.bg_weight_mode": str(rng.choice(["paper", "single"]))}
        ap = 20.0 * p["loss.alpha"] + float(rng.normal(0, 0.2))  # percent
        store.record_epoch(f"t{i:02d}", 1, p, {"AP": ap + 10.0})  # a peak the last epoch loses
        store.record_epoch(f"t{i:02d}", 2, p, {"AP": ap})
    return analysis.load_study(tmp_path / "rigged")


def test_importance_finds_the_planted_parameter(tmp_path):
    scores = analysis.importance(rigged_study(tmp_path))
    assert scores.index[0] == "loss.alpha", scores
    assert scores["loss.alpha"] > 0.5 and scores.sum() == pytest.approx(1.0)
    assert len(scores) == 5


def test_importance_with_fanova(tmp_path):
    pytest.importorskip("sklearn", reason="Optuna's fANOVA needs scikit-learn")
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
    scores = analysis.importance(rigged_study(tmp_path), evaluator=evaluator)
    assert scores.index[0] == "loss.alpha", scores


def test_rebuilt_study_distributions_and_values(tmp_path):
    df = rigged_study(tmp_path, n=6)
    study = analysis.optuna_study(df)
    assert len(study.trials) == 6
    distributions = study.trials[0].distributions
    assert isinstance(distributions["model.heatmap_size"], optuna.distributions.CategoricalDistribution)
    assert isinstance(distributions["loss.bg_weight_mode"], optuna.distributions.CategoricalDistribution)
    assert distributions["optim.lr"].log and not distributions["loss.alpha"].log
    last = df[df["epoch"] == 2].sort_values("trial_id")["AP"].tolist()
    assert [t.value for t in study.trials] == last


def test_log_scale_comes_from_the_search_space_not_the_name(tmp_path):
    store = ResultStore(str(tmp_path), "bg")
    store.write_meta({"search_space": {"loss.bg_weight": Float(0.01, 1.0, log=True).describe(),
                                       "optim.lr": Float(1e-4, 1e-3).describe()}})
    for i, (bg, lr) in enumerate([(0.01, 1e-4), (0.1, 5e-4), (1.0, 1e-3)]):
        store.record_epoch(f"t{i}", 1, {"loss.bg_weight": bg, "optim.lr": lr}, {"AP": 10.0 + i})
    distributions = analysis.optuna_study(analysis.load_study(tmp_path / "bg")).trials[0].distributions
    assert distributions["loss.bg_weight"].log and not distributions["optim.lr"].log


def test_importance_over_a_constant_target_is_undefined(tmp_path):
    store = ResultStore(str(tmp_path), "flat")
    for i in range(4):
        store.record_epoch(f"t{i}", 1, {"model.heatmap_size": 16 * 2 ** i}, {"AP": 0.0})
    with pytest.raises(analysis.NotEnoughTrials, match="undefined: the target does not vary"):
        analysis.importance(analysis.load_study(tmp_path / "flat"))


def test_importance_refuses_too_little(study_dir, tmp_path):
    df = analysis.load_study(study_dir)
    with pytest.raises(analysis.NotEnoughTrials, match="varies"):
        analysis.importance(df[df["model.heatmap_size"] == 16])
    with pytest.raises(analysis.NotEnoughTrials, match="got 1"):
        analysis.importance(df[df["trial_id"] == "a"])


def test_empty_study_gives_empty_tables(tmp_path):
    df = analysis.load_study(tmp_path / "nothing")
    assert df.empty
    assert analysis.lower_limit(df).empty and analysis.upper_limit(df).empty
    assert analysis.loss_curves(df).empty and analysis.final_per_trial(df).empty
    assert analysis.head_comparison(df).empty


def test_a_trials_value_is_its_last_epoch_everywhere(tmp_path):
    """A trial whose AP peaks mid-way (0.2, 0.6, 0.4) is worth 0.4, its last epoch's, in every table."""
    store = ResultStore(str(tmp_path), "peak")
    planted = {"t0": (16, [0.2, 0.6, 0.4]), "t1": (32, [0.1, 0.1, 0.1])}
    for trial, (size, aps) in planted.items():
        for epoch, ap in enumerate(aps, start=1):
            store.record_epoch(trial, epoch, {"model.heatmap_size": size}, {"AP": ap, "gmacs": 2.0},
                               status="completed" if epoch == len(aps) else "running")
        store.record_trial(trial, {"model.heatmap_size": size}, "completed")
    df = analysis.load_study(tmp_path / "peak")
    trials = analysis.load_trials(tmp_path / "peak")
    status = analysis.trial_status(df, trials)
    best = analysis.best_trial(status)
    upper = analysis.upper_limit(df)
    points = pareto.trial_points(df, {"AP": "max", "gmacs": "min"})
    values = {
        "trials table": trials.loc[0, "final.AP"],
        "trial_status": status.loc[0, "final.AP"],
        "best_trial": best["final.AP"],
        "search": analysis.final_per_trial(df, "AP").loc[0, "final.AP"],
        "optuna": analysis.optuna_study(df).trials[0].value,
        "upper_limit": upper.loc[16, "AP"],
        "trial_points": points.loc[0, "AP"],
    }
    assert values == dict.fromkeys(values, 0.4)
    assert (best["trial_id"], best["n_epochs"], upper.loc[16, "epoch"], points.loc[0, "epoch"]) == (
        "t0", 3, 3, 3)


def test_head_comparison_uses_each_trials_last_evaluation(tmp_path):
    store = ResultStore(str(tmp_path), "overlap")
    # trial: (head, S, per epoch (AP50, overlap_recall)); NaN AP50 = not evaluated that epoch
    planted = {"t": ("transcenter", 16, [(40.0, 60.0), (50.0, 90.0)]),
               "u": ("transcenter", 16, [(45.0, 70.0), (math.nan, math.nan)]),
               "c": ("centernet", 16, [(55.0, 50.0), (60.0, 48.0)]),
               "d": ("centernet", 32, [(30.0, math.nan)])}
    for trial, (head, size, rows) in planted.items():
        p = {"model.head": head, "model.heatmap_size": size}
        for epoch, (ap50, overlap) in enumerate(rows, start=1):
            store.record_epoch(trial, epoch, p, {"AP": ap50 / 2, "AP50": ap50, "overlap_recall": overlap})
    table = analysis.head_comparison(analysis.load_study(tmp_path / "overlap"))
    assert table.index.names == ["model.head", "model.heatmap_size"]
    assert table.loc[("transcenter", 16), "overlap_recall"] == pytest.approx(80.0)  # 90 and 70
    assert table.loc[("transcenter", 16), "AP50"] == pytest.approx(47.5)
    assert table.loc[("centernet", 16)].tolist() == pytest.approx([30.0, 60.0, 48.0, 1])
    assert math.isnan(table.loc[("centernet", 32), "overlap_recall"])
    # Studies from before the CenterNet head have no model.head column: all TransCenter.
    old = analysis.load_study(tmp_path / "overlap").drop(columns="model.head")
    assert analysis.head_comparison(old).index.get_level_values(0).unique().tolist() == ["transcenter"]


def test_lower_limit_leader_per_seed_and_whether_the_conclusion_holds():
    import pandas as pd

    from transcenter.dashboards.summary import lower_limit_note

    def frame(ap50_by_seed):  # {seed: {size: AP50 in epochs 1-3}}
        rows = [{"trial_id": f"{seed}-{size}", "epoch": epoch, "model.heatmap_size": size,
                 "train.seed": seed, "AP50": value + epoch}
                for seed, sizes in ap50_by_seed.items() for size, value in sizes.items()
                for epoch in (1, 2, 3, 4)]
        return pd.DataFrame(rows)

    stable = analysis.lower_limit_leaders(frame({0: {16: 30.0, 64: 10.0}, 1: {16: 25.0, 64: 20.0}}))
    assert stable["leader"].tolist() == [16, 16] and stable.index.tolist() == [0, 1]
    assert stable.loc[1, "score"] == pytest.approx(27.0) and stable.loc[1, "runner_up"] == 64
    note = lower_limit_note(stable, "model.heatmap_size", 3)
    assert "model.heatmap_size = 16 leads for every seed" in note and "same for all 2 seeds" in note
    flipped = analysis.lower_limit_leaders(frame({0: {16: 30.0, 64: 10.0}, 1: {16: 5.0, 64: 20.0}}))
    assert flipped["leader"].tolist() == [16, 64]
    assert "differs between seeds (seed 0: 16 (32), seed 1: 64 (22))" in lower_limit_note(
        flipped, "model.heatmap_size", 3)
    single = analysis.lower_limit_leaders(frame({0: {16: 30.0, 64: 10.0}}).drop(columns="train.seed"))
    assert single.index.tolist() == ["all"]
    assert lower_limit_note(single, "model.heatmap_size", 3).startswith(
        "In epochs 1-3, model.heatmap_size = 16 leads (mean AP50 32; next: 64 at 12)")


def test_importance_of_a_single_searched_parameter_says_it_is_not_informative(study_dir):
    with pytest.raises(analysis.NotEnoughTrials, match=r"one hyperparameter \(model.heatmap_size\)"):
        analysis.importance(analysis.load_study(study_dir))
