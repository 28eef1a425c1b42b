"""One trial as a Ray Train V2 torch trainer: its resources, run config and storage files.

The workers run :func:`transcenter.platform.worker.run_trial`. This module is what the study's
trial actor imports, so it stays light: the model, torch and torchvision (seconds per process on a
small machine) load only in the workers (:class:`~transcenter.platform.compat.LeanTorchTrainer`).
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig

from transcenter.model.training.experiment import trial_config
from transcenter.platform.compat import LeanTorchTrainer
from transcenter.platform.trial_files import run_dir
from transcenter.store import uri


@dataclass(frozen=True)
class Resources:
    """Per-trial resources: Train workers, and CPUs/GPUs reserved by each worker; how long a
    finished trial's workers wait for its trial actor's next trial, which then starts on them
    instead of starting new worker processes (0: every trial starts its own)."""

    workers: int = 1
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    accelerator_type: str | None = None  # e.g. "A100" on a GPU cluster
    keep_workers_s: float = 5.0  # seconds (WarmWorkerGroup in platform/compat.py)

    def __post_init__(self) -> None:
        if not isinstance(self.workers, int) or self.workers < 1:
            raise ValueError(f"workers={self.workers!r}: must be an integer >= 1")
        if self.cpus_per_worker < 0 or self.gpus_per_worker < 0:
            raise ValueError(f"cpus_per_worker={self.cpus_per_worker!r}, "
                             f"gpus_per_worker={self.gpus_per_worker!r}: must be >= 0")
        if not self.keep_workers_s >= 0:
            raise ValueError(f"keep_workers_s={self.keep_workers_s!r}: must be >= 0 seconds")

    @property
    def threads(self) -> int:
        """Torch CPU threads per worker, where a trial sets none: its CPUs, at least 1."""
        return max(1, int(self.cpus_per_worker))

    def scaling_config(self) -> ScalingConfig:
        """Returns the Ray Train ``ScalingConfig`` of these resources."""
        per_worker = {"CPU": self.cpus_per_worker}
        if self.gpus_per_worker:
            per_worker["GPU"] = self.gpus_per_worker
        return ScalingConfig(num_workers=self.workers, use_gpu=self.gpus_per_worker > 0,
                             resources_per_worker=per_worker,
                             accelerator_type=self.accelerator_type)


@dataclass(frozen=True)
class LoopConfig:
    """What each worker of a trial needs to train it (:func:`transcenter.platform.worker.run_trial`).

    Attributes:
        preset: The trial configuration's preset (None: the defaults).
        overrides: Dotted config field -> value, the study's fixed ones and the trial's searched.
        run_dir: The trial's run folder (checkpoints, failure record), a path or URI.
        fit_id: This fit of the trial's trainer (a fit's first start is told from a restart).
        telemetry: ``{"study": str, "trial_id": str}`` for the trial's gauges, or None.
        cost_dir: Where the study's trials share their params/MACs counts, or None.
        log_dir: Where each worker keeps Ray Train's lines of the run, or None.
        log_level: The least level of those lines that Ray forwards to the console.
        stop_when_asked: The workers stop at a step boundary when the controller asks
            (:mod:`~transcenter.platform.step_stop`): the trial keeps its worker group.
    """

    preset: str | None
    overrides: dict[str, Any]
    run_dir: str
    fit_id: str
    telemetry: dict[str, str] | None = None
    cost_dir: str | None = None
    log_dir: str | None = None
    log_level: str = "INFO"
    stop_when_asked: bool = False


LOOP_KEY = "loop"  # the one entry of the train_loop_config dict Ray Train passes each worker


def train_loop_per_worker(train_loop_config: dict[str, LoopConfig]) -> None:
    """Ray Train worker function: :func:`transcenter.platform.worker.run_trial` of the trial's
    :class:`LoopConfig`, imported here in the worker so that pickling this function never loads
    the model in the driver."""
    from transcenter.platform.worker import run_trial

    run_trial(train_loop_config[LOOP_KEY])


def build_trainer(name: str, storage_path: str, preset: str | None, overrides: dict[str, Any],
                  resources: Resources = Resources(), max_failures: int = 2,
                  num_to_keep: int = 1, callbacks: list | None = None,
                  telemetry: dict | None = None, cost_dir: str | None = None,
                  log_dir: str | None = None, log_level: str = "INFO") -> LeanTorchTrainer:
    """Returns the torch trainer of one trial.

    A stable ``name`` under ``storage_path`` lets Ray Train resume the run from its latest
    checkpoint after a failure or a driver restart. Any pyarrow/fsspec URI works as storage.
    ``cost_dir``: where the trials of a study share their params/MACs counts (:mod:`costs`).
    ``log_dir``: where each worker keeps Ray Train's lines of the run (``<log_dir>/<name>.log``);
    ``log_level``: the least level of them that Ray forwards to the console
    (:mod:`~transcenter.platform.train_log`).
    """
    trial_config(preset, overrides)  # validate here, in the driver, before any worker starts
    path, filesystem = uri.ray_storage(storage_path)
    run_config = RunConfig(name=name, storage_path=path, storage_filesystem=filesystem,
                           failure_config=FailureConfig(max_failures=max_failures),
                           checkpoint_config=CheckpointConfig(num_to_keep=num_to_keep),
                           callbacks=callbacks or [],
                           logging_config=LoggingConfig(log_level=log_level))
    run = run_dir(storage_path, name)
    return LeanTorchTrainer(train_loop_per_worker, run=run, keep_workers_s=resources.keep_workers_s,
                            train_loop_config={LOOP_KEY: LoopConfig(
                                preset, overrides, run, uuid.uuid4().hex, telemetry, cost_dir,
                                log_dir, log_level, resources.keep_workers_s > 0)},
                            scaling_config=resources.scaling_config(), run_config=run_config)
