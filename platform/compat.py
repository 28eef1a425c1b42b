"""Every use of a private Ray or Optuna name, in one place.

Each entry says why the platform needs it and which public API would replace it; an upgrade of Ray
or Optuna starts here. On import this module checks the installed versions against the ones these
workarounds were written for, and ``tests/test_compat.py`` has one test per workaround that fails
when upstream changes the behaviour it relies on, naming the workaround to drop or redo.
"""
from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import logging
import os
import threading
from importlib.metadata import version
from typing import TYPE_CHECKING, Any

from ray.train.backend import Backend, BackendConfig
from ray.train.v2._internal.callbacks.datasets import DatasetsCallback
from ray.train.v2._internal.callbacks.placement_group_callback import PlacementGroupCleanerCallback
from ray.train.v2._internal.execution.callback import WorkerGroupCallback
from ray.train.v2._internal.execution.controller import TrainController
from ray.train.v2._internal.execution.worker_group import WorkerGroup
from ray.train.v2._internal.execution.worker_group import worker_group as worker_group_module
from ray.train.v2._internal.execution.worker_group.state import WorkerGroupState
from ray.train.v2._internal.util import TrainingFramework
from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer

from transcenter.platform.trial_files import record_placement_group

if TYPE_CHECKING:
    import optuna
    from ray.tune.search.optuna import OptunaSearch

WRITTEN_FOR = {"ray": "2.60", "optuna": "5"}  # release prefixes these workarounds were checked on


def check_versions(ray_version: str, optuna_version: str) -> None:
    """Raises ``ImportError`` naming both versions unless Ray and Optuna are the releases
    (:data:`WRITTEN_FOR`) whose private behaviour this module relies on."""
    found = {"ray": ray_version, "optuna": optuna_version}
    off = [name for name, prefix in WRITTEN_FOR.items()
           if found[name] != prefix and not found[name].startswith(prefix + ".")]
    if off:
        raise ImportError(
            f"transcenter.platform was written for Ray {WRITTEN_FOR['ray']}.x and Optuna "
            f"{WRITTEN_FOR['optuna']}.x, but Ray {ray_version} and Optuna {optuna_version} are "
            f"installed: its workarounds in platform/compat.py (transcenter.platform.compat) use their private APIs. "
            f"Install the pinned versions (pip install -e .) or review compat.py and its tests "
            f"(tests/test_compat.py) for the new release.")


check_versions(version("ray"), version("optuna"))

# Env of Ray's processes on clusters this package starts (one machine), read by Ray Train V2
# (ray/train/v2/_internal/constants.py; no public config takes them): slow 2-core machines need
# minutes to start a worker group; a shorter controller poll notices a started or finished group
# sooner; a machine's own cluster has no preemptible nodes to watch, and the watcher is one more
# process per trial. Tune (ray/tune/trainable/function_trainable.py) gives a reused trial actor's
# previous trial this long to end, else it fails the next trial; on a loaded machine aborting a
# stopped trial's workers can take longer than its default 2 s. Public replacement: none in 2.60.
WORKER_ENV = {"RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "300",
              "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5",
              "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",
              "TUNE_FUNCTION_THREAD_TIMEOUT_S": "30"}


# A resource only the head node has (Ray adds it to every head). Trial drivers ask for a sliver of
# it, so they and the Train controllers Ray Train pins beside them live on the head and survive the
# loss of a worker node; only Train workers run on worker nodes. A simulated study's trials share
# it out by the trials run at once (simulate.simulated_trainable). Public replacement: a documented
# head-node label or resource (Ray's own Serve uses this name the same way).
HEAD_NODE_RESOURCE = "node:__internal_head__"


class LeanTorchConfig(BackendConfig):
    """Ray's ``TorchConfig`` (process-group backend, init method, timeout) for processes that do
    not train: the Tune trial actor and the Train controller never import torch for it.

    Why: ``ray.train.torch`` imports torch at its top (seconds, and most of a GB of resident memory per
    process with a CUDA build), and ``TorchTrainer``/``TorchConfig`` are reached through it, so every trial actor
    and controller paid for torch only to hand a config to the workers. Ray's own backend
    (private ``_TorchBackend``) is imported in the controller only for a trial of several workers,
    where it sets up the process group; a single worker needs none (``prepare_model`` wraps DDP
    and ``prepare_data_loader`` shards only when the world size is above 1). Public replacement:
    ``ray.train.torch`` importing torch lazily.
    """

    def __init__(self, backend: str | None = None, init_method: str = "env",
                 timeout_s: int = 1800) -> None:
        self.backend, self.init_method, self.timeout_s = backend, init_method, timeout_s

    @property
    def backend_cls(self):
        return LeanTorchBackend

    @property
    def train_func_context(self):
        return TorchDeviceContext

    @property
    def framework(self):
        return TrainingFramework.TORCH

    def torch_config(self):
        """Returns the equivalent ``ray.train.torch.TorchConfig`` (imports torch)."""
        from ray.train.torch import TorchConfig

        return TorchConfig(backend=self.backend, init_method=self.init_method,
                           timeout_s=self.timeout_s)


class LeanTorchBackend(Backend):
    """Ray's torch backend for several workers; nothing to set up for one (no process group)."""

    share_cuda_visible_devices = True  # as Ray's torch backend: a node's workers see its GPUs (NCCL)

    def on_start(self, worker_group, backend_config: LeanTorchConfig) -> None:
        if len(worker_group) > 1:
            _ray_torch_backend().on_start(worker_group, backend_config.torch_config())

    def on_shutdown(self, worker_group, backend_config: LeanTorchConfig) -> None:
        if len(worker_group) > 1:
            _ray_torch_backend().on_shutdown(worker_group, backend_config.torch_config())


def _ray_torch_backend() -> Backend:
    from ray.train.torch.config import _TorchBackend

    return _TorchBackend()


class TorchDeviceContext:
    """Ray's context around the training function (it selects the worker's CUDA device),
    imported in the worker that enters it."""

    def __enter__(self):
        from ray.train.torch.config import TorchConfigContextManager

        self._inner = TorchConfigContextManager()
        return self._inner.__enter__()

    def __exit__(self, *exc) -> bool:
        return self._inner.__exit__(*exc)


class PlacementGroupRecorder(WorkerGroupCallback):
    """Records, in the trial's run folder, the placement group of each worker group the Train
    controller starts and the controller's actor id (:func:`record_placement_group`), so that the
    study driver removes it once the trial has ended and the controller is gone
    (:mod:`transcenter.platform.placement`).

    Why: Ray Train 2.60 starts a detached ``PlacementGroupCleaner`` actor for every run to do this
    (one more process per trial); a study needs one cleaner, not one per trial. Uses the private
    callback base class and worker-group state, as upstream's callback does. Public replacement:
    a Train option to skip the per-run cleaner, or a cleaner shared by the runs of a job.
    """

    def __init__(self, run: str) -> None:
        self.run = run

    def after_worker_group_start(self, worker_group) -> None:
        import ray

        group = worker_group.get_worker_group_state().placement_group_handle.placement_group
        record_placement_group(self.run, group.id.hex(),
                               ray.get_runtime_context().get_actor_id())


class LeanTorchTrainer(DataParallelTrainer):
    """Ray Train's ``TorchTrainer`` (a ``DataParallelTrainer`` with the torch backend) without
    what a trial does not need: torch in the trial actor (:class:`LeanTorchConfig`), Ray Data's
    callback when the trial passes no Ray Datasets, the per-run placement-group cleaner actor
    (:class:`PlacementGroupRecorder` instead), and, inside an actor such as a Tune trial, the
    separate controller actor: the Train controller runs in the calling actor's own process, so
    its callbacks (the report to Tune among them) are plain calls in the trial actor. When the run
    ends by an exception its workers must end too, since Tune reuses the trial actor for its next
    trial: with ``keep_workers_s`` > 0, a run that finished, or that Tune stopped (its report
    raises ``SystemExit``) and whose workers stop at a step boundary when asked, keeps its workers
    for the actor's next trial (:class:`WarmWorkerGroup`); any other run's workers are aborted.

    Why: Ray 2.60 starts, for every trial, a controller actor, a ``DatasetManager`` actor (datasets
    or not), a ``PlacementGroupCleaner`` actor, and with Tune's ``TuneReportCallback`` a queue
    actor to carry each report from the controller back to the trial actor: four Python
    processes per trial besides the workers, each importing Ray. Uses the private
    ``_create_default_callbacks``, ``_initialize_and_run_controller``, ``TrainController``,
    ``DatasetsCallback`` and ``PlacementGroupCleanerCallback``. The workers get the calling actor as
    their controller handle, so ``ray.train.get_all_reported_checkpoints`` (which the workers of
    this project never call) is not available to them. Outside an actor (a script's driver) the
    controller stays upstream's actor, as Ray Train needs an actor handle for it. Public
    replacement: Ray Train creating the datasets callback only when ``datasets`` is non-empty,
    an option for the cleaner, and an in-process controller for runs under Tune.
    """

    def __init__(self, train_loop_per_worker, *, run: str, keep_workers_s: float = 0.0,
                 **kwargs) -> None:
        super().__init__(train_loop_per_worker, backend_config=LeanTorchConfig(), **kwargs)
        self._run = run
        self._keep_workers_s = keep_workers_s

    def _create_default_callbacks(self) -> list:
        dropped = (PlacementGroupCleanerCallback,) + (() if self.datasets else (DatasetsCallback,))
        callbacks = [c for c in super()._create_default_callbacks() if not isinstance(c, dropped)]
        return callbacks + [PlacementGroupRecorder(self._run)]

    def _initialize_and_run_controller(self, **controller_init_kwargs):
        import ray

        if ray.get_runtime_context().get_actor_id() is None:
            return super()._initialize_and_run_controller(**controller_init_kwargs)
        controller = TrainController(**controller_init_kwargs)
        controller.worker_group_cls = WarmWorkerGroup
        PARKING.keep_s = self._keep_workers_s
        keep_synchronization_actors()
        try:
            asyncio.run(controller.run())
        except BaseException as ended:
            # Tune ending the trial (its report raises SystemExit) or an error in the controller:
            # the trial actor lives on for Tune's next trial, so its workers must stop. Those of
            # a trial Tune ended stop at a step and are kept; any others are aborted.
            group = controller.get_worker_group()
            if group is not None and group.has_started():
                kept = (isinstance(ended, SystemExit) and PARKING.keep_s > 0
                        and group.stop_at_a_step())
                if not kept:
                    group.abort()
            raise
        return controller.get_result()


class WorkerParking:
    """The one worker group a process keeps between two Train runs (:class:`WarmWorkerGroup`):
    parked by the run that finished, taken by the next run asking for the same workers, shut down
    (workers, synchronisation actor, placement group) by a timer if no run takes it within
    ``keep_s`` seconds, so that a process with no next run holds no CPUs or GPUs for long."""

    def __init__(self) -> None:
        self.keep_s = 0.0  # set by each run (LeanTorchTrainer); 0 parks nothing
        self._lock = threading.Lock()
        self._parked: tuple[tuple, WorkerGroupState, threading.Timer] | None = None

    def park(self, key: tuple, state: WorkerGroupState) -> None:
        """Keeps ``state`` for a run whose :meth:`WarmWorkerGroup.key` is ``key``, for ``keep_s``
        seconds."""
        timer = threading.Timer(self.keep_s, self._expire, args=(state,))
        timer.daemon = True
        with self._lock:
            old, self._parked = self._parked, (key, state, timer)
        timer.start()
        if old is not None:
            old[2].cancel()
            old[1].shutdown()

    def take(self, key: tuple) -> WorkerGroupState | None:
        """Returns the parked group if it has ``key`` and all its actors answer, else None (a
        parked group that does not fit is shut down, freeing its resources for the new one)."""
        with self._lock:
            parked, self._parked = self._parked, None
        if parked is None:
            return None
        parked_key, state, timer = parked
        timer.cancel()
        if parked_key == key and _answers(state):
            return state
        state.shutdown()
        return None

    def _expire(self, state: WorkerGroupState) -> None:
        """Shuts ``state`` down if it is still the parked group."""
        with self._lock:
            if self._parked is None or self._parked[1] is not state:
                return
            self._parked = None
        state.shutdown()


def _answers(state: WorkerGroupState, timeout_s: float = 10.0) -> bool:
    """True when every worker and the synchronisation actor of ``state`` answers within
    ``timeout_s`` (a node lost while the group was parked takes its workers with it)."""
    import ray

    calls = [w.actor.get_metadata.remote() for w in state.workers]
    try:
        ray.get([*calls, state.sync_actor.get_counter.remote()], timeout=timeout_s)
    except Exception:
        return False
    return True


PARKING = WorkerParking()
_TAKEN: contextvars.ContextVar[WorkerGroupState | None] = contextvars.ContextVar("taken", default=None)


def _state_fields(state: WorkerGroupState) -> dict[str, Any]:
    """Returns upstream's ``WorkerGroupState`` fields of ``state`` by name."""
    return {f.name: getattr(state, f.name) for f in dataclasses.fields(WorkerGroupState)}


@dataclasses.dataclass(frozen=True)
class _ParkingState(WorkerGroupState):
    """A finished run's worker-group state whose shutdown parks the group instead of killing it."""

    key: tuple = ()

    def shutdown(self) -> None:
        import ray

        # The workers' own shutdown hooks run as upstream's shutdown runs them; a worker that does
        # not answer in time takes the whole group down instead.
        calls = [w.actor.shutdown.remote() for w in self.workers]
        done, _ = ray.wait(calls, num_returns=len(calls), timeout=5)
        state = WorkerGroupState(**_state_fields(self))
        if len(done) == len(calls):
            PARKING.park(self.key, state)
        else:
            state.shutdown()


STOP_AT_A_STEP_S = 10.0  # how long a stopped trial's workers get to reach a step boundary


class WarmWorkerGroup(WorkerGroup):
    """Ray Train's worker group, whose workers serve the next run of the same process.

    A run whose workers all finished without error parks them (:data:`PARKING`) as it shuts down:
    the workers' shutdown hooks and the backend's (a multi-worker process group is torn down) run
    as usual, but the worker processes, their placement group and the synchronisation actor stay.
    The next run asking for the same workers (:meth:`key`) takes them: its placement group is
    ready, its workers have imported Ray Train, torch, torchvision and the model (3-5 s a trial on
    2 cores) and set up CUDA, and each gets the new run's context as a new worker would. A run that
    Tune stopped parks its group once the workers stopped at a step (:meth:`stop_at_a_step`).
    A run that failed, whose workers did not stop in time, or that fits no parked group starts its
    own. The workers must report checkpoints synchronously (the default, as :mod:`worker` does): Ray Train
    shuts its one asynchronous upload pool per process down at the end of every run.

    Why: Ray Train 2.60 starts new worker processes for every run. Uses the private
    ``WorkerGroup`` hooks ``_start_impl``, ``_create_placement_group``, ``_create_workers``,
    ``_latest_poll_status`` and ``_worker_group_state``, the ``WorkerGroupState`` dataclass, and
    :func:`keep_synchronization_actors`. Public replacement: none (Ray Train has no worker reuse
    across runs).
    """

    def key(self) -> tuple:
        """What a parked group must match to serve this run: workers, resources per worker,
        placement strategy and labels, and the workers' runtime env."""
        context = self._worker_group_context
        return (context.num_workers, tuple(sorted(context.resources_per_worker.items())),
                context.placement_strategy, repr(context.label_selector),
                repr(self._train_run_context.run_config.worker_runtime_env))

    def _start_impl(self, worker_group_state_builder) -> None:
        taken = PARKING.take(self.key())
        token = _TAKEN.set(taken)
        try:
            super()._start_impl(worker_group_state_builder)
        finally:
            _TAKEN.reset(token)

    def _create_placement_group(self, scaling_config, worker_group_context):
        taken = _TAKEN.get()
        if taken is not None:
            return taken.placement_group_handle
        return super()._create_placement_group(scaling_config, worker_group_context)

    def _create_workers(self, num_workers, placement_group, resources_per_worker, *args, **kwargs):
        taken = _TAKEN.get()
        if taken is not None:
            return list(taken.workers)
        return super()._create_workers(num_workers, placement_group, resources_per_worker,
                                       *args, **kwargs)

    def stop_at_a_step(self, timeout_s: float = STOP_AT_A_STEP_S) -> bool:
        """Asks the workers to stop at their next step boundary
        (:mod:`~transcenter.platform.step_stop`), drains the reports they made meanwhile, and
        once all have ended their run without error within ``timeout_s`` seconds shuts the group
        down, parking it. Returns whether it did; on False the group is left as it was.

        Polls the worker actors themselves, not :meth:`poll_status`, whose callbacks would hand
        the drained reports to the run's report handler (and to Tune, which ended the trial).
        Also uses the private ``Worker.execute_async`` and the worker actor's ``poll_status``."""
        import time

        import ray

        from transcenter.platform import step_stop

        deadline = time.monotonic() + timeout_s
        workers = self.get_workers()
        try:
            ray.get([w.execute_async(step_stop.request) for w in workers], timeout=timeout_s)
            while True:
                statuses = ray.get([w.actor.poll_status.remote() for w in workers],
                                   timeout=max(0.1, deadline - time.monotonic()))
                if any(s.error is not None for s in statuses) or time.monotonic() > deadline:
                    return False
                if not any(s.running for s in statuses):
                    break
                time.sleep(0.05)
        except Exception:
            return False
        self._shutdown(ended=True)
        return True

    def shutdown(self) -> None:
        status = self._latest_poll_status
        self._shutdown(ended=status is not None and status.finished and not status.errors)

    def _shutdown(self, ended: bool) -> None:
        """Shuts the group down, parking it when every worker ``ended`` its run without error."""
        if PARKING.keep_s > 0 and self.has_started() and ended:
            state = self._worker_group_state
            self._worker_group_state = _ParkingState(**_state_fields(state), key=self.key())
        super().shutdown()


class _SynchronizationActorOfWarmGroups:
    """Stands for ``SynchronizationActor`` in Ray Train's worker-group module: a worker group
    started on a parked group (:class:`WarmWorkerGroup`) gets the parked synchronisation actor,
    every other one a new actor, as upstream."""

    def __init__(self, upstream) -> None:
        self.upstream = upstream

    def options(self, **options):
        taken = _TAKEN.get()
        if taken is None:
            return self.upstream.options(**options)
        return _Existing(taken.sync_actor)


@dataclasses.dataclass(frozen=True)
class _Existing:
    """``.remote(...)`` returns ``actor``, an actor that already exists."""

    actor: Any

    def remote(self, *args, **kwargs):
        return self.actor


def keep_synchronization_actors() -> None:
    """Makes a worker group started on a parked one (:class:`WarmWorkerGroup`) reuse its
    synchronisation actor, one process fewer per trial. Idempotent.

    Why: Ray Train 2.60's ``WorkerGroup._start_impl`` creates the actor inline, from the name
    ``SynchronizationActor`` of its module, with no hook to override; a finished run leaves it
    with no collective open (its counters back to zero). Public replacement: none.
    """
    current = worker_group_module.SynchronizationActor
    if not isinstance(current, _SynchronizationActorOfWarmGroups):
        worker_group_module.SynchronizationActor = _SynchronizationActorOfWarmGroups(current)


# OptunaSearch keeps its Optuna study and trials in private attributes; the study's searcher
# (platform/search.py) reads them to report per-epoch values and to tell Optuna PRUNED for trials a
# scheduler stopped, which upstream records as COMPLETE with their early value. Public
# replacement: OptunaSearch reporting intermediate values by a chosen step and mapping stopped
# trials to PRUNED.

def optuna_study(search: OptunaSearch) -> optuna.Study:
    """Returns the Optuna study behind ``search``."""
    return search._ot_study


def open_optuna_trial(search: OptunaSearch, trial_id: str) -> optuna.Trial | None:
    """Returns the Optuna trial of Tune trial ``trial_id`` while it is still open, else None."""
    if trial_id in search._completed_trials:
        return None
    return search._ot_trials.get(trial_id)


def held_optuna_trials(search: OptunaSearch) -> dict[str, optuna.Trial]:
    """Returns ``search``'s map of Tune trial id -> the Optuna trial it asked for (the live map:
    an entry added here is the trial upstream's reporting and telling use)."""
    return search._ot_trials


def suggest_params(search: OptunaSearch, ot_trial: optuna.Trial) -> dict:
    """Returns the Tune config that ``search``'s space gives ``ot_trial`` (suggesting each
    parameter on it), as upstream's ``suggest`` does for the trials it asks itself."""
    return search._suggest_from_define_by_run_func(search._space, ot_trial)


def close_optuna_trial(search: OptunaSearch, trial_id: str) -> None:
    """Marks Tune trial ``trial_id`` as told, as upstream's ``on_trial_complete`` does."""
    search._completed_trials.add(trial_id)


def trial_handle(study: optuna.Study, frozen: optuna.trial.FrozenTrial) -> optuna.Trial:
    """Returns a live ``optuna.Trial`` for the existing RUNNING trial ``frozen`` of ``study``, so a
    resumed study reports to and tells the trial it asked for before the driver stopped.

    Why: the ``Trial`` constructor takes the storage id, which ``FrozenTrial`` keeps in the private
    ``_trial_id``; and Optuna's cached RDB storage writes only to trials it has read, so the
    study's trials are read first. Public replacement: an Optuna API returning a ``Trial`` of a
    RUNNING trial (as ``study.ask()`` does for a new one).
    """
    import optuna

    study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    return optuna.trial.Trial(study, frozen._trial_id)


def enable_token_auth_if_token_available() -> None:
    """Turns on token authentication in this process when a token exists and ``RAY_AUTH_MODE`` is
    unset.

    Why: Ray 2.60 does so for ``ray.init("auto")`` but never for an explicit address (argument or
    ``RAY_ADDRESS``, as under ``ray job submit``), and reads ``RAY_AUTH_MODE`` once, at import, so
    setting the variable later is not enough: a cluster started with its default token auth would
    refuse us. Ray's helper also re-reads the config. Public replacement: none yet
    (``ray.init(address=...)`` honouring an existing token would make this unnecessary).
    """
    from ray._private.authentication.authentication_token_setup import (
        maybe_enable_token_auth_if_token_available,
    )

    maybe_enable_token_auth_if_token_available(warn_if_disabled=False)


def recorded_cluster_address() -> tuple[str | None, str]:
    """Returns ``(address or None, file)``: the cluster the last ``ray start`` recorded in
    ``<RAY_TMPDIR or /tmp>/ray/ray_current_cluster``, which ``ray.init()`` connects to.

    Why: ``ray.init()`` with no address connects to that cluster and, when it is dead, retries for
    minutes without a word; the study checks it first. Public replacement: none
    (``ray.init`` has no connect timeout for a found cluster).
    """
    from ray._common.utils import get_ray_address_file
    from ray._private.utils import read_ray_address

    return read_ray_address(None), get_ray_address_file(None)


def job_working_dir() -> str | None:
    """Returns the current directory when it is Ray's unpacked copy of a job's ``--working-dir``
    (``<session>/runtime_resources/working_dir_files/_ray_pkg_<hash>``), else None.

    Why: a relative storage path there would put the study in Ray's temporary session folder, which
    ``ray stop`` and reboots remove. Public replacement: none (the job's runtime env does not say
    where its working dir was unpacked).
    """
    cwd = os.getcwd()
    return cwd if f"{os.sep}runtime_resources{os.sep}working_dir_files{os.sep}" in cwd else None


def remove_placement_groups_of_ended_jobs() -> int:
    """Removes the placement groups that jobs which have ended (failed, stopped, succeeded) left
    behind; returns how many. Needs the State API (the dashboard); does nothing without it.

    Why: when a study driver is SIGKILLed, Ray 2.60 can leave the placement group of a trial's Train
    worker group CREATED after the job has failed, holding the CPUs/GPUs that trial had, so the
    resumed study (``--resume``) waits for resources forever. Only non-detached groups of jobs the
    State API lists as ended are removed: by Ray's own rules they should be gone. Public
    replacement: Ray removing them when the creating job ends (an upstream fix).
    """
    import ray
    from ray.util.state import list_jobs, list_placement_groups

    from transcenter.platform.placement import remove_group

    address = ray.get_runtime_context().gcs_address  # the connected cluster, not a guess
    try:
        ended = {j.job_id for j in list_jobs(address, limit=10_000, raise_on_missing_output=False)
                 if j.job_id and j.status in ("FAILED", "STOPPED", "SUCCEEDED")}
        groups = list_placement_groups(address, limit=10_000, detail=True,
                                       raise_on_missing_output=False)
    except Exception:
        return 0
    leaked = [g for g in groups if g.creator_job_id in ended and not g.is_detached
              and g.state in ("CREATED", "PENDING", "RESCHEDULING")]
    for group in leaked:
        remove_group(group.placement_group_id)
    return len(leaked)


# Credentials that must never travel in a runtime env (Ray's runtime-env agent writes every runtime
# env it creates, env_vars included, to its log in clear text).
SECRET_ENV_VARS = frozenset({"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                             "AWS_SECURITY_TOKEN"})


def keep_secrets_out_of_runtime_envs() -> None:
    """Stops Ray Tune from copying the driver's AWS credentials into every trial actor's runtime env.

    Why: Ray Tune 2.60 propagates them (``ray.tune.execution.class_cache.ENV_VARS_TO_PROPAGATE``),
    and the runtime-env agent logs each runtime env in clear text, so the secret key lands in
    ``/tmp/ray/session_*/logs/runtime_env_agent.log`` on every node. The trial drivers run on the
    head, whose environment has the credentials the cluster gives every node (an IAM role, or the
    variables set where ``ray start`` runs), so nothing needs the copy. Public replacement: a Tune
    option not to propagate them, or the agent not logging env_vars.
    """
    from ray.tune.execution import class_cache

    class_cache.ENV_VARS_TO_PROPAGATE = frozenset(class_cache.ENV_VARS_TO_PROPAGATE) - SECRET_ENV_VARS


def train_report_logger() -> logging.Logger:
    """Returns the logger on which Ray Train's workers log each report (``Reporting training result
    n: TrainingReport(checkpoint=..., metrics={...})``, one per epoch and worker).

    Why: Ray Train 2.60 names that logger after its source file (``logging.getLogger(__file__)`` in
    ``ray/train/v2/_internal/execution/context.py``), so it is not under ``ray.train`` and
    ``ray.train.LoggingConfig(log_level=...)`` does not govern it; the worker's root logger sends
    it to the console. :mod:`transcenter.platform.train_log` routes it to the trial's log file.
    Public replacement: that module logging on ``logging.getLogger(__name__)``.
    """
    from ray.train.v2._internal.execution import context

    return logging.getLogger(context.__file__)


def train_resource_request_logger() -> logging.Logger:
    """Returns the logger on which a Ray Train controller warns, with a 20-line traceback, each time
    its resource request to Ray's autoscaling coordinator times out (5 s; sent every 20 s while its
    worker group starts or runs), which an overloaded CPU causes and which Ray calls safe to ignore.

    Why: each trial's controller runs in its Tune trial actor, whose warnings reach the study's
    console; :func:`~transcenter.platform.train_log.fold_tracebacks` keeps them one line there.
    Public replacement: none (the module and its logger are Ray Train internals).
    """
    from ray.train.v2._internal.execution.scaling_policy import autoscaling_coordinator_client

    return logging.getLogger(autoscaling_coordinator_client.__name__)


def drain_this_node(message: str) -> bool:
    """Asks Ray's GCS to drain the node this process runs on: it takes no new tasks or actors,
    while what runs there goes on; ``message`` is the reason Ray records (``ray list nodes``
    shows it). Returns whether the GCS accepted.

    Why: a node whose local disk is full fails every trial placed on it, and Ray schedules by
    CPUs and GPUs only, so Ray Train's retry of a trial could land there again. Ray 2.60 drains
    nodes through the GCS client's ``drain_node`` (its autoscaler and the hidden ``ray
    drain-node`` command do); the reason is "preemption", the only one the GCS always accepts for
    a busy node. Public replacement: a public API to cordon a node (none in 2.60).
    """
    import ray
    from ray.core.generated import autoscaler_pb2

    gcs = ray._private.worker.global_worker.gcs_client
    accepted, _ = gcs.drain_node(node_id=ray.get_runtime_context().get_node_id(),
                                 reason=autoscaler_pb2.DrainNodeReason.Value("DRAIN_NODE_REASON_PREEMPTION"),
                                 reason_message=message, deadline_timestamp_ms=0)
    return bool(accepted)
