"""Storage locations and URLs: one place that resolves them, opens them, and hides their secrets.

A location is a local path (relative to the current directory, ``~`` allowed) or a URI pyarrow
understands (``file://``, ``s3://``, ``gs://``, ``hdfs://``). The study driver resolves it once,
to an absolute path or the URI unchanged, and passes only that on: Ray Tune runs every trial in its
own working directory, where a relative path would name another folder.

Any text printed or stored that may hold a URL (a banner, an error message, a trial's error)
goes through :func:`mask`, which replaces the password of ``scheme://user:password@host`` with
``***``. A password in an Optuna database URL never travels further than :func:`take_password`:
Tune pickles the searcher, and with it the storage URL, into the experiment state under
``<study>/tune/``. For PostgreSQL the password moves to ``PGPASSWORD`` in this process's
environment, where libpq (psycopg) reads it, as it would from ``~/.pgpass``; the URL kept everywhere
else has none. Other databases must take their password from their client's own configuration.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

import pyarrow.fs as pafs

MASK = "***"
PASSWORD_ENV = "PGPASSWORD"
# scheme://user:password@ — the password runs to the last '@' before the host part.
_CREDENTIALS = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^\s:/@]*:)(?P<secret>[^\s/]*)@")


def is_uri(location: str) -> bool:
    """True for ``scheme://...``, False for a plain local path."""
    return "://" in location


def is_local(location: str) -> bool:
    """True for a local path or a ``file://`` URI."""
    return not is_uri(location) or location.startswith("file://")


def resolve(location: str) -> str:
    """Returns ``location`` as an absolute local path (``~`` expanded), or the URI unchanged."""
    return location if is_uri(location) else str(Path(location).expanduser().resolve())


def filesystem(location: str) -> tuple[pafs.FileSystem, str]:
    """Returns the pyarrow filesystem of ``location`` and the path inside it."""
    return pafs.FileSystem.from_uri(resolve(location))


def local_path(location: str) -> str:
    """Returns the local path of a local ``location`` (``file://`` stripped), absolute."""
    if not is_local(location):
        raise ValueError(f"{mask(location)!r} is not a local path")
    return resolve(location.removeprefix("file://"))


def mask(text: str) -> str:
    """Returns ``text`` with the password of every ``scheme://user:password@`` URL in it masked."""
    return _CREDENTIALS.sub(lambda m: f"{m.group('head')}{MASK}@", text)


def display(url: str) -> str:
    """Returns ``url`` as it may be shown: its password masked, and ``user:***@`` also where the
    password comes from ``PGPASSWORD`` (:func:`take_password` put it there)."""
    if split_password(url)[1] is not None:
        return mask(url)
    parts = urlsplit(url)
    if dialect(url) == "postgresql" and parts.username and os.environ.get(PASSWORD_ENV):
        return url.replace(f"//{parts.username}@", f"//{parts.username}:{MASK}@", 1)
    return url


def split_password(url: str) -> tuple[str, str | None]:
    """Returns ``(url without its password, the password or None)``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url, None
    host = parts.hostname or ""
    if ":" in host:  # an IPv6 literal
        host = f"[{host}]"
    netloc = f"{parts.username or ''}@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc)), parts.password


def dialect(url: str) -> str:
    """Returns the SQLAlchemy dialect of ``url``: ``postgresql+psycopg://`` -> ``postgresql``."""
    return url.split("://", 1)[0].split("+", 1)[0]


def take_password(url: str) -> str:
    """Returns ``url`` without its password, which moves to ``PGPASSWORD`` (PostgreSQL only).

    Raises:
        ValueError: For a password in the URL of another database (it would be stored).
    """
    clean, password = split_password(url)
    if password is None:
        return url
    if dialect(url) != "postgresql":
        raise ValueError(f"--optuna-url {mask(url)}: a password in a {dialect(url)} URL would be "
                         f"stored in the study's Tune state; give it through the database "
                         f"client's own configuration instead")
    os.environ[PASSWORD_ENV] = unquote(password)
    return clean
