"""A study's tables, computed from the result store's parquet alone (no Ray; a copied directory will do).

AP metrics are in percent (0-100), as `transcenter.model.evaluation.evaluate` reports them and the paper prints
them, so the paper's numbers are put beside ours as written. Losses are per-epoch means as reported.
A trial's value of any metric is its value at its last epoch (where it completed, was stopped or,
still running, last reported): the value Optuna was told, and the one every table here ranks by.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import optuna
import pandas as pd

from transcenter.dashboards import paper

# Accuracy against compute, for users of this module: the Pareto front of several objectives and
# its hypervolume (implemented in transcenter.dashboards.pareto).
from transcenter.dashboards.pareto import hypervolume, hypervolume_curve, pareto_front  # noqa: F401
from transcenter.store import agreement
from transcenter.store.results import COCO_AP_KEYS, OVERLAP_RECALL, ResultStore, is_param_column

HEATMAP_SIZE = "model.heatmap_size"
HEAD = "model.head"
TRIAL_KEY = ["study", "trial_id"]
StudyPaths = str | os.PathLike | Sequence[str | os.PathLike]  # one study directory or several
# Per-class metric columns: AP50_class<k> is the COCO AP50 (percent) of class k, NaN where the val
# split has no object of that class; study.json's ``class_names`` names k.
CLASS_AP50 = re.compile(r"AP50_class(\d+)")


class NotEnoughTrials(ValueError):
    """Raised when a study has too few usable trials or varied hyperparameters for a table."""


def load_study(path_or_paths: StudyPaths) -> pd.DataFrame:
    """Reads the trial-epochs of one or more study directories (``<storage_path>/<study>``).

    Args:
        path_or_paths: A study directory (local path or URI) or several.

    Returns:
        One row per trial-epoch, sorted by study, trial and epoch, typed as stored; the ``study``
        column tells several studies apart. ``attrs["search_space"]`` holds the studies' search
        spaces (each parameter's type, range and scale; see `ResultStore.read_meta`).
    """
    df = _load(path_or_paths, ResultStore.read_epochs, ["study", "trial_id", "epoch"])
    df.attrs["search_space"] = {name: spec for path in as_paths(path_or_paths)
                                for name, spec in ResultStore.open(path).read_meta()
                                .get("search_space", {}).items()}
    return df


def load_meta(path_or_paths: StudyPaths) -> dict[str, dict[str, Any]]:
    """Reads the metadata (``study.json``) of one or more study directories.

    Returns:
        Study name (the ``study`` column of the store's tables) -> its metadata, ``{}`` when the
        study has none.
    """
    stores = [ResultStore.open(path) for path in as_paths(path_or_paths)]
    return {store.study: store.read_meta() for store in stores}


def load_trials(path_or_paths: StudyPaths) -> pd.DataFrame:
    """Reads the trial tables of one or more study directories: one row per finished trial."""
    return _load(path_or_paths, ResultStore.read_trials, TRIAL_KEY)


def param_columns(df: pd.DataFrame) -> list[str]:
    """Returns the hyperparameter columns (dotted config names) of a store table, sorted."""
    return sorted(c for c in df.columns if is_param_column(c))


def is_log_scale(df: pd.DataFrame, name: str) -> bool:
    """Tells whether the study searched hyperparameter ``name`` on a log scale, as its search space
    (stored in ``study.json``, carried in ``df.attrs["search_space"]`` by `load_study`) says."""
    return bool(df.attrs.get("search_space", {}).get(name, {}).get("log", False))


def lower_limit(
    df: pd.DataFrame,
    epochs: Iterable[int] = (1, 2, 3),
    by: str = HEATMAP_SIZE,
    metric: str = "AP50",
) -> pd.DataFrame:
    """The lower limit (paper Fig. 6): a metric in the first epochs, per value of ``by``.

    Args:
        df: Trial-epochs from `load_study`.
        epochs: The epochs to report.
        by: The grouping hyperparameter.
        metric: The metric.

    Returns:
        Indexed by (``by``, epoch), for groups with at least one non-NaN value: ``mean``, ``std``
        (ddof 1), ``min``, ``max`` of the metric over trials and ``n_trials`` (trials with a non-NaN
        value); plus ``paper.AP50`` (percent) when grouping AP50 by heatmap size.
    """
    rows = _with_columns(df, [by, metric])
    rows = rows[rows["epoch"].isin(list(epochs))]
    table = rows.groupby([by, "epoch"])[metric].agg(["mean", "std", "min", "max", "count"])
    table = table.rename(columns={"count": "n_trials"})
    table = table[table["n_trials"] > 0]
    if by == HEATMAP_SIZE and metric == "AP50":
        sizes = table.index.get_level_values(by)
        table["paper.AP50"] = sizes.map(paper.LOWER_LIMIT_AP50).astype("float64")
    return table


def lower_limit_leaders(
    df: pd.DataFrame,
    epochs: Iterable[int] = (1, 2, 3),
    by: str = HEATMAP_SIZE,
    metric: str = "AP50",
    seed: str = "train.seed",
) -> pd.DataFrame:
    """The lower limit's conclusion: which value of ``by`` leads in the first epochs, per seed.

    A value's score is the mean of ``metric`` over ``epochs`` and its trials; the leader has the
    highest score. With a ``seed`` column (replicates of the grid under other seeds) there is one
    row per seed, else one row for the whole study (index ``"all"``).

    Returns:
        Indexed by seed: ``leader`` (the value of ``by``), ``score``, ``runner_up``,
        ``runner_up_score`` (NaN with a single value); empty when no epoch in ``epochs`` has
        ``metric``.
    """
    rows = _with_columns(df, [by, metric])
    rows = rows[rows["epoch"].isin(list(epochs))].dropna(subset=[metric])
    groups = rows.groupby(rows[seed] if seed in rows else pd.Series("all", index=rows.index))
    out = {}
    for key, group in groups:
        scores = group.groupby(by)[metric].mean().sort_values(ascending=False, kind="stable")
        out[key] = {"leader": scores.index[0], "score": scores.iloc[0],
                    "runner_up": scores.index[1] if len(scores) > 1 else None,
                    "runner_up_score": scores.iloc[1] if len(scores) > 1 else np.nan}
    table = pd.DataFrame.from_dict(out, orient="index")
    table.index.name = seed
    return table


def upper_limit(df: pd.DataFrame, by: str = HEATMAP_SIZE, rank_by: str = "AP") -> pd.DataFrame:
    """The upper limit (paper Table 4, and Table 2 for object sizes): per value of ``by``, the last
    epoch of the trial, among those that trained every epoch, whose last epoch ranks best.

    A trial trained every epoch when one of its rows has status ``completed``. Where no trial of a
    value did (early stopping stopped them all, or they still run), the stopped or running trial
    whose last epoch ranks best stands in and ``known`` is False: that value's upper limit is not
    known, only a lower bound of it. A trial whose ``rank_by`` is not finite at its last epoch
    (diverged, or that epoch not evaluated) has no value and is left out.

    When the study replicates configurations under several training seeds (``train.seed`` takes
    several values), a configuration's value is the mean over its seeds of each seed's last epoch,
    not the luckiest seed: the configuration with the best mean ``rank_by`` stands for its value of
    ``by``, with the mean and the standard deviation over its seeds (``<metric>.std``) and
    ``seeds``. :func:`upper_limit_note` says whether the difference between values exceeds it.

    Args:
        df: Trial-epochs from `load_study`.
        by: The grouping hyperparameter.
        rank_by: The metric, higher is better, that picks the trial.

    Returns:
        Indexed by ``by``: ``study``, ``trial_id``, ``epoch`` (its last) of the chosen trial (with
        seeds: the configuration's first trial), its `COCO_AP_KEYS` at that epoch (percent; with
        seeds, the means), ``known``, ``trials`` (trials of that value with a finite last-epoch
        ``rank_by``) and ``complete_trials`` (those of them that trained every epoch); with seeds
        also ``seeds`` and ``<metric>.std``; when grouping by heatmap size, also
        ``paper.<metric>`` (percent; NaN where the paper gives none).
    """
    rows = _with_columns(df, [by, rank_by, "status", *COCO_AP_KEYS])
    last = _last_epochs(rows.assign(_complete=_trained_every_epoch(rows)))
    last = last[np.isfinite(last[rank_by])]
    counts = last.groupby(by)["_complete"].agg(trials="size", complete_trials="sum")
    known = counts["complete_trials"] > 0
    pool = last[last["_complete"] | ~last[by].map(known).astype(bool)]
    seeds = "train.seed"
    replicated = seeds in pool and pool[seeds].nunique() > 1
    table = (_replicated_best(pool, by, rank_by, seeds) if replicated
             else pool.loc[pool.groupby(by)[rank_by].idxmax()].set_index(by)
             [["study", "trial_id", "epoch", *COCO_AP_KEYS]])
    table["known"] = known.reindex(table.index).astype(bool)
    table[["trials", "complete_trials"]] = counts.reindex(table.index)
    if by == HEATMAP_SIZE:
        reported = {size: {**paper.UPPER_LIMIT.get(size, {}), **paper.AP_BY_OBJECT_SIZE.get(size, {})}
                    for size in table.index}
        for metric in COCO_AP_KEYS:
            values = [reported[size].get(metric, np.nan) for size in table.index]
            table[f"paper.{metric}"] = np.asarray(values, dtype="float64")
    return table


def _replicated_best(trials: pd.DataFrame, by: str, rank_by: str, seeds: str) -> pd.DataFrame:
    """Per value of ``by``: the configuration (searched parameters but the seeds) with the best
    mean ``rank_by`` over its seeds; its means and standard deviations of the `COCO_AP_KEYS` over
    the seeds and its seed count. ``trials`` has one row per trial, at its last epoch."""
    config = [c for c in trials.columns if is_param_column(c) and c not in (seeds, "data.seed")
              and trials[c].nunique(dropna=False) > 1 and c != by]
    keys = [by, *config]
    grouped = trials.groupby(keys, dropna=False)
    means = grouped[list(COCO_AP_KEYS)].mean()
    spread = grouped[list(COCO_AP_KEYS)].std().add_suffix(".std")
    first = grouped[["study", "trial_id", "epoch"]].first()
    table = pd.concat([first, means, spread, grouped.size().rename("seeds")], axis=1)
    table = table.loc[table.groupby(level=by)[rank_by].idxmax()]
    return table.reset_index(level=config, drop=True) if config else table


def upper_limit_note(table: pd.DataFrame, rank_by: str = "AP") -> str:
    """Says which value of the upper-limit table leads, and whether that is known: which values'
    upper limits are not known (every trial stopped early), and with seed replicates whether the
    lead over the runner-up exceeds the spread over seeds. Empty for an empty table."""
    if table.empty:
        return ""
    name = table.index.name
    ordered = table.sort_values(["known", rank_by], ascending=False)
    lead = ordered.index[0]
    notes = [f"{name} = {lead} leads with {rank_by} {ordered[rank_by].iloc[0]:.1f}"]
    unknown = [str(v) for v in table.index[~table["known"]]]
    if unknown:
        notes.append(f"the upper limit of {name} = {', '.join(unknown)} is not known: early "
                     f"stopping stopped every trial of it before the study's last epoch, so its row "
                     f"is a stopped trial's last epoch")
    spread_column = f"{rank_by}.std"
    if spread_column in table and len(ordered) > 1:
        gap = ordered[rank_by].iloc[0] - ordered[rank_by].iloc[1]
        spread = float(ordered[spread_column].iloc[:2].max())
        verdict = "exceeds" if gap > spread else "does not exceed"
        notes.append(f"its lead over {name} = {ordered.index[1]} ({gap:.1f}) {verdict} the spread "
                     f"over seeds (std {spread:.1f}, {int(ordered['seeds'].iloc[0])} seeds)")
    return "; ".join(notes) + "."


def rung_audit(df: pd.DataFrame, meta: dict[str, Any]) -> pd.DataFrame:
    """How far each early-stopping rung's ranking held, from the stored rows (the audit the study's
    audited ASHA decides with; the same arithmetic, ``transcenter.store.agreement``).

    Args:
        df: Trial-epochs of one study (`load_study`).
        meta: Its ``study.json`` (`load_meta`): ``objectives`` and ``settings`` (``epochs``,
            ``grace_period``, ``reduction_factor``, ``stratify``, ``rung_min_tau``).

    Returns:
        Indexed by ``rung`` (epoch; rungs at ``grace_period * reduction_factor**k`` below the last
        epoch): ``tau``, Kendall's τ between the trials' values at the rung and at their last epoch
        over ``pairs``, the pairs of trials that trained every epoch, share a stratum and whose
        final values differ by more than the noise of a difference (NaN without pairs; several
        objectives: the lowest τ); ``stopped``, the trials stopped at that epoch; ``agrees``,
        whether τ is at least ``rung_min_tau`` (default 0.5; True without pairs). Empty for a
        study without early stopping or settings.
    """
    columns = ["pairs", "tau", "stopped", "agrees"]
    settings = meta.get("settings") or {}
    if not settings.get("asha") or df.empty:
        return pd.DataFrame(columns=columns, index=pd.Index([], name="rung"))
    epochs, grace, factor = settings["epochs"], settings["grace_period"], settings["reduction_factor"]
    rungs = [grace * factor**k for k in range(epochs) if grace * factor**k < epochs]
    objectives = [m for m in (meta.get("objectives") or {}) if m in df]
    stratify = settings.get("stratify")
    finished = df[_trained_every_epoch(df)]
    values = finished.pivot_table(index=TRIAL_KEY, columns="epoch", values=objectives)  # (trials, k × epochs)
    tails = [values[m].reindex(columns=[epochs - 2, epochs - 1, epochs]).to_numpy()
             for m in objectives]  # k × (n, 3)
    second = np.stack([t[:, 2] - 2 * t[:, 1] + t[:, 0] for t in tails], axis=1)  # (n, k)
    margin = agreement.clear_margin(agreement.epoch_noise(second[np.isfinite(second).all(axis=1)]))
    strata = (finished.groupby(TRIAL_KEY)[stratify].first() if stratify in finished
              else pd.Series(0, index=values.index))
    last = df.sort_values("epoch").groupby(TRIAL_KEY).last()
    stopped_at = last.loc[last["status"] == "stopped", "epoch"]
    min_tau = settings.get("rung_min_tau", 0.5)
    rows = {}
    for rung in rungs:
        counts = np.zeros((2, len(objectives)), dtype=int)
        for _, members in strata.groupby(strata, dropna=False):
            at = [values[m].reindex(index=members.index, columns=[rung, epochs]).to_numpy()
                  for m in objectives]  # k × (n, 2)
            early, late = (np.stack([a[:, i] for a in at], axis=1) for i in (0, 1))  # (n, k)
            keep = np.isfinite(early).all(axis=1) & np.isfinite(late).all(axis=1)
            if keep.sum() > 1:
                counts += np.array(agreement.concordance(early[keep], late[keep], margin))
        tau, pairs = agreement.kendall_tau(counts[0], counts[1])
        rows[rung] = {"pairs": pairs, "tau": np.nan if tau is None else tau,
                      "stopped": int((stopped_at == rung).sum()),
                      "agrees": tau is None or tau >= min_tau}
    return pd.DataFrame.from_dict(rows, orient="index", columns=columns).rename_axis("rung")


def rung_audit_note(audit: pd.DataFrame) -> str:
    """Says where early stopping disagreed with the final ranking (rungs whose τ is below the
    study's threshold and that stopped trials), or that it held; "" without a rung."""
    if audit.empty:
        return ""
    bad = audit[~audit["agrees"] & (audit["stopped"] > 0)]
    if bad.empty:
        audited = audit[audit["pairs"] > 0]
        if audited.empty:
            return ("Early stopping: no pair of trials that trained every epoch tells yet whether "
                    "its rungs ranked trials as their last epoch does.")
        return ("Early stopping agreed with the final ranking at every audited rung "
                f"(lowest Kendall tau {audited['tau'].min():+.2f}).")
    where = ", ".join(f"epoch {rung:g} (tau {row.tau:+.2f} over {row.pairs} pairs, "
                      f"{row.stopped} trials stopped there)" for rung, row in bad.iterrows())
    return (f"Early stopping disagreed with the final ranking at {where}: trials it stopped there "
            f"may have ended best. Check the upper limit's complete trials, or rerun with a "
            f"larger --grace-period or --no-asha.")


def loss_curves(df: pd.DataFrame, by: str = HEATMAP_SIZE) -> pd.DataFrame:
    """Position vs. size heatmap loss per epoch (paper Fig. 7).

    Args:
        df: Trial-epochs from `load_study`.
        by: The grouping hyperparameter.

    Returns:
        Indexed by (``by``, epoch), where either loss was reported: the mean over trials of
        ``loss_pos`` and ``loss_size`` and ``n_trials`` (rows in the group).
    """
    rows = _with_columns(df, [by, "loss_pos", "loss_size"])
    grouped = rows.groupby([by, "epoch"])
    table = grouped[["loss_pos", "loss_size"]].mean()
    table["n_trials"] = grouped.size()
    return table.dropna(subset=["loss_pos", "loss_size"], how="all")


def head_comparison(df: pd.DataFrame, by: str = HEATMAP_SIZE) -> pd.DataFrame:
    """Overlap recall beside AP per detector head: the paper's claim (Fig. 2) that two same-class
    objects sharing a heatmap cell are both found, which a CenterNet-style head cannot do.

    Args:
        df: Trial-epochs from `load_study`; ``model.head`` missing (studies before the CenterNet
            baseline) means every trial is TransCenter's.
        by: The second grouping hyperparameter (left out when the study lacks it).

    Returns:
        Indexed by (``model.head``, ``by``), from each trial's last epoch with a finite AP50: the
        mean over trials of ``AP``, ``AP50`` and ``overlap_recall`` (percent; NaN-skipping) and
        ``n_trials``.
    """
    columns = ["AP", "AP50", OVERLAP_RECALL]
    rows = _with_columns(df, [by, *columns])
    if HEAD not in rows:
        rows = rows.assign(**{HEAD: "transcenter"})
    rows = rows[np.isfinite(rows["AP50"])].sort_values("epoch").groupby(TRIAL_KEY).last()
    keys = [HEAD] + ([by] if by in rows else [])
    table = rows.groupby(keys)[columns].mean()
    table["n_trials"] = rows.groupby(keys).size()
    return table


def final_per_trial(df: pd.DataFrame, metric: str = "AP50") -> pd.DataFrame:
    """Each trial's value of a metric at its last epoch beside its hyperparameters (the search, one
    row a trial).

    Args:
        df: Trial-epochs from `load_study`.
        metric: The metric.

    Returns:
        One row per trial, sorted by study and trial: ``study``, ``trial_id``, the hyperparameters,
        ``final.<metric>`` (its value at the trial's last epoch, in the metric's units; NaN when not
        finite there) and ``n_epochs`` (the trial's stored epochs).
    """
    rows = _with_columns(df, [metric])
    last = _last_epochs(rows).set_index(TRIAL_KEY)
    table = last[param_columns(rows)].copy()
    table[f"final.{metric}"] = last[metric].where(np.isfinite(last[metric]))
    table["n_epochs"] = rows.groupby(TRIAL_KEY).size()
    return table.reset_index()


def best_trial(status: pd.DataFrame, metric: str = "AP") -> pd.Series | None:
    """The ended trial (status not ``running``) with the highest finite ``final.<metric>``, its
    value at its last epoch (ties: the first in the table's order).

    Args:
        status: Trials from `trial_status`.
        metric: Higher is better.

    Returns:
        That trial's row (``study``, ``trial_id``, ``n_epochs``: its last epoch, ``final.<metric>``,
        ...), or None when no ended trial has a finite value.
    """
    if status.empty:
        return None
    values = pd.to_numeric(status[f"final.{metric}"], errors="coerce").astype("float64")
    values = values.where((status["status"] != "running") & np.isfinite(values))
    return None if values.isna().all() else status.loc[values.idxmax()]


def class_ap_columns(df: pd.DataFrame) -> dict[int, str]:
    """Class index -> its per-class AP50 column (``AP50_class<k>``) in a store table, by index."""
    found = {int(m.group(1)): c for c in df.columns if (m := CLASS_AP50.fullmatch(c))}
    return dict(sorted(found.items()))


def class_ap50(
    df: pd.DataFrame,
    study: str,
    trial_id: str,
    epoch: int,
    class_names: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Per-class AP50 of one trial-epoch, weakest class first.

    Args:
        df: Trial-epochs from `load_study`, with ``AP50_class<k>`` columns (`CLASS_AP50`).
        study: The trial's study.
        trial_id: The trial.
        epoch: The epoch, e.g. the trial's last (its ``n_epochs``).
        class_names: Class index -> name (``study.json``'s ``class_names``); a class beyond the
            list, or every class when None, is named ``class<k>``.

    Returns:
        Columns ``class`` (str) and ``AP50`` (float64, percent), one row per per-class column,
        sorted by AP50 ascending; NaN (no object of the class in the val split, or the epoch was
        not evaluated) last. Empty when the trial-epoch or the columns are missing.
    """
    columns = class_ap_columns(df)
    row = df[(df["study"] == study) & (df["trial_id"] == trial_id) & (df["epoch"] == epoch)] \
        if columns else df.iloc[:0]
    if row.empty:
        return pd.DataFrame({"class": pd.Series(dtype="object"), "AP50": pd.Series(dtype="float64")})
    values = row.iloc[-1]  # (one row: the store keeps one per trial-epoch)
    names = list(class_names or [])
    table = pd.DataFrame({
        "class": [str(names[k]) if k < len(names) else f"class{k}" for k in columns],
        "AP50": np.asarray([values[c] for c in columns.values()], dtype="float64"),
    })
    return table.sort_values("AP50", na_position="last", kind="stable", ignore_index=True)


def optuna_study(df: pd.DataFrame, target: str = "AP", params: Sequence[str] | None = None) -> optuna.Study:
    """Rebuilds an in-memory Optuna study (maximise) from the store's trial-epochs.

    Each trial with a finite ``target`` at its last epoch becomes a COMPLETE Optuna trial whose value
    is that value (what the study told Optuna). Distributions follow the column types: bool, int
    and str are categorical; floats are uniform between the observed extremes, log-uniform where
    the study searched them so (`is_log_scale`).

    Args:
        df: Trial-epochs from `load_study`.
        target: The metric, higher is better.
        params: The hyperparameters to include; by default every one that takes two or more values.

    Returns:
        The study, one trial per usable store trial.

    Raises:
        NotEnoughTrials: With fewer than 2 usable trials, no varied hyperparameter, or a target
            that does not vary (importance is undefined then).
    """
    column = f"final.{target}"
    trials = final_per_trial(df, target)
    trials = trials[np.isfinite(trials[column])]
    if len(trials) < 2:
        raise NotEnoughTrials(f"needs >= 2 trials with a finite {target} at their last epoch, "
                              f"got {len(trials)}")
    if trials[column].nunique() == 1:
        raise NotEnoughTrials(f"is undefined: the target does not vary (every trial's {target} "
                              f"at its last epoch is {trials[column].iloc[0]:g})")
    if params is None:
        params = [p for p in param_columns(trials) if trials[p].nunique(dropna=True) > 1]
    if not params:
        raise NotEnoughTrials("needs at least one hyperparameter that varies")
    distributions = {p: _distribution(trials[p].dropna(), is_log_scale(df, p)) for p in params}
    study = optuna.create_study(direction="maximize")
    study.add_trials([
        optuna.trial.create_trial(
            params={p: _native(row[p]) for p in params if not pd.isna(row[p])},
            distributions={p: d for p, d in distributions.items() if not pd.isna(row[p])},
            value=float(row[column]),
        )
        for _, row in trials.iterrows()
    ])
    return study


def importance(
    df: pd.DataFrame,
    target: str = "AP",
    params: Sequence[str] | None = None,
    evaluator: optuna.importance.BaseImportanceEvaluator | None = None,
) -> pd.Series:
    """Hyperparameter importance for ``target`` at each trial's last epoch, computed on
    `optuna_study` of the store.

    Args:
        df: Trial-epochs from `load_study`.
        target: The metric, higher is better.
        params: The hyperparameters to rank; by default every one that takes two or more values.
        evaluator: An Optuna importance evaluator; by default `PedAnovaImportanceEvaluator`
            (``FanovaImportanceEvaluator`` needs scikit-learn).

    Returns:
        Importance per hyperparameter (normalised to sum to 1), most important first.

    Raises:
        NotEnoughTrials: With fewer than 2 usable trials, fewer than two varied hyperparameters
            (one would get importance 1 by definition), or a target that does not vary.
    """
    study = optuna_study(df, target, params)
    varied = list(study.best_trial.params) if params is None else list(params)
    if len(varied) == 1:
        raise NotEnoughTrials(f"varies one hyperparameter ({varied[0]}): its importance is 1 by "
                              f"definition, which says nothing")
    scores = optuna.importance.get_param_importances(
        study, evaluator=evaluator or optuna.importance.PedAnovaImportanceEvaluator(),
        params=None if params is None else list(params))
    return pd.Series(scores, name=f"importance({target})", dtype="float64").sort_values(ascending=False)


def trial_status(df: pd.DataFrame, trials: pd.DataFrame) -> pd.DataFrame:
    """Each trial's status and its AP and AP50 at its last epoch: the trial table's row, or, for a
    trial still running (no row there yet), its last stored epoch's.

    Args:
        df: Trial-epochs from `load_study`.
        trials: Trial rows from `load_trials`.

    Returns:
        One row per trial, sorted: ``study``, ``trial_id``, ``status``, ``error``, ``n_epochs``,
        ``final.AP``, ``final.AP50`` (percent, at the last epoch; as stored, NaN and inf kept).
    """
    columns = ["status", "error", "n_epochs", "final.AP", "final.AP50"]
    finished = trials.set_index(TRIAL_KEY).reindex(columns=columns)
    last = _last_epochs(df).set_index(TRIAL_KEY).reindex(columns=["status", "AP", "AP50"])
    running = last.rename(columns={"AP": "final.AP", "AP50": "final.AP50"}).assign(
        n_epochs=df.groupby(TRIAL_KEY).size())
    running = running[~running.index.isin(finished.index)]
    frames = [frame for frame in (finished, running) if len(frame)]
    table = pd.concat(frames) if frames else finished
    return table.reindex(columns=columns).sort_index().reset_index()


def as_paths(path_or_paths: StudyPaths) -> list[str]:
    """Returns one study directory or several as a non-empty list of strings."""
    paths = [path_or_paths] if isinstance(path_or_paths, (str, os.PathLike)) else list(path_or_paths)
    if not paths:
        raise ValueError("no study directory given")
    return [os.fspath(path) for path in paths]


def _load(path_or_paths, read, order: list[str]) -> pd.DataFrame:
    frames = [read(ResultStore.open(path)) for path in as_paths(path_or_paths)]
    frames = [f for f in frames if len(f)] or frames[:1]
    return pd.concat(frames, ignore_index=True).sort_values(order, ignore_index=True)


def _last_epochs(rows: pd.DataFrame) -> pd.DataFrame:
    """Returns each trial's row at its last epoch (its highest ``epoch``), values as stored, sorted
    by study and trial."""
    return (rows.sort_values("epoch", kind="stable").drop_duplicates(TRIAL_KEY, keep="last")
            .sort_values(TRIAL_KEY, kind="stable"))


def _trained_every_epoch(rows: pd.DataFrame) -> pd.Series:
    """Returns, for each row, whether its trial trained every epoch (one of its rows has status
    ``completed``)."""
    return rows.groupby(TRIAL_KEY)["status"].transform(lambda s: (s == "completed").any()).astype(bool)


def _with_columns(df: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """Adds missing columns (all NaN) to an empty frame, so that empty studies give empty tables."""
    if len(df):
        return df
    return df.assign(**{c: pd.Series(dtype="float64") for c in columns if c not in df})


def _distribution(values: pd.Series, log: bool) -> optuna.distributions.BaseDistribution:
    if pd.api.types.is_float_dtype(values.dtype):
        low, high = float(values.min()), float(values.max())
        return optuna.distributions.FloatDistribution(low, high, log=log and low > 0)
    return optuna.distributions.CategoricalDistribution(sorted(_native(v) for v in values.unique()))


def _native(value):
    return value.item() if isinstance(value, np.generic) else value
