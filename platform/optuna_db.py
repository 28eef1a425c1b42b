"""The Optuna study's database: its password, and a check, before any trial starts, that it answers.

A password given in a PostgreSQL URL is split off when the study's spec is built
(:func:`split_password`) and kept in the spec, never in the URL that Tune's state, ``study.json`` or
a log line holds. :func:`use_password` hands it to PostgreSQL's client library, once, where the
driver starts using the database.
"""
from __future__ import annotations

import os
from urllib.parse import unquote

from transcenter.platform.errors import StudyError
from transcenter.store.uri import PASSWORD_ENV, dialect, display, mask
from transcenter.store.uri import split_password as split_url


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
