"""Storage locations and URLs: one place that resolves them, opens them, and hides their secrets.

A location is a local path (relative to the current directory, ``~`` allowed) or a URI pyarrow
understands (``file://``, ``s3://``, ``gs://``, ``hdfs://``). The study driver resolves it once,
to an absolute path or the URI unchanged, and passes only that on: Ray Tune runs every trial in its
own working directory, where a relative path would name another folder.

Any text printed or stored that may hold a URL (a banner, an error message, a trial's error)
goes through :func:`mask`, which replaces the password of ``scheme://user:password@host`` with
``***``. :func:`split_password` splits a password off a URL; the study driver keeps an Optuna
database's password apart from its URL (:mod:`transcenter.platform.optuna_db`), because Tune pickles
the searcher, and with it the storage URL, into the experiment state under ``<study>/tune/``.
"""
from __future__ import annotations

import os
import posixpath
import re
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pyarrow.fs as pafs

MASK = "***"
PASSWORD_ENV = "PGPASSWORD"  # where libpq (psycopg) reads a PostgreSQL password
# scheme://user:password@ — the password runs to the last '@' of the URL (a secret may hold '/' or
# '@' that its owner did not percent-encode; masking too much is safe).
_CREDENTIALS = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^\s:/@]*:)(?P<secret>\S*)@")


def is_uri(location: str) -> bool:
    """True for ``scheme://...``, False for a plain local path."""
    return "://" in location


def is_local(location: str) -> bool:
    """True for a local path or a ``file://`` URI."""
    return not is_uri(location) or location.startswith("file://")


def resolve(location: str) -> str:
    """Returns ``location`` as an absolute local path (``~`` expanded), or the URI unchanged."""
    return location if is_uri(location) else str(Path(location).expanduser().resolve())


# Tries of each S3 request: AWS's standard retry strategy waits a random time up to a doubling
# bound (capped at 20 s) between them, about two minutes in all, so an object store answering 503, resetting
# connections or timing out for a minute delays a write rather than failing it (pyarrow's default:
# 3 tries, about 2 s).
S3_ATTEMPTS = 12


class RetryingS3FileSystem(pafs.S3FileSystem):
    """pyarrow's ``S3FileSystem`` with AWS's standard retry strategy at ``attempts`` tries per
    request, which it keeps when pickled (pyarrow's own pickling drops the strategy), so the trial
    actors and Train workers that Ray hands it to retry as the driver does."""

    def __init__(self, attempts: int = S3_ATTEMPTS, **options) -> None:
        super().__init__(**options, retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=attempts))
        self.attempts = attempts

    def __reduce__(self):
        return _retrying_s3, (self.attempts, _s3_options(self))


def _s3_options(fs: pafs.S3FileSystem) -> dict:
    """Returns the constructor options of ``fs`` (endpoint, region, credentials, ...): what
    pyarrow's pickling keeps of it."""
    return pafs.S3FileSystem.__reduce__(fs)[1][0]


def _retrying_s3(attempts: int, options: dict) -> RetryingS3FileSystem:
    return RetryingS3FileSystem(attempts, **options)


def filesystem(location: str) -> tuple[pafs.FileSystem, str]:
    """Returns the pyarrow filesystem of ``location`` and the path inside it; for ``s3://``, a
    :class:`RetryingS3FileSystem` with the options the URI and the environment give."""
    fs, path = pafs.FileSystem.from_uri(resolve(location))
    if isinstance(fs, pafs.S3FileSystem):
        fs = RetryingS3FileSystem(S3_ATTEMPTS, **_s3_options(fs))
    return fs, path


def ray_storage(location: str) -> tuple[str, pafs.FileSystem | None]:
    """Returns ``(storage_path, storage_filesystem)`` for a Ray Tune or Ray Train ``RunConfig``: a
    local location as its absolute path and None (Ray opens it); a URI as the path inside its
    :func:`filesystem`, and that filesystem (so Ray's checkpoints retry as the study's own files do)."""
    if is_local(location):
        return local_path(location), None
    fs, path = filesystem(location)
    return path, fs


def object_store_endpoint(location: str) -> str | None:
    """Returns ``host:port`` of the S3 endpoint that ``location`` (``s3://...``) goes to when one
    is configured (``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL``, as pyarrow reads them), else
    None (AWS itself, or not an S3 location)."""
    if not location.startswith("s3://"):
        return None
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if not endpoint:
        return None
    parts = urlsplit(endpoint if "://" in endpoint else f"http://{endpoint}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{parts.hostname}:{port}"


def local_path(location: str) -> str:
    """Returns the local path of a local ``location`` (``file://`` stripped), absolute."""
    if not is_local(location):
        raise ValueError(f"{mask(location)!r} is not a local path")
    return resolve(location.removeprefix("file://"))


def write_text(path: str, text: str) -> None:
    """Writes ``text`` to ``path``, creating its folder."""
    fs, p = filesystem(path)
    fs.create_dir(posixpath.dirname(p), recursive=True)
    with fs.open_output_stream(p) as f:
        f.write(text.encode())


def read_text(path: str) -> str | None:
    """Returns the text at ``path``, or None if there is no such file."""
    fs, p = filesystem(path)
    if fs.get_file_info(p).type == pafs.FileType.NotFound:
        return None
    with fs.open_input_stream(p) as f:
        return f.read().decode()


def delete_file(path: str) -> None:
    """Deletes the file at ``path`` if there is one."""
    fs, p = filesystem(path)
    if fs.get_file_info(p).type != pafs.FileType.NotFound:
        fs.delete_file(p)


def mask(text: str) -> str:
    """Returns ``text`` with the password of every ``scheme://user:password@`` URL in it masked."""
    return _CREDENTIALS.sub(lambda m: f"{m.group('head')}{MASK}@", text)


def display(url: str, kept_apart: bool = False) -> str:
    """Returns ``url`` as it may be shown: its password masked, and ``user:***@`` also where a
    password goes with it from elsewhere (``kept_apart``, or ``PGPASSWORD`` set for PostgreSQL)."""
    if split_password(url)[1] is not None:
        return mask(url)
    parts = urlsplit(url)
    from_env = dialect(url) == "postgresql" and os.environ.get(PASSWORD_ENV)
    if parts.username and (kept_apart or from_env):
        return url.replace(f"//{parts.username}@", f"//{parts.username}:{MASK}@", 1)
    return url


def has_credentials(location: str) -> bool:
    """True when ``location`` holds ``user:password@`` (however the password is written)."""
    return _CREDENTIALS.search(location) is not None


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
