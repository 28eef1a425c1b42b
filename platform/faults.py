"""Fault injection for the platform's own fault tests and benchmark; off unless switched on.

Switched on by ``TRANSCENTER_FAULTS=<path of a JSON file>`` in the environment of Ray's worker
processes (the test cluster's ``ray start`` sets it; nothing in production does). The file holds a
list of faults; each fires once (its ``marker`` file remembers) on rank 0 of the first trial whose
configuration matches::

    {"match": {"loss.cls_weight": 1.0},   # dotted config values selecting the trials (may be empty)
     "kind": "kill",                      # raise | kill | nan | oom | missing_file
     "epoch": 2, "when": "after",         # before: as the epoch starts; after: trained, not reported
     "marker": "/tmp/x/killed"}

``raise`` raises a RuntimeError (an infrastructure fault: Ray Train retries it), ``kill`` SIGKILLs
the worker process, and ``nan``, ``oom`` and ``missing_file`` raise what a diverged epoch, an
out-of-memory epoch and bad input raise (the trial fails at once).
"""
from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import torch

from transcenter.model.training.engine import DivergedError

ENV = "TRANSCENTER_FAULTS"


def fault_for(overrides: dict[str, Any]) -> dict | None:
    """Returns the first fault whose ``match`` the trial's ``overrides`` satisfy, or None (always
    None while fault injection is off)."""
    path = os.environ.get(ENV)
    if not path or not Path(path).is_file():
        return None
    for fault in json.loads(Path(path).read_text()):
        if all(overrides.get(k) == v for k, v in fault.get("match", {}).items()):
            return fault
    return None


def maybe_inject(fault: dict | None, epoch: int, when: str, rank: int) -> None:
    """Fires ``fault`` if it is due at ``epoch`` (1-based) and ``when``, on rank 0, once."""
    if (not fault or fault.get("epoch") != epoch or fault.get("when", "after") != when
            or rank != 0):
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
    if kind == "missing_file":
        raise FileNotFoundError(f"injected: no such file at epoch {epoch}")
    raise RuntimeError(f"injected fault at epoch {epoch}")
