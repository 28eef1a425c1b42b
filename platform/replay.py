"""Replay a finished study: what it cost, and what another search setting would have found.

    python -m transcenter.platform.replay results/<study> [--asha --grace-period 2
        --reduction-factor 3] [--sampler tpe|mtpe|random|nsga2] [--slots 64] [--num-samples 500]
        [--seeds 10] [--json]

The study's own per-epoch rows are the learning curves (:class:`~transcenter.platform.simulate.
StudyCurves`): a configuration it trained replays its curve and measured epoch times, any other is
predicted from the nearest ones it trained. Each setting runs ``--seeds`` times in simulated time
(:mod:`~transcenter.platform.simulated_time`: the real searcher and scheduler, no training) and is
reported as the mean and spread over the seeds. ``actual`` is the replay of the setting the study
used (``study.json``'s ``settings``: sampler, ASHA, concurrency, trials, seed), which must find what
the study found at the cost it had.

Hours are GPU-hours for a study whose trials reserved GPUs (slot time × GPUs per trial); for a CPU
study they are slot-hours, the time trials held their slots (``hours_unit`` says which).
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import uuid
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import optuna

from transcenter.model.evaluation.hypervolume import as_costs
from transcenter.model.evaluation.hypervolume import hypervolume as volume_of
from transcenter.platform.search import SAMPLERS, SearchSpace
from transcenter.platform.simulate import SimulationSpec
from transcenter.platform.simulated_time import SimulatedStudy, run_simulated_time
from transcenter.store.results import ResultStore


@dataclass(frozen=True)
class Setting:
    """A search setting to replay: sampler, early stopping, trials and slots at once."""

    sampler: str
    asha: bool
    grace_period: int
    reduction_factor: int
    num_samples: int
    slots: int

    def __post_init__(self) -> None:
        if self.sampler not in SAMPLERS:
            raise ValueError(f"--sampler {self.sampler!r}: must be one of {SAMPLERS}")
        if min(self.grace_period, self.reduction_factor - 1, self.num_samples, self.slots) < 1:
            raise ValueError(f"{self}: grace period, trials and slots must be >= 1 and the "
                             f"reduction factor >= 2")


def best_of(study: SimulatedStudy, objectives: dict[str, str], epochs: int) -> tuple[float, str]:
    """Returns the best value of the first objective over the trials that ran every epoch (all
    trials when none did) and that trial's key."""
    metric, mode = next(iter(objectives.items()))
    pool = [t for t in study.trials if t.epochs == epochs] or study.trials
    pick = max if mode == "max" else min
    best = pick(pool, key=lambda t: t.last[metric])
    return float(best.last[metric]), best.key


def hypervolume(study: SimulatedStudy, objectives: dict[str, str], epochs: int,
                reference: dict[str, float]) -> float | None:
    """Returns the exact hypervolume dominated by the trials of a multi-objective study that ran
    every epoch, measured from ``reference`` (each objective's worst value in the study's rows);
    None for a single objective."""
    if len(objectives) < 2:
        return None
    directions = list(objectives.values())
    values = [[t.last[m] for m in objectives] for t in study.trials if t.epochs == epochs]
    return volume_of(as_costs(np.array(values), directions),
                     as_costs(np.array([reference[m] for m in objectives]), directions)[0])


def anytime(study: SimulatedStudy, objectives: dict[str, str], epochs: int,
            hours_per_second: float) -> list[list[float]]:
    """Returns the anytime curve of one replay: ``[hours, best so far]`` each time a trial that ran
    every epoch ends, ``hours`` being the time of the trials ended so far (in the replay's unit)."""
    metric, mode = next(iter(objectives.items()))
    pick = max if mode == "max" else min
    curve, spent, best = [], 0.0, None
    for trial in sorted(study.trials, key=lambda t: t.end_s):
        spent += (trial.end_s - trial.start_s) * hours_per_second
        if trial.epochs == epochs:
            value = float(trial.last[metric])
            best = value if best is None else pick(best, value)
            curve.append([spent, best])
    return curve


def _spread(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def replay_setting(directory: str, meta: dict[str, Any], setting: Setting, seeds: int,
                   first_seed: int, workdir: str, reference: dict[str, float]) -> dict[str, Any]:
    """Replays ``setting`` ``seeds`` times on the study's curves; returns hours, wall time and the
    best objective (mean and spread over the seeds), the best trial of the first seed, and the
    hypervolume from ``reference`` of a multi-objective study."""
    space = SearchSpace.from_description(meta["search_space"])
    objectives, config = meta["objectives"], meta["settings"]
    gpus = config["workers"] * config["gpus_per_worker"]
    runs = []
    for i in range(seeds):
        seed = first_seed + i
        sim = SimulationSpec(directory, meta["search_space"], config["epochs"], seed=seed)
        study = run_simulated_time(space, objectives, sim, setting.num_samples, setting.slots,
                                   f"sqlite:///{workdir}/{uuid.uuid4().hex}.db",
                                   "replay", setting.sampler, seed, setting.asha,
                                   setting.grace_period, setting.reduction_factor)
        best, key = best_of(study, objectives, config["epochs"])
        runs.append({"hours": study.busy_s * (gpus or 1) / 3600, "wall_h": study.wall_s / 3600,
                     "best": best, "best_trial": key,
                     "hypervolume": hypervolume(study, objectives, config["epochs"], reference),
                     "anytime": anytime(study, objectives, config["epochs"], (gpus or 1) / 3600)})
    volumes = [r["hypervolume"] for r in runs if r["hypervolume"] is not None]
    return {"setting": asdict(setting), "gpu_hours": statistics.mean(r["hours"] for r in runs),
            "hours_unit": "GPU" if gpus else "slot",
            "wall_h": statistics.mean(r["wall_h"] for r in runs),
            "best": statistics.mean(r["best"] for r in runs),
            "best_spread": _spread([r["best"] for r in runs]), "best_trial": runs[0]["best_trial"],
            "hypervolume": statistics.mean(volumes) if volumes else None,
            "objective": next(iter(objectives)), "anytime": [r["anytime"] for r in runs]}


def replay(directory: str, settings: list[Setting], seeds: int) -> dict[str, Any]:
    """Returns ``{"actual": ..., "settings": [...]}``: the replay of the study's own setting, then
    of each of ``settings`` (see :func:`replay_setting`).

    Raises:
        ValueError: A folder without a study that records its settings (``study.json``).
    """
    meta = ResultStore.open(directory).read_meta()
    if "settings" not in meta:
        raise ValueError(f"{directory}: no study.json with the study's settings (studies started "
                         f"by this version record them)")
    config = meta["settings"]
    rows = ResultStore.open(directory).read_epochs()
    reference = {m: float(rows[m].min() if mode == "max" else rows[m].max())
                 for m, mode in meta["objectives"].items()}
    actual = Setting(meta["sampler"], config["asha"], config["grace_period"],
                     config["reduction_factor"], config["num_samples"],
                     config["max_concurrent_trials"])
    with tempfile.TemporaryDirectory() as workdir:
        own = replay_setting(directory, meta, actual, seeds, config["seed"], workdir, reference)
        others = [replay_setting(directory, meta, s, seeds, config["seed"], workdir, reference)
                  for s in settings]
    return {"actual": {k: own[k] for k in ("gpu_hours", "hours_unit", "wall_h", "best",
                                           "best_spread", "best_trial", "objective", "anytime")},
            "settings": others}


def draw_anytime(out: dict[str, Any], path: str) -> None:
    """Draws the anytime curves of a replay's output to the PNG ``path`` with the dashboards' own
    command line (the platform never imports the dashboards).

    Raises:
        ValueError: The figure could not be drawn (the dashboards' error).
    """
    with tempfile.NamedTemporaryFile("w", suffix=".json") as f:
        json.dump(out, f)
        f.flush()
        done = subprocess.run([sys.executable, "-m", "transcenter.dashboards.replay_figure",
                               f.name, "-o", path], capture_output=True, text=True, check=False)
    if done.returncode:
        raise ValueError(f"--figure {path}: {done.stderr.strip()[-1000:]}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m transcenter.platform.replay",
                                description=__doc__.splitlines()[0])
    p.add_argument("study", help="a finished study's folder (local path or URI)")
    p.add_argument("--sampler", choices=SAMPLERS, help="replay this sampler (default: the study's)")
    p.add_argument("--asha", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--grace-period", type=int)
    p.add_argument("--reduction-factor", type=int)
    p.add_argument("--slots", type=int, help="trials at once (default: the study's)")
    p.add_argument("--num-samples", type=int, help="trials (default: the study's)")
    p.add_argument("--seeds", type=int, default=10, help="replays per setting (default %(default)s)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--figure", metavar="PNG", help="also draw the anytime curves (best found "
                   "against hours spent, each seed a line) to this file")
    args = p.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        meta = ResultStore.open(args.study).read_meta()
        config = meta.get("settings", {})
        given = [args.sampler, args.asha, args.grace_period, args.reduction_factor, args.slots,
                 args.num_samples]
        settings = []
        if config and any(v is not None for v in given):
            settings.append(Setting(
                args.sampler or meta["sampler"],
                config["asha"] if args.asha is None else args.asha,
                args.grace_period or config["grace_period"],
                args.reduction_factor or config["reduction_factor"],
                args.num_samples or config["num_samples"],
                args.slots or config["max_concurrent_trials"]))
        if args.seeds < 1:
            raise ValueError(f"--seeds {args.seeds}: must be >= 1")
        out = replay(args.study, settings, args.seeds)
        if args.figure:
            draw_anytime(out, args.figure)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(out))
        return 0
    for label, row in [("actual", out["actual"])] + [(str(s["setting"]), s) for s in out["settings"]]:
        print(f"{label}: {row['gpu_hours']:.3f} {row['hours_unit']}-hours, {row['wall_h']:.3f} h "
              f"wall, best {row['best']:.2f} ± {row['best_spread']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
