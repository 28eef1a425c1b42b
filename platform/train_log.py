"""Where Ray Train's own lines of a trial go: its log file, and the console only with ``--verbose``.

Ray Train logs two lines per epoch on every worker (``Checkpoint successfully created at: ...``,
``Reporting training result n: TrainingReport(...)``) and a few as its worker group starts, all at
INFO on the ``ray.train`` logger, which Ray forwards to the study's console. A trial's
``ray.train.RunConfig(logging_config=LoggingConfig(log_level=...))`` (public) sets the level of
what reaches the console (but for the report lines, which Ray logs elsewhere: :func:`log_to_file`
holds them back); :func:`log_to_file`, called in each worker, keeps the INFO lines in the study's
log folder (:func:`log_dir`). Warnings and errors reach the console either way.
"""
from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path

from transcenter.store import uri

TRAIN_LOGGER = "ray.train"


def log_dir(study_dir: str, study: str) -> str:
    """Returns the folder of a study's trial logs: ``<study dir>/logs`` for local storage; for a
    URI (``s3://``), ``~/.cache/transcenter/<study>/logs`` on each worker's own node."""
    if uri.is_local(study_dir):
        return f"{uri.local_path(study_dir)}/logs"
    return f"~/.cache/transcenter/{study}/logs"


def console_level(verbose: bool) -> str:
    """Ray Train's console level: its INFO lines with ``--verbose``, else warnings and errors."""
    return "INFO" if verbose else "WARNING"


@contextlib.contextmanager
def log_to_file(folder: str | None, trial: str, rank: int,
                console_level: str = "INFO") -> Iterator[None]:
    """Within: this worker's Ray Train lines at INFO and above are appended to
    ``<folder>/<trial>.log`` (every rank of the trial writes there, each line naming its rank);
    above an INFO ``console_level`` the per-epoch report lines, which ``LoggingConfig`` does not
    govern (:func:`~transcenter.platform.compat.train_report_logger`), stay off the console too.

    Ray Train configures its logger as the worker starts, before the training function runs, so
    a handler added here stays until the function returns."""
    from transcenter.platform.compat import train_report_logger

    loggers = [logging.getLogger(TRAIN_LOGGER), train_report_logger()]
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
    """Turns a warning's traceback into ``(<error type>: <error text>)`` at the end of its line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.levelno < logging.ERROR:
            error = record.exc_info[1]
            record.msg = f"{record.getMessage()} ({type(error).__name__}: {error})"
            record.args, record.exc_info, record.exc_text = None, None, None
        return True


def fold_tracebacks(logger: logging.Logger) -> None:
    """Makes each warning ``logger`` logs with a traceback one line; its errors keep theirs.
    Calling it again on the same logger changes nothing."""
    if not any(isinstance(f, _FoldTraceback) for f in logger.filters):
        logger.addFilter(_FoldTraceback())
