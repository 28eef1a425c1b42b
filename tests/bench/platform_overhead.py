"""Platform overhead: wall time of an N-trial smoke study vs the trials' own training time.

Prints one JSON object: ``study_wall_s`` (Tuner.fit, Ray already started), ``trial_time_s`` (sum
over all trial-epochs of the epoch wall time the trainer measured: train + eval), and
``overhead_fraction = 1 − trial_time_s / (study_wall_s × concurrency)``: the share of trial-slot
time spent in Ray/Tune/Train (process start, placement groups, checkpoints, reporting) rather
than in training and evaluation; ``per_trial_overhead_s``, that slot time per trial;
``processes_per_trial``, the Ray worker processes (Tune trial actor, Train controller and workers,
helper actors) started per trial: each one imports Ray, and those that import torch take seconds on
a small machine; ``processes`` (Ray process title -> how many were seen and how many had torch's
library mapped, sampled from ``/proc`` while the study ran); and ``trial_actor_import_s``, the
time to import the trial actor's module in a fresh interpreter.

With ``--cli N``, it first runs a study of N trials the way a user does, through the CLI in a fresh
process that starts its own local Ray (``studies/focal_loss.py --preset smoke --sampler random``,
same epochs, concurrency and ``--keep-workers``), and adds ``cli``: its wall time (Ray's start and
the driver's checks included), the trainer's own time, and ``per_trial_s`` (wall time ×
concurrency / trials).

With ``--asha``, Ray's ASHA (grace period 1, reduction factor 2) stops trials as they fall
behind, and ``stopped_trials`` counts those that trained fewer epochs than the others: a stopped
trial's workers stop at a step and serve the next trial too (``WarmWorkerGroup``).

    python tests/bench/platform_overhead.py --trials 4 --epochs 3 [--cli 8] [--keep-workers 0] [--asha]
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import pandas as pd
import ray
from ray.util.state import list_workers

from transcenter.platform.compat import WORKER_ENV
from transcenter.platform.search import Categorical, SearchSpace
from transcenter.platform.study import StudySpec, run_study
from transcenter.platform.trainer import Resources


def ray_processes() -> dict[int, tuple[str, bool, float]]:
    """Returns pid -> (Ray process title without its method, torch's library mapped, CPU seconds
    so far) for every ``ray::`` process now running."""
    out = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            title = (proc / "cmdline").read_bytes().split(b"\0")[0].decode()
            if not title.startswith("ray::"):
                continue
            ticks = (proc / "stat").read_text().rsplit(")", 1)[1].split()[11:13]  # utime, stime
            out[int(proc.name)] = (title.split()[0].split(".")[0],
                                   "libtorch" in (proc / "maps").read_text(),
                                   sum(map(int, ticks)) / os.sysconf("SC_CLK_TCK"))
        except OSError:
            continue
    return out


class ProcessSampler(threading.Thread):
    """Samples the ``ray::`` processes every ``interval_s`` until stopped; ``summary()`` gives
    title -> {"seen": processes, "with_torch": those that mapped torch's library, "cpu_s": their
    mean CPU seconds (at their last sample)}."""

    def __init__(self, interval_s: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.interval_s = interval_s
        self.seen: dict[int, tuple[str, bool, float]] = {}
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(self.interval_s):
            for pid, (title, torch, cpu_s) in ray_processes().items():
                was = self.seen.get(pid, (title, False, 0.0))
                self.seen[pid] = (title, was[1] or torch, cpu_s)

    def summary(self, before: set[int]) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = defaultdict(lambda: {"seen": 0, "with_torch": 0, "cpu_s": 0.0})
        for pid, (title, torch, cpu_s) in self.seen.items():
            if pid not in before:
                out[title]["seen"] += 1
                out[title]["with_torch"] += int(torch)
                out[title]["cpu_s"] += cpu_s
        for row in out.values():
            row["cpu_s"] = round(row["cpu_s"] / row["seen"], 2)
        return dict(sorted(out.items()))


def import_time(module: str) -> float:
    """Seconds to import ``module`` in a fresh interpreter (the interpreter's start excluded)."""
    code = f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def cli_study(trials: int, epochs: int, concurrency: int, keep_workers: float) -> dict[str, float]:
    """Runs a smoke study of ``trials`` through the CLI in a fresh process with its own local Ray;
    returns its wall time, the trainer's time summed over its epochs, and the slot time per trial."""
    repo = Path(__file__).resolve().parents[2]
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, str(repo / "studies" / "focal_loss.py"), "--preset", "smoke",
               "--epochs", str(epochs), "--num-samples", str(trials), "--sampler", "random",
               "--max-concurrent-trials", str(concurrency), "--storage-path", tmp, "--no-report",
               "--keep-workers", str(keep_workers)]
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        start = time.perf_counter()
        subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        wall = time.perf_counter() - start
        trial_time = float(pd.read_parquet(f"{tmp}/focal_loss/epochs")["time_s"].sum())
    return {"trials": trials, "wall_s": round(wall, 2), "trial_time_s": round(trial_time, 2),
            "per_trial_s": round(wall * concurrency / trials, 2)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=4)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--concurrency", type=int, default=2)
    p.add_argument("--keep-workers", type=float, default=5.0, metavar="SECONDS",
                   help="how long a finished trial's workers wait for the next trial (0: never)")
    p.add_argument("--asha", action="store_true", help="stop trials early (Ray's ASHA, rf 2)")
    p.add_argument("--cli", type=int, default=0, metavar="N",
                   help="also run an N-trial study through the CLI with its own Ray (see above)")
    args = p.parse_args()
    cli = cli_study(args.cli, args.epochs, args.concurrency, args.keep_workers) if args.cli else None
    actor_import_s = import_time("transcenter.platform.trial")
    ray.init(num_cpus=2, runtime_env={"env_vars": WORKER_ENV})
    with tempfile.TemporaryDirectory() as tmp:
        spec = StudySpec.create(name="overhead",
                                space=SearchSpace({"loss.alpha": Categorical([2.0 + i for i in range(args.trials)])}),
                                sampler="grid", preset="smoke", max_concurrent_trials=args.concurrency,
                                resources=Resources(keep_workers_s=args.keep_workers),
                                asha=args.asha, stopping="asha", grace_period=1,
                                reduction_factor=2,
                                overrides={"data.num_train": 32, "data.num_val": 16,
                                    "train.epochs": args.epochs, "train.threads": 1},
                                storage_path=tmp)
        before = set(ray_processes())
        sampler = ProcessSampler()
        sampler.start()
        start_ms = time.time() * 1000
        start = time.perf_counter()
        with contextlib.redirect_stdout(sys.stderr):  # Tune's tables; stdout is the JSON
            store = run_study(spec)
        wall = time.perf_counter() - start
        sampler.done.set()
        sampler.join()
        started = sum(1 for w in list_workers(detail=True, limit=10_000)
                      if w.worker_type == "WORKER" and (w.worker_launch_time_ms or 0) >= start_ms)
        epochs = store.read_epochs()
    trial_time = float(epochs["time_s"].sum())
    slots = wall * args.concurrency
    print(json.dumps({"trials": args.trials, "epochs": args.epochs, "concurrency": args.concurrency,
                      "keep_workers_s": args.keep_workers, "asha": args.asha,
                      "rows": len(epochs),
                      "stopped_trials": int((epochs.groupby("trial_id")["epoch"].max()
                                             < args.epochs).sum()), "study_wall_s": round(wall, 2),
                      "trial_time_s": round(trial_time, 2),
                      "per_trial_overhead_s": round((slots - trial_time) / args.trials, 2),
                      "overhead_fraction": round(1 - trial_time / slots, 3),
                      "processes_per_trial": round(started / args.trials, 2),
                      "processes": sampler.summary(before),
                      "trial_actor_import_s": round(actor_import_s, 2),
                      **({"cli": cli} if cli else {})}))


if __name__ == "__main__":
    main()
