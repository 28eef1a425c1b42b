"""Where Ray's, Tune's and Ray Train's own lines of a study go: its log files, and the console
only with ``--verbose`` (or when the driver's are errors).

Ray Train logs two lines per epoch on every worker (``Checkpoint successfully created at: ...``,
``Reporting training result n: TrainingReport(...)``) and a few as its worker group starts, all at
INFO on the ``ray.train`` logger. :func:`log_to_file`, called in each worker, keeps them, and the
worker's own warnings (an image it skips), in ``<trial>.log`` in the study's log folder
(:func:`log_dir`). Ray forwards what workers and trial actors print to the driver's console; a
trial's ``ray.train.RunConfig(logging_config=LoggingConfig(log_level=...))`` (public) sets the
level of Ray Train's lines it forwards (but for the report lines, which Ray logs elsewhere:
:func:`log_to_file` holds them back), so the console shows the workers' warnings about the study
(a worker failed, an image skipped). The driver's own Ray and Tune lines (connecting, token
authentication, Tune's state files) go to ``driver.log`` there (:func:`upstream_logs`).
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path

from transcenter.store import uri

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")  # a terminal colour or cursor code
TRAIN_LOGGER = "ray.train"
OWN_LOGGER = "transcenter"  # the worker's own lines (data it skips)


def log_dir(study_dir: str, study: str) -> str:
    """Returns the folder of a study's trial logs: ``<study dir>/logs`` for local storage; for a
    URI (``s3://``), ``~/.cache/transcenter/<study>/logs`` on each worker's own node."""
    if uri.is_local(study_dir):
        return f"{uri.local_path(study_dir)}/logs"
    return f"~/.cache/transcenter/{study}/logs"


class _StripAnsi(logging.Filter):
    """Removes terminal colour codes from a record (Ray colours the dashboard's address)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "\x1b" in message:
            record.msg, record.args = ANSI.sub("", message), ()
        return True


def driver_log(study_dir: str, study: str) -> str:
    """Returns the file of the study driver's Ray, Tune and Train lines: ``driver.log`` in the
    study's log folder (:func:`log_dir`; for a URI, on the driver's own node)."""
    return os.path.expanduser(f"{log_dir(study_dir, study)}/driver.log")


@contextlib.contextmanager
def upstream_logs(path: str, verbose: bool) -> Iterator[None]:
    """Within: this process's Ray, Tune and Train log records (the ``ray`` logger's) at INFO and
    above are appended to ``path``; on the console only their errors, or every level with
    ``verbose``."""
    ray_logger = logging.getLogger("ray")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, delay=True)
    handler.setLevel(logging.INFO)
    handler.addFilter(_StripAnsi())  # Ray's own format; it colours the dashboard's address
    console = {h: h.level for h in ray_logger.handlers if not isinstance(h, logging.FileHandler)}
    if not verbose:
        for h in console:
            h.setLevel(logging.ERROR)
    ray_logger.addHandler(handler)
    try:
        yield
    finally:
        ray_logger.removeHandler(handler)
        handler.close()
        for h, level in console.items():
            h.setLevel(level)


def console_level(verbose: bool) -> str:
    """Ray Train's console level: its INFO lines with ``--verbose``, else warnings and errors."""
    return "INFO" if verbose else "WARNING"


@contextlib.contextmanager
def log_to_file(folder: str | None, trial: str, rank: int,
                console_level: str = "INFO") -> Iterator[None]:
    """Within: this worker's Ray Train and own lines at INFO and above are appended to
    ``<folder>/<trial>.log`` (every rank of the trial writes there, each line naming its rank);
    above an INFO ``console_level`` the per-epoch report lines, which ``LoggingConfig`` does not
    govern (:func:`~transcenter.platform.compat.train_report_logger`), stay off the console too.

    Ray Train configures its logger as the worker starts, before the training function runs, so
    a handler added here stays until the function returns."""
    from transcenter.platform.compat import train_report_logger

    loggers = [logging.getLogger(TRAIN_LOGGER), train_report_logger(), logging.getLogger(OWN_LOGGER)]
    report_logger = loggers[1]
    propagate = report_logger.propagate
    handler = None
    if folder:
        path = Path(os.path.expanduser(folder)) / f"{trial}.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(path)
        handler.setLevel(logging.INFO)
        handler.setFormatter(logging.Formatter(f"%(asctime)s rank {rank} %(levelname)s %(name)s: "
                                               f"%(message)s"))
        for logger in loggers:
            logger.addHandler(handler)
    report_logger.propagate = propagate and logging.getLevelName(console_level) <= logging.INFO
    try:
        yield
    finally:
        report_logger.propagate = propagate
        if handler is not None:
            for logger in loggers:
                logger.removeHandler(handler)
            handler.close()


class _FoldTraceback(logging.Filter):
    """Drops records below ``min_level``; turns a warning's traceback into ``(<error type>: <error
    text>)`` at the end of its line."""

    def __init__(self, min_level: int) -> None:
        super().__init__()
        self.min_level = min_level

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < self.min_level:
            return False
        if record.exc_info and record.levelno < logging.ERROR:
            error = record.exc_info[1]
            record.msg = f"{record.getMessage()} ({type(error).__name__}: {error})"
            record.args, record.exc_info, record.exc_text = None, None, None
        return True


def fold_tracebacks(logger: logging.Logger, min_level: int = logging.NOTSET) -> None:
    """Makes each warning ``logger`` logs with a traceback one line (its errors keep theirs) and
    drops what it logs below ``min_level``. A filter, not the logger's level: ``logging.config``
    (which Ray Train's logging setup calls when a run starts) resets the levels of existing child
    loggers, never their filters. Calling it again on the same logger sets ``min_level`` anew."""
    rule = next((f for f in logger.filters if isinstance(f, _FoldTraceback)), None)
    if rule is None:
        logger.addFilter(_FoldTraceback(min_level))
    else:
        rule.min_level = min_level
