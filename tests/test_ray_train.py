"""Ray Train: the trial loop on 2 CPU workers (DDP over gloo), and recovery from a worker failure."""
import json
import sys

import pytest
from ray import cloudpickle
from ray.train import UserCallback

from transcenter.model.metric_names import AP_KEYS, LOSS_KEYS
from transcenter.platform.trainer import Resources, build_trainer

pytestmark = [pytest.mark.ray, pytest.mark.slow]
cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the cluster cannot import tests/


class EpochLog(UserCallback):
    """Appends every report's epoch to a file (callbacks run in the Train controller)."""

    def __init__(self, path):
        self.path = str(path)

    def after_report(self, run_context, metrics, checkpoint):
        with open(self.path, "a") as f:
            f.write(json.dumps({"epoch": metrics[0]["epoch"], "keys": sorted(metrics[0]),
                                "ranks": len(metrics)}) + "\n")


@pytest.mark.parametrize("kind", ["raise"])  # SIGKILL: tests/test_reliability.py
def test_two_workers_report_every_epoch_once_across_a_worker_failure(ray_cluster, inject_faults,
                                                                     tmp_path, kind):
    log = tmp_path / "reports.jsonl"
    inject_faults([{"epoch": 2, "marker": str(tmp_path / "fault"), "kind": kind}])
    trainer = build_trainer(
        name=f"run-{kind}", storage_path=str(tmp_path / "storage"), preset="smoke",
        overrides={"data.num_train": 16, "data.num_val": 8, "train.epochs": 3, "train.threads": 1},
        resources=Resources(workers=2), max_failures=2, callbacks=[EpochLog(log)])
    result = trainer.fit()
    assert (tmp_path / "fault").exists()  # the fault really fired
    reports = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["epoch"] for r in reports] == [1, 2, 3]  # epoch 2 re-run after restart, each once
    assert all(r["ranks"] == 2 for r in reports)
    assert set(LOSS_KEYS) | set(AP_KEYS) | {"epoch", "lr", "images_per_s"} <= set(reports[-1]["keys"])
    assert result.metrics["epoch"] == 3 and result.checkpoint is not None
