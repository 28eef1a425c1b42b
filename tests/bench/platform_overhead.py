"""Platform overhead: wall time of an N-trial smoke study vs the trials' own training time.

Prints one JSON object: ``study_wall_s`` (Tuner.fit, Ray already started), ``trial_time_s`` (sum
over all trial-epochs of the epoch wall time the trainer measured: train + eval), and
``overhead_fraction = 1 − trial_time_s / (study_wall_s × concurrency)``: the share of trial-slot
time spent in Ray/Tune/Train (process start, placement groups, checkpoints, reporting) rather
than in training and evaluation; and ``processes_per_trial``, the Ray worker processes (Tune
trial actor, Train controller and workers, helper actors) started per trial: each one imports Ray,
and those that import torch take seconds on a small machine.

    python tests/bench/platform_overhead.py --trials 4 --epochs 3
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time

import ray
from ray.util.state import list_workers

from transcenter.platform.search import Categorical, SearchSpace
from transcenter.platform.compat import WORKER_ENV
from transcenter.platform.study import StudySpec, run_study


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=4)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--concurrency", type=int, default=2)
    args = p.parse_args()
    ray.init(num_cpus=2, runtime_env={"env_vars": WORKER_ENV})
    with tempfile.TemporaryDirectory() as tmp:
        spec = StudySpec(name="overhead",
                         space=SearchSpace({"loss.alpha": Categorical([2.0 + i for i in range(args.trials)])}),
                         sampler="grid", preset="smoke", max_concurrent_trials=args.concurrency,
                         overrides={"data.num_train": 32, "data.num_val": 16,
                                    "train.epochs": args.epochs, "train.threads": 1},
                         storage_path=tmp)
        start_ms = time.time() * 1000
        start = time.perf_counter()
        store = run_study(spec)
        wall = time.perf_counter() - start
        started = sum(1 for w in list_workers(detail=True, limit=10_000)
                      if w.worker_type == "WORKER" and (w.worker_launch_time_ms or 0) >= start_ms)
        epochs = store.read_epochs()
    trial_time = float(epochs["time_s"].sum())
    slots = wall * args.concurrency
    print(json.dumps({"trials": args.trials, "epochs": args.epochs, "concurrency": args.concurrency,
                      "rows": len(epochs), "study_wall_s": round(wall, 2),
                      "trial_time_s": round(trial_time, 2),
                      "per_trial_overhead_s": round((slots - trial_time) / args.trials, 2),
                      "overhead_fraction": round(1 - trial_time / slots, 3),
                      "processes_per_trial": round(started / args.trials, 2)}))


if __name__ == "__main__":
    main()
