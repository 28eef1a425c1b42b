"""What a Tune trial actor runs: one trial's ``TorchTrainer``, relaying its epochs to Tune.

The study driver (:mod:`transcenter.platform.study`) hands each trial actor :func:`trainable`;
Tune pickles it by reference, so the actor imports this module and what it imports, nothing of
the driver's (the CLI, the data check and its loaders) and nothing of the model. ``tests/
test_import_contract.py`` holds it to that.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from ray import tune
from ray.train import UserCallback

from transcenter.platform.columns import trial_overrides
from transcenter.platform.compat import HEAD_NODE_RESOURCE, train_resource_request_logger
from transcenter.platform.errors import TrialFailure
from transcenter.platform.train_log import console_level, fold_tracebacks
from transcenter.platform.trainer import Resources, build_trainer
from transcenter.platform.trial_files import read_failure, run_dir, split_config

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrialSpec:
    """What every trial of a study shares: the study, its folder, the fixed configuration and the
    resources of its Train workers."""

    study: str
    study_dir: str  # <storage path>/<study>: local path or URI
    preset: str | None
    overrides: dict[str, Any] = field(default_factory=dict)
    resources: Resources = field(default_factory=Resources)
    max_failures: int = 2
    log_dir: str | None = None  # each trial's Ray Train lines: <log_dir>/<trial>.log
    verbose: bool = False  # Ray Train's INFO lines also on the console


class ReportToTune(UserCallback):
    """Reports each epoch's metrics (rank 0's, as Ray Train keeps them) to the Tune trial, and
    each failure of its workers to the study's console (one warning line per failed worker).

    The trial's Train controller runs in the trial actor itself
    (:class:`~transcenter.platform.compat.LeanTorchTrainer`), so this is a direct ``tune.report``
    in the trial's thread; it returns once Tune has taken the result. Tune reuses a trial actor for
    the next trial: a trial it stopped ends when Tune resets the actor, by ``SystemExit`` from its
    pending report, and its workers stop at a step, kept for the next trial, or are aborted
    (:class:`~transcenter.platform.compat.LeanTorchTrainer`)."""

    def __init__(self, trial: str) -> None:
        self.trial = trial

    def after_exception(self, run_context, worker_exceptions: dict[int, Exception]) -> None:
        for rank, error in sorted(worker_exceptions.items()):
            logger.warning("%s: worker %d failed: %s", self.trial, rank, _last_line(error))

    def after_report(self, run_context, metrics: list[dict[str, Any]], checkpoint) -> None:
        tune.report(dict(metrics[0]))


def _last_line(error: Exception) -> str:
    """Returns the last non-empty line of ``error``'s text (Ray wraps a worker's error in its
    traceback, whose last line is the error itself)."""
    lines = [line for line in str(error).splitlines() if line.strip()]
    return lines[-1].strip() if lines else type(error).__name__


def trial_driver(config: dict[str, Any], spec: TrialSpec) -> None:
    """Tune trainable of one trial: runs its TorchTrainer; epochs reach Tune via the callback.

    The trial's Ray Train run is named after its Optuna number (``train/trial-00007``), so a
    resumed study's trial continues from its own checkpoint whichever Tune trial runs it.

    Raises:
        TrialFailure: the trial cannot succeed on a retry (the worker's failure line).
    """
    # Ray Train warns each time a resource request times out on a busy CPU, "safe to ignore".
    fold_tracebacks(train_resource_request_logger(),
                    logging.WARNING if spec.verbose else logging.ERROR)
    key, params = split_config(config)
    overrides = trial_overrides(spec.overrides, spec.resources, params)
    train_dir = f"{spec.study_dir}/train"
    trainer = build_trainer(name=key, storage_path=train_dir,
                            preset=spec.preset, overrides=overrides, resources=spec.resources,
                            max_failures=spec.max_failures, callbacks=[ReportToTune(key)],
                            telemetry={"study": spec.study, "trial_id": key},
                            cost_dir=f"{spec.study_dir}/costs", log_dir=spec.log_dir,
                            log_level=console_level(spec.verbose))
    trainer.fit()
    failure = read_failure(run_dir(train_dir, key))
    if failure:
        raise TrialFailure(failure)


def trainable(spec: TrialSpec):
    """Returns the Tune trainable of the study's trials."""
    # The driver only waits on its TorchTrainer, whose workers reserve the CPUs/GPUs: it takes no
    # CPU, a token of memory and a sliver of the head node (drivers stay there when a worker node
    # is lost).
    return tune.with_resources(tune.with_parameters(trial_driver, spec=spec),
                               {"cpu": 0, "memory": 64 * 2**20, HEAD_NODE_RESOURCE: 0.001})
