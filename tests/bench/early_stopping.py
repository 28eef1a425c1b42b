"""Early stopping against a study's answer, in simulated time: crossing and non-crossing curves.

Each method searches with the study's own searcher (seeded TPE) and scheduler, driven by the
simulated clock (:mod:`transcenter.platform.simulated_time`): ``--trials`` trials of ``--epochs``
epochs on ``--slots`` slots, once per seed.

- ``crossing`` (:class:`~transcenter.platform.simulate.CrossingSurrogate`: small heatmaps lead
  early, S = 64 ends highest) over ``studies/full_search.py``'s space on AP50: in how many seeds
  the best trial that trained every epoch has the best S (``best_s``), and in how many the
  upper-limit table (:func:`transcenter.dashboards.analysis.upper_limit`, from each trial's last
  epoch) ranks the best S first (``upper_limit``).
- ``crossing_mo``: the same curves over ``studies/accuracy_vs_compute.py``'s space on AP (max) and
  GMACs (min): in how many seeds the best-AP size is on the front of the trials that trained every
  epoch (``front``).
- ``surrogate`` (:class:`~transcenter.platform.simulate.Surrogate`: better configurations also
  learn faster, no crossing) over full_search's space: the best AP50 found (mean, std over seeds).
- ``--source results/<study>``: a finished study's own rows as the curves, its own space and
  objectives: the best value found.

Every method reports its slot-hours (mean over seeds) and, on the built-in families, the share of
the later half of the trials that TPE proposed at the best S (``late_best_s_share``: what the
searcher learned from the stopped trials). The best S is the size whose best configuration ends
highest on the noiseless curves. Methods: ``none``, ``asha`` (Ray's ASHA with reduction factor 2,
multi-objective ASHA on two objectives: the studies' setting before the audited policy),
``audited`` (audited ASHA stratified by the heatmap size with the CLI's defaults: reduction factor
3, a sentinel every 16th trial), and the candidates ``audited_rf2`` (reduction factor 2, a sentinel
every 8th: the default before), ``audited_own`` (each stratum's rungs judged on its own audited
pairs only, ``--audit-scope own``), ``stratified`` (no sentinels) and ``audited_one_stratum``
(sentinels, no strata). Each study script says whether it stops early by default (its ``ASHA``):
``full_search`` does (``audited``), ``accuracy_vs_compute`` does not (``none``). Prints one JSON
object with ``targets``: each target of issue 36, measured on the studies' defaults, and whether it
holds.

    python tests/bench/early_stopping.py [--seeds 10] [--first-seed 0] [--trials 64] [--epochs 20] [--slots 8]
        [--source results/<study>]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import optuna
import pandas as pd

from transcenter.dashboards.analysis import upper_limit
from transcenter.platform.mo_asha import non_dominated_ranks
from transcenter.platform.schedulers import Stopping
from transcenter.platform.search import SearchSpace
from transcenter.platform.simulate import CROSSING, SURROGATE, SimulationSpec
from transcenter.platform.simulated_time import SimulatedStudy, run_simulated_time
from transcenter.store.results import ResultStore

SIZE = "model.heatmap_size"
STUDIES = Path(__file__).resolve().parents[2] / "studies"
METHODS = {
    "none": Stopping("none"),
    "asha": Stopping("asha", reduction_factor=2),
    "audited": Stopping("audited", stratify=SIZE),
    "audited_rf2": Stopping("audited", stratify=SIZE, reduction_factor=2, sentinel_every=8),
    "audited_own": Stopping("audited", stratify=SIZE, audit_scope="own"),
    "stratified": Stopping("audited", stratify=SIZE, sentinel_every=0),
    "audited_one_stratum": Stopping("audited"),
}
# family -> (curves, study script whose space it searches, objectives, methods)
FAMILIES = {
    "crossing": (CROSSING, "full_search", {"AP50": "max"}, tuple(METHODS)),
    "crossing_mo": (CROSSING, "accuracy_vs_compute", {"AP": "max", "gmacs": "min"},
                    ("none", "asha", "audited", "audited_rf2")),
    "surrogate": (SURROGATE, "full_search", {"AP50": "max"},
                  ("none", "asha", "audited", "audited_rf2", "audited_own")),
}


def study_module(script: str):
    """Returns the module ``studies/<script>.py`` (its ``SPACE``, and its ``ASHA`` where it sets
    one)."""
    if str(STUDIES) not in sys.path:
        sys.path.insert(0, str(STUDIES))
    return __import__(script)


def study_space(script: str) -> SearchSpace:
    """Returns the search space ``studies/<script>.py`` declares."""
    return study_module(script).SPACE


def default_method(script: str) -> str:
    """Returns the method ``studies/<script>.py`` runs by default: ``audited`` where it stops
    early (``ASHA``), else ``none``."""
    return "audited" if getattr(study_module(script), "ASHA", False) else "none"


def best_size(sim: SimulationSpec, metric: str) -> int:
    """Returns the heatmap size whose best configuration ends highest on the noiseless curves."""
    curves = dataclasses.replace(sim.curves(), noise=0.0)
    sizes = sim.space[SIZE]["values"]
    optimum = curves.optimum()
    return max(sizes, key=lambda s: curves.metrics({**optimum, SIZE: s}, sim.epochs)[metric])


def run_one(job: tuple) -> dict:
    """Runs one seed of one method on one family; returns what the targets read."""
    family, method, source, space_description, objectives, seed, args = job
    space = SearchSpace.from_description(space_description)
    sim = SimulationSpec(source, space_description, args["epochs"], seed=seed)
    stopping = METHODS[method]
    if stopping.stratify and stopping.stratify not in space.params:
        stopping = dataclasses.replace(stopping, stratify=None)
    with tempfile.TemporaryDirectory() as tmp:
        study = run_simulated_time(space, objectives, sim, args["trials"], args["slots"],
                                   f"sqlite:///{tmp}/study.db", "bench", "tpe", seed, stopping)
    metric = next(iter(objectives))
    full = [t for t in study.trials if t.epochs == args["epochs"]]
    out = {"family": family, "method": method, "seed": seed, "hours": study.busy_s / 3600,
           "best": max(t.last[metric] for t in full) if full else None}
    if source in (SURROGATE, CROSSING) and SIZE in space.params:
        right = best_size(sim, metric)
        later = sorted(study.trials, key=lambda t: t.key)[len(study.trials) // 2:]
        out["late_best_s_share"] = sum(t.params[SIZE] == right for t in later) / len(later)
        if len(objectives) == 1:
            winner = max(full, key=lambda t: t.last[metric]).params[SIZE] if full else None
            out["best_s"] = winner == right
            out["upper_limit"] = _upper_limit_first(study, metric, args["epochs"]) == right
        else:
            signs = [-1 if mode == "max" else 1 for mode in objectives.values()]
            ranks = non_dominated_ranks([[s * t.last[m] for s, m in zip(signs, objectives)]
                                         for t in full])
            out["front"] = any(r == 0 and t.params[SIZE] == right for r, t in zip(ranks, full))
    return out


def _upper_limit_first(study: SimulatedStudy, metric: str, epochs: int):
    """Returns the heatmap size the upper-limit table ranks first (known limits before unknown)."""
    rows = pd.DataFrame([{"study": "bench", "trial_id": t.key, "epoch": t.epochs,
                          "status": "completed" if t.epochs == epochs else "stopped",
                          SIZE: t.params[SIZE], **t.last} for t in study.trials])
    table = upper_limit(rows, by=SIZE, rank_by=metric)
    return table.sort_values(["known", metric], ascending=False).index[0]


def _summary(runs: list[dict]) -> dict:
    bests = [r["best"] for r in runs if r["best"] is not None]
    out = {"slot_hours": round(statistics.mean(r["hours"] for r in runs), 2),
           "best": [round(statistics.mean(bests), 2),
                    round(statistics.stdev(bests), 2) if len(bests) > 1 else 0.0]}
    for key in ("best_s", "upper_limit", "front"):
        if key in runs[0]:
            out[key] = f"{sum(r[key] for r in runs)}/{len(runs)}"
    if "late_best_s_share" in runs[0]:
        out["late_best_s_share"] = round(statistics.mean(r["late_best_s_share"] for r in runs), 2)
    return out


def _count(fraction: str) -> int:
    return int(fraction.split("/")[0])


def targets(out: dict, seeds: int) -> dict:
    """Returns each target of issue 36, on each study's default method, with its value and whether
    it holds."""
    need = -(-9 * seeds // 10)  # 9 of 10
    single = default_method(FAMILIES["crossing"][1])
    crossing, plain = out["crossing"][single], out["surrogate"][single]
    mo = out["crossing_mo"][default_method(FAMILIES["crossing_mo"][1])]
    ratio = crossing["slot_hours"] / out["crossing"]["none"]["slot_hours"]
    asha = out["surrogate"]["asha"]
    surrogate_ratio = plain["slot_hours"] / asha["slot_hours"]
    gap = asha["best"][0] - plain["best"][0]
    spread = max(asha["best"][1], plain["best"][1])
    return {
        "defaults": {"full_search": single,
                     "accuracy_vs_compute": default_method(FAMILIES["crossing_mo"][1])},
        "crossing_best_s": [crossing["best_s"], _count(crossing["best_s"]) >= need],
        "crossing_upper_limit": [crossing["upper_limit"], _count(crossing["upper_limit"]) >= need],
        "crossing_mo_front": [mo["front"], _count(mo["front"]) >= need],
        "crossing_hours_vs_none": [round(ratio, 3), ratio <= 0.5],
        "surrogate_best_gap_vs_asha": [round(gap, 2), gap <= spread],
        "surrogate_hours_vs_asha": [round(surrogate_ratio, 3), surrogate_ratio <= 1.25],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--first-seed", type=int, default=0, help="seeds --first-seed and up")
    p.add_argument("--trials", type=int, default=64)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--slots", type=int, default=8)
    p.add_argument("--source", help="also replay a finished study's own rows")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="processes")
    args = p.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    settings = {"trials": args.trials, "epochs": args.epochs, "slots": args.slots}
    families = {name: (source, study_space(script).describe(), objectives, methods)
                for name, (source, script, objectives, methods) in FAMILIES.items()}
    settings_source = settings
    if args.source:
        meta = ResultStore.open(args.source).read_meta()
        settings_source = {**settings, "epochs": meta["settings"]["epochs"]}
        families["source"] = (args.source, meta["search_space"], meta["objectives"],
                              ("none", "asha", "audited"))
    jobs = [(family, method, source, space, objectives, seed,
             settings_source if family == "source" else settings)
            for family, (source, space, objectives, methods) in families.items()
            for method in methods
            for seed in range(args.first_seed, args.first_seed + args.seeds)]
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        runs = list(pool.map(run_one, jobs))
    out: dict = {}
    for family, (_, _, _, methods) in families.items():
        out[family] = {m: _summary([r for r in runs if r["family"] == family and r["method"] == m])
                       for m in methods}
    print(json.dumps({**settings, "seeds": args.seeds, "first_seed": args.first_seed, **out,
                      "targets": targets(out, args.seeds)}))


if __name__ == "__main__":
    main()
