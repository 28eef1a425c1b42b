"""The Optuna study's database: its password, a check before any trial starts that it answers, and
riding over a restart or a dropped connection while the study runs.

A password given in a PostgreSQL URL is split off when the study's spec is built
(:func:`split_password`) and kept in the spec, never in the URL that Tune's state, ``study.json`` or
a log line holds. :func:`use_password` hands it to PostgreSQL's client library, once, where the
driver starts using the database.

The searcher's engine checks each pooled connection before use (``pool_pre_ping``: a connection the
server dropped, by a restart, an idle timeout or ``pg_terminate_backend``, is replaced), and its
Optuna calls go through :func:`retrying`, which waits out an outage of up to ``OUTAGE_S`` seconds.
"""
from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import unquote

from transcenter.platform.errors import StudyError
from transcenter.store.uri import PASSWORD_ENV, dialect, display, mask
from transcenter.store.uri import split_password as split_url

if TYPE_CHECKING:
    import optuna

logger = logging.getLogger(__name__)
T = TypeVar("T")
OUTAGE_S = 120.0  # how long the study waits for its Optuna database to answer again
ENGINE_KWARGS = {"pool_pre_ping": True}  # a connection the server dropped is replaced at checkout


def open_storage(url: str) -> optuna.storages.RDBStorage:
    """Returns Optuna's storage at ``url``. A SQLite file is put in write-ahead-log mode, with
    commits that wait for the log's write but not for the disk (``synchronous=NORMAL``): a killed
    study loses no committed change; a power cut may lose the last commits.
    """
    import optuna
    import sqlalchemy

    storage = optuna.storages.RDBStorage(url, engine_kwargs=ENGINE_KWARGS)
    if storage.engine.dialect.name == "sqlite":
        @sqlalchemy.event.listens_for(storage.engine, "connect")
        def write_ahead(connection, _record) -> None:
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")

        storage.engine.dispose()  # the connection that created the tables predates the pragmas
    return storage


def split_password(url: str) -> tuple[str, str | None]:
    """Returns ``(url without its password, the decoded password or None)``.

    Raises:
        ValueError: For a password in the URL of another database than PostgreSQL (it has no
            variable to take it, so it would be stored with the URL).
    """
    clean, password = split_url(url)
    if password is None:
        return url, None
    if dialect(url) != "postgresql":
        raise ValueError(f"--optuna-url {mask(url)}: a password in a {dialect(url)} URL would be "
                         f"stored in the study's Tune state; give it through the database "
                         f"client's own configuration instead")
    return clean, unquote(password)


def use_password(password: str | None) -> None:
    """Sets ``PGPASSWORD`` to ``password`` for this process and those it starts (the local Ray
    nodes); does nothing for None. The environment is not touched anywhere else."""
    if password is not None:
        os.environ[PASSWORD_ENV] = password


def check_storage(url: str, timeout_s: int = 5) -> None:
    """Opens and closes one connection to the database at ``url``.

    Raises:
        StudyError: Within about ``timeout_s`` seconds, naming the masked URL, when the server does
            not answer, refuses the login, the database is missing or its driver is not installed.
    """
    if dialect(url) == "sqlite":
        return  # a local file, created on first use
    import sqlalchemy
    from sqlalchemy.exc import SQLAlchemyError

    connect_args = {"connect_timeout": timeout_s} if dialect(url) in ("postgresql", "mysql") else {}
    try:
        engine = sqlalchemy.create_engine(url, connect_args=connect_args, poolclass=sqlalchemy.NullPool)
        with engine.connect():
            pass
    except (SQLAlchemyError, ImportError, ValueError) as e:
        reason = str(getattr(e, "orig", None) or e).strip().splitlines()[0]
        raise StudyError(f"the Optuna database {display(url)} cannot be opened: {mask(reason)}") from None


def lost_connection(error: BaseException) -> BaseException | None:
    """Returns the error, ``error`` or one it was raised from, that says the database connection
    was lost or refused (the server restarted, dropped the session, or does not answer); None for
    an error in what was asked of it."""
    import sqlalchemy.exc

    while error is not None:
        if (isinstance(error, (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError))
                or getattr(error, "connection_invalidated", False)):
            return error
        error = error.__cause__ or error.__context__
    return None


def retrying(call: Callable[[], T], what: str, url: str, limit_s: float = OUTAGE_S) -> T:
    """Returns ``call()``, called again after a lost connection (waits of 0.5 s doubling to 8 s)
    until it succeeds or ``limit_s`` seconds have passed. ``call`` must be safe to repeat: the
    outage may have cut the reply to a write that the database committed.

    Raises:
        StudyError: The database did not answer for ``limit_s`` seconds, naming ``what`` and the
            masked ``url`` (``--resume`` continues the study once it is back).
        Exception: Any other error of ``call``, as raised.
    """
    deadline, wait = time.monotonic() + limit_s, 0.5
    while True:
        try:
            return call()
        except Exception as e:
            lost = lost_connection(e)
            if lost is None:
                raise
            reason = mask(str(getattr(lost, "orig", None) or lost).strip().splitlines()[0])
            if time.monotonic() + wait > deadline:
                raise StudyError(f"the Optuna database {display(url)} did not answer for "
                                 f"{limit_s:g} s ({what}): {reason}; run the study again with "
                                 f"--resume once it is back") from None
            logger.warning("the Optuna database %s did not answer (%s): %s; trying again in "
                           "%.1f s", display(url), what, reason, wait)
            time.sleep(wait)
            wait = min(2 * wait, 8.0)
