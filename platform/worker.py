"""What every Ray Train worker of a trial runs: the plain-PyTorch :class:`TrialRunner`.

``prepare_model`` (DDP) and ``prepare_data_loader`` (distributed sampler) wrap the runner's model
and loaders, each epoch's metrics are reported from every rank (rank 0 attaches the checkpoint),
and a restarted worker group resumes from the latest checkpoint, so the epoch count continues
instead of restarting.
"""
from __future__ import annotations

import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ray.train
import ray.train.torch
import torch

from transcenter.model.training.checkpoint import load_checkpoint, save_checkpoint
from transcenter.model.training.engine import (
    DivergedError,
    TrainingStopped,
    TrialRunner,
    configure_process,
)
from transcenter.model.training.experiment import trial_config
from transcenter.platform import faults, step_stop
from transcenter.platform.compat import drain_this_node
from transcenter.platform.costs import cached_count
from transcenter.platform.disk_full import NodeDiskFull, describe, disk_full_error
from transcenter.platform.train_log import log_to_file
from transcenter.platform.trainer import LoopConfig
from transcenter.platform.trial_files import (
    CHECKPOINT_FILE,
    DEVICE_KEY,
    NODE_KEY,
    REPLAY_KEY,
    REPORTS_KEY,
    mark_started,
    started,
    write_failure,
)

# Errors from the trial's own input (its configuration, its data set, a missing file): the same on
# every retry, so the trial fails at once. Everything else (a lost worker or node, a collective that
# timed out, a RuntimeError from CUDA or NCCL) is left to Ray Train's retries from the checkpoint.
INPUT_ERRORS = (ValueError, TypeError, LookupError, FileNotFoundError, NotADirectoryError,
                IsADirectoryError, PermissionError, ImportError, NotImplementedError)


def run_trial(loop_config: LoopConfig) -> None:
    """Trains one trial on this worker, reporting every epoch to Ray Train.

    A trial that cannot succeed on a retry (bad input, divergence, out of memory) ends the run
    normally after rank 0 records why (the failure protocol of :mod:`transcenter.platform.trial_files`);
    the driver fails the trial. A run whose controller asks it to stop (:mod:`step_stop`) ends
    normally at its next step boundary, without reporting the epoch it was training. Any other
    exception goes to Ray Train, which retries from the checkpoint; a full disk first drains the
    worker's node, so the retry runs on another (:mod:`transcenter.platform.disk_full`).

    Args:
        loop_config: The trial, as :func:`transcenter.platform.trainer.build_trainer` makes it.
    """
    step_stop.clear()
    rank = ray.train.get_context().get_world_rank()
    epoch = 0  # the epoch being trained, for the failure message
    trial = loop_config.run_dir.rstrip("/").rsplit("/", 1)[-1]
    try:
        with log_to_file(loop_config.log_dir, trial, rank,
                         loop_config.log_level):
            for epoch in _train(loop_config, rank):  # noqa: B007 (the except below names it)
                pass
    except Exception as e:
        failure = failure_line(e, epoch)
        if failure is None:
            full = disk_full_error(e)
            if full is None:
                raise
            message = describe(full, ray.util.get_node_ip_address())
            then = ("drained: the trial retries from its last checkpoint on another node"
                    if drain_this_node(message) else "Ray did not drain it")
            raise NodeDiskFull(f"{message}; {then}") from e
    else:
        return
    if rank == 0:
        write_failure(loop_config.run_dir, failure)


def process_exiting() -> bool:
    """True once this process has begun to exit (Ray ends a worker whose trial or job is gone
    that way): its main thread has finished, and the exit is removing the training thread's temporary
    files (a checkpoint half written fails with ``FileNotFoundError``), so no error seen now says
    anything about the trial."""
    return not threading.main_thread().is_alive()


def failure_line(error: Exception, epoch: int) -> str | None:
    """Returns the line the trial fails with when a retry cannot fix ``error`` (raised while
    training ``epoch``, 0 before training): divergence, out of memory, or the trial's own input.
    Returns None for an infrastructure fault (a lost worker or node, a timed-out collective, object
    storage or a disk failing), which Ray Train retries from the checkpoint, and for any error met
    while the process exits (:func:`process_exiting`)."""
    if process_exiting():
        return None
    if isinstance(error, DivergedError):
        return f"diverged at epoch {epoch}: {error}"
    if isinstance(error, (torch.OutOfMemoryError, MemoryError)):
        return f"out of memory at epoch {epoch}: {error}"
    if isinstance(error, INPUT_ERRORS):
        where = f" at epoch {epoch}" if epoch else " before training"
        return f"{type(error).__name__}{where}: {error}"
    return None


def _train(loop_config: LoopConfig, rank: int) -> Iterator[int]:
    """Builds the runner (resuming from the latest checkpoint) and trains the remaining epochs;
    yields each epoch's number (1-based) as it starts."""
    cfg = trial_config(loop_config.preset, loop_config.overrides)
    cost = {"count_cost": cached_count(loop_config.cost_dir)} if loop_config.cost_dir else {}
    configure_process(cfg)
    runner = TrialRunner(cfg, wrap_model=ray.train.torch.prepare_model,
                         wrap_loader=ray.train.torch.prepare_data_loader,
                         device=ray.train.torch.get_device(),
                         stop_requested=step_stop.requested if loop_config.stop_when_asked else None,
                         **cost)
    node_ip = ray.util.get_node_ip_address()
    reports: list[dict[str, Any]] = []  # every epoch's report so far, kept in the checkpoint
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            state = load_checkpoint(Path(d) / CHECKPOINT_FILE)
        runner.load_state_dict(state)
        # A checkpoint without reports (written before they were kept) has its last epoch's.
        reports = list(state.get(REPORTS_KEY)
                       or ([runner.last_metrics] if runner.last_metrics else []))
    first_start = _first_start_of_fit(loop_config, rank)  # always: leaves the marker
    if reports and first_start:
        # A new fit() resuming an earlier one's checkpoint (the study driver was restarted): its
        # epochs may never have reached the driver's stores. Report them again, the earlier ones
        # flagged as replayed (schedulers skip those); the stores key rows by epoch, so this fills
        # gaps rather than duplicating. Restarts within one fit() (a worker died) skip this.
        for report in reports[:-1]:
            ray.train.report({**report, REPLAY_KEY: 1})
        ray.train.report(reports[-1])
    telemetry = loop_config.telemetry or {}
    gauges = _gauges(telemetry) if rank == 0 else None
    trial_faults = faults.faults_for(loop_config.overrides)  # none unless tests inject
    while runner.epoch < cfg.train.epochs:
        yield runner.epoch + 1
        faults.maybe_inject(trial_faults, runner.epoch + 1, "before", rank)
        try:
            metrics = runner.run_epoch()
        except TrainingStopped:
            return
        if rank == 0:
            faults.record_trained(loop_config.run_dir, runner.epoch)
        faults.maybe_inject(trial_faults, runner.epoch, "after", rank)
        if gauges is not None:
            gauges(metrics)
        report = {**metrics, NODE_KEY: node_ip, DEVICE_KEY: runner.device_name}
        reports.append(report)
        with tempfile.TemporaryDirectory() as tmp:
            ckpt = None
            if rank == 0:
                save_checkpoint({**runner.state_dict(), REPORTS_KEY: reports},
                                Path(tmp) / CHECKPOINT_FILE)
                faults.maybe_inject(trial_faults, runner.epoch, "checkpoint_written", rank)
                ckpt = ray.train.Checkpoint.from_directory(tmp)
            ray.train.report(report, checkpoint=ckpt)
        faults.maybe_inject(trial_faults, runner.epoch, "reported", rank)


def _first_start_of_fit(loop_config: LoopConfig, rank: int) -> bool:
    """True on every rank the first time a worker group of this ``fit()`` starts.

    Each ``fit()`` has its own id; rank 0 leaves a marker in the run folder after every rank
    has looked, so a group restarted within the same ``fit()`` sees it.
    """
    first = not started(loop_config.run_dir, loop_config.fit_id)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
    if rank == 0 and first:
        mark_started(loop_config.run_dir, loop_config.fit_id)
    return first


def _gauges(telemetry: dict | None):
    """Returns ``fn(metrics)`` exporting per-trial Prometheus gauges, or None."""
    if not telemetry:
        return None
    from transcenter.platform.telemetry import EpochGauges

    gauges = EpochGauges()
    return lambda metrics: gauges.record(telemetry["study"], telemetry["trial_id"], metrics)
