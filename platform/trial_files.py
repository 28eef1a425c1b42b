"""A trial's files beside Ray Train's in its run folder ``<study>/train/<trial id>/``, and the
protocol between the trial's driver and its workers. Both sides import this module; neither imports
the other.

- **Checkpoint**: rank 0 saves :data:`CHECKPOINT_FILE` into every reported Ray Train checkpoint; a
  restarted worker group loads the latest one and continues the epoch count.
- **Failure**: a trial that cannot succeed on a retry (its own input is bad, its loss diverged, it
  ran out of memory) must not go back to Ray Train, which would retry it from the checkpoint. Rank 0
  writes one line saying why (``"<what> at epoch <n>: <message>"``) with :func:`write_failure` and
  every rank returns normally; the driver's ``fit()`` then ends, the driver calls
  :func:`read_failure` and raises ``TrialFailure`` with that line, so Tune records the trial as an
  error and Optuna as FAIL.
- **Start marker**: each ``fit()`` has an id; the first worker group of a fit leaves
  ``fit-<id>.started`` (:func:`mark_started`), so a group restarted within the same fit knows that
  its checkpoint's epochs were already reported.
- **Replay**: the checkpoint also holds every epoch's report (:data:`REPORTS_KEY`). The first worker
  group of a new ``fit()`` (the study driver was restarted) reports them again, the earlier ones
  flagged :data:`REPLAY_KEY` (stores fill what they miss; schedulers ignore them), the latest one
  plain, so every store gets every epoch the checkpoint holds.
- **Placement group**: the Train controller records its worker group's placement group and its
  own actor id in :data:`PLACEMENT_GROUP_FILE` (:func:`record_placement_group`); once the trial has
  ended and that controller is gone, the study driver removes the group
  (:mod:`transcenter.platform.placement`), which an ungracefully stopped controller leaves behind.
- **Identity**: a trial is its Optuna trial number. The searcher puts it in the Tune config under
  :data:`TRIAL_NUMBER_KEY`; :func:`trial_key` turns it into the name of the run folder, the result
  store's ``trial_id`` and the telemetry label, so a trial keeps its name across driver restarts.

Paths are local paths or any pyarrow URI (the run folder lives wherever the study's storage is).
"""
from __future__ import annotations

from transcenter.store.uri import read_text, write_text

CHECKPOINT_FILE = "checkpoint.pt"
FAILURE_FILE = "trial_failure.txt"
PLACEMENT_GROUP_FILE = "placement_group.txt"  # "<placement group id> <controller actor id>", hex
# Key of every epoch report naming the Ray node of the rank-0 worker that trained it (Tune's own
# "node_ip" is the trial driver's).
NODE_KEY = "train_node_ip"
DEVICE_KEY = "train_device"  # the device rank 0 trained on, in words ("NVIDIA H200", "cpu x2")
REPLAY_KEY = "replayed"  # 1 on an epoch reported again from the checkpoint by a new fit()
REPORTS_KEY = "reports"  # checkpoint entry: every epoch's report, oldest first
TRIAL_NUMBER_KEY = "optuna_trial"  # Tune config entry: the trial's Optuna trial number


def trial_key(number: int) -> str:
    """Returns the name of Optuna trial ``number`` in the study: ``trial-00007``."""
    return f"trial-{int(number):05d}"


def split_config(config: dict) -> tuple[str, dict]:
    """Returns ``(trial key, hyperparameters)`` of a Tune trial config made by the searcher."""
    params = {k: v for k, v in config.items() if k != TRIAL_NUMBER_KEY}
    return trial_key(config[TRIAL_NUMBER_KEY]), params


def run_dir(storage_path: str, name: str) -> str:
    """Returns the folder of run ``name`` under ``storage_path`` (Ray Train's, shared with ours)."""
    return f"{storage_path.rstrip('/')}/{name}"


def write_failure(run: str, why: str) -> None:
    """Records why the trial in run folder ``run`` cannot go on (rank 0 only)."""
    write_text(f"{run}/{FAILURE_FILE}", why)


def read_failure(run: str) -> str | None:
    """Returns why the trial in run folder ``run`` could not go on, or None if it could."""
    return read_text(f"{run}/{FAILURE_FILE}")


def started(run: str, fit_id: str) -> bool:
    """True when a worker group of fit ``fit_id`` has already started in run folder ``run``."""
    return read_text(f"{run}/fit-{fit_id}.started") is not None


def mark_started(run: str, fit_id: str) -> None:
    """Records that a worker group of fit ``fit_id`` started in run folder ``run``."""
    write_text(f"{run}/fit-{fit_id}.started", "")


def record_placement_group(run: str, group_id: str, controller_id: str) -> None:
    """Records the placement group ``group_id`` of the latest worker group of run folder ``run`` and
    the actor id of the Train controller that created it (hex ids)."""
    write_text(f"{run}/{PLACEMENT_GROUP_FILE}", f"{group_id} {controller_id}")


def recorded_placement_group(run: str) -> tuple[str, str] | None:
    """Returns ``(placement group id, controller actor id)`` recorded in run folder ``run``, or
    None."""
    text = read_text(f"{run}/{PLACEMENT_GROUP_FILE}")
    if not text or len(text.split()) != 2:
        return None
    group_id, controller_id = text.split()
    return group_id, controller_id
