"""Command line shared by every study script in ``studies/``.

A study script declares its search space and calls :func:`main`; this module turns the common
flags into a :class:`StudySpec`, runs it, and prints where everything lives.
"""
from __future__ import annotations

import argparse
import logging
import math
import shlex
import subprocess
import sys
from typing import Any

import optuna
import ray

from transcenter.model.training.experiment import PRESETS, parse_overrides
from transcenter.platform.audited_asha import AUDIT_SCOPES
from transcenter.platform.data_check import DataCheck
from transcenter.platform.errors import StudyError
from transcenter.platform.progress import prepare_console
from transcenter.platform.search import SAMPLERS, Categorical, SearchSpace
from transcenter.platform.study import StudySpec, optuna_url, run_study, study_dir
from transcenter.platform.tracking import finish_study, tracking_uri
from transcenter.platform.train_log import log_dir
from transcenter.platform.trainer import Resources
from transcenter.store import uri
from transcenter.store.results import ResultStore
from transcenter.store.uri import display, mask


def number(kind: type, low: float, above: bool = False):
    """Returns an argparse type that reads a ``kind`` (int or float) and refuses a value below
    ``low`` (or not above it, with ``above``); argparse names the flag in its error."""
    bound = f"> {low:g}" if above else f">= {low:g}"

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'} "
                                             f"{bound}, got {text!r}") from None
        if not math.isfinite(value) or value < low or (above and value == low):
            raise argparse.ArgumentTypeError(f"must be {bound}, got {text!r}")
        return value

    return parse


POSITIVE = number(int, 1)
NON_NEGATIVE = number(float, 0)


def build_parser(name: str, description: str, asha: bool, seeds: int = 1,
                 sampler: str = "tpe", objectives: tuple[str, ...] = ()) -> argparse.ArgumentParser:
    """Returns the parser with the flags common to all studies."""
    p = argparse.ArgumentParser(prog=f"python studies/{name}.py", description=description,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--name", default=name, help="study name: <storage-path>/<name>/ (default %(default)s)")
    p.add_argument("--data", choices=("synthetic", "voc", "coco"), default="synthetic")
    p.add_argument("--data-root", help="any VOC-layout folder, or a COCO folder with images and JSONs "
                                       "(splits, classes: --set data.train_splits=..., README)")
    p.add_argument("--preset", choices=sorted(PRESETS), default="cpu",
                   help="smoke: seconds per trial; cpu: the CPU demo; paper: ResNet-50 at 512 on A100s")
    p.add_argument("--num-samples", type=POSITIVE, help="trials (default: the grid's size, or 8 for TPE)")
    p.add_argument("--epochs", type=POSITIVE, help="epochs per trial (default: the preset's)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="fix a config field for every trial, e.g. --set loss.bg_weight_mode=single; "
                        "a field the study searches is then taken out of its search")
    p.add_argument("--workers-per-trial", type=POSITIVE, default=1, help="Ray Train workers (DDP) per trial")
    p.add_argument("--cpus-per-worker", type=number(float, 0, above=True), default=1.0)
    p.add_argument("--gpus-per-worker", type=NON_NEGATIVE, default=0.0,
                   help="GPUs per worker; fractions share a GPU between small trials")
    p.add_argument("--keep-workers", type=NON_NEGATIVE, default=5.0, metavar="SECONDS",
                   help="how long a finished or early-stopped trial's Train workers wait for the "
                        "next trial, which then skips starting processes and importing torch (0: "
                        "never; default %(default)s)")
    p.add_argument("--max-concurrent-trials", type=POSITIVE, default=2)
    p.add_argument("--asha", action=argparse.BooleanOptionalAction, default=asha,
                   help="ASHA early stopping on --metric (default %(default)s)")
    p.add_argument("--grace-period", type=POSITIVE, default=StudySpec.grace_period,
                   help="ASHA: epochs before a trial may stop")
    p.add_argument("--reduction-factor", type=number(int, 2), default=StudySpec.reduction_factor,
                   help="ASHA: about 1/rf of the trials at a rung continue (default %(default)s)")
    p.add_argument("--stopping", choices=("audited", "asha"), default="audited",
                   help="--asha's policy: audited (rungs compare a trial only with trials of its "
                        "--stratify value, and sentinel trials that are never stopped audit each "
                        "rung: one whose ranking disagrees with the final one stops deciding) or "
                        "asha (Ray's ASHA, multi-objective ASHA with several objectives: every rung "
                        "decides over every trial) (default %(default)s)")
    p.add_argument("--stratify", default="auto", metavar="FIELD|auto|none",
                   help="--stopping audited: compare trials at a rung only within each value of this "
                        "searched field (auto: model.heatmap_size when searched) (default %(default)s)")
    p.add_argument("--sentinel-every", type=number(int, 0), default=StudySpec.sentinel_every, metavar="N",
                   help="--stopping audited: every N-th trial of a stratum is never stopped and "
                        "audits the rungs (0: none, every rung decides) (default %(default)s)")
    p.add_argument("--rung-min-tau", type=number(float, -1), default=StudySpec.rung_min_tau, metavar="TAU",
                   help="--stopping audited: a rung whose Kendall tau against the final ranking is "
                        "below TAU stops deciding (default %(default)s)")
    p.add_argument("--audit-scope", choices=AUDIT_SCOPES, default=StudySpec.audit_scope,
                   help="--stopping audited: which finished pairs judge a stratum's rung: borrowed "
                        "(its own once it has enough, before that every stratum's) or own (only "
                        "its own: its rungs stop no trial until they agree with the final ranking; "
                        "right on more curves, at 2-3x the slot-hours of borrowed) (default %(default)s)")
    p.add_argument("--metric", default="AP50", help="metric to optimise and early-stop on")
    p.add_argument("--objective", action="append", default=[], metavar="METRIC:max|min",
                   help="optimise several metrics at once (repeat: --objective AP:max --objective "
                        "gmacs:min); replaces --metric; --asha then stops trials by "
                        "non-dominated sorting (multi-objective ASHA)"
                        + (f" (default {' '.join(objectives)})" if objectives else ""))
    p.add_argument("--constraint", action="append", default=[], metavar="METRIC<=X",
                   help="a bound the sampler keeps trials within, e.g. gmacs<=50 (repeatable)")
    p.add_argument("--sampler", choices=SAMPLERS, default=sampler,
                   help="Optuna sampler: tpe (also multi-objective), mtpe (multivariate TPE: "
                        "one model of all parameters, cheaper asks in studies of thousands of "
                        "trials), nsga2, random, grid (default %(default)s)")
    p.add_argument("--seed", type=number(int, 0), default=0,
                   help="seeds the sampler and every trial (train.seed, data.seed) (default %(default)s)")
    p.add_argument("--seeds", type=POSITIVE, default=seeds,
                   help="grid studies: run every grid point under this many training seeds "
                        "(train.seed = --seed, --seed+1, ...); the report says whether the "
                        "conclusion holds for each (default %(default)s)")
    p.add_argument("--storage-path", default="results",
                   help="local folder or URI (s3://, gs://, file://) (default %(default)s)")
    p.add_argument("--optuna-url", help="SQLAlchemy URL of the Optuna study, e.g. "
                                        "postgresql+psycopg://user:password@host/db (the password "
                                        "is never printed or stored; PGPASSWORD works too) "
                                        "(default sqlite:///<storage>/<name>/optuna.db)")
    p.add_argument("--mlflow", metavar="URI",
                   help="also log the study to MLflow: an experiment named after the study, one run "
                        "per trial (parameters, per-epoch metrics, status) under a 'study' run "
                        "(report.html, study.json), e.g. http://127.0.0.1:5000; needs "
                        "pip install '.[mlflow]' (default: MLFLOW_TRACKING_URI if set; none: off)")
    p.add_argument("--resume", nargs="?", const="yes", choices=("yes", "auto"),
                   help="continue an interrupted study; --resume auto: continue it if it exists, "
                        "else start it (for schedulers that resubmit the same command, such as a "
                        "KubeRay RayJob's backoffLimit)")
    p.add_argument("--min-free-gb", type=NON_NEGATIVE, default=1.0,
                   help="refuse to start with less free disk on local storage (default %(default)s)")
    p.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else local Ray)")
    p.add_argument("--no-report", action="store_true", help="skip writing report.html at the end")
    p.add_argument("--verbose", action="store_true",
                   help="also print Ray's, Tune's and Ray Train's own lines, which otherwise go to "
                        "<storage>/<name>/logs/ (<trial>.log, driver.log) only")
    p.add_argument("--progress-every", type=number(float, 0, above=True), metavar="SECONDS",
                   help="seconds between two trial tables on the console (default: 10 in a "
                        "terminal, 30 in a log file or pipe)")
    p.add_argument("--simulate", metavar="SOURCE",
                   help="simulate the trials instead of training them: each replays a learning "
                        "curve (surrogate: the built-in curve family with a known optimum; "
                        "crossing: its variant with the paper's crossing curves, small heatmaps "
                        "ahead early, S = 64 ahead at the end; or a finished study's folder) on a "
                        "sped-up clock through the real Tune, Optuna, ASHA and result store")
    p.add_argument("--time-scale", type=number(float, 0, above=True), default=1000.0,
                   help="--simulate: simulated seconds per real second (default %(default)s)")
    p.set_defaults(study_objectives=tuple(objectives))
    return p


def fixed_by_set(args: argparse.Namespace, space: SearchSpace) -> tuple[SearchSpace, list[str]]:
    """Returns the study's space without the fields ``--set`` fixes, and those fields as
    ``name=value``.

    Raises:
        ValueError: ``--set`` fixes every field the study searches: nothing would be searched.
    """
    given = parse_overrides(args.set)
    taken = [f"{name}={given[name]}" for name in space.params if name in given]
    if taken and len(taken) == len(space.params):
        raise ValueError(f"--set {' '.join(taken)}: this study searches only "
                         f"{', '.join(space.params)}; with --set fixing it there is nothing left "
                         f"to search (drop --set, or run a study that searches other fields)")
    return SearchSpace({n: p for n, p in space.params.items() if n not in given}), taken


def spec_from_args(args: argparse.Namespace, space: SearchSpace,
                   fixed: dict[str, Any] | None = None,
                   fixed_by_preset: dict[str, dict[str, Any]] | None = None) -> StudySpec:
    """Returns the :class:`StudySpec` the parsed flags describe; ``--set`` overrides ``fixed``,
    which overrides ``fixed_by_preset[--preset]``. A field the study searches that ``--set`` fixes
    is taken out of the search (:func:`fixed_by_set`)."""
    space = fixed_by_set(args, space)[0]
    overrides: dict[str, Any] = {"train.seed": args.seed, "data.seed": args.seed,
                                 **(fixed_by_preset or {}).get(args.preset, {}), **(fixed or {}),
                                 **parse_overrides(args.set)}
    overrides["data.name"] = args.data
    sampler = args.sampler
    if args.seeds < 1 or (args.seeds > 1 and sampler != "grid"):
        raise ValueError(f"--seeds {args.seeds}: must be >= 1, and > 1 only for a grid study")
    if args.seeds > 1:
        seeds = Categorical([overrides["train.seed"] + i for i in range(args.seeds)])
        space = SearchSpace({**space.params, "train.seed": seeds})
    if args.data_root:
        overrides["data.root"] = args.data_root
    if args.epochs is not None:
        overrides["train.epochs"] = args.epochs
    resources = Resources(workers=args.workers_per_trial, cpus_per_worker=args.cpus_per_worker,
                          gpus_per_worker=args.gpus_per_worker, keep_workers_s=args.keep_workers)
    return StudySpec.create(name=args.name, space=space, sampler=sampler, metric=args.metric,
                            objectives=tuple(args.objective) or args.study_objectives,
                            constraints=tuple(args.constraint),
                            preset=args.preset, overrides=overrides, num_samples=args.num_samples,
                            max_concurrent_trials=args.max_concurrent_trials, asha=args.asha,
                            grace_period=args.grace_period, reduction_factor=args.reduction_factor,
                            stopping=args.stopping, stratify=args.stratify,
                            sentinel_every=args.sentinel_every, rung_min_tau=args.rung_min_tau,
                            audit_scope=args.audit_scope,
                            resources=resources,
                            storage_path=args.storage_path, optuna_url=args.optuna_url,
                            mlflow_uri=tracking_uri(args.mlflow),
                            resume={"yes": True, "auto": "auto", None: False}[args.resume],
                            seed=args.seed, min_free_gb=args.min_free_gb,
                            simulate=args.simulate, time_scale=args.time_scale, verbose=args.verbose,
                            progress_every_s=args.progress_every)


def outcome(store: ResultStore) -> tuple[int, str]:
    """Returns ``(exit code, one-line summary)`` of a finished study: 0 when every trial completed
    or was stopped early, 1 when none completed or any failed (``4 completed, 2 error: <first>``)."""
    trials = store.read_trials()
    counts = trials["status"].value_counts().to_dict() if len(trials) else {}
    summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "no trials"
    errors = trials.loc[trials["status"] == "error", "error"].dropna() if len(trials) else []
    if len(errors):
        summary += f": {errors.iloc[0]}"
    failed = counts.get("error", 0) > 0 or counts.get("completed", 0) == 0
    return int(failed), mask(summary)


def interrupted(spec: StudySpec | None, argv: list[str] | None) -> str:
    """Returns what an interrupted study says: what it stored, and the command that continues it
    (the same command with ``--resume``)."""
    words = list(sys.argv[1:] if argv is None else argv)
    if not spec:
        return "interrupted before the study started: nothing was stored"
    epochs = ResultStore(spec.storage_path, spec.name).read_epochs()
    trials = epochs["trial_id"].nunique() if len(epochs) else 0
    stored = (f"interrupted: {len(epochs)} epoch rows of {trials} trials are stored in "
              f"{mask(study_dir(spec))}")
    if spec.simulate:
        return f"{stored}; a simulated study keeps no checkpoints: run it again under another --name"
    resume = [] if "--resume" in words else ["--resume"]
    command = shlex.join(["python", sys.argv[0], *words, *resume])
    return f"{stored}; continue the study with:\n  {mask(command)}"


def write_report(directory: str) -> None:
    """Writes ``<directory>/report.html`` with the dashboards' own command line (the platform
    writes the result store and never imports the dashboards that read it)."""
    done = subprocess.run([sys.executable, "-m", "transcenter.dashboards.report", directory,
                           "-o", f"{directory}/report.html"], capture_output=True, text=True)
    if done.returncode:
        print(f"report: not written: {mask(done.stderr.strip()[-2000:])}", file=sys.stderr)
    else:
        print(f"report: {mask(done.stdout.strip().splitlines()[-1])}")


def _tracking(spec: StudySpec) -> str:
    """Returns the study's MLflow tracking URI as printed (its password masked)."""
    return display(spec.mlflow_uri, spec.mlflow_password is not None)


def banner(spec: StudySpec, data: DataCheck, dashboard: str | None, taken: list[str]) -> str:
    """Returns the lines a study prints once its up-front checks have passed: what runs and where
    its results, live views, logs and early stopping are."""
    directory = study_dir(spec)
    lines = [f"study {spec.name}: {spec.samples} trials x {spec.epochs} epochs -> {mask(directory)}"]
    if data.summary:
        lines.append(f"  data: {data.summary}")
    database = display(optuna_url(spec), spec.optuna_password is not None)
    tensorboard = "" if spec.simulate else f" | tensorboard --logdir {mask(directory)}/tune"
    lines.append(f"  live: Ray dashboard {dashboard or '(none on this cluster)'} | "
                 f"optuna-dashboard {database}{tensorboard}")
    where = "" if uri.is_local(directory) else " on each worker's node"
    logs = log_dir(directory, spec.name)
    lines.append(f"  logs: each trial's Ray Train lines in {logs}/<trial>.log{where}, Ray's and "
                 f"Tune's in {logs}/driver.log{'' if spec.verbose else ' (--verbose: on the console too)'}")
    if spec.mlflow_uri:
        lines.append(f"  mlflow: {_tracking(spec)}, experiment {spec.name!r}")
    if spec.asha:
        lines.append(f"  early stopping: {spec.early_stopping.describe()}")
    if taken:
        lines.append(f"  fixed by --set, not searched: {', '.join(taken)}")
    return "\n".join(lines)


def main(name: str, space: SearchSpace, description: str, sampler: str = "tpe",
         asha: bool = False, fixed: dict[str, Any] | None = None, seeds: int = 1,
         fixed_by_preset: dict[str, dict[str, Any]] | None = None,
         objectives: tuple[str, ...] = (), argv: list[str] | None = None) -> int:
    """Entry point of a study script; returns the process exit code: 0 when every trial
    completed (or was stopped early), 1 when a trial failed or none completed, 2 when the study
    could not start.

    ``fixed`` sets config fields for every trial of this study unless ``--set`` says otherwise,
    ``fixed_by_preset`` more of them for one ``--preset`` (a step budget for the CPU demo);
    ``seeds`` is the default of ``--seeds`` (replicates of a grid under other training seeds),
    ``objectives`` that of ``--objective``.
    """
    args = build_parser(name, description, asha, seeds, sampler, objectives).parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # not "A new study created in RDB"
    prepare_console()
    spec = None
    try:
        spec = spec_from_args(args, space, fixed, fixed_by_preset)
        directory = study_dir(spec)
        taken = fixed_by_set(args, space)[1]
        store = run_study(spec, args.address, ready=lambda resumed, data, dashboard: print(
            banner(resumed, data, dashboard, taken)))
        # Disconnecting now ends the trial actors while the console is still the study's: what
        # they print as they exit (a reused actor's "SystemExit: 1") is not forwarded after the
        # study's summary. Nothing below needs Ray.
        ray.shutdown()
    except (StudyError, ValueError) as e:
        print(f"error: {mask(str(e))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(interrupted(spec, argv), file=sys.stderr)
        return 130
    print(f"results: {mask(directory)}/epochs ({len(store.read_epochs())} epoch rows), "
          f"{mask(directory)}/trials")
    if not args.no_report:
        write_report(directory)
    if spec.mlflow_uri:
        artifacts = finish_study(spec.mlflow_uri, store, directory)
        if artifacts is not None:
            print(f"mlflow: experiment {spec.name!r} at {_tracking(spec)}, study run with "
                  f"{', '.join(artifacts) or 'no artifacts'}")
    code, summary = outcome(store)
    print(f"trials: {summary}", file=sys.stderr if code else sys.stdout)
    return code
