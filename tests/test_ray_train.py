"""Ray Train: the trial loop on 2 CPU workers (DDP over gloo), recovery from a worker failure, and
the lean trainer's controller inside a trial's actor."""
import json
import subprocess
import sys
import textwrap
import time

import pytest
import ray
from ray import cloudpickle
from ray.train import UserCallback
from ray.util.placement_group import PlacementGroup, placement_group_table

from transcenter.platform.trainer import Resources, build_trainer
from transcenter.platform.trial_files import recorded_placement_group, run_dir
from transcenter.store.metric_names import AP_KEYS, LOSS_KEYS

pytestmark = [pytest.mark.ray, pytest.mark.slow]
cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the cluster cannot import tests/
ONE_EPOCH = {"data.num_train": 8, "data.num_val": 8, "train.epochs": 1, "train.threads": 1}


class EpochLog(UserCallback):
    """Appends every report's epoch to a file (callbacks run in the Train controller)."""

    def __init__(self, path):
        self.path = str(path)

    def after_report(self, run_context, metrics, checkpoint):
        with open(self.path, "a") as f:
            f.write(json.dumps({"epoch": metrics[0]["epoch"], "keys": sorted(metrics[0]),
                                "ranks": len(metrics)}) + "\n")


@ray.remote(num_cpus=0)
class TrialLike:
    """An actor that builds and fits a trainer, as a Tune trial actor does (the Train controller
    then runs in it)."""

    def fit(self, **trainer_args) -> dict:
        import os

        try:
            result = build_trainer(**trainer_args).fit()
        except SystemExit:  # the run was ended as Tune ends a trial it stopped
            return {"stopped": True}
        return {"epoch": result.metrics["epoch"], "checkpoint": result.checkpoint is not None,
                "loss": result.metrics["loss"], "pid": os.getpid(),
                "actor_id": ray.get_runtime_context().get_actor_id()}


# "driver": fitted by this process, with Ray Train's own controller actor; "actor": fitted inside
# an actor, whose process runs the controller and the two workers' process group set-up.
@pytest.mark.parametrize("where", ["driver", "actor"])
@pytest.mark.parametrize("kind", ["raise"])  # SIGKILL: tests/test_reliability.py
def test_two_workers_report_every_epoch_once_across_a_worker_failure(ray_cluster, inject_faults,
                                                                     tmp_path, kind, where):
    log = tmp_path / "reports.jsonl"
    inject_faults([{"epoch": 2, "marker": str(tmp_path / "fault"), "kind": kind}])
    args = dict(name=f"run-{kind}", storage_path=str(tmp_path / "storage"), preset="smoke",
                overrides={"data.num_train": 16, "data.num_val": 8, "train.epochs": 3,
                           "train.threads": 1},
                resources=Resources(workers=2, keep_workers_s=0), max_failures=2,
                callbacks=[EpochLog(log)])
    if where == "driver":
        result = build_trainer(**args).fit()
        fitted = {"epoch": result.metrics["epoch"], "checkpoint": result.checkpoint is not None}
    else:
        actor = TrialLike.remote()
        fitted = ray.get(actor.fit.remote(**args))
        ray.kill(actor)
    assert (tmp_path / "fault").exists()  # the fault really fired
    reports = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["epoch"] for r in reports] == [1, 2, 3]  # epoch 2 re-run after restart, each once
    assert all(r["ranks"] == 2 for r in reports)
    assert set(LOSS_KEYS) | set(AP_KEYS) | {"epoch", "lr", "images_per_s"} <= set(reports[-1]["keys"])
    assert fitted["epoch"] == 3 and fitted["checkpoint"]


class ControllerProcess(UserCallback):
    """Writes, from wherever the Train controller runs, its pid and whether torch is loaded."""

    def __init__(self, path):
        self.path = str(path)

    def after_report(self, run_context, metrics, checkpoint):
        import os

        with open(self.path, "w") as f:
            f.write(json.dumps({"pid": os.getpid(), "torch": "torch" in sys.modules}))


def _group_state(storage: str, run: str) -> tuple[str, str]:
    """Returns (placement group id, its state) of the latest worker group of ``run``."""
    group_id, _ = recorded_placement_group(run_dir(storage, run))
    return group_id, placement_group_table(PlacementGroup(ray.PlacementGroupID(bytes.fromhex(group_id))))["state"]


def test_a_trial_actors_controller_runs_in_it_without_torch_and_records_its_group(ray_cluster,
                                                                                  tmp_path):
    """The lean trainer (platform/compat.py) fitted inside an actor: the Train controller runs in
    that actor's process (no controller actor), never loads torch there, records its worker
    group's placement group against that actor, and, keeping no workers for a next run, removes
    the group when the run ends."""
    flag = tmp_path / "controller.json"
    storage = str(tmp_path / "storage")
    actor = TrialLike.remote()
    fitted = ray.get(actor.fit.remote(
        name="lean", storage_path=storage, preset="smoke", overrides=ONE_EPOCH,
        resources=Resources(keep_workers_s=0), callbacks=[ControllerProcess(flag)]))
    assert fitted["epoch"] == 1
    assert json.loads(flag.read_text()) == {"pid": fitted["pid"], "torch": False}
    _, controller_id = recorded_placement_group(run_dir(storage, "lean"))
    assert controller_id == fitted["actor_id"]
    assert _group_state(storage, "lean")[1] == "REMOVED"
    ray.kill(actor)


def test_a_finished_runs_workers_serve_the_actors_next_run_and_train_it_alike(ray_cluster, tmp_path):
    """A run that finished keeps its worker group for the next run of its actor
    (WarmWorkerGroup in platform/compat.py): the next run with the same resources starts on the
    same group and trains exactly as on new workers; one with other resources gets a new group
    and frees the kept one; a kept group no run takes is removed after ``keep_workers_s``."""
    storage = str(tmp_path / "storage")
    actor = TrialLike.remote()
    args = dict(storage_path=storage, preset="smoke", overrides=ONE_EPOCH)
    kept = Resources(workers=2, keep_workers_s=60)  # DDP: its process group is set up again
    first = ray.get(actor.fit.remote(name="first", resources=kept, **args))
    group, state = _group_state(storage, "first")
    assert state == "CREATED"  # kept for the next run
    again = ray.get(actor.fit.remote(name="again", resources=kept, **args))
    assert _group_state(storage, "again") == (group, "CREATED")
    assert again["loss"] == first["loss"]  # nothing of the first run leaks into the second
    other = ray.get(actor.fit.remote(name="other", **args,
                                     resources=Resources(cpus_per_worker=0.5, keep_workers_s=2)))
    assert other["epoch"] == 1
    assert _group_state(storage, "first") == (group, "REMOVED")
    other_group, state = _group_state(storage, "other")
    assert other_group != group and state == "CREATED"
    deadline = time.monotonic() + 30
    while _group_state(storage, "other")[1] != "REMOVED":
        assert time.monotonic() < deadline, "the kept group outlived keep_workers_s"
        time.sleep(0.5)
    ray.kill(actor)



class EndAtFirstReport(UserCallback):
    """Ends the run at its first report as Tune ends a trial it stopped: ``SystemExit`` from the
    report, while the workers train on."""

    def after_report(self, run_context, metrics, checkpoint):
        raise SystemExit(0)


def test_a_stopped_runs_workers_stop_at_a_step_and_serve_the_actors_next_run(ray_cluster, tmp_path):
    """A run ended mid-training (Tune stopping its trial) keeps its worker group too: its two
    DDP workers stop together at a step boundary when asked (platform/step_stop.py) instead of
    training the remaining epochs, well within compat.STOP_AT_A_STEP_S, and the actor's next run
    starts on the same group and gets only its own reports."""
    storage = str(tmp_path / "storage")
    log = tmp_path / "reports.jsonl"
    actor = TrialLike.remote()
    kept = Resources(workers=2, keep_workers_s=60)
    long_run = {**ONE_EPOCH, "data.num_train": 16, "train.epochs": 50}
    stopped = ray.get(actor.fit.remote(name="stopped", storage_path=storage, preset="smoke",
                                       overrides=long_run, resources=kept,
                                       callbacks=[EndAtFirstReport()]))
    assert stopped == {"stopped": True}
    group, state = _group_state(storage, "stopped")
    assert state == "CREATED"  # kept: the workers stopped at a step instead of being aborted
    briefly = Resources(workers=2, keep_workers_s=1)  # the same workers, kept 1 s after this run
    again = ray.get(actor.fit.remote(name="again", storage_path=storage, preset="smoke",
                                     overrides=ONE_EPOCH, resources=briefly,
                                     callbacks=[EpochLog(log)]))
    assert _group_state(storage, "again")[0] == group
    assert again["epoch"] == 1 and again["checkpoint"]
    assert [json.loads(line)["epoch"] for line in log.read_text().splitlines()] == [1]
    deadline = time.monotonic() + 30  # the session's next tests need the group's CPUs
    while _group_state(storage, "again")[1] != "REMOVED":
        assert time.monotonic() < deadline, "the kept group outlived keep_workers_s"
        time.sleep(0.5)
    ray.kill(actor)


def test_a_worker_exiting_under_its_training_thread_records_no_failure():
    """Ray ends a worker whose trial or job is gone by letting its process exit: the exit removes
    the training thread's temporary checkpoint folder, and the FileNotFoundError the thread then
    meets is no input error of the trial (it once failed a trial for good after a driver crash)."""
    code = textwrap.dedent("""
        import atexit, os, sys, tempfile, threading, time
        started, ended = threading.Event(), threading.Event()
        atexit.register(ended.wait, 60)  # runs last: after the exit removed the temporary folders
        from transcenter.platform.worker import failure_line

        def train(tmp):
            open(f"{tmp}/.checkpoint.pt.tmp", "wb").close()
            started.set()
            while os.path.isdir(tmp):
                time.sleep(0.01)
            try:
                os.replace(f"{tmp}/.checkpoint.pt.tmp", f"{tmp}/checkpoint.pt")
            except FileNotFoundError as e:
                print("while exiting:", failure_line(e, 1), flush=True)
            ended.set()

        error = FileNotFoundError(2, "No such file or directory")
        print("while running:", failure_line(error, 1), flush=True)
        folder = tempfile.TemporaryDirectory()
        threading.Thread(target=train, args=(folder.name,), daemon=True).start()
        started.wait(60)  # the thread is writing its checkpoint when the process exits
        sys.exit(0)
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines() == [
        "while running: FileNotFoundError at epoch 1: [Errno 2] No such file or directory",
        "while exiting: None"], done.stdout
