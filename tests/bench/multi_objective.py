"""Multi-objective search at an equal epoch budget: prints ONE JSON object.

Two studies over ``studies/accuracy_vs_compute.py``'s space on the smoke preset, on local Ray:
``mo_asha_tpe`` (multi-objective TPE proposing, multi-objective ASHA stopping) and ``random``
(random search, every trial trained to the end). Both get the same budget in trained epochs
(``--budget``); the ASHA study gets more trials, since it stops many early. Trials are taken in the
order they were created until the budget is spent, and each study's hypervolume of
(``--objectives``) is measured against one reference point for both (the worst value of each
objective over both studies, pushed out by 10 % of its range). Reported per study: trials,
epochs spent, the hypervolume at the budget, and the epochs it took to reach 90 % of the best
hypervolume either study reached.

    python tests/bench/multi_objective.py [--budget 24] [--epochs 3] [--objectives AP50:max gmacs:min]
"""
from __future__ import annotations

import argparse
import contextlib
import json
import runpy
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from transcenter.dashboards import pareto
from transcenter.platform.study import StudySpec, run_study

SPACE = runpy.run_path(str(Path(__file__).resolve().parents[2] / "studies" / "accuracy_vs_compute.py"))["SPACE"]


def run(name: str, storage: str, sampler: str, asha: bool, samples: int, args) -> pd.DataFrame:
    """Runs one study; returns its trial-epochs with a ``cumulative_epochs`` column (epochs trained
    by this trial and every trial created before it)."""
    spec = StudySpec.create(name=name, space=SPACE, sampler=sampler, objectives=tuple(args.objectives),
                            asha=asha, grace_period=1, reduction_factor=2, num_samples=samples,
                            max_concurrent_trials=2, preset="smoke", seed=args.seed,
                            overrides={"train.epochs": args.epochs, "train.threads": 1},
                            storage_path=storage)
    epochs = run_study(spec).read_epochs().sort_values(["trial_id", "epoch"])
    spent = epochs.groupby("trial_id").size().cumsum()
    return epochs.assign(cumulative_epochs=epochs["trial_id"].map(spent))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--budget", type=int, default=24, help="trained epochs per study")
    p.add_argument("--epochs", type=int, default=3, help="epochs of a trial trained to the end")
    p.add_argument("--objectives", nargs="+", default=["AP50:max", "gmacs:min"])
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    objectives = pareto.parse_objectives(args.objectives)
    start = time.perf_counter()
    # Tune's progress tables go to stderr: stdout carries the one JSON object.
    with tempfile.TemporaryDirectory() as storage, contextlib.redirect_stdout(sys.stderr):
        studies = {"mo_asha_tpe": run("mo_asha_tpe", storage, "tpe", True, 2 * args.budget // args.epochs, args),
                   "random": run("random", storage, "random", False, args.budget // args.epochs, args)}
    within = {k: df[df["cumulative_epochs"] <= args.budget] for k, df in studies.items()}
    points = pd.concat([pareto.trial_points(df, objectives) for df in within.values()])
    reference = pareto.default_reference(points, objectives)
    curves = {k: pareto.hypervolume_curve(df, objectives, reference).assign(
        epochs=lambda c, df=df: c["trial_id"].map(df.groupby("trial_id")["cumulative_epochs"].max()))
        for k, df in within.items()}
    best = max(float(c["hypervolume"].max()) for c in curves.values())
    result = {"budget_epochs": args.budget, "epochs_per_trial": args.epochs,
              "objectives": objectives, "reference": reference}
    for name, curve in curves.items():
        reached = curve[curve["hypervolume"] >= 0.9 * best]
        result[name] = {"trials": len(curve), "epochs_spent": int(within[name].shape[0]),
                        "hypervolume": round(float(curve["hypervolume"].iloc[-1]), 6),
                        "epochs_to_90pct_best": int(reached["epochs"].iloc[0]) if len(reached) else None}
    result["wall_s"] = round(time.perf_counter() - start, 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
