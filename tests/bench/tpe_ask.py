"""Optuna's TPE alone: how its ``ask`` grows with the trials a study has, without Ray, the platform
or a database.

Builds an in-memory Optuna study over ``studies/full_search.py``'s space with N finished trials,
as an ASHA study leaves them (most PRUNED after 1–2 epochs with their intermediate values, one in
sixteen COMPLETE after ``--epochs``; parameters drawn at random), then times ``--asks`` asks, each
sampling every parameter through the study's define-by-run search space as the platform's searcher
does, for TPE as the platform runs it (independent, one Parzen estimator pair per parameter) and
with ``multivariate=True`` (one pair for all). Prints one JSON object: ``{"asks": .., "runs":
[{"trials": N, "tpe_ask_p50_ms", "tpe_ask_p99_ms", "multivariate_ask_p50_ms",
"multivariate_ask_p99_ms"}, ...]}``.

    python tests/bench/tpe_ask.py --trials 100,1000,10000
"""
from __future__ import annotations

import argparse
import json
import random
import runpy
import statistics
import time
import warnings
from pathlib import Path

import optuna

SPACE = runpy.run_path(str(Path(__file__).resolve().parents[2] / "studies" / "full_search.py"))["SPACE"]
RUNG_EPOCHS = [1] * 8 + [2] * 4 + [4] * 2 + [8]  # where an ASHA study (factor 2) stops its trials


def finished_study(trials: int, epochs: int, seed: int) -> optuna.Study:
    """Returns an in-memory study with ``trials`` finished trials, as described above."""
    rng = random.Random(seed)
    study = optuna.create_study(direction="maximize",
                                sampler=optuna.samplers.RandomSampler(seed=seed))
    for _ in range(trials):
        trial = study.ask()
        SPACE(trial)
        last = rng.choice(RUNG_EPOCHS + [epochs])
        for epoch in range(1, last + 1):
            trial.report(rng.random() * epoch, epoch)
        if last == epochs:
            study.tell(trial, rng.random() * epochs)
        else:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    return study


def ask_ms(study: optuna.Study, sampler: optuna.samplers.BaseSampler, asks: int) -> list[float]:
    """Returns the milliseconds of ``asks`` asks by ``sampler``, each trial told PRUNED after."""
    study.sampler = sampler
    times = []
    for _ in range(asks):
        start = time.perf_counter()
        trial = study.ask()
        SPACE(trial)
        times.append((time.perf_counter() - start) * 1000)
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    return times


def _quantile(values: list[float], q: float) -> float:
    return round(statistics.quantiles(values, n=100, method="inclusive")[int(q * 100) - 1], 1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", default="100,1000,10000", help="comma-separated study sizes")
    p.add_argument("--asks", type=int, default=50)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # multivariate
    runs = []
    for n in (int(x) for x in args.trials.split(",")):
        study = finished_study(n, args.epochs, args.seed)
        row = {"trials": n}
        for name, multivariate in (("tpe", False), ("multivariate", True)):
            times = ask_ms(study, optuna.samplers.TPESampler(seed=args.seed, multivariate=multivariate),
                           args.asks)
            row[f"{name}_ask_p50_ms"] = _quantile(times, 0.5)
            row[f"{name}_ask_p99_ms"] = _quantile(times, 0.99)
        runs.append(row)
    print(json.dumps({"asks": args.asks, "runs": runs}))


if __name__ == "__main__":
    main()
