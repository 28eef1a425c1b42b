"""What every Ray Train worker of a trial runs: the plain-PyTorch :class:`TrialRunner`.

``prepare_model`` (DDP) and ``prepare_data_loader`` (distributed sampler) wrap the runner's model
and loaders, each epoch's metrics are reported from every rank (rank 0 attaches the checkpoint),
and a restarted worker group resumes from the latest checkpoint, so the epoch count continues
instead of restarting.
"""
from __future__ import annotations

import os
import signal
import tempfile
from pathlib import Path
from typing import Any

import ray.train
import ray.train.torch
import torch

from transcenter.model.checkpoint import load_checkpoint, save_checkpoint
from transcenter.model.engine import DivergedError, TrialRunner
from transcenter.model.experiment import trial_config
from transcenter.platform.trainer import CHECKPOINT_FILE, FAILURE_FILE, read_text, write_text


def _maybe_inject_fault(fault: dict | None, epoch: int, when: str) -> None:
    """Test hook for fault-injection tests: once (a marker file remembers) at ``fault["epoch"]``.

    ``fault = {"epoch": int, "marker": path, "kind": ..., "when": "before" | "after"}`` where kind
    ``raise`` raises, ``kill`` SIGKILLs the worker process, ``nan`` and ``oom`` raise what a
    diverged or out-of-memory epoch raises. ``before`` fires as the epoch starts, ``after`` once it
    has trained but before it is reported.
    """
    if (not fault or fault.get("epoch") != epoch or fault.get("when", "after") != when
            or ray.train.get_context().get_world_rank() != 0):
        return
    marker = Path(fault["marker"])
    if marker.exists():
        return
    marker.write_text(str(epoch))
    kind = fault.get("kind", "raise")
    if kind == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if kind == "nan":
        raise DivergedError(f"loss diverged (NaN/inf) at epoch {epoch}, step 1: loss_pos (injected)")
    if kind == "oom":
        raise torch.OutOfMemoryError(f"CUDA out of memory at epoch {epoch} (injected)")
    raise RuntimeError(f"injected fault at epoch {epoch}")


def run_trial(loop_config: dict[str, Any]) -> None:
    """Trains one trial on this worker, reporting every epoch to Ray Train.

    Args:
        loop_config: ``{"preset": str | None, "overrides": {dotted: value}, "fault": dict | None,
            "telemetry": {"study": str, "trial_id": str} | None, "run_dir": str, "fit_id": str}``
            as :func:`transcenter.platform.trainer.build_trainer` makes it.
    """
    cfg = trial_config(loop_config.get("preset"), loop_config.get("overrides"))
    runner = TrialRunner(cfg, wrap_model=ray.train.torch.prepare_model,
                         wrap_loader=ray.train.torch.prepare_data_loader,
                         device=ray.train.torch.get_device())
    rank = ray.train.get_context().get_world_rank()
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            runner.load_state_dict(load_checkpoint(Path(d) / CHECKPOINT_FILE))
    first_start = _first_start_of_fit(loop_config, rank)  # always: leaves the marker
    if checkpoint is not None and runner.last_metrics and first_start:
        # A new fit() resuming an earlier one's checkpoint (the study driver was restarted): the
        # checkpoint's epoch may never have reached the driver. Report it again; the store and
        # Optuna key rows by epoch, so this replaces rather than duplicates. Restarts within one
        # fit() (a worker died) skip this: that epoch was reported.
        ray.train.report(runner.last_metrics)
    gauges = _gauges(loop_config.get("telemetry")) if rank == 0 else None
    while runner.epoch < cfg.train.epochs:
        try:
            _maybe_inject_fault(loop_config.get("fault"), runner.epoch + 1, "before")
            metrics = runner.run_epoch()
        except (DivergedError, torch.OutOfMemoryError, MemoryError) as e:
            # Not worth a retry from the checkpoint: end the run and tell the driver, which
            # fails the trial (a Train result carries only checkpointed metrics).
            kind = "out of memory" if not isinstance(e, DivergedError) else "diverged"
            if rank == 0:
                write_text(f"{loop_config['run_dir']}/{FAILURE_FILE}",
                           f"{kind} at epoch {runner.epoch + 1}: {e}")
            return
        _maybe_inject_fault(loop_config.get("fault"), runner.epoch, "after")
        if gauges is not None:
            gauges(metrics)
        with tempfile.TemporaryDirectory() as tmp:
            ckpt = None
            if rank == 0:
                save_checkpoint(runner.state_dict(), Path(tmp) / CHECKPOINT_FILE)
                ckpt = ray.train.Checkpoint.from_directory(tmp)
            ray.train.report(metrics, checkpoint=ckpt)


def _first_start_of_fit(loop_config: dict[str, Any], rank: int) -> bool:
    """True on every rank the first time a worker group of this ``fit()`` starts.

    Each ``fit()`` has its own id; rank 0 leaves a marker in the run folder after every rank
    has looked, so a group restarted within the same ``fit()`` sees it.
    """
    marker = f"{loop_config['run_dir']}/fit-{loop_config['fit_id']}.started"
    first = read_text(marker) is None
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
    if rank == 0 and first:
        write_text(marker, "")
    return first


def _gauges(telemetry: dict | None):
    """Returns ``fn(metrics)`` exporting per-trial Prometheus gauges, or None."""
    if not telemetry:
        return None
    from transcenter.platform.telemetry import EpochGauges

    gauges = EpochGauges()
    return lambda metrics: gauges.record(telemetry["study"], telemetry["trial_id"], metrics)
