"""Scale: a simulated TPE + ASHA study of N trials through the real stack, and what grows with N.

The trials replay the built-in surrogate's learning curves (``--simulate surrogate``) on a clock
sped up ``--time-scale`` times, so a study of thousands of trials runs on one machine; Tune, the
Optuna searcher and database, ASHA, the result store and the report are the real ones. The study
runs in this process (its driver), on a local Ray started here with ``--slots`` trials at once.
Prints one JSON object, ``{"runs": [...]}``, one entry per N:

- ``ask_p50_ms``/``ask_p99_ms``, ``tell_p50_ms``/``tell_p99_ms``: the searcher's ``suggest`` and
  ``on_trial_complete`` over the last 100 trials;
- ``driver_cpu_s_per_trial``: this process's CPU seconds (all its threads) per trial;
- ``busy_fraction``: the trials' summed scaled epoch time over ``slots × wall``, as Tune's own
  scalability benchmark reports it; ``idle_slot_s_per_trial``: the rest of ``slots × wall`` per
  trial, the real seconds a slot waits on the driver, Tune and Ray for each trial whatever the time
  scale (the slots stay 90 % busy while a trial's real duration is at least 9 times that);
- ``optuna_db_mb``, ``optuna_rows_per_trial`` (rows of every table of the Optuna database: the
  study's SQLite file, or with ``--storage postgresql`` a PostgreSQL server started for the run);
- ``store_files``, ``store_mb``, ``read_epochs_s`` (a fresh ``ResultStore.read_epochs``);
- ``report_s``, ``report_mb``: ``python -m transcenter.dashboards.report`` on the study;
- ``dashboard_load_s``: optuna-dashboard's study page shown in headless Chromium, when installed.

    python tests/bench/scale.py --trials 100,1000 [--storage sqlite,postgresql] [--epochs 70]
        [--slots 16] [--time-scale 1000] [--sampler tpe] [--root DIR]
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import ray

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the browser helpers

from transcenter.platform.search import StudySearch
from transcenter.platform.study import StudySpec, run_study
from transcenter.store.results import ResultStore

SPACE_STUDY = "full_search"  # the widest search space of the project's studies


class Timed:
    """Wraps ``StudySearch.<method>`` to record each call's seconds in ``calls``."""

    def __init__(self, method: str) -> None:
        self.method, self.calls = method, []
        self._original = getattr(StudySearch, method)

    def __enter__(self) -> Timed:
        original, calls = self._original, self.calls

        def timed(search, *args, **kwargs):
            start = time.perf_counter()
            try:
                return original(search, *args, **kwargs)
            finally:
                calls.append(time.perf_counter() - start)

        setattr(StudySearch, self.method, timed)
        return self

    def __exit__(self, *exc) -> None:
        setattr(StudySearch, self.method, self._original)


def _ms(values: list[float], q: float) -> float:
    values = sorted(values)
    return round(1000 * values[min(len(values) - 1, int(q * len(values)))], 2) if values else None


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _sqlite_size(path: Path) -> tuple[float, int]:
    """Returns the SQLite database's size in MB and its rows over every table."""
    with sqlite3.connect(path) as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        rows = sum(db.execute(f'SELECT COUNT(*) FROM "{t}"').fetchone()[0] for t in tables)
    return path.stat().st_size / 2**20, rows


def _postgres_size(url: str) -> tuple[float, int]:
    """Returns the PostgreSQL database's size in MB and its rows over the public schema's tables."""
    import psycopg

    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as db:
        size = db.execute("SELECT pg_database_size(current_database())").fetchone()[0]
        tables = [r[0] for r in db.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
        rows = sum(db.execute(f'SELECT COUNT(*) FROM "{t}"').fetchone()[0] for t in tables)
    return size / 2**20, rows


@contextlib.contextmanager
def _optuna_database(storage: str, trials: int):
    """Yields the ``--optuna-url`` of a run (None: the study's own SQLite file)."""
    if storage == "sqlite":
        yield None
        return
    from postgres import postgres_server

    with postgres_server(f"scale-{trials}") as pg:
        yield pg.url()


def _dashboard_load_s(study: Path | str) -> float | None:
    """Seconds from opening optuna-dashboard's study page (on a study folder or a database URL) to
    its trials being listed, or None without Chromium."""
    if not os.access("/usr/bin/chromium", os.X_OK):
        return None
    from browser import Browser, get_json, optuna_dashboard

    with optuna_dashboard(study) as base, Browser(width=1280, height=1000) as browser:
        sid = get_json(f"{base}/api/studies")["study_summaries"][0]["study_id"]
        start = time.perf_counter()
        browser.open(f"{base}/dashboard/studies/{sid}", timeout_s=600)
        browser.wait_for("document.body.innerText.includes('Trial')", timeout_s=600)
        return round(time.perf_counter() - start, 2)


def one_run(space, trials: int, epochs: int, slots: int, time_scale: float, root: Path,
            storage: str, optuna_url: str | None, sampler: str = "tpe") -> dict:
    """Runs one simulated study of ``trials`` with its Optuna study at ``optuna_url`` (None: the
    study folder's SQLite file); returns its row of the bench's output."""
    spec = StudySpec.create(name=f"scale-{trials}-{storage}", space=space, sampler=sampler, asha=True,
                            preset="smoke", num_samples=trials, overrides={"train.epochs": epochs},
                            max_concurrent_trials=slots, storage_path=str(root),
                            simulate="surrogate", time_scale=time_scale, optuna_url=optuna_url)
    with Timed("suggest") as ask, Timed("on_trial_complete") as tell:
        cpu, start = _cpu_s(), time.perf_counter()
        with contextlib.redirect_stdout(sys.stderr):  # Tune's tables; stdout is the JSON
            run_study(spec)
        wall, cpu = time.perf_counter() - start, _cpu_s() - cpu
    directory = root / spec.name
    start = time.perf_counter()
    epochs_df = ResultStore(str(root), spec.name).read_epochs()
    read_s = time.perf_counter() - start
    busy_s = float(epochs_df["time_s"].sum()) / time_scale  # real seconds the trials' epochs took
    store = list(directory.glob("*/**/*.parquet"))
    db_mb, db_rows = (_sqlite_size(directory / "optuna.db") if optuna_url is None
                      else _postgres_size(optuna_url))
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "transcenter.dashboards.report", str(directory), "-o",
                    str(directory / "report.html")], check=True, capture_output=True)
    report_s = time.perf_counter() - start
    return {"trials": trials, "epochs": epochs, "slots": slots, "storage": storage,
            "sampler": sampler,
            "epoch_rows": len(epochs_df), "wall_s": round(wall, 1),
            "ask_p50_ms": _ms(ask.calls[-100:], 0.5), "ask_p99_ms": _ms(ask.calls[-100:], 0.99),
            "tell_p50_ms": _ms(tell.calls[-100:], 0.5), "tell_p99_ms": _ms(tell.calls[-100:], 0.99),
            "driver_cpu_s_per_trial": round(cpu / trials, 3),
            "busy_fraction": round(busy_s / (slots * wall), 3),
            "idle_slot_s_per_trial": round((slots * wall - busy_s) / trials, 3),
            "optuna_db_mb": round(db_mb, 2), "optuna_rows_per_trial": round(db_rows / trials, 1),
            "store_files": len(store),
            "store_mb": round(sum(p.stat().st_size for p in store) / 2**20, 2),
            "read_epochs_s": round(read_s, 2), "report_s": round(report_s, 1),
            "report_mb": round((directory / "report.html").stat().st_size / 2**20, 2),
            "dashboard_load_s": _dashboard_load_s(optuna_url or directory)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", default="100,1000", help="comma-separated study sizes")
    p.add_argument("--epochs", type=int, default=70)
    p.add_argument("--slots", type=int, default=16, help="trials at once (simulated GPUs)")
    p.add_argument("--time-scale", type=float, default=1000.0)
    p.add_argument("--storage", default="sqlite", help="comma-separated Optuna databases: sqlite, "
                   "postgresql (a server started per run; needs Debian's postgresql, as make test)")
    p.add_argument("--sampler", default="tpe", help="the study's sampler (tpe, mtpe, ...)")
    p.add_argument("--root", help="keep the studies' folders here (default: a temporary folder)")
    args = p.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "studies"))
    space = __import__(SPACE_STUDY).SPACE
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    runs = []
    with (contextlib.nullcontext(args.root) if args.root else tempfile.TemporaryDirectory()) as tmp:
        for storage in args.storage.split(","):
            if storage not in ("sqlite", "postgresql"):
                p.error(f"--storage {storage!r}: sqlite or postgresql")
            for n in (int(x) for x in args.trials.split(",")):
                with _optuna_database(storage, n) as url:
                    runs.append(one_run(space, n, args.epochs, args.slots, args.time_scale,
                                        Path(tmp), storage, url, args.sampler))
                print(json.dumps(runs[-1]), file=sys.stderr)
    print(json.dumps({"runs": runs}))


if __name__ == "__main__":
    main()
