"""Replay a finished study: what it cost, and what another search setting would have found.

    python -m transcenter.platform.replay results/<study> [--stopping none|asha|audited
        --grace-period 2 --reduction-factor 3] [--sampler tpe|mtpe|random|nsga2] [--slots 64]
        [--num-samples 500] [--seeds 10] [--curves surrogate|crossing] [--json]

Without a setting flag it compares the three early-stopping policies (none, Ray's ASHA, audited
ASHA) at the study's sampler, trials and slots, and prints each audited rung's agreement with the
final ranking (Kendall τ, mean over the seeds).

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
import dataclasses
import json
import statistics
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna

from transcenter.model.evaluation.hypervolume import as_costs
from transcenter.model.evaluation.hypervolume import hypervolume as volume_of
from transcenter.platform.audited_asha import RungAudit
from transcenter.platform.schedulers import POLICIES, Stopping
from transcenter.platform.search import SAMPLERS, SearchSpace
from transcenter.platform.simulate import SURROGATES, SimulationSpec
from transcenter.platform.simulated_time import SimulatedStudy, run_simulated_time
from transcenter.store.results import ResultStore


@dataclass(frozen=True)
class Setting:
    """A search setting to replay: sampler, early stopping, trials and slots at once."""

    sampler: str
    stopping: Stopping
    num_samples: int
    slots: int

    def __post_init__(self) -> None:
        if self.sampler not in SAMPLERS:
            raise ValueError(f"--sampler {self.sampler!r}: must be one of {SAMPLERS}")
        if min(self.num_samples, self.slots) < 1:
            raise ValueError(f"--num-samples {self.num_samples}, --slots {self.slots}: both must "
                             f"be >= 1")

    def describe(self) -> str:
        """Returns the setting as a line a person reads."""
        return (f"{self.sampler}, {self.stopping.describe()}, {self.num_samples} trials, "
                f"{self.slots} at once")


def capped(setting: Setting, space: SearchSpace) -> Setting:
    """Returns ``setting`` with a grid sampler's trials capped at the grid's size (the grid sampler
    has nothing new to propose past it)."""
    if setting.sampler != "grid" or setting.num_samples <= space.grid_size:
        return setting
    return dataclasses.replace(setting, num_samples=space.grid_size)


def study_stopping(config: dict[str, Any]) -> Stopping:
    """Returns the early stopping a study ran with, from ``study.json``'s ``settings`` (a study
    recorded before the audited policy existed ran Ray's ASHA when ``asha`` is set; the audit's
    settings it did not record are today's defaults)."""
    return Stopping(config.get("stopping", "asha") if config["asha"] else "none",
                    config["grace_period"], config["reduction_factor"], config.get("stratify"),
                    config.get("sentinel_every", Stopping.sentinel_every),
                    config.get("rung_min_tau", Stopping.min_tau),
                    config.get("audit_scope", Stopping.audit_scope))


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
                   first_seed: int, workdir: str, reference: dict[str, float],
                   curves: str | None = None) -> dict[str, Any]:
    """Replays ``setting`` ``seeds`` times on the study's curves (``curves``: a built-in family
    instead, :data:`~transcenter.platform.simulate.SURROGATES`); returns hours, wall time and the
    best objective (mean and spread over the seeds), the best trial of the first seed, the
    hypervolume from ``reference`` of a multi-objective study, and the audited policy's rung
    agreement (``rungs``: epoch, mean τ over the seeds that had one, how many seeds its rung
    stopped deciding in)."""
    space = SearchSpace.from_description(meta["search_space"])
    objectives, config = meta["objectives"], meta["settings"]
    gpus = config["workers"] * config["gpus_per_worker"]
    runs = []
    for i in range(seeds):
        seed = first_seed + i
        sim = SimulationSpec(curves or directory, meta["search_space"], config["epochs"], seed=seed)
        study = run_simulated_time(space, objectives, sim, setting.num_samples, setting.slots,
                                   f"sqlite:///{workdir}/{uuid.uuid4().hex}.db",
                                   "replay", setting.sampler, seed, setting.stopping)
        best, key = best_of(study, objectives, config["epochs"])
        runs.append({"hours": study.busy_s * (gpus or 1) / 3600, "wall_h": study.wall_s / 3600,
                     "best": best, "best_trial": key,
                     "hypervolume": hypervolume(study, objectives, config["epochs"], reference),
                     "anytime": anytime(study, objectives, config["epochs"], (gpus or 1) / 3600),
                     "audit": study.audit})
    volumes = [r["hypervolume"] for r in runs if r["hypervolume"] is not None]
    return {"gpu_hours": statistics.mean(r["hours"] for r in runs),
            "hours_unit": "GPU" if gpus else "slot",
            "wall_h": statistics.mean(r["wall_h"] for r in runs),
            "best": statistics.mean(r["best"] for r in runs),
            "best_spread": _spread([r["best"] for r in runs]), "best_trial": runs[0]["best_trial"],
            "setting": setting.describe(),
            "hypervolume": statistics.mean(volumes) if volumes else None,
            "objective": next(iter(objectives)), "anytime": [r["anytime"] for r in runs],
            "rungs": _rung_agreement([r["audit"] for r in runs])}


def _rung_agreement(audits: list[list[RungAudit]]) -> list[dict[str, Any]]:
    """Returns per rung of the replays' audits: its epoch, the mean τ over the seeds that had one
    (None where none did), and in how many seeds it was not deciding at the end."""
    out = []
    for rungs in zip(*audits):
        taus = [a.tau for a in rungs if a.tau is not None]
        out.append({"epoch": rungs[0].milestone,
                    "tau": statistics.mean(taus) if taus else None,
                    "not_deciding": sum(not a.deciding for a in rungs)})
    return out


def replay(directory: str, settings: list[Setting], seeds: int,
           curves: str | None = None) -> dict[str, Any]:
    """Returns ``{"actual": ..., "settings": [...]}``: the replay of the study's own setting, then
    of each of ``settings`` (see :func:`replay_setting`; ``curves`` a built-in family instead of
    the study's rows).

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
    actual = Setting(meta["sampler"], study_stopping(config), config["num_samples"],
                     config["max_concurrent_trials"])
    settings = [capped(s, SearchSpace.from_description(meta["search_space"])) for s in settings]
    with tempfile.TemporaryDirectory() as workdir:
        own = replay_setting(directory, meta, actual, seeds, config["seed"], workdir, reference,
                             curves)
        others = [replay_setting(directory, meta, s, seeds, config["seed"], workdir, reference,
                                 curves)
                  for s in settings]
    return {"actual": {k: own[k] for k in ("setting", "gpu_hours", "hours_unit", "wall_h", "best",
                                           "best_spread", "best_trial", "objective", "anytime",
                                           "rungs")},
            "settings": others}


def policies(meta: dict[str, Any]) -> list[Setting]:
    """Returns the study's setting under each early-stopping policy: none, Ray's ASHA, and audited
    ASHA stratified as the study would be by default (by the heatmap size when it searches it)."""
    config = meta["settings"]
    base = study_stopping(config)
    stratify = config.get("stratify") or ("model.heatmap_size"
                                          if "model.heatmap_size" in meta["search_space"] else None)
    return [Setting(meta["sampler"], dataclasses.replace(base, policy=policy, stratify=stratify),
                    config["num_samples"], config["max_concurrent_trials"])
            for policy in POLICIES]


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
    p.add_argument("--stopping", choices=POLICIES,
                   help="replay this early stopping (default: the study's); without any setting "
                        "flag the replay compares all three")
    p.add_argument("--curves", choices=SURROGATES,
                   help="replay on a built-in curve family instead of the study's own rows "
                        "(crossing: the paper's crossing curves)")
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
        given = [args.sampler, args.stopping, args.grace_period, args.reduction_factor, args.slots,
                 args.num_samples]
        settings = []
        if config and any(v is not None for v in given):
            own = study_stopping(config)
            stopping = dataclasses.replace(
                own, policy=args.stopping or own.policy,
                grace_period=own.grace_period if args.grace_period is None else args.grace_period,
                reduction_factor=(own.reduction_factor if args.reduction_factor is None
                                  else args.reduction_factor))
            settings.append(Setting(
                args.sampler or meta["sampler"], stopping,
                config["num_samples"] if args.num_samples is None else args.num_samples,
                config["max_concurrent_trials"] if args.slots is None else args.slots))
        elif config:
            settings = policies(meta)
        if args.seeds < 1:
            raise ValueError(f"--seeds {args.seeds}: must be >= 1")
        space = SearchSpace.from_description(meta.get("search_space", {}))
        for setting in settings:
            if capped(setting, space) != setting:
                print(f"note: the grid has {space.grid_size} points: --num-samples "
                      f"{setting.num_samples} is capped at them (--sampler tpe or random replays "
                      f"more trials)", file=sys.stderr)
        out = replay(args.study, settings, args.seeds, args.curves)
        if args.figure:
            draw_anytime(out, args.figure)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(out))
        return 0
    for label, row in [("actual", out["actual"])] + [("replayed", s) for s in out["settings"]]:
        print(f"{label} ({row['setting']}): {row['gpu_hours']:.3f} {row['hours_unit']}-hours, "
              f"{row['wall_h']:.3f} h wall, best {row['objective']} {row['best']:.2f} ± "
              f"{row['best_spread']:.2f}")
        agreement = ", ".join(
            f"epoch {r['epoch']:g}: tau {'-' if r['tau'] is None else format(r['tau'], '+.2f')}"
            + (f" (not deciding in {r['not_deciding']}/{args.seeds})" if r["not_deciding"] else "")
            for r in row["rungs"])
        if agreement:
            print(f"  rung agreement with the final ranking: {agreement}")
    if args.figure:
        print(f"figure: {args.figure}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
