"""A study on a three-node Ray cluster on this machine, losing a worker node mid-study: prints one
JSON object (nodes, trials, trials per node, study wall time, rows lost and duplicated).

The cluster is the one ``tests/test_cluster.py`` uses (``tests/netns_cluster.py``): a head and two
1-CPU worker nodes in network namespaces, S3 (moto) and PostgreSQL on the host. Needs root.

    python tests/bench/cluster.py [--trials 4] [--epochs 3]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the cluster helpers
from faults import row_counts
from netns_cluster import node_loss_study, study_cluster


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    with study_cluster(workers=2, pg_password="bench-secret") as (cluster, s3, pg):
        run = node_loss_study(cluster, s3, pg, "bench", args.trials, args.epochs)
        epochs = run.store.read_epochs()  # while the S3 server is up
        rows = row_counts(run.store, args.trials * args.epochs)
    per_node = epochs.groupby("node_ip")["trial_id"].nunique().to_dict()
    print(json.dumps({
        "nodes": 1 + len(cluster.workers), "trials": args.trials,
        "trials_per_node": per_node, "node_killed": run.killed, "exit_code": run.returncode,
        "study_wall_s": round(run.wall_s, 1), "rows_expected": rows["expected"],
        "rows_found": rows["found"], "duplicates": rows["duplicates"], "lost_rows": rows["lost"]}))


if __name__ == "__main__":
    main()
