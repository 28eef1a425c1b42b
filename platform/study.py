"""A study: Ray Tune + Optuna over Ray Train trials, every epoch landing in parquet.

Layout under ``<storage-path>/<study>/``: ``epochs/`` and ``trials/`` (parquet, the contract the
dashboards read), ``optuna.db`` (the Optuna study, for optuna-dashboard), ``tune/run-*/`` (one Tune
experiment per run of the driver, for TensorBoard), ``train/<trial>/`` (Ray Train runs and
checkpoints, ``trial-00007`` for Optuna trial 7), ``logs/<trial>.log`` (Ray Train's lines of each
trial: :mod:`transcenter.platform.train_log`) and ``study.json`` (the study's definition, for
``--resume`` and the dashboards). What ``--resume`` trusts: :mod:`transcenter.platform.reconcile`.
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import pyarrow.fs
from ray import tune

from transcenter.model.training.experiment import trial_config
from transcenter.platform import faults
from transcenter.platform.callbacks import ResultStoreCallback
from transcenter.platform.columns import TrialColumns
from transcenter.platform.compat import (
    HEAD_NODE_RESOURCE,
    job_working_dir,
    keep_secrets_out_of_runtime_envs,
    remove_placement_groups_of_ended_jobs,
)
from transcenter.platform.data_check import DataCheck, check_data
from transcenter.platform.errors import StudyError, raised_from
from transcenter.platform.optuna_db import check_storage, split_password, use_password
from transcenter.platform.placement import PlacementGroupCleaner
from transcenter.platform.progress import StudyProgress, quiet_tune, table_interval_s
from transcenter.platform.ray_connect import alive_nodes, connect, on_every_node
from transcenter.platform.reconcile import reconcile
from transcenter.platform.schedulers import Stopping, make_scheduler
from transcenter.platform.search import SAMPLERS, CloseDatabase, Constraint, SearchSpace, make_searcher
from transcenter.platform.simulate import SimulationSpec, simulated_trainable
from transcenter.platform.storage_check import check_writable, probe_storage
from transcenter.platform.tracking import (
    MlflowCallback,
    check_server,
    split_credentials,
    sync_study,
    use_credentials,
)
from transcenter.platform.train_log import driver_log, log_dir, upstream_logs
from transcenter.platform.trainer import Resources
from transcenter.platform.trial import TrialSpec, trainable
from transcenter.store import uri
from transcenter.store.metric_names import AP_KEYS, COST_KEYS, EXTRA_KEYS, LOSS_KEYS
from transcenter.store.results import META_FILE, ResultStore
from transcenter.store.uri import delete_file, write_text

logger = logging.getLogger(__name__)

HEATMAP_SIZE = "model.heatmap_size"  # the strata of early stopping wherever a study searches it
OBJECTIVE_METRICS = AP_KEYS + COST_KEYS + EXTRA_KEYS + LOSS_KEYS  # what a study may optimise


@dataclass(frozen=True)
class StudySpec:
    """Everything that defines a study. ``overrides`` fix config fields for every trial. Built from
    user input by :meth:`create`, which resolves the storage path and keeps passwords out of the
    URLs; the constructor only validates."""

    name: str
    space: SearchSpace
    sampler: str = "tpe"  # "tpe", "nsga2", "random" or "grid"
    metric: str = "AP50"
    mode: str = "max"
    objectives: tuple[str, ...] = ()  # "AP:max", "gmacs:min": several make the study multi-objective
    constraints: tuple[str, ...] = ()  # "gmacs<=50": bounds the sampler prefers trials to keep
    preset: str | None = "cpu"
    overrides: dict[str, Any] = field(default_factory=dict)
    num_samples: int | None = None  # default: the grid's size, or 8 for TPE
    max_concurrent_trials: int = 2
    asha: bool = False  # early stopping on; ``stopping`` says which policy
    grace_period: int = Stopping.grace_period
    reduction_factor: int = Stopping.reduction_factor
    stopping: str = "audited"  # "audited" (AuditedASHA) or "asha" (Ray's ASHA / MO-ASHA)
    stratify: str = "auto"  # a searched field, "none", or "auto": the heatmap size when searched
    sentinel_every: int = Stopping.sentinel_every  # audited: every n-th trial of a stratum is never stopped (0: none)
    rung_min_tau: float = Stopping.min_tau  # audited: a rung below this Kendall tau stops deciding
    audit_scope: str = Stopping.audit_scope  # audited: "borrowed" or "own" (a stratum's own pairs only)
    resources: Resources = field(default_factory=Resources)
    storage_path: str = "results"  # an absolute path or a URI (create() resolves a relative one)
    optuna_url: str | None = None  # without a password: create() splits it into optuna_password
    mlflow_uri: str | None = None  # MLflow tracking URI (platform/tracking.py), without a password
    resume: bool | str = False  # True: continue the study; "auto": continue it if it exists
    seed: int = 0
    max_failures: int = 2
    min_free_gb: float = 1.0  # refuse to start on local storage with less free disk
    simulate: str | None = None  # a learning-curve source: trials replay it instead of training
    time_scale: float = 1000.0  # simulated seconds per real second of a simulated study
    verbose: bool = False  # Ray's, Tune's and Train's lines on the console too, not only in logs/
    progress_every_s: float | None = None  # seconds between trial tables (None: table_interval_s())
    optuna_password: str | None = field(default=None, repr=False)  # used by run_study only
    mlflow_password: str | None = field(default=None, repr=False)  # used by run_study only

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name:
            raise ValueError(f"study name {self.name!r}: must be non-empty without '/'")
        if self.resume not in (True, False, "auto"):
            raise ValueError(f"resume={self.resume!r}: must be True, False or 'auto'")
        if self.mode not in ("max", "min"):
            raise ValueError(f"mode={self.mode!r}: must be 'max' or 'min'")
        if self.sampler not in SAMPLERS:
            raise ValueError(f"--sampler {self.sampler!r}: must be one of {SAMPLERS}")
        for metric in list(self.objective_modes) + [c.metric for c in self.constraint_list]:
            if metric not in OBJECTIVE_METRICS:
                raise ValueError(f"metric {metric!r}: not a metric the trials report; choose from "
                                 f"{', '.join(OBJECTIVE_METRICS)}")
        if not (uri.is_uri(self.storage_path) or Path(self.storage_path).is_absolute()):
            raise ValueError(f"storage_path {self.storage_path!r}: must be an absolute path or a "
                             f"URI (StudySpec.create resolves a relative one)")
        for flag, url in (("--optuna-url", self.optuna_url), ("--mlflow", self.mlflow_uri)):
            if url and uri.split_password(url)[1] is not None:
                raise ValueError(f"{flag} {uri.mask(url)}: holds a password (StudySpec.create "
                                 f"keeps it apart from the URL)")
        if self.progress_every_s is not None and not self.progress_every_s > 0:
            raise ValueError(f"--progress-every {self.progress_every_s!r}: must be > 0 seconds")
        if self.stopping == "none":
            raise ValueError("--stopping none: use --no-asha to train every trial to the end")
        self.early_stopping  # noqa: B018 (building it validates the stopping flags)
        trial_config(self.preset, self.overrides)  # fixed fields first, then the searched ones
        self.space.validate(self.preset, self.overrides)
        simulation = self.simulation  # building it validates the source and the time scale
        if simulation is not None and self.resume:
            raise ValueError("--resume with --simulate: a simulated study keeps no checkpoints to "
                             "resume from; run it again under another --name")

    @classmethod
    def create(cls, *, storage_path: str = "results", optuna_url: str | None = None,
               mlflow_uri: str | None = None, **fields: Any) -> StudySpec:
        """Returns the spec of a study as a user gives it: ``storage_path`` resolved here, where
        the study starts (:func:`resolve_storage`), and the passwords in ``optuna_url`` and
        ``mlflow_uri`` split off into ``optuna_password`` and ``mlflow_password``, which are never
        stored with the URLs; a ``simulate`` source is read once, so a study folder without rows
        or parameters is refused here. ``fields``: the other fields.

        Raises:
            ValueError: A storage path, URL or simulation source refused (naming the flag), or as
                the constructor.
        """
        optuna_url, optuna_password = split_password(optuna_url) if optuna_url else (None, None)
        mlflow_uri, mlflow_password = (split_credentials(mlflow_uri) if mlflow_uri
                                       else (None, None))
        spec = cls(storage_path=resolve_storage(storage_path), optuna_url=optuna_url,
                   optuna_password=optuna_password, mlflow_uri=mlflow_uri,
                   mlflow_password=mlflow_password, **fields)
        simulation = spec.simulation
        if simulation is not None:
            simulation.curves()
        return spec

    @property
    def simulation(self) -> SimulationSpec | None:
        """How the trials are simulated (``--simulate``), or None for a study that trains."""
        if not self.simulate:
            return None
        return SimulationSpec(self.simulate, self.space.describe(), self.epochs,
                              self.time_scale, self.seed)

    @property
    def early_stopping(self) -> Stopping:
        """The study's early stopping (``policy="none"`` without ``asha``), with ``stratify``
        resolved: ``"auto"`` is the heatmap size when the space searches it, else no strata.

        Raises:
            ValueError: a flag out of range, or ``--stratify`` naming a field the study does not
                search.
        """
        if self.stratify == "auto":
            stratify = HEATMAP_SIZE if HEATMAP_SIZE in self.space.params else None
        elif self.stratify == "none":
            stratify = None
        elif self.stratify in self.space.params:
            stratify = self.stratify
        else:
            raise ValueError(f"--stratify {self.stratify!r}: not a parameter this study searches "
                             f"(it searches {', '.join(self.space.params) or 'nothing'}); give "
                             f"one of them, auto or none")
        return Stopping(self.stopping if self.asha else "none", self.grace_period,
                        self.reduction_factor, stratify, self.sentinel_every, self.rung_min_tau,
                        self.audit_scope)

    @property
    def objective_modes(self) -> dict[str, str]:
        """Metric -> ``"max"``/``"min"``: ``objectives`` when given, else ``{metric: mode}``.

        Raises:
            ValueError: an objective not of the form ``<metric>:max|min``, or given twice.
        """
        if not self.objectives:
            return {self.metric: self.mode}
        out: dict[str, str] = {}
        for item in self.objectives:
            name, _, mode = item.rpartition(":")
            if not name or mode not in ("max", "min") or name in out:
                raise ValueError(f"--objective {item!r}: expected <metric>:max or <metric>:min, "
                                 f"each metric once")
            out[name] = mode
        return out

    @property
    def constraint_list(self) -> tuple[Constraint, ...]:
        return tuple(Constraint.parse(c) for c in self.constraints)

    @property
    def trial_defaults(self):
        """The trial configuration before the searched parameters are applied."""
        return trial_config(self.preset, self.overrides)

    @property
    def epochs(self) -> int:
        return self.trial_defaults.train.epochs

    @property
    def samples(self) -> int:
        if self.num_samples is not None:
            return self.num_samples
        return self.space.grid_size if self.sampler == "grid" else 8


def resolve_storage(path: str) -> str:
    """Returns ``path`` as an absolute local path, or the URI unchanged (``s3://``, ``file://``).

    Raises:
        ValueError: For a relative path inside a ``ray job submit --working-dir`` copy, which Ray
            unpacks into its temporary session folder.
    """
    if uri.has_credentials(path):
        raise ValueError(f"--storage-path {uri.mask(path)}: credentials in the URI would be stored "
                         f"with every trial; give them the standard way instead (for S3: "
                         f"AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY on every node, or an IAM role)")
    copy = job_working_dir()
    if copy and not uri.is_uri(path) and not Path(path).expanduser().is_absolute():
        raise ValueError(f"--storage-path {path!r} is relative, and this job runs in Ray's "
                         f"temporary copy of its working dir ({copy}), which `ray stop` deletes: "
                         f"pass an absolute path (e.g. --storage-path \"$PWD/results\") or a URI "
                         f"(s3://bucket/studies)")
    return uri.resolve(path)


def study_dir(spec: StudySpec) -> str:
    """Returns ``<storage path>/<study name>`` (absolute path or URI)."""
    return f"{spec.storage_path.rstrip('/')}/{spec.name}"


def optuna_url(spec: StudySpec) -> str:
    """The Optuna RDB: ``--optuna-url``, else ``sqlite:///<study dir>/optuna.db`` for local storage."""
    if spec.optuna_url:
        return spec.optuna_url
    directory = study_dir(spec)
    if not uri.is_local(directory):
        raise StudyError(f"storage {uri.mask(directory)!r} is remote: pass --optuna-url (e.g. a "
                         f"PostgreSQL URL) for the Optuna study")
    return f"sqlite:///{uri.local_path(directory)}/optuna.db"


def check_study(spec: StudySpec) -> None:
    """Raises :class:`StudyError` before anything starts: unwritable storage, an Optuna database
    that cannot be opened, an existing study without ``--resume``, ``--resume`` with nothing to
    resume, or an MLflow tracking server that does not answer or holds another study's runs."""
    directory = study_dir(spec)
    check_writable(directory, spec.min_free_gb)
    folder_existed = _has_files(directory)  # before the Optuna check, which may create its db
    check_storage(optuna_url(spec))
    store = ResultStore(spec.storage_path, spec.name)
    created = bool(store.read_meta())
    if spec.resume and not folder_existed:
        raise StudyError(f"--resume: no study to resume at {directory}")
    if (created or store.exists()) and not spec.resume:
        raise StudyError(f"study {spec.name!r} already exists at {directory}: pass --resume to "
                         f"continue it, or choose another --name")
    if spec.mlflow_uri:
        check_server(spec.mlflow_uri, spec.mlflow_password, spec.name, directory, spec.resume)


def resume_decided(spec: StudySpec) -> StudySpec:
    """Returns ``spec`` with ``resume`` True or False: ``"auto"`` becomes whether the study's folder
    holds anything (a study was started there)."""
    if spec.resume != "auto":
        return spec
    return dataclasses.replace(spec, resume=_has_files(study_dir(spec)))


def _has_files(directory: str) -> bool:
    """True when ``directory`` holds anything (a study was started there, if only just)."""
    fs, path = uri.filesystem(directory)
    return bool(fs.get_file_info(pyarrow.fs.FileSelector(path, allow_not_found=True)))


def _definition(spec: StudySpec) -> dict[str, Any]:
    """Returns the ``study.json`` fields that define a study: a resumed study must have the same."""
    return {"search_space": spec.space.describe(), "metric": spec.metric, "mode": spec.mode,
            "objectives": spec.objective_modes,
            "constraints": [str(c) for c in spec.constraint_list], "sampler": spec.sampler,
            "preset": spec.preset, **({"simulate": spec.simulate} if spec.simulate else {})}


def _settings(spec: StudySpec) -> dict[str, Any]:
    """Returns the ``study.json`` fields that say how a study ran (a replay starts from them; a
    resumed study may change them)."""
    return {"num_samples": spec.samples, "epochs": spec.epochs, "seed": spec.seed,
            "asha": spec.asha, "grace_period": spec.grace_period,
            "reduction_factor": spec.reduction_factor, **_stopping_settings(spec.early_stopping),
            "max_concurrent_trials": spec.max_concurrent_trials,
            "workers": spec.resources.workers, "gpus_per_worker": spec.resources.gpus_per_worker,
            "cpus_per_worker": spec.resources.cpus_per_worker}


def _stopping_settings(stopping: Stopping) -> dict[str, Any]:
    """Returns the ``study.json`` settings of the early-stopping policy beyond ASHA's rungs."""
    return {"stopping": stopping.policy, "stratify": stopping.stratify,
            "sentinel_every": stopping.sentinel_every, "rung_min_tau": stopping.min_tau,
            "audit_scope": stopping.audit_scope}


def _stopper(policy: str, objectives: int) -> str | None:
    """Returns the name the console gives the early stopping (``stopped by <it>``), None for none."""
    if policy == "none":
        return None
    if policy == "audited":
        return "audited ASHA"
    return "ASHA" if objectives == 1 else "multi-objective ASHA"


def build_tuner(spec: StudySpec, data: DataCheck) -> tune.Tuner | None:
    """Returns a ``Tuner`` over the study's trials still to run, None when none are left; call
    :func:`check_study` first.

    A new study writes ``study.json``: its definition, and ``data`` (the driver's
    :func:`check_data`: the class list fixed for every trial, the data-set report) and
    ``trial_config``, the configuration each trial trains before its searched values (resolved for
    the trials' device: :class:`~transcenter.platform.columns.TrialColumns`). A resumed one
    (``spec.resume``) must have the same definition; :func:`~transcenter.platform.reconcile.reconcile`
    then brings its stores into agreement, its unfinished trials run again first (each from its
    checkpoint) and new trials make up ``spec.samples``. Every run of the driver is a new Tune
    experiment under ``tune/``."""
    directory = study_dir(spec)
    spec = dataclasses.replace(spec, overrides={**spec.overrides, **data.trial_overrides})
    store = ResultStore(spec.storage_path, spec.name, param_types=spec.space.store_types(),
                        after_temp_write=functools.partial(faults.kill_point, "parquet_write"))
    objectives = spec.objective_modes
    # Every scalar field of the trial configuration is a column, searched or not: the dashboards
    # group by some (the heatmap size, the head) in any study. Each is what the trials train on
    # their device (a setting that would not take effect there is stored as resolved).
    columns = TrialColumns.of(spec.preset, spec.overrides, spec.resources,
                              trains=not spec.simulate)
    changed = columns.substitutions({})
    if changed:
        logger.warning("the trials train another model than asked (stored as trained): %s",
                       changed)
    definition = _definition(spec)
    unfinished: tuple = ()
    samples, seed = spec.samples, spec.seed
    stored = store.read_meta()
    if spec.resume and not stored:
        logger.warning("resume: %s has no %s (the driver stopped before the study started): "
                       "starting it", directory, META_FILE)
    if stored:
        differ = [k for k, v in definition.items() if k in stored and stored[k] != v]
        if differ:
            raise StudyError(f"--resume: study {spec.name!r} was created with other settings: "
                             + "; ".join(f"{k}: stored {stored[k]!r}, given {definition[k]!r}"
                                         for k in differ))
        study = optuna.load_study(study_name=spec.name, storage=optuna_url(spec))
        state = reconcile(study, store, f"{directory}/train", columns, list(objectives))
        unfinished = state.unfinished
        samples = max(spec.samples - state.finished, len(unfinished))
        seed = spec.seed + len(study.trials)  # a resumed sampler does not repeat the first draws
        logger.info("resume: %d trial(s) ended, %d to continue, %d to start", state.finished,
                    len(unfinished), samples - len(unfinished))
        if samples <= 0:
            return None
    else:
        store.write_meta({**definition, "class_names": data.class_names, "dataset": data.report,
                          "settings": _settings(spec), "trial_config": columns({})})
    searcher = make_searcher(spec.space, objectives, optuna_url(spec), spec.name, spec.epochs,
                             spec.sampler, seed, spec.constraint_list, unfinished=unfinished)
    scheduler = make_scheduler(objectives, spec.epochs, spec.early_stopping)
    callback = ResultStoreCallback(store, spec.epochs, columns)
    interval_s = table_interval_s() if spec.progress_every_s is None else spec.progress_every_s
    progress = StudyProgress(list(spec.space.params), list(objectives), spec.epochs, samples,
                             _stopper(spec.early_stopping.policy, len(objectives)), interval_s,
                             spec.time_scale if spec.simulate else 1.0)
    tracking = ([MlflowCallback(spec.mlflow_uri, store, directory, spec.epochs, columns)]
                if spec.mlflow_uri else [])
    run_name = f"run-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:4]}"
    tune_path, tune_filesystem = uri.ray_storage(f"{directory}/tune")
    trial_spec = TrialSpec(spec.name, directory, spec.preset, spec.overrides, spec.resources,
                           spec.max_failures, log_dir(directory, spec.name), spec.verbose)
    simulation = spec.simulation
    return tune.Tuner(
        (simulated_trainable(simulation, spec.max_concurrent_trials, HEAD_NODE_RESOURCE)
         if simulation else trainable(trial_spec)),
        tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=samples,
                                    max_concurrent_trials=spec.max_concurrent_trials,
                                    reuse_actors=True),  # one trial actor serves trial after trial
        run_config=tune.RunConfig(name=run_name, storage_path=tune_path,
                                  storage_filesystem=tune_filesystem,
                                  callbacks=[progress, callback, *tracking,
                                             PlacementGroupCleaner(f"{directory}/train"),
                                             CloseDatabase(searcher)],
                                  verbose=0))


def check_nodes_reach(spec: StudySpec) -> None:
    """Raises :class:`StudyError` naming the nodes of the Ray cluster that do not see the study's
    storage as the driver does (a folder local to the driver's machine, an object store a node has
    no credentials or route for): the driver leaves a marker file there, every node must read it
    and write beside it. A single-node cluster is not probed: the driver's own checks ran there."""
    if len(alive_nodes()) < 2:
        return
    directory = study_dir(spec)
    marker = f"{directory}/.reach-{uuid.uuid4().hex}"
    write_text(marker, "")
    try:
        answers_by_node = on_every_node(probe_storage, marker)
    finally:
        delete_file(marker)
    bad = {node: why for node, why in answers_by_node.items() if why}
    if bad:
        raise StudyError(f"storage path {uri.mask(directory)!r} is not shared by every Ray node: "
                         + "; ".join(f"node {node}: {why}" for node, why in sorted(bad.items())))


def _data(spec: StudySpec) -> DataCheck:
    """Returns what the trials need to know of the data set: nothing read for a simulated study;
    for a resumed synthetic one, what its start stored (its scenes follow from its configuration,
    with no files to check again); else :func:`check_data`'s check of the data set."""
    if spec.simulate:
        return DataCheck(class_names=list(spec.trial_defaults.data.class_names or ()),
                         report={"data": "simulated", "source": spec.simulate})
    stored = ResultStore(spec.storage_path, spec.name).read_meta() if spec.resume else {}
    if spec.trial_defaults.data.name == "synthetic" and "dataset" in stored:
        return DataCheck(list(stored.get("class_names", ())), stored["dataset"])
    return check_data(spec.trial_defaults, f"{study_dir(spec)}/data/index.arrow")


def run_study(spec: StudySpec, address: str | None = None,
              ready: Callable[[StudySpec, DataCheck, str | None], None] | None = None
              ) -> ResultStore:
    """Runs (or resumes) the study to the end and returns its result store.

    ``ready`` is called once every up-front check has passed (storage, Optuna, MLflow, the data
    set, the cluster and its nodes), just before the first trial starts, with the study as
    resumed, the data check and the Ray dashboard's URL (None without one). The driver's Ray, Tune
    and Train log lines go to the study's ``driver.log`` (:func:`driver_log`), and reach the
    console only when they are errors or ``spec.verbose`` is set.
    """
    faults.arm_driver()
    spec = resume_decided(spec)
    use_password(spec.optuna_password)
    if spec.mlflow_uri:
        use_credentials(spec.mlflow_uri, spec.mlflow_password)
    check_study(spec)
    data = _data(spec)
    with upstream_logs(driver_log(study_dir(spec), spec.name), spec.verbose):
        dashboard = connect(address)
        removed = remove_placement_groups_of_ended_jobs()
        if removed:
            logger.warning("removed %d placement group(s) that ended jobs left holding resources",
                           removed)
        check_nodes_reach(spec)
        keep_secrets_out_of_runtime_envs()
        tuner = build_tuner(spec, data)
        if ready is not None:
            ready(spec, data, dashboard)
        if tuner is not None:
            # A simulated study's rows are in parquet; Tune's own files per trial would take about
            # a fifth of the driver's CPU per row.
            with quiet_tune(logger_files=spec.simulate is None):
                try:
                    tuner.fit()
                except Exception as e:  # Tune wraps the driver's own errors (a database gone)
                    found = _study_error(e)
                    if found is None:
                        raise
                    raise found from None
    store = ResultStore(spec.storage_path, spec.name)
    if spec.mlflow_uri:  # trials that ended while the driver was down, epochs MLflow missed
        sync_study(spec.mlflow_uri, store, study_dir(spec))
    return store


def _study_error(error: BaseException | None) -> StudyError | None:
    """Returns the :class:`StudyError` that ``error`` was raised from (Tune re-raises an error of
    its searcher or callbacks as a ``TuneError``), or None."""
    return raised_from(error, lambda e: isinstance(e, StudyError))
