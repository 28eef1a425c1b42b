"""Checkpoint files: saved with ``torch.save``, loaded with ``weights_only=True`` (no pickled code)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from transcenter.model.training.experiment import config_diff


class IncompatibleCheckpointError(ValueError):
    """The checkpoint's model configuration differs from the trial's; the message lists fields."""


def check_compatible(saved_config: dict[str, Any], config) -> None:
    """Raises :class:`IncompatibleCheckpointError` naming every ``model.*`` field that differs."""
    diff = config_diff(saved_config, config)
    if diff:
        fields = ", ".join(f"{k}: checkpoint {a!r} vs config {b!r}" for k, (a, b) in diff.items())
        raise IncompatibleCheckpointError(f"checkpoint is from a different model configuration: {fields}")


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Writes ``state`` atomically (temp file + rename) and returns the path.

    Written through a Python file, so that a failed write (a full disk) leaves its ``OSError``
    as the ``__context__`` of torch's error, which names no cause."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        torch.save(state, f)
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Reads a checkpoint with ``torch.load(weights_only=True)`` onto the CPU."""
    return torch.load(Path(path), map_location="cpu", weights_only=True)
