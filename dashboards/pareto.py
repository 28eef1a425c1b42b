"""Accuracy vs. cost: the Pareto front of a study's trials and the hypervolume it dominates.

Every function takes the trial-epochs of `transcenter.dashboards.analysis.load_study` (or the output
of `trial_points`, which they reduce to itself) and ``objectives``: column name -> ``"max"`` or
``"min"``, in order; each trial is its point at its last epoch (`trial_points`). AP metrics are in
percent (0-100), ``gmacs`` is forward GMACs (multiply-accumulates, the paper's "Flops") per image.

Hypervolume is exact: a sweep in 2-D, recursive slicing along the last objective (HSO, While et
al. 2006) above that, after dropping dominated points; fine for the tens to hundreds of trials a
study has.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from transcenter.dashboards import paper
from transcenter.model.evaluation.hypervolume import as_costs, non_dominated
from transcenter.model.evaluation.hypervolume import hypervolume as volume_of
from transcenter.store.results import COCO_AP_KEYS, is_param_column

DIRECTIONS = ("max", "min")
TIME_COLUMN = "timestamp"  # Tune's wall-clock result key; the store keeps none today (see below)
LABELS = {"gmacs": "forward GMACs / image", "params": "parameters"}
LABELS.update({metric: f"{metric} (%)" for metric in COCO_AP_KEYS})


@dataclass(frozen=True)
class Objective:
    """One objective: a column of the trial-epochs and whether higher (``max``) or lower is better."""

    name: str
    direction: str

    def __post_init__(self):
        if not self.name:
            raise ValueError(f"objective {self.name!r}: empty column name")
        if self.direction not in DIRECTIONS:
            raise ValueError(f"objective {self.name!r}: direction {self.direction!r} is not one of "
                             f"{DIRECTIONS}")

    @classmethod
    def parse(cls, text: str) -> Objective:
        """``"AP:max"`` -> ``Objective("AP", "max")``; raises ValueError naming ``text`` if malformed."""
        name, colon, direction = str(text).strip().rpartition(":")
        if not colon or not name.strip():
            raise ValueError(f"objective {text!r}: expected 'column:max' or 'column:min'")
        try:
            return cls(name.strip(), direction.strip())
        except ValueError as error:
            raise ValueError(f"objective {text!r}: {error}") from None


def parse_objectives(items: Iterable[str] | str) -> dict[str, str]:
    """Parses ``["AP:max", "gmacs:min"]`` (or ``"AP:max,gmacs:min"``) to ``{"AP": "max", "gmacs": "min"}``.

    Raises:
        ValueError: Naming the bad item: no colon, an empty name, a direction other than max/min,
            a column given twice; or when no objective is given.
    """
    if isinstance(items, str):
        items = [item for item in items.split(",") if item.strip()]
    objectives: dict[str, str] = {}
    for item in items:
        objective = Objective.parse(item)
        if objective.name in objectives:
            raise ValueError(f"objective {item!r}: column {objective.name!r} is given twice")
        objectives[objective.name] = objective.direction
    if not objectives:
        raise ValueError("no objective given")
    return objectives


def trial_points(df: pd.DataFrame, objectives: Mapping[str, str]) -> pd.DataFrame:
    """Each trial as one point: its objectives at its last epoch (the values Optuna was told).

    A trial's last epoch is its row with the highest ``epoch`` (without that column, its last row);
    a trial whose objectives are not all finite there (diverged, or that epoch not evaluated) has
    no point. Applied to its own output it returns it.

    Args:
        df: Trial-epochs from `load_study` (``study`` optional; ``epoch``, ``status`` optional).
        objectives: Column -> ``"max"``/``"min"``.

    Returns:
        One row per trial with a finite value of every objective at its last epoch, in the order
        the trials first appear in ``df``: ``study`` (if present), ``trial_id``, ``epoch`` (its
        last, if present), ``status`` (at that epoch, if present), the objectives (float64) and the
        hyperparameters (dotted columns).

    Raises:
        ValueError: On a bad direction, or an objective that is not a column of a non-empty ``df``.
    """
    names = list(_checked(objectives))
    keys = _trial_key(df)
    df = _with_objectives(df, names)
    order = df.groupby(keys, sort=False, dropna=False).ngroup()  # trial index by first appearance
    rows = df.assign(**{n: df[n].astype("float64") for n in names}, _order=order)
    by_epoch = ["epoch"] if "epoch" in rows else []
    if by_epoch:
        rows = rows.sort_values("epoch", kind="stable")
    last = rows.drop_duplicates("_order", keep="last").sort_values("_order", kind="stable")
    last = last[np.isfinite(last[names].to_numpy()).all(axis=1)]
    params = sorted(c for c in df.columns if is_param_column(c) and c not in names)
    status = ["status"] if "status" in rows else []
    return last[[*keys, *by_epoch, *status, *names, *params]].reset_index(drop=True)


def pareto_front(df: pd.DataFrame, objectives: Mapping[str, str]) -> pd.DataFrame:
    """The non-dominated trials: no other trial is at least as good in every objective and better in one.

    Identical points do not dominate each other, so all of them are kept.

    Args:
        df: Trial-epochs from `load_study`, or `trial_points`.
        objectives: Column -> ``"max"``/``"min"``.

    Returns:
        Rows of `trial_points`, sorted by the first objective, best first (ties by the next
        objectives, then by first appearance).
    """
    points = trial_points(df, objectives)
    front = points[non_dominated(_costs(points, objectives))]
    return front.sort_values(list(objectives), ascending=[d == "min" for d in objectives.values()],
                             kind="stable", ignore_index=True)


def hypervolume(df: pd.DataFrame, objectives: Mapping[str, str], reference: Mapping[str, float]) -> float:
    """The volume dominated by the trials' points and bounded by the reference point (exact).

    The volume is measured in the objectives' units (e.g. AP percent x GMACs). A point not strictly
    better than the reference in every objective contributes nothing.

    Args:
        df: Trial-epochs from `load_study`, or `trial_points`.
        objectives: Column -> ``"max"``/``"min"``.
        reference: Column -> the worst value that still counts (e.g. `default_reference`).

    Returns:
        The hypervolume; 0.0 with no point beyond the reference.
    """
    points = trial_points(df, objectives)
    return volume_of(_costs(points, objectives), _reference_costs(reference, objectives))


def hypervolume_curve(
    df: pd.DataFrame,
    objectives: Mapping[str, str],
    reference: Mapping[str, float],
    order_by: str | None = TIME_COLUMN,
) -> pd.DataFrame:
    """The hypervolume after each trial, in the order the trials finished.

    A trial finished at the largest ``order_by`` value of its rows (a wall-clock timestamp; trials
    without one come last). The store records no wall clock today (``time_s`` is an epoch's
    duration, not a time of day), so without that column the order is the trials' first appearance
    in ``df``: for `load_study`, trial-id order, which for Tune's ``<run>_00000`` ids is the order the
    trials were created. Every trial counts, so one without a usable point (failed, diverged, no
    cost) leaves the curve flat: the budget it took.

    Args:
        df: Trial-epochs from `load_study`.
        objectives: Column -> ``"max"``/``"min"``.
        reference: Column -> the worst value that still counts.
        order_by: The timestamp column, used when ``df`` has it.

    Returns:
        One row per trial: ``trials`` (1, 2, ...), ``study`` (if present), ``trial_id`` (the trial
        added) and ``hypervolume`` (non-decreasing; the last equals `hypervolume` of ``df``).
    """
    keys = _trial_key(df)
    points = trial_points(df, objectives)
    costs = dict(zip(map(tuple, points[keys].to_numpy()), _costs(points, objectives)))
    ref = _reference_costs(reference, objectives)
    if order_by is not None and order_by in df:
        finished = df.groupby(keys, sort=False, dropna=False)[order_by].max()
        trials = finished.sort_values(kind="stable", na_position="last").index.to_frame(index=False)
    else:
        trials = df[keys].drop_duplicates(ignore_index=True)
    front = np.empty((0, len(objectives)))  # (F, K) costs beyond the reference, non-dominated
    volumes = []
    for key in map(tuple, trials[keys].to_numpy()):
        cost = costs.get(key)
        if cost is not None and (cost < ref).all():
            front = np.vstack([front, cost])
            front = front[non_dominated(front)]
        volumes.append(volume_of(front, ref))
    curve = trials[keys].assign(hypervolume=np.asarray(volumes, dtype="float64"))
    curve.insert(0, "trials", np.arange(1, len(curve) + 1))
    return curve


def default_reference(points: pd.DataFrame, objectives: Mapping[str, str]) -> dict[str, float]:
    """A reference point just outside the trials: each objective's worst value pushed out by 10 % of
    its range over the trials (by 10 % of the value, or by 1 at 0, when every trial has the same), so
    every trial, the worst included, adds volume.

    Args:
        points: `trial_points` (or trial-epochs from `load_study`).
        objectives: Column -> ``"max"``/``"min"``.

    Returns:
        Column -> reference value, e.g. ``{"AP": min AP - 0.1 x AP range, "gmacs": max + 0.1 x range}``.

    Raises:
        ValueError: When no trial has a finite value of every objective.
    """
    points = trial_points(points, objectives)
    if points.empty:
        raise ValueError(f"no trial has a finite value of every objective {list(objectives)}")
    reference = {}
    for name, direction in objectives.items():
        low, high = float(points[name].min()), float(points[name].max())
        worst = low if direction == "max" else high
        margin = 0.1 * (high - low) or 0.1 * abs(worst) or 1.0
        reference[name] = worst - margin if direction == "max" else worst + margin
    return reference


def front_table(df: pd.DataFrame, objectives: Mapping[str, str]) -> pd.DataFrame:
    """The front's trials with their objectives and the hyperparameters that vary across the study.

    Returns:
        `pareto_front`'s rows and order: ``study`` (if present), ``trial_id``, ``epoch`` (if present),
        the objectives and each hyperparameter with two or more values among ``df``'s rows.
    """
    front = pareto_front(df, objectives)
    keys = [c for c in (*_trial_key(df), "epoch") if c in front]
    varied = [c for c in front.columns if is_param_column(c) and c not in objectives
              and df[c].nunique(dropna=True) > 1]
    return front[[*keys, *objectives, *varied]]


def paper_models() -> pd.DataFrame:
    """The paper's models as points for `pareto_figure`: ``x`` GMACs / image (Table 1, 512x512), ``y``
    AP (%) (Table 4) and ``label`` (``paper S=<heatmap size>``)."""
    sizes = [s for s in paper.COMPLEXITY if s in paper.UPPER_LIMIT]
    return pd.DataFrame({"x": [paper.COMPLEXITY[s]["macs_g"] for s in sizes],
                         "y": [paper.UPPER_LIMIT[s]["AP"] for s in sizes],
                         "label": [f"paper S={s}" for s in sizes]})


def pareto_figure(
    df: pd.DataFrame,
    x: str = "gmacs",
    y: str = "AP",
    color_by: str | None = "model.heatmap_size",
    paper_points: pd.DataFrame | None = None,
) -> Figure:
    """Every trial (at its last epoch) in cost ``x`` (lower is better) vs. ``y`` (higher is
    better), one colour per value of ``color_by``, and the Pareto front as a staircase.

    Args:
        df: Trial-epochs from `load_study`.
        x: The cost column, minimised.
        y: The accuracy column, maximised.
        color_by: The column whose values get one colour each (one scatter per value); None or
            absent: one colour.
        paper_points: Columns ``x``, ``y``, ``label`` (e.g. `paper_models()`), drawn as black stars
            with their labels: among the trials where they are within a factor of 2 of the trials'
            costs, else in a small panel beside them (the main axes stay scaled to the trials).

    Returns:
        The figure: its first axes hold one scatter collection per colour (plus one for the paper's
        points near the trials), and one line for the front over the trials' cost range when there
        is a trial; a second axes, when some paper point is far from the trials, the trials in grey
        and those paper points.
    """
    objectives = {y: "max", x: "min"}
    points = trial_points(df, objectives)
    near, far = _split_paper_points(paper_points, points[x])
    fig = Figure(figsize=(9.5 if len(far) else 7, 4.5), layout="constrained")
    ax = fig.add_subplot(1, 4, (1, 3)) if len(far) else fig.add_subplot()
    if color_by is not None and color_by in points:
        groups = [(f"{color_by} = {value}", group) for value, group in points.groupby(color_by)]
        unset = points[points[color_by].isna()]
        groups += [(f"{color_by} not set", unset)] if len(unset) else []
    else:
        groups = [("trials", points)] if len(points) else []
    for i, (label, group) in enumerate(groups):
        ax.scatter(group[x], group[y], s=20, color=f"C{i % 10}", label=label, zorder=2)
    _paper_stars(ax, near)
    if len(points):
        front = pareto_front(points, objectives).sort_values(x, kind="stable")
        # The front's last step runs to the costliest trial, not beyond the trials' range.
        xs, ys = [*front[x], points[x].max()], [*front[y], front[y].iloc[-1]]
        ax.plot(xs, ys, drawstyle="steps-post", color="k", linewidth=1, label="Pareto front", zorder=1)
    else:
        ax.text(0.5, 0.5, f"no trial has a finite {y} and {x}", transform=ax.transAxes,
                ha="center", va="center")
    ax.set(xlabel=LABELS.get(x, x), ylabel=LABELS.get(y, y),
           title=f"{y} vs. {x}, each trial at its last epoch")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small")
    if len(far):
        side = fig.add_subplot(1, 4, 4)
        side.scatter(points[x], points[y], s=6, color="0.6", label="trials")
        _paper_stars(side, far)
        side.set(xlabel=LABELS.get(x, x), title="beside the paper's models")
        side.title.set_fontsize("small")
        side.tick_params(labelsize="x-small")
    return fig


def _split_paper_points(paper_points: pd.DataFrame | None, costs: pd.Series
                        ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Returns (the paper's points within a factor of 2 of the trials' cost range, the others),
    which a figure scaled to the paper's models would squash the trials against; with no trial,
    every point is near."""
    if paper_points is None or not len(paper_points):
        empty = pd.DataFrame(columns=["x", "y", "label"])
        return empty, empty
    missing = {"x", "y", "label"} - set(paper_points.columns)
    if missing:
        raise ValueError(f"paper_points lacks columns {sorted(missing)}")
    if not len(costs) or not np.isfinite(costs).any():
        return paper_points, paper_points.iloc[:0]
    inside = paper_points["x"].between(costs.min() / 2, costs.max() * 2)
    return paper_points[inside], paper_points[~inside]


def _paper_stars(ax, points: pd.DataFrame) -> None:
    """Draws the paper's ``points`` on ``ax`` as labelled black stars (nothing for none)."""
    if not len(points):
        return
    ax.scatter(points["x"], points["y"], marker="*", s=120, color="k", label="paper", zorder=3)
    for _, row in points.iterrows():
        ax.annotate(str(row["label"]), (row["x"], row["y"]), xytext=(5, 3),
                    textcoords="offset points", fontsize="small")


def _checked(objectives: Mapping[str, str]) -> Mapping[str, str]:
    if not objectives:
        raise ValueError("no objective given")
    for name, direction in objectives.items():
        Objective(name, direction)  # validates
    return objectives


def _trial_key(df: pd.DataFrame) -> list[str]:
    if "trial_id" not in df:
        raise ValueError("the table has no trial_id column")
    return ["study", "trial_id"] if "study" in df else ["trial_id"]


def _with_objectives(df: pd.DataFrame, names: list[str]) -> pd.DataFrame:
    """Adds missing objective columns (all NaN) to an empty table; a non-empty one must have them."""
    missing = [n for n in names if n not in df]
    if missing and len(df):
        raise ValueError(f"objectives {missing} are not columns of the table")
    return df.assign(**{n: pd.Series(dtype="float64") for n in missing}) if missing else df


def _costs(points: pd.DataFrame, objectives: Mapping[str, str]) -> np.ndarray:
    """The points as costs to minimise (maximised objectives negated), ``(N, K)`` float64."""
    return as_costs(points[list(objectives)].to_numpy(), list(objectives.values()))  # (N, K)


def _reference_costs(reference: Mapping[str, float], objectives: Mapping[str, str]) -> np.ndarray:
    missing = [n for n in objectives if n not in reference]
    extra = [n for n in reference if n not in objectives]
    if missing or extra:
        raise ValueError(f"reference must give exactly the objectives {list(objectives)}; "
                         f"missing {missing}, extra {extra}")
    values = np.array([float(reference[n]) for n in objectives])
    if not np.isfinite(values).all():
        raise ValueError(f"reference {dict(reference)} is not finite")
    return as_costs(values, list(objectives.values()))[0]  # (K,)
