"""A throwaway PostgreSQL server (Debian's ``postgresql`` binaries, as ``make test`` installs them).

:func:`postgres_server` runs ``initdb`` and ``postgres`` as the ``postgres`` user (the server refuses
to run as root) in a temporary folder, on a free port of 127.0.0.1, with password (SCRAM) logins
only; it creates a role and a database for the tests, yields their URL, and stops the server by
its pid. The yielded :class:`Postgres` can also stop and start the server, and end every session
of the database, as a restart, a failover or an idle timeout would.
"""
from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from procs import stop

USER, DATABASE = "studies", "studies"


@dataclass
class Postgres:
    host: str
    port: int
    password: str  # of USER
    _launch: Callable[[], subprocess.Popen] = field(repr=False)
    _halt: Callable[[subprocess.Popen], None] = field(repr=False)
    _psql: Callable[[str], None] = field(repr=False)
    _server: subprocess.Popen | None = field(default=None, repr=False)

    def url(self, password: str | None = None, database: str = DATABASE) -> str:
        """Returns the SQLAlchemy URL of ``database``, with ``password`` (default: the right one)."""
        return (f"postgresql+psycopg://{USER}:{password or self.password}@{self.host}:{self.port}"
                f"/{database}")

    def start(self) -> None:
        """Starts the server and returns once it accepts connections."""
        self._server = self._launch()

    def stop(self) -> None:
        """Stops the server as a restart does: a fast shutdown, which ends the open sessions."""
        if self._server is not None:
            self._halt(self._server)
            self._server = None

    def end_sessions(self) -> None:
        """Ends every other session of the study database (``pg_terminate_backend``)."""
        self._psql(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                   f"WHERE datname = '{DATABASE}' AND pid <> pg_backend_pid()")


def _binaries() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"))
    if not found:
        pytest.skip("Debian's postgresql is not installed (make test installs it)")
    return Path(found[-1]).parent


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _as_postgres(*cmd: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(["runuser", "-u", "postgres", "--", *cmd], check=True,
                          capture_output=True, text=True, **kwargs)


@contextlib.contextmanager
def postgres_server(password: str, host: str = "127.0.0.1",
                    clients: str | None = None) -> Iterator[Postgres]:
    """Starts a PostgreSQL server on ``host`` with role and database ``studies`` (login
    ``password``), accepting password logins from loopback and the ``clients`` CIDR."""
    bin_dir = _binaries()
    uid = pwd.getpwnam("postgres").pw_uid
    root = Path(tempfile.mkdtemp(prefix="pg-"))
    data, sockets = root / "data", root / "sockets"
    for d in (root, sockets):
        d.mkdir(exist_ok=True)
        os.chown(d, uid, -1)
    pwfile = root / "pw"
    pwfile.write_text(password)
    os.chown(pwfile, uid, -1)
    port = _free_port(host)
    _as_postgres(str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=scram-sha-256",
                 f"--pwfile={pwfile}", "--no-sync")
    if clients:
        with open(data / "pg_hba.conf", "a") as hba:
            hba.write(f"host all all {clients} scram-sha-256\n")
    env = {**os.environ, "PGPASSWORD": password}

    def launch() -> subprocess.Popen:
        server = subprocess.Popen(
            ["runuser", "-u", "postgres", "--", str(bin_dir / "postgres"), "-D", str(data),
             "-p", str(port), "-h", ",".join(dict.fromkeys(["127.0.0.1", host])), "-k", str(sockets),
             "-c", "fsync=off"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while subprocess.run([str(bin_dir / "pg_isready"), "-h", "127.0.0.1", "-p", str(port)],
                             capture_output=True).returncode != 0:
            if server.poll() is not None or time.monotonic() > deadline:
                stop(server)
                raise AssertionError("postgres did not start")
            time.sleep(0.2)
        return server

    def halt(server: subprocess.Popen) -> None:
        try:
            _as_postgres(str(bin_dir / "pg_ctl"), "stop", "-D", str(data), "-m", "fast", "-w",
                         "-t", "30")
        finally:
            stop(server, grace_s=30)

    def psql(command: str) -> None:
        _as_postgres(str(bin_dir / "psql"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres",
                     "-c", command, env=env)

    pg = Postgres(host, port, password, launch, halt, psql)
    try:
        pg.start()
        psql(f"CREATE ROLE {USER} LOGIN PASSWORD '{password}'")
        psql(f"CREATE DATABASE {DATABASE} OWNER {USER}")
        yield pg
    finally:
        pg.stop()
        shutil.rmtree(root, ignore_errors=True)
