"""Multi-objective search at scale, in simulated time: MO-ASHA + TPE against ASHA on a scalarised
objective and against random search without early stopping, at equal GPU-hour budgets.

Every method searches ``studies/full_search.py``'s space on the built-in surrogate's curves (AP to
maximise, GMACs to minimise: GMACs grow with the heatmap size, while AP peaks at the surrogate's
optimum size), ``--trials`` trials of ``--epochs`` epochs on ``--slots`` slots, once per seed, with
the study's own searcher and schedulers driven by the simulated clock
(:mod:`transcenter.platform.simulated_time`). The scalarised objective is ``AP/100 − GMACs/GMACs
at S=128``. Budgets are fractions of the smallest total hours any method's run used, so each
method is scored on the same spend; at each budget the hypervolume of the finished trials ended
within it is measured from (AP 0, the largest GMACs of the space). Prints one JSON object:
``{"trials", "epochs", "seeds", "budget_hours", "methods": {name: {"25%": [mean, std], ...}}}``.

With ``--source results/<study>``, the curves are that finished study's instead (its own search
space; configurations it did not train are predicted from its nearest trials,
:class:`~transcenter.platform.simulate.StudyCurves`), the GMACs reference is the largest the study
measured, and ``--epochs`` defaults to the study's.

    python tests/bench/mo_at_scale.py --trials 200 --seeds 20 [--source results/<study>]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import optuna

from transcenter.platform.replay import hypervolume
from transcenter.platform.schedulers import Stopping
from transcenter.platform.search import SearchSpace
from transcenter.platform.simulate import SURROGATE, SimulationSpec, StudyCurves, Surrogate
from transcenter.platform.simulated_time import SimulatedStudy, run_simulated_time
from transcenter.store.results import ResultStore

OBJECTIVES = {"AP": "max", "gmacs": "min"}
FRACTIONS = (0.25, 0.5, 1.0)


@dataclass(frozen=True)
class Scalarised:
    """Learning curves with ``score = AP/100 − gmacs/max_gmacs`` added."""

    curves: Surrogate | StudyCurves
    max_gmacs: float

    def metrics(self, params, epoch):
        m = self.curves.metrics(params, epoch)
        return {**m, "score": m["AP"] / 100 - m["gmacs"] / self.max_gmacs}


@dataclass(frozen=True)
class ScalarisedSpec:
    """A :class:`SimulationSpec` whose curves carry the scalarised objective."""

    sim: SimulationSpec
    max_gmacs: float

    @property
    def epochs(self) -> int:
        return self.sim.epochs

    def curves(self) -> Scalarised:
        return Scalarised(self.sim.curves(), self.max_gmacs)


def _source(source: str) -> tuple[SearchSpace, float, int]:
    """Returns the search space, the largest GMACs and the default epochs of ``source``:
    ``full_search.py``'s space on the surrogate, or a finished study's own."""
    if source == SURROGATE:
        sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "studies"))
        space = __import__("full_search").SPACE
        sizes = space.params["model.heatmap_size"].values
        return space, Surrogate(space.describe()).metrics({"model.heatmap_size": max(sizes)}, 1)["gmacs"], 10
    store = ResultStore.open(source)
    rows = store.read_epochs()
    return (SearchSpace.from_description(store.read_meta()["search_space"]),
            float(rows["gmacs"].max()), int(rows["epoch"].max()))


def within(study: SimulatedStudy, hours: float) -> SimulatedStudy:
    """Returns the trials of ``study`` that ended before ``hours`` of slot time were spent."""
    kept, spent = [], 0.0
    for trial in sorted(study.trials, key=lambda t: t.end_s):
        spent += (trial.end_s - trial.start_s) / 3600
        if spent > hours:
            break
        kept.append(trial)
    return replace(study, trials=kept)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=200)
    p.add_argument("--epochs", type=int, help="default: 10, or the --source study's epochs")
    p.add_argument("--slots", type=int, default=16)
    p.add_argument("--seeds", type=int, default=20)
    p.add_argument("--source", default=SURROGATE,
                   help="a finished study's folder to replay instead of the surrogate")
    args = p.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space, max_gmacs, epochs = _source(args.source)
    args.epochs = args.epochs or epochs
    reference = {"AP": 0.0, "gmacs": max_gmacs}
    methods = {"mo_asha_tpe": (OBJECTIVES, "tpe", True),
               "asha_scalarised_tpe": ({"score": "max"}, "tpe", True),
               "random_no_stopping": (OBJECTIVES, "random", False)}
    runs: dict[str, list[SimulatedStudy]] = {name: [] for name in methods}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.seeds):
            sim = SimulationSpec(args.source, space.describe(), args.epochs, seed=seed)
            for name, (objectives, sampler, asha) in methods.items():
                spec = ScalarisedSpec(sim, max_gmacs) if "score" in objectives else sim
                runs[name].append(run_simulated_time(
                    space, objectives, spec, args.trials, args.slots,
                    f"sqlite:///{tmp}/{name}-{seed}.db", name, sampler, seed,
                    Stopping("asha" if asha else "none")))
                print(f"seed {seed} {name}: {runs[name][-1].busy_s / 3600:.1f} h", file=sys.stderr)
    budget = min(s.busy_s / 3600 for studies in runs.values() for s in studies)
    out = {}
    for name, studies in runs.items():
        out[name] = {}
        for fraction in FRACTIONS:
            volumes = [hypervolume(within(s, fraction * budget), OBJECTIVES, args.epochs, reference)
                       for s in studies]
            out[name][f"{fraction:.0%}"] = [round(statistics.mean(volumes), 3),
                                            round(statistics.stdev(volumes), 3)
                                            if len(volumes) > 1 else 0.0]
    print(json.dumps({"source": args.source, "trials": args.trials, "epochs": args.epochs,
                      "slots": args.slots,
                      "seeds": args.seeds, "budget_hours": round(budget, 2), "methods": out}))


if __name__ == "__main__":
    main()
