"""The Optuna study's database: a check, before any trial starts, that it answers.

Its URL never holds a password by the time it gets here: :func:`transcenter.store.uri.take_password`
moved it to ``PGPASSWORD`` when the study spec was built.
"""
from __future__ import annotations

from transcenter.platform.errors import StudyError
from transcenter.store.uri import dialect, display, mask


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
