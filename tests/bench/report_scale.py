"""The study report at K times a finished study's size: its trials' rows copied K times under new
trial ids, then ``python -m transcenter.dashboards.report`` on the copy, timed.

For a size no study here can reach in an hour (10,000 trials of 70 epochs: the scale bench's
10,000-trial simulated study would record about half a million epoch rows), the copy keeps what
the report's cost depends on: the files per folder, the rows per trial and their columns, from a
real (simulated) study such as ``tests/bench/scale.py --trials 1000 --epochs 70 --root DIR``
leaves. Prints one JSON object: ``{"source_trials", "copies", "trials", "epoch_rows", "store_mb",
"report_s", "report_mb"}``.

    python tests/bench/report_scale.py DIR/scale-1000-sqlite --copies 10
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq


def tile(source: Path, target: Path, copies: int) -> int:
    """Writes ``source``'s study folder to ``target`` with every trial's epoch and trial files
    ``copies`` times (copy k's trial ids prefixed ``c<k>-``); returns the epoch rows written."""
    target.mkdir(parents=True)
    shutil.copy(source / "study.json", target / "study.json")
    rows = 0
    for kind in ("epochs", "trials"):
        (target / kind).mkdir()
        for path in sorted((source / kind).glob("*.parquet")):
            table = pq.read_table(path)
            for k in range(copies):
                ids = pa.array([f"c{k}-{t}" for t in table.column("trial_id").to_pylist()])
                copy = table.set_column(table.schema.get_field_index("trial_id"), "trial_id", ids)
                pq.write_table(copy, target / kind / f"c{k}-{path.name}",  # as the store writes
                               write_statistics=False, use_dictionary=False)
                rows += copy.num_rows if kind == "epochs" else 0
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("study", type=Path, help="a finished study's folder")
    p.add_argument("--copies", type=int, default=10)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / args.study.name
        rows = tile(args.study, target, args.copies)
        files = list(target.glob("*/*.parquet"))
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "transcenter.dashboards.report", str(target), "-o",
                        str(target / "report.html")], check=True, capture_output=True)
        report_s = time.perf_counter() - start
        print(json.dumps({
            "source_trials": len(list((args.study / "trials").glob("*.parquet"))),
            "copies": args.copies, "trials": len(list((target / "trials").glob("*.parquet"))),
            "epoch_rows": rows, "store_mb": round(sum(f.stat().st_size for f in files) / 2**20, 1),
            "report_s": round(report_s, 1),
            "report_mb": round((target / "report.html").stat().st_size / 2**20, 2)}))


if __name__ == "__main__":
    main()
