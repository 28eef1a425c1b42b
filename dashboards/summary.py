"""A study's tables in the terminal: ``python -m transcenter.dashboards.summary <study dir> [...]``.

`collect` gathers every table once (the HTML report uses it too); a table that cannot be made (no
epochs yet, too few trials) is replaced by a sentence saying why.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import optuna
import pandas as pd

from transcenter.dashboards import analysis, dataset_tables, pareto
from transcenter.dashboards.dataset_tables import DataSetTables
from transcenter.model.training.experiment import trial_config
from transcenter.store.results import OVERLAP_RECALL, ResultStore

OVERLAP_TITLE = ("Overlap recall vs. AP per head (paper Fig. 2): recall (%) of objects sharing "
                 "their heatmap cell with a same-class object, at each trial's last evaluation")
CLASS_AP50_TITLE = "Per-class AP50 (%) of the best trial at its last epoch, weakest class first"
DATASET_TITLE = "Data set"
UPPER_TITLE = ("Upper limit (paper Tables 4 and 2): AP (%) at the last epoch of the best trial that "
               "trained every epoch (best: the highest AP at its last epoch)")
TRIALS_TITLE = "Trials (final.AP, final.AP50: AP and AP50 (%) at each trial's last epoch)"
IMPORTANCE_TITLE = "Hyperparameter importance for AP at each trial's last epoch (PED-ANOVA)"
AUDIT_TITLE = ("Rung audit: Kendall tau of each early-stopping rung's ranking against the last "
               "epoch's, over trials that trained every epoch")
COMPUTE_TITLE = ("Accuracy against compute: AP vs. forward GMACs per image at each trial's last "
                 "epoch, and the Pareto front")


@dataclass(frozen=True)
class StudyTables:
    """Everything the summary and the report show; a ``str`` field says why its table is missing.

    Attributes:
        epochs: Trial-epochs from `analysis.load_study`.
        status: One row per trial (`analysis.trial_status`).
        search: Each trial's hyperparameters and AP50 at its last epoch (`analysis.final_per_trial`).
        lower: `analysis.lower_limit` over the first epochs.
        lower_note: The lower limit's conclusion (`lower_limit_note`), "" without one.
        upper: `analysis.upper_limit` beside the paper's numbers.
        overlap: `analysis.head_comparison`: overlap recall beside AP per head.
        losses: `analysis.loss_curves`.
        importance: `analysis.importance` of AP at each trial's last epoch.
        best: The ended trial with the highest AP at its last epoch (`analysis.best_trial`), None
            if there is none.
        class_ap50: `analysis.class_ap50` of ``best`` at its last epoch, named by ``study.json``'s
            ``class_names``; None when the study records no per-class AP50 (studies before it).
        datasets: Study -> `dataset_tables.tables` of its ``study.json`` ``dataset``, for the
            studies that have one.
        compute: Accuracy against compute (`ComputeTables`), None when the study records no
            ``gmacs`` (studies before it); a ``str`` says why there is none.
        upper_note: The upper limit's conclusion (`analysis.upper_limit_note`), "" without one.
        audit: `analysis.rung_audit` of each study that stopped trials early (by study name).
        audit_note: `analysis.rung_audit_note` of each of them, joined; "" without early stopping.
        set_for_study: The configuration fields the study set to other values than its preset's
            defaults (`changed_from_preset`); None when that is not known.
    """

    epochs: pd.DataFrame
    status: pd.DataFrame
    search: pd.DataFrame
    lower: pd.DataFrame | str
    lower_note: str
    upper: pd.DataFrame | str
    overlap: pd.DataFrame | str
    losses: pd.DataFrame | str
    importance: pd.Series | str
    best: pd.Series | None
    class_ap50: pd.DataFrame | str | None
    datasets: dict[str, DataSetTables]
    compute: ComputeTables | str | None
    upper_note: str = ""
    audit: dict[str, pd.DataFrame] = field(default_factory=dict)
    audit_note: str = ""
    set_for_study: frozenset[str] | None = None


@dataclass(frozen=True)
class ComputeTables:
    """The Pareto front of a study's objectives (``study.json``'s, when it has several; else AP
    against forward GMACs).

    Attributes:
        objectives: Metric -> ``"max"``/``"min"``.
        declared: Whether the study optimised these objectives (else they are the default view).
        front: `pareto.front_table`: the non-dominated trials and the hyperparameters that vary.
        reference: The hypervolume's reference point (`pareto.default_reference`), declared only.
        hypervolume: The front's hypervolume, declared only.
        curve: `pareto.hypervolume_curve`: how the search progressed, declared only.
    """

    objectives: dict[str, str]
    declared: bool
    front: pd.DataFrame
    reference: dict[str, float] | None = None
    hypervolume: float | None = None
    curve: pd.DataFrame | None = None


def collect(
    paths: analysis.StudyPaths,
    by: str = analysis.HEATMAP_SIZE,
    first_epochs: int = 3,
) -> StudyTables:
    """Reads one or more study directories and computes every table.

    Args:
        paths: Study directories (``<storage_path>/<study>``, local or URI).
        by: The grouping hyperparameter of the lower/upper limit and loss tables.
        first_epochs: The lower limit covers epochs 1 to this.

    Returns:
        The tables, or for each one that cannot be made, the reason.
    """
    if first_epochs < 1:
        raise ValueError(f"first_epochs must be >= 1, got {first_epochs}")
    epochs = analysis.load_study(paths)
    status = analysis.trial_status(epochs, analysis.load_trials(paths))
    overlap = (analysis.head_comparison(epochs, by=by) if OVERLAP_RECALL in epochs
               else f"The study reports no {OVERLAP_RECALL!r} (studies of older versions did not record it).")
    lower_note = upper_note = ""
    if epochs.empty:
        lower = upper = losses = overlap = "No epoch has been recorded yet."
    elif by not in epochs:
        lower = upper = losses = f"The study has no {by!r} hyperparameter to group by."
    else:
        lower = analysis.lower_limit(epochs, epochs=range(1, first_epochs + 1), by=by)
        leaders = analysis.lower_limit_leaders(epochs, epochs=range(1, first_epochs + 1), by=by)
        lower_note = lower_limit_note(leaders, by, first_epochs)
        upper = analysis.upper_limit(epochs, by=by)
        upper_note = analysis.upper_limit_note(upper)
        losses = analysis.loss_curves(epochs, by=by)
    try:
        importance = analysis.importance(epochs)
    except analysis.NotEnoughTrials as why:
        importance = f"No importance: it {why}."
    meta = analysis.load_meta(paths)
    audit = {study: analysis.rung_audit(epochs[epochs["study"] == study], m)
             for study, m in meta.items() if (m.get("settings") or {}).get("asha")}
    audit_note = " ".join(f"{study}: {analysis.rung_audit_note(table)}" if len(audit) > 1
                          else analysis.rung_audit_note(table) for study, table in audit.items())
    best = analysis.best_trial(status)
    datasets = {study: dataset_tables.tables(m["dataset"]) for study, m in meta.items()
                if m.get("dataset")}
    return StudyTables(epochs=epochs, status=status, search=analysis.final_per_trial(epochs),
                       lower=lower, lower_note=lower_note, upper=upper, overlap=overlap, losses=losses,
                       importance=importance, best=best,
                       class_ap50=_class_ap50(epochs, best, meta), datasets=datasets,
                       compute=_compute(epochs, meta), upper_note=upper_note, audit=audit,
                       audit_note=audit_note.strip(), set_for_study=changed_from_preset(meta))


def changed_from_preset(meta: dict[str, dict[str, Any]]) -> frozenset[str] | None:
    """Returns the dotted configuration fields whose value in the studies' ``trial_config`` (the
    configuration before the searched values) is not their preset's default, or a field the
    preset does not have; None when the studies name no preset, several presets, or record no
    ``trial_config`` (studies of older versions)."""
    presets = {m.get("preset") for m in meta.values()}
    configs = [m.get("trial_config") for m in meta.values()]
    if len(presets) != 1 or None in presets or not configs or not all(configs):
        return None
    defaults = trial_config(presets.pop()).to_flat_dict()
    return frozenset(name for config in configs for name, value in config.items()
                     if name not in defaults or _json(value) != _json(defaults[name]))


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def compute_note(compute: ComputeTables) -> str:
    """Says what the front is of and, for a multi-objective study, its hypervolume."""
    what = ", ".join(f"{name} ({mode})" for name, mode in compute.objectives.items())
    note = (f"{len(compute.front)} trial(s) on the Pareto front of {what}, each at its last epoch; "
            f"the paper's models (Table 1 MACs, Table 4 AP) beside them.")
    if compute.hypervolume is not None:
        reference = ", ".join(f"{k} {v:.4g}" for k, v in compute.reference.items())
        note += f" Hypervolume {compute.hypervolume:.4g} (reference point: {reference})."
    return note


def lower_limit_note(leaders: pd.DataFrame, by: str, first_epochs: int, metric: str = "AP50") -> str:
    """Says which value of ``by`` leads in epochs 1..``first_epochs`` (`analysis.lower_limit_leaders`)
    and, with several seeds, whether every seed has the same leader; "" without data."""
    if leaders.empty:
        return ""
    epochs = f"epochs 1-{first_epochs}" if first_epochs > 1 else "epoch 1"
    if len(leaders) == 1:
        row = leaders.to_dict("records")[0]  # keeps each column's own type (16, not 16.0)
        note = f"In {epochs}, {by} = {row['leader']} leads (mean {metric} {row['score']:.3g}"
        if row["runner_up"] is not None:
            note += f"; next: {row['runner_up']} at {row['runner_up_score']:.3g}"
        return note + "). One seed: run the study with another --seed to check the conclusion."
    per_seed = ", ".join(f"seed {seed}: {leader} ({score:.3g})"
                         for seed, leader, score in zip(leaders.index, leaders["leader"], leaders["score"]))
    if leaders["leader"].nunique() == 1:
        return (f"In {epochs}, {by} = {leaders['leader'].iloc[0]} leads for every seed "
                f"({per_seed}): the conclusion is the same for all {len(leaders)} seeds.")
    return (f"In {epochs}, the leading {by} differs between seeds ({per_seed}): the conclusion is "
            f"not stable; train longer or add seeds before drawing it.")


def class_ap50_note(tables: StudyTables) -> str:
    """Says which trial-epoch (the best trial's last) the per-class AP50 table is of, and its mean
    over classes."""
    table, best = tables.class_ap50, tables.best
    if not isinstance(table, pd.DataFrame) or best is None:
        return ""
    known = table["AP50"].dropna()
    missing = len(table) - len(known)
    note = (f"Trial {best['trial_id']} of study {best['study']} at its last epoch, "
            f"{int(best['n_epochs'])} (AP {best['final.AP']:.4g}). Mean AP50 over the {len(known)} "
            f"classes with ground truth: {known.mean():.4g}.")
    if missing:
        note += (f" {missing} {'class has' if missing == 1 else 'classes have'} no object in the "
                 "val split (–).")
    return note


def _compute(epochs: pd.DataFrame, meta: dict[str, dict[str, Any]]) -> ComputeTables | str | None:
    if "gmacs" not in epochs or "AP" not in epochs:
        return None
    declared = next((m["objectives"] for m in meta.values() if len(m.get("objectives") or {}) > 1), None)
    objectives = declared or {"AP": "max", "gmacs": "min"}
    if any(name not in epochs for name in objectives):
        return f"The study records no {[n for n in objectives if n not in epochs]}."
    points = pareto.trial_points(epochs, objectives)
    if points.empty:
        return f"No trial has a finite value of every objective ({', '.join(objectives)}) yet."
    front = pareto.front_table(epochs, objectives)
    if not declared:
        return ComputeTables(objectives, False, front)
    reference = pareto.default_reference(points, objectives)
    return ComputeTables(objectives, True, front, reference,
                         pareto.hypervolume(points, objectives, reference),
                         pareto.hypervolume_curve(epochs, objectives, reference))


def _class_ap50(epochs: pd.DataFrame, best: pd.Series | None,
                meta: dict[str, dict[str, Any]]) -> pd.DataFrame | str | None:
    if not analysis.class_ap_columns(epochs):
        return None
    if best is None:
        return "No ended trial has a finite AP at its last epoch yet."
    study_meta = meta.get(best["study"], {})
    names = study_meta.get("class_names") or (study_meta.get("dataset") or {}).get("class_names")
    epoch = int(best["n_epochs"])  # its last
    table = analysis.class_ap50(epochs, best["study"], best["trial_id"], epoch, names)
    if table["AP50"].isna().all():
        return (f"Trial {best['trial_id']} of study {best['study']} reports no per-class AP50 at "
                f"its last epoch, {epoch}.")
    return table


def render_text(tables: StudyTables) -> str:
    """Returns the tables as plain text, one titled block each."""
    blocks = [
        (TRIALS_TITLE, tables.status),
        ("Lower limit (paper Fig. 6): AP50 (%) in the first epochs",
         tables.lower if not tables.lower_note or isinstance(tables.lower, str)
         else f"{_text(tables.lower)}\n{tables.lower_note}"),
        (UPPER_TITLE, tables.upper if not tables.upper_note or isinstance(tables.upper, str)
         else f"{_text(tables.upper)}\n{tables.upper_note}"),
        (OVERLAP_TITLE, tables.overlap),
        ("Position vs. size heatmap loss (paper Fig. 7)", tables.losses),
        (IMPORTANCE_TITLE, tables.importance),
    ]
    if tables.class_ap50 is not None:
        body = tables.class_ap50
        if isinstance(body, pd.DataFrame):
            body = f"{_text(body.set_index('class'))}\n{class_ap50_note(tables)}"
        blocks.insert(3, (CLASS_AP50_TITLE, body))
    if tables.compute is not None:
        compute = tables.compute
        blocks.insert(3, (COMPUTE_TITLE, compute if isinstance(compute, str) else
                          f"{_text(compute.front.set_index('trial_id'))}\n{compute_note(compute)}"))
    data_blocks = [(f"{DATASET_TITLE} of study {study}",
                    f"{_text(data.splits)}\n\n{_text(data.same_cell)}\n{dataset_tables.SAME_CELL_NOTE}\n"
                    "(objects per class: in the HTML report)")
                   for study, data in tables.datasets.items()]
    audit_blocks = [(f"{AUDIT_TITLE} of study {study}", table) for study, table in tables.audit.items()]
    blocks = data_blocks + blocks + audit_blocks
    if tables.audit_note:
        blocks.insert(0, ("Early stopping", tables.audit_note))
    return "\n\n".join(f"== {title} ==\n{_text(body)}" for title, body in blocks) + "\n"


def _text(body: pd.DataFrame | pd.Series | str) -> str:
    if isinstance(body, str):
        return body
    if body.empty:
        return "Nothing to show yet."
    with pd.option_context("display.width", 200, "display.max_columns", None):
        return body.to_string(float_format=lambda x: f"{x:.4g}")


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point; prints the tables and returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study_dirs", nargs="+", help="<storage_path>/<study>, local path or URI")
    parser.add_argument("--by", default=analysis.HEATMAP_SIZE, help="grouping hyperparameter")
    parser.add_argument("--first-epochs", type=int, default=3, help="epochs of the lower limit")
    args = parser.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for path in args.study_dirs:
        if not ResultStore.open(path).exists():
            print(f"warning: no results under {path} (yet)", file=sys.stderr)
    print(render_text(collect(args.study_dirs, by=args.by, first_epochs=args.first_epochs)), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
