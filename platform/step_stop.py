"""A trial's request to its Train workers to stop training at their next step boundary.

Early stopping ends a trial while its workers are training the next epoch. Where the trial keeps
its worker group for the next trial (:class:`~transcenter.platform.compat.WarmWorkerGroup`), the
Train controller runs :func:`request` on each worker instead of killing it; the worker's loop
(:mod:`transcenter.platform.worker`) sees :func:`requested` at its next step and ends its run, so
the group is parked like one whose run finished.
"""
from __future__ import annotations

import threading

_REQUESTED = threading.Event()  # one per worker process: a worker trains one run at a time


def request() -> None:
    """Asks the run training in this process to stop at its next step boundary."""
    _REQUESTED.set()


def requested() -> bool:
    """True once :func:`request` was called since the current run began (:func:`clear`)."""
    return _REQUESTED.is_set()


def clear() -> None:
    """Forgets an earlier run's request; called as each run begins."""
    _REQUESTED.clear()
