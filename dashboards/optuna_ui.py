"""optuna-dashboard on a study's Optuna DB: ``python -m transcenter.dashboards.optuna_ui <study dir | URL>``.

The live per-trial view of a running study: intermediate AP50 per epoch (the lower-limit curve),
history, parallel coordinates and importance. The study's searcher writes its trials to
``sqlite:///<study dir>/optuna.db``; this serves optuna-dashboard on that DB, bound to 127.0.0.1 by
default (reach a remote head node through an SSH tunnel). A directory without ``optuna.db`` is
refused rather than given an empty new database, which is what optuna-dashboard would make of a
mistyped path. A study on a database server (``--optuna-url``) is served from that URL; its
URL, password included, goes to the database client only; what is printed has the password masked.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Sequence
from pathlib import Path
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from transcenter.store.uri import display, is_local, local_path

OPTUNA_DB = "optuna.db"


class _ThreadedWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # the UI polls; a slow request must not block the others


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, code="-", size="-") -> None:  # the UI polls every few seconds
        pass


def study_storage_url(study_dir: str | Path) -> str:
    """Returns the Optuna storage URL of a study: ``sqlite:///<study dir>/optuna.db`` (absolute)
    for a local study directory, or ``study_dir`` itself when it is a database URL.

    Raises:
        FileNotFoundError: If the directory has no ``optuna.db``; the message says what to pass.
    """
    if not is_local(str(study_dir)):
        return str(study_dir)
    path = Path(local_path(str(study_dir))) / OPTUNA_DB
    if not path.is_file():
        raise FileNotFoundError(
            f"no Optuna database at {path}: pass a local study directory <storage_path>/<study> "
            f"of a study that has started (its searcher creates {OPTUNA_DB} there)")
    return f"sqlite:///{path}"


def serve(storage_url: str, host: str = "127.0.0.1", port: int = 8080, verbose: bool = False) -> None:
    """Serves optuna-dashboard on an Optuna storage until interrupted.

    Args:
        storage_url: An Optuna storage URL, e.g. ``study_storage_url(study_dir)``.
        host: The address to bind; keep 127.0.0.1 unless the network is trusted (the UI can edit
            and delete studies).
        port: The port; 0 picks a free one. The URL is printed (and flushed) once listening.
        verbose: Log every request.
    """
    import optuna_dashboard

    app = optuna_dashboard.wsgi(storage_url)
    handler = WSGIRequestHandler if verbose else _QuietHandler
    with make_server(host, port, app, server_class=_ThreadedWSGIServer, handler_class=handler) as httpd:
        bound_host, bound_port = httpd.server_address[:2]
        print(f"optuna-dashboard on {display(storage_url)}: http://{bound_host}:{bound_port}/dashboard "
              "(Ctrl-C to stop)", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            httpd.serve_forever()


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study_dir", help="local <storage_path>/<study> holding optuna.db, or the "
                                          "study's --optuna-url (postgresql+psycopg://...)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="port (default 8080; 0: any free one)")
    parser.add_argument("--verbose", action="store_true", help="log every request")
    args = parser.parse_args(argv)
    try:
        url = study_storage_url(args.study_dir)
    except FileNotFoundError as why:
        print(f"error: {why}", file=sys.stderr)
        return 2
    serve(url, host=args.host, port=args.port, verbose=args.verbose)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
