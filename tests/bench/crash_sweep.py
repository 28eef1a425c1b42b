"""Crash sweep on a local Ray head: every kill point, every kind of study; prints one JSON object.

For each kind of study (grid; TPE with ASHA, which prunes; multi-objective with MO-ASHA) and each
kill point (the study driver's own writes, and a worker killing the driver once its checkpoint is
written or registered), a fresh smoke study is killed there once, resumed with ``--resume`` until
it finishes, and audited (``tests/crash_resume.py``): rows lost and duplicated, Optuna trials in the
wrong state, epochs trained again. The target is 0 of each.

    python tests/bench/crash_sweep.py [--kinds grid,tpe_asha,multi_objective] [--nth 2]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the helpers
from crash_resume import ALL_POINTS, KINDS, audit, fault, run_to_the_end, study_command
from local_cluster import local_head

from transcenter.platform import faults

SAMPLES = {"grid": 3, "tpe_asha": 3, "multi_objective": 4}
EPOCHS = {"grid": 2, "tpe_asha": 2, "multi_objective": 3}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kinds", default=",".join(KINDS))
    p.add_argument("--points", default=",".join(ALL_POINTS))
    p.add_argument("--nth", type=int, default=2,
                   help="kill at the nth pass of a point (epoch nth for the worker points)")
    args = p.parse_args()
    start = time.time()
    out = {"kill_points_tried": 0, "kills": 0, "studies_completed": 0, "rows_lost": 0,
           "rows_duplicated": 0, "retrained_epochs": 0, "problems": [], "per_kind": {}}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        faults_file = root / "faults.json"
        with local_head(env={faults.ENV: str(faults_file)}) as cluster:
            env = {**os.environ, faults.ENV: str(faults_file)}
            for kind in args.kinds.split(","):
                per_kind = out["per_kind"][kind] = {}
                for point in args.points.split(","):
                    name = f"{kind}-{point}"
                    marker = root / f"{name}.fired"
                    faults_file.write_text(json.dumps([fault(point, marker, args.nth)]))
                    runs = run_to_the_end(study_command(kind, root, name, cluster.address), env,
                                          root / f"{name}.log", max_runs=4)
                    out["kill_points_tried"] += 1
                    out["kills"] += runs.kills
                    done = runs.returncodes[-1] == 0
                    out["studies_completed"] += done
                    result = (audit(root, name, SAMPLES[kind], EPOCHS[kind], runs.kills, faults_file)
                              if done else {"problems": [runs.stderr[-500:]]})
                    out["rows_lost"] += result.get("lost", 0)
                    out["rows_duplicated"] += result.get("duplicates", 0)
                    out["retrained_epochs"] += result.get("retrained", 0)
                    out["problems"] += [f"{name}: {p}" for p in result["problems"]]
                    per_kind[point] = {"fired": marker.exists(), "kills": runs.kills,
                                       "completed": done,
                                       "optuna_states": result.get("optuna_states")}
    out["wall_s"] = round(time.time() - start, 1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
