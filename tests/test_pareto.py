"""Pareto front and hypervolume against brute force on hand-made trial tables."""

import itertools
import warnings

import matplotlib
import numpy as np
import optuna
import pandas as pd
import pytest
from matplotlib.figure import Figure

from transcenter.dashboards import pareto

CASES = {  # objectives; reference; integer grid range the points are drawn from
    "2d": ({"AP": "max", "gmacs": "min"}, {"AP": 2, "gmacs": 8}, (0, 10)),
    "3d": ({"AP": "max", "gmacs": "min", "params": "min"}, {"AP": 1, "gmacs": 6, "params": 5}, (0, 8)),
    "4d": ({"AP": "max", "gmacs": "min", "params": "min", "AP50": "max"},
           {"AP": 1, "gmacs": 5, "params": 4, "AP50": 0}, (0, 6)),
}


def better_or_equal(a, b, direction):
    return a >= b if direction == "max" else a <= b


def dominates(a, b, objectives):
    """a, b: {objective: value}; written out independently of hypervolume.non_dominated."""
    no_worse = all(better_or_equal(a[n], b[n], d) for n, d in objectives.items())
    return no_worse and any(a[n] != b[n] for n in objectives)


def brute_front(points, objectives):
    rows = points.to_dict("records")
    return {r["trial_id"] for r in rows if not any(dominates(o, r, objectives) for o in rows)}


def brute_hypervolume(points, objectives, reference, grid):
    """Unit cells [c, c + 1]^K of the integer grid between the reference and the points, counted."""
    low, high = grid
    rows = points.to_dict("records")
    ranges = []
    for name, direction in objectives.items():  # cells on the good side of the reference
        r = reference[name]
        ranges.append(range(r, high + 1) if direction == "max" else range(low - 1, r))
    count = 0
    for corner in itertools.product(*ranges):
        cell = dict(zip(objectives, corner))  # lower corner
        # a point dominates the cell when it is at least as good as the cell's best corner
        if any(all(p[n] >= cell[n] + 1 if d == "max" else p[n] <= cell[n] for n, d in objectives.items())
               for p in rows):
            count += 1
    return count


def random_trials(objectives, grid, n, seed):
    """Trials with integer objectives, two epochs each, some duplicated, some NaN, some out of range."""
    rng = np.random.default_rng(seed)
    low, high = grid
    values = rng.integers(low, high + 1, size=(n, len(objectives))).astype("float64")
    values[n // 2: n // 2 + 3] = values[:3]  # identical points
    rows = []
    for i, point in enumerate(values):
        best = dict(zip(objectives, point))
        worse = {name: v - 1 if d == "max" else v + 1 for (name, d), v in zip(objectives.items(), point)}
        for epoch, metrics in ((1, worse), (2, best)):
            rows.append({"study": "s", "trial_id": f"t{i:03d}", "epoch": epoch, "status": "running",
                         **metrics, "model.heatmap_size": int(16 * 2 ** (i % 3)), "optim.lr": 1e-4})
    rows.append({"study": "s", "trial_id": "failed", "epoch": 1, "status": "error",
                 **dict.fromkeys(objectives, np.nan), "model.heatmap_size": 16, "optim.lr": 1e-4})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("case", CASES)
def test_front_and_hypervolume_equal_brute_force(case, seed):
    objectives, reference, grid = CASES[case]
    df = random_trials(objectives, grid, n=25 if case != "4d" else 12, seed=seed)
    points = pareto.trial_points(df, objectives)
    assert len(points) == df["trial_id"].nunique() - 1  # the failed trial is dropped
    assert (points["epoch"] == 2).all()  # each trial's last epoch

    front = pareto.pareto_front(df, objectives)
    assert set(front["trial_id"]) == brute_front(points, objectives)
    first, direction = next(iter(objectives.items()))
    assert front[first].is_monotonic_decreasing if direction == "max" else front[first].is_monotonic_increasing

    volume = pareto.hypervolume(df, objectives, reference)
    assert volume == brute_hypervolume(points, objectives, reference, grid)
    outside = any(not all(better_or_equal(p[n], reference[n], d) and p[n] != reference[n]
                          for n, d in objectives.items()) for p in points.to_dict("records"))
    assert outside  # the cases do exercise points beyond the reference


def test_identical_points_all_on_the_front():
    df = pd.DataFrame({"trial_id": ["a", "b", "c", "d"], "AP": [50.0, 50.0, 40.0, 50.0],
                       "gmacs": [30.0, 30.0, 20.0, 35.0]})
    front = pareto.pareto_front(df, {"AP": "max", "gmacs": "min"})
    assert list(front["trial_id"]) == ["a", "b", "c"]  # d is dominated by a and b
    # the duplicates count once (a 10 x 10 box); c lies on the reference's AP, so adds nothing
    assert pareto.hypervolume(df, {"AP": "max", "gmacs": "min"}, {"AP": 40, "gmacs": 40}) == 100


def test_hypervolume_by_hand():
    df = pd.DataFrame({"trial_id": ["a", "b", "outside"], "AP": [20.0, 30.0, 60.0],
                       "gmacs": [25.0, 40.0, 50.0]})
    objectives = {"AP": "max", "gmacs": "min"}
    # (20-19)(41.5-25) + (30-19)(41.5-40) - overlap (20-19)(41.5-40)
    assert pareto.hypervolume(df, objectives, {"AP": 19, "gmacs": 41.5}) == pytest.approx(31.5)
    assert pareto.hypervolume(df, objectives, {"AP": 100, "gmacs": 41.5}) == 0.0
    assert pareto.hypervolume(df.iloc[:0], objectives, {"AP": 19, "gmacs": 41.5}) == 0.0


def test_trial_points_are_each_trials_last_epoch():
    df = pd.DataFrame({
        "study": "s", "trial_id": ["b", "b", "b", "d", "a", "a", "c", "d"],
        "epoch": [1, 3, 2, 1, 1, 2, 1, 2],
        "status": ["running", "completed", "running", "running", "running", "running", "error", "running"],
        "AP": [10.0, 30.0, 45.0, 20.0, 40.0, 50.0, np.inf, 25.0],
        "gmacs": [20.0, 20.0, 15.0, 30.0, 30.0, np.nan, 10.0, 30.0],
        "model.heatmap_size": [16, 16, 16, 64, 32, 32, 32, 64],
    })
    points = pareto.trial_points(df, {"AP": "max", "gmacs": "min"})
    assert list(points["trial_id"]) == ["b", "d"]  # order of first appearance; a's and c's last
    # epochs lack a finite value
    assert list(points["epoch"]) == [3, 2]  # b's last epoch, not its best (AP 45 at epoch 2)
    assert list(points["AP"]) == [30.0, 25.0] and list(points["gmacs"]) == [20.0, 30.0]
    assert list(points["status"]) == ["completed", "running"]
    assert list(points["model.heatmap_size"]) == [16, 64]
    assert list(points.columns) == ["study", "trial_id", "epoch", "status", "AP", "gmacs",
                                    "model.heatmap_size"]
    pd.testing.assert_frame_equal(pareto.trial_points(points, {"AP": "max", "gmacs": "min"}), points)
    by_cost = pareto.trial_points(df, {"gmacs": "min", "AP": "max"})
    pd.testing.assert_frame_equal(by_cost[points.columns], points)  # the objectives pick no epoch


@pytest.mark.parametrize("case", ["2d", "3d"])
def test_hypervolume_curve_grows_to_the_total(case):
    objectives, reference, grid = CASES[case]
    df = random_trials(objectives, grid, n=20, seed=7)
    curve = pareto.hypervolume_curve(df, objectives, reference)
    assert list(curve.columns[:1]) == ["trials"] and "hypervolume" in curve
    assert list(curve["trials"]) == list(range(1, df["trial_id"].nunique() + 1))
    assert (np.diff(curve["hypervolume"]) >= 0).all()
    assert curve["hypervolume"].iloc[-1] == pareto.hypervolume(df, objectives, reference)
    for k in (3, 10):  # each prefix equals the hypervolume of those trials alone
        first = df[df["trial_id"].isin(curve["trial_id"].iloc[:k])]
        assert curve["hypervolume"].iloc[k - 1] == pareto.hypervolume(first, objectives, reference)


def test_hypervolume_curve_follows_the_timestamp():
    df = pd.DataFrame({"trial_id": ["a", "a", "b", "c"], "timestamp": [1.0, 9.0, 5.0, np.nan],
                       "AP": [1.0, 2.0, 3.0, 4.0], "gmacs": [1.0, 1.0, 1.0, 1.0]})
    curve = pareto.hypervolume_curve(df, {"AP": "max", "gmacs": "min"}, {"AP": 0, "gmacs": 2})
    assert list(curve["trial_id"]) == ["b", "a", "c"]  # by when each trial last reported
    assert list(curve["hypervolume"]) == [3.0, 3.0, 4.0]
    plain = pareto.hypervolume_curve(df, {"AP": "max", "gmacs": "min"}, {"AP": 0, "gmacs": 2},
                                     order_by=None)
    assert list(plain["trial_id"]) == ["a", "b", "c"]


@pytest.mark.parametrize("case", ["2d", "3d"])
def test_agrees_with_optuna(case):
    """Optuna's public multi-objective API: best_trials is the front, the hypervolume history plot's
    line is the curve."""
    objectives, reference, grid = CASES[case]
    df = random_trials(objectives, grid, n=20, seed=3)
    df = df[df["trial_id"] != "failed"]
    points = pareto.trial_points(df, objectives)
    study = optuna.create_study(directions=["maximize" if d == "max" else "minimize"
                                            for d in objectives.values()])
    study.add_trials([optuna.trial.create_trial(values=[float(row[n]) for n in objectives])
                      for _, row in points.iterrows()])
    ids = points["trial_id"].to_numpy()
    assert {ids[t.number] for t in study.best_trials} == set(pareto.pareto_front(df, objectives)["trial_id"])
    with warnings.catch_warnings(), matplotlib.rc_context():  # optuna switches to its plot style
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        ax = optuna.visualization.matplotlib.plot_hypervolume_history(
            study, [float(reference[n]) for n in objectives])
        history = np.asarray(ax.lines[0].get_ydata(), dtype="float64")
        import matplotlib.pyplot as plt
        plt.close(ax.figure)
    curve = pareto.hypervolume_curve(df, objectives, reference)
    np.testing.assert_allclose(curve["hypervolume"], history, rtol=1e-12)


def test_default_reference():
    df = pd.DataFrame({"trial_id": ["a", "b", "c"], "AP": [20.0, 40.0, 30.0],
                       "gmacs": [25.0, 100.0, 50.0], "params": [5.0, 5.0, 5.0]})
    reference = pareto.default_reference(df, {"AP": "max", "gmacs": "min", "params": "min"})
    assert reference == pytest.approx({"AP": 18.0, "gmacs": 107.5, "params": 5.5})
    objectives = {"AP": "max", "gmacs": "min"}
    curve = pareto.hypervolume_curve(df, objectives, pareto.default_reference(df, objectives))
    assert (np.diff(curve["hypervolume"]) > 0).all()  # every trial, the worst too, adds volume
    with pytest.raises(ValueError, match="no trial"):
        pareto.default_reference(df.iloc[:0], objectives)


@pytest.mark.parametrize("items, bad", [
    (["AP:max", "gmacs"], "'gmacs'"),
    (["AP:max", "gmacs:lowest"], "'gmacs:lowest'"),
    ([":min"], "':min'"),
    (["AP:max", "AP:min"], "'AP:min'"),
    ([], "no objective"),
])
def test_parse_objectives_errors(items, bad):
    with pytest.raises(ValueError, match=bad):
        pareto.parse_objectives(items)


def test_parse_objectives():
    assert pareto.parse_objectives(["AP:max", " gmacs : min "]) == {"AP": "max", "gmacs": "min"}
    assert pareto.parse_objectives("AP:max,gmacs:min") == {"AP": "max", "gmacs": "min"}
    assert list(pareto.parse_objectives(["gmacs:min", "AP:max"])) == ["gmacs", "AP"]


def test_bad_objectives_and_reference():
    df = pd.DataFrame({"trial_id": ["a"], "AP": [1.0], "gmacs": [1.0]})
    with pytest.raises(ValueError, match="lowest"):
        pareto.pareto_front(df, {"AP": "lowest"})
    with pytest.raises(ValueError, match="params"):
        pareto.pareto_front(df, {"AP": "max", "params": "min"})
    with pytest.raises(ValueError, match="missing"):
        pareto.hypervolume(df, {"AP": "max", "gmacs": "min"}, {"AP": 0})


def test_front_table_keeps_the_varied_hyperparameters():
    df = random_trials(CASES["2d"][0], CASES["2d"][2], n=15, seed=1)
    table = pareto.front_table(df, CASES["2d"][0])
    assert list(table.columns) == ["study", "trial_id", "epoch", "AP", "gmacs", "model.heatmap_size"]
    assert list(table["trial_id"]) == list(pareto.pareto_front(df, CASES["2d"][0])["trial_id"])


def test_pareto_figure():
    df = random_trials({"AP": "max", "gmacs": "min"}, (1, 10), n=12, seed=2)
    fig = pareto.pareto_figure(df, paper_points=pareto.paper_models())  # the paper: 25-100 GMACs
    ax, side = fig.axes
    sizes = df.loc[df["trial_id"] != "failed", "model.heatmap_size"].nunique()
    assert len(ax.collections) == sizes  # one scatter per heatmap size; the paper is beside them
    assert ax.get_xlim()[1] < 20  # scaled to the trials' 1-11 GMACs, not to the paper's 100
    [front] = ax.lines
    assert front.get_drawstyle() == "steps-post"
    assert max(front.get_xdata()) == df["gmacs"].max() - 1  # ends at the costliest trial's last epoch
    assert "GMACs" in ax.get_xlabel() and "%" in ax.get_ylabel()
    assert {t.get_text() for t in side.texts} == set(pareto.paper_models()["label"])
    assert not {t.get_text() for t in ax.texts}

    near = pd.DataFrame({"x": [5.0, 500.0], "y": [30.0, 40.0], "label": ["near", "far"]})
    ax, side = pareto.pareto_figure(df, paper_points=near).axes
    assert [t.get_text() for t in ax.texts] == ["near"] and [t.get_text() for t in side.texts] == ["far"]
    assert len(pareto.pareto_figure(df, paper_points=near.iloc[:1]).axes) == 1

    plain = pareto.pareto_figure(df, color_by=None)
    assert len(plain.axes) == 1 and len(plain.axes[0].collections) == 1
    empty = pareto.pareto_figure(df.iloc[:0], paper_points=pareto.paper_models())
    assert isinstance(empty, Figure) and len(empty.axes) == 1 and not empty.axes[0].lines
