"""One test per workaround in platform/compat.py: each fails when upstream Ray or Optuna changes the
behaviour the workaround relies on, so an upgrade says which workaround to drop or redo."""
import dataclasses
import inspect
import logging
import os
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import optuna
import pytest
import ray
import ray._private.worker
import ray.train.v2._internal.constants as train_constants
from ray.train import ScalingConfig
from ray.train.torch import TorchTrainer
from ray.train.v2._internal.callbacks.datasets import DatasetsCallback
from ray.train.v2._internal.callbacks.placement_group_callback import PlacementGroupCleanerCallback
from ray.tune.search.optuna import OptunaSearch

from transcenter.platform import compat
from transcenter.platform.search import Categorical, Float, SearchSpace


def test_other_ray_or_optuna_versions_are_refused_naming_both():
    compat.check_versions("2.60.0", "5.0.1")  # the pinned ones
    with pytest.raises(ImportError, match=r"written for Ray 2\.60\.x and Optuna 5\.x, but Ray "
                                          r"2\.61\.0 and Optuna 5\.0\.1 are installed"):
        compat.check_versions("2.61.0", "5.0.1")
    with pytest.raises(ImportError, match=r"but Ray 2\.60\.0 and Optuna 6\.0\.0 are installed"):
        compat.check_versions("2.60.0", "6.0.0")


def _noop(config):
    pass


class _Stop(Exception):
    """Raised by a stand-in where the real call would need a running Ray cluster."""


def _stop(*args, **kwargs):
    raise _Stop


def test_upstream_still_adds_a_dataset_callback_and_a_cleaner_per_run():
    """LeanTorchTrainer: drop its callback filter once TorchTrainer stops adding Ray Data's callback
    (a DatasetManager actor per worker group) for trials without datasets, and its recorder once
    Train stops starting a PlacementGroupCleaner actor per run (or offers an option against it)."""
    upstream = TorchTrainer(_noop, scaling_config=ScalingConfig(num_workers=1))
    kinds = {type(c) for c in upstream._create_default_callbacks()}
    assert {DatasetsCallback, PlacementGroupCleanerCallback} <= kinds
    lean = compat.LeanTorchTrainer(_noop, run="/nowhere", scaling_config=ScalingConfig(num_workers=1))
    kinds = {type(c) for c in lean._create_default_callbacks()}
    assert not kinds & {DatasetsCallback, PlacementGroupCleanerCallback}
    assert compat.PlacementGroupRecorder in kinds


def test_upstream_still_runs_a_controller_actor_and_tune_reports_through_a_queue_actor(monkeypatch):
    """LeanTorchTrainer's in-process controller and the trial's ReportToTune: drop them once Ray
    Train runs the controller of a run under Tune without an actor of its own, and once Tune's
    report callback no longer needs a queue actor to reach the trial. The overridden hook must
    still receive the controller's constructor arguments.

    Checked by behaviour without a cluster: Ray's calls that would need one (``ray.put``,
    ``ray.remote``, the Tune session) are replaced by stand-ins that record what upstream hands
    them and then stop it."""
    import ray.train.v2.api.data_parallel_trainer as data_parallel_trainer
    import ray.tune.integration.ray_train as tune_ray_train
    from ray.train.v2._internal.execution.controller import TrainController
    from ray.tune.integration.ray_train import TuneReportCallback

    # fit() hands the controller's constructor arguments to _initialize_and_run_controller ...
    trainer = TorchTrainer(_noop, scaling_config=ScalingConfig(num_workers=1))
    passed = {}

    def record(**kwargs):
        passed.update(kwargs)
        raise _Stop

    monkeypatch.setattr(data_parallel_trainer, "ObjectRefWrapper", lambda fn: fn)  # not ray.put
    monkeypatch.setattr(trainer, "_initialize_and_run_controller", record)
    with pytest.raises(_Stop):
        trainer.fit()
    assert passed and set(passed) <= set(inspect.signature(TrainController.__init__).parameters)

    # ... which makes the controller a Ray actor of its own and constructs it with them.
    made = []

    def remote(**options):
        def actor_class(cls):
            made.append(cls)
            return SimpleNamespace(remote=_stop)
        return actor_class

    fake_ray = SimpleNamespace(remote=remote, _raylet=ray._raylet,
                               get_runtime_context=lambda: SimpleNamespace(get_node_id=lambda: "n"))
    monkeypatch.setattr(data_parallel_trainer, "ray", fake_ray)
    with pytest.raises(_Stop):
        data_parallel_trainer.DataParallelTrainer._initialize_and_run_controller(trainer, **passed)
    assert made == [TrainController]

    # Tune's report callback sends each report through the queue the Tune session keeps for
    # other actors (the controller actor) to reach the trial.
    queue = SimpleNamespace(items=[])
    queue.put = queue.items.append
    monkeypatch.setattr(tune_ray_train, "_in_tune_session", lambda: True)
    monkeypatch.setattr(tune_ray_train, "get_session",
                        lambda: SimpleNamespace(_get_or_create_inter_actor_queue=lambda: queue))
    TuneReportCallback().after_report(run_context=None, metrics=[{"AP50": 1.0}], checkpoint=None)
    assert queue.items == [{"AP50": 1.0}]


def test_upstream_torch_trainer_still_imports_torch_and_lean_config_mirrors_it():
    """LeanTorchConfig: drop it once ``ray.train.torch`` no longer imports torch at import; until
    then it must carry TorchConfig's fields, CUDA-device sharing and training-function context."""
    from ray.train.torch import TorchConfig
    from ray.train.torch.config import TorchConfigContextManager

    code = "import sys, ray.train.torch; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "True"
    upstream, lean = TorchConfig(), compat.LeanTorchConfig()
    assert {f.name for f in dataclasses.fields(TorchConfig)} == set(vars(lean))
    assert lean.torch_config() == upstream
    assert compat.LeanTorchBackend.share_cuda_visible_devices == upstream.backend_cls.share_cuda_visible_devices
    assert upstream.train_func_context is TorchConfigContextManager
    assert lean.framework == upstream.framework


def test_upstream_optuna_search_still_records_stopped_trials_as_complete():
    """StudySearch + the OptunaSearch accessors: drop them once upstream tells Optuna PRUNED for a
    trial a scheduler stopped early (today: COMPLETE with the early value)."""
    search = OptunaSearch(space=SearchSpace({"x": Float(0.0, 1.0)}), metric="AP50", mode="max",
                          seed=0)
    search.suggest("t1")
    assert compat.open_optuna_trial(search, "t1") is not None
    search.on_trial_result("t1", {"AP50": 3.0, "training_iteration": 1, "epoch": 1})
    search.on_trial_complete("t1", {"AP50": 3.0, "training_iteration": 1, "epoch": 1})  # stopped at 1
    assert [t.state for t in compat.optuna_study(search).trials] == [optuna.trial.TrialState.COMPLETE]
    assert compat.open_optuna_trial(search, "t1") is None  # told: the accessors follow upstream


def test_a_trial_held_for_optuna_search_is_the_one_it_suggests_reports_and_tells():
    """held_optuna_trials / suggest_params: a trial the study's searcher puts in upstream's map
    (a resumed trial) gets its config from the space, and upstream reports to and tells it."""
    search = OptunaSearch(space=SearchSpace({"x": Float(0.0, 1.0), "k": Categorical([16, 32])}),
                          metric="AP50", mode="max", seed=0)
    search.suggest("warm")  # upstream sets up its study on the first suggest
    study = compat.optuna_study(search)
    mine = study.ask()
    compat.held_optuna_trials(search)["t1"] = mine
    params = compat.suggest_params(search, mine)
    assert set(params) == {"x", "k"} and 0.0 <= params["x"] <= 1.0 and params["k"] in (16, 32)
    assert study.trials[mine.number].params == params  # suggested on that trial
    search.on_trial_result("t1", {"AP50": 2.0, "training_iteration": 1, "epoch": 1})
    search.on_trial_complete("t1", {"AP50": 2.0, "training_iteration": 1, "epoch": 1})
    told = study.trials[mine.number]
    assert told.state == optuna.trial.TrialState.COMPLETE and told.values == [2.0]
    assert compat.open_optuna_trial(search, "t1") is None


def test_ray_init_still_skips_token_auth_for_an_explicit_address(tmp_path):
    """enable_token_auth_if_token_available: drop it once ray.init(address=...) honours a token.

    In a fresh process (ray.init in this one would meet the session's cluster): ray.init connects
    to an explicit address and to the cluster recorded under RAY_TMPDIR, with Ray's token-auth
    steps replaced by stand-ins that record whether token auth was looked for, then stop it before
    it connects."""
    (tmp_path / "ray").mkdir()
    (tmp_path / "ray" / "ray_current_cluster").write_text("127.0.0.1:6379")
    code = textwrap.dedent("""
        import ray, ray._private.worker as worker
        class Stop(Exception):
            pass
        def stop(*args, **kwargs):
            raise Stop
        looked = []
        worker.maybe_enable_token_auth_if_token_available = lambda **kwargs: looked.append(True)
        worker.ensure_token_if_auth_enabled = stop
        for address in ("127.0.0.1:6379", None):
            looked.clear()
            try:
                ray.init(address=address)
            except Stop:
                print(address, bool(looked))
        """)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")} | {"RAY_TMPDIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.stdout.split("\n")[:2] == ["127.0.0.1:6379 False", "None True"], done.stderr[-2000:]


def test_token_helper_turns_token_auth_on_when_a_token_exists(tmp_path):
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("t" * 32)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")} | {"HOME": str(tmp_path)}
    code = ("import os; from transcenter.platform.compat import enable_token_auth_if_token_available"
            " as f; f(); print(os.environ.get('RAY_AUTH_MODE'))")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.stdout.strip() == "token", done.stderr[-2000:]


def test_ray_init_still_connects_to_the_recorded_cluster(tmp_path, monkeypatch):
    """recorded_cluster_address: ray.init() with no address reads the same record we check."""
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
    (tmp_path / "ray").mkdir()
    (tmp_path / "ray" / "ray_current_cluster").write_text("10.9.8.7:6379")
    assert compat.recorded_cluster_address() == ("10.9.8.7:6379", str(tmp_path / "ray" / "ray_current_cluster"))
    upstream = ray._private.services.get_ray_address_from_environment(None, None)
    assert upstream == "10.9.8.7:6379"


def test_ray_train_still_reads_the_worker_env_knobs():
    """WORKER_ENV: every RAY_TRAIN_ knob is still one Ray Train reads."""
    known = {v for k, v in vars(train_constants).items() if k.endswith("_ENV_VAR")}
    assert {k for k in compat.WORKER_ENV if k.startswith("RAY_TRAIN_")} <= known


def test_tune_still_waits_for_a_reused_actors_trial_as_long_as_worker_env_says(monkeypatch):
    """WORKER_ENV's TUNE_FUNCTION_THREAD_TIMEOUT_S: how long resetting a reused trial actor waits
    for its previous trial's thread before it gives up (and fails the next trial)."""
    from ray.tune.trainable import function_trainable

    waited = []

    class StillTraining:  # the previous trial's session, its thread not ending
        training_thread = SimpleNamespace(is_alive=lambda: True)

        def finish(self, timeout):
            waited.append(timeout)

    monkeypatch.setattr(function_trainable, "get_session", StillTraining)
    monkeypatch.setenv("TUNE_FUNCTION_THREAD_TIMEOUT_S", compat.WORKER_ENV["TUNE_FUNCTION_THREAD_TIMEOUT_S"])
    assert function_trainable.FunctionTrainable.reset_config(None, {}) is False
    assert waited == [30]


def test_job_working_dirs_are_still_unpacked_where_we_look(tmp_path, monkeypatch):
    """job_working_dir: Ray unpacks --working-dir under runtime_resources/working_dir_files."""
    from ray._private.runtime_env.working_dir import WorkingDirPlugin

    WorkingDirPlugin(str(tmp_path / "runtime_resources"), gcs_client=None)
    assert (tmp_path / "runtime_resources" / "working_dir_files").is_dir()
    copy = tmp_path / "runtime_resources" / "working_dir_files" / "_ray_pkg_0"
    copy.mkdir(parents=True)
    monkeypatch.chdir(copy)
    assert compat.job_working_dir() == str(copy)
    monkeypatch.chdir(tmp_path)
    assert compat.job_working_dir() is None


def test_tune_still_propagates_aws_credentials_into_runtime_envs():
    """keep_secrets_out_of_runtime_envs: drop it once Tune stops copying the driver's AWS keys into
    trial actors' runtime envs (which Ray's runtime-env agent logs in clear text). The runtime env
    Tune gives a trial actor is read from a stand-in for ``ray.remote``, in a fresh interpreter:
    a study run earlier in this one has already applied the workaround."""
    code = textwrap.dedent("""
        from ray.tune.execution import class_cache
        from transcenter.platform import compat

        envs = []

        def remote(runtime_env):
            envs.append(runtime_env["env_vars"])
            return lambda cls: cls

        def trainable(config):
            pass

        class_cache.ray.remote = remote
        class_cache._ActorClassCache().get(trainable)
        assert set(envs[-1]) >= compat.SECRET_ENV_VARS, envs[-1]  # upstream copies them
        compat.keep_secrets_out_of_runtime_envs()
        class_cache._ActorClassCache().get(trainable)
        assert not compat.SECRET_ENV_VARS & set(envs[-1]), envs[-1]
        assert {"PL_DISABLE_FORK", "RAY_CHDIR_TO_TRIAL_DIR"} <= set(envs[-1])  # the rest still goes
    """)
    env = {**os.environ, "RAY_CHDIR_TO_TRIAL_DIR": "0",
           **{name: f"{name}-value" for name in compat.SECRET_ENV_VARS}}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]


def test_ray_train_still_logs_each_report_outside_the_ray_train_logger():
    from ray.train.v2._internal.execution import context

    assert context.logger is compat.train_report_logger()
    assert not context.logger.name.startswith("ray.train")


def test_ray_train_still_warns_of_a_timed_out_resource_request_with_a_traceback(monkeypatch, caplog):
    from ray.train.v2._internal.execution.scaling_policy import autoscaling_coordinator_client as m

    def timed_out(*args, **kwargs):
        raise ray.exceptions.GetTimeoutError("Get timed out: some object(s) not ready.")

    monkeypatch.setattr(m, "ray", SimpleNamespace(get=timed_out))
    monkeypatch.setattr(m, "build_train_resource_request", lambda config, workers: ({}, None))
    client = object.__new__(m.TrainAutoscalingCoordinatorClient)
    client._requester_id = "train-1"
    client._autoscaling_coordinator = SimpleNamespace(
        request_resources=SimpleNamespace(remote=lambda **kwargs: "ref"))
    with caplog.at_level(logging.WARNING, logger=compat.train_resource_request_logger().name):
        client.send_resource_request(scaling_config=None, num_workers=1)
    [record] = [r for r in caplog.records if r.name == compat.train_resource_request_logger().name]
    assert record.levelno == logging.WARNING and record.exc_info is not None
    assert "Failed to send resource request for train-1" in record.getMessage()


def test_the_gcs_client_still_drains_a_node_by_hex_id_and_reason():
    """drain_this_node: the call and the reason it passes (the cluster test drains a real node)."""
    from ray.core.generated import autoscaler_pb2

    params = inspect.signature(ray._raylet.InnerGcsClient.drain_node).parameters
    assert list(params)[1:5] == ["node_id", "reason", "reason_message", "deadline_timestamp_ms"]
    assert autoscaler_pb2.DrainNodeReason.Value("DRAIN_NODE_REASON_PREEMPTION")


def test_upstream_worker_group_still_has_the_hooks_a_warm_group_uses(monkeypatch):
    """WarmWorkerGroup and keep_synchronization_actors: redo them if Ray Train's worker group stops
    building a run's group through these hooks, and drop them once Ray Train reuses workers across
    runs itself. The behaviour's canaries are tests/test_ray_train.py's
    ``test_a_finished_runs_workers_serve_the_actors_next_run_and_train_it_alike`` and
    ``test_a_stopped_runs_workers_stop_at_a_step_and_serve_the_actors_next_run`` (real runs on a
    kept group); this test checks the hooks' signatures and undoes the patch it applies."""
    from ray.train.v2._internal.execution.controller import TrainController
    from ray.train.v2._internal.execution.worker_group import WorkerGroup
    from ray.train.v2._internal.execution.worker_group import worker_group as module
    from ray.train.v2._internal.execution.worker_group.poll import WorkerStatus
    from ray.train.v2._internal.execution.worker_group.state import WorkerGroupState
    from ray.train.v2._internal.execution.worker_group.worker import RayTrainWorker, Worker

    assert TrainController.worker_group_cls is WorkerGroup
    assert list(inspect.signature(WorkerGroup._create_workers).parameters)[1:4] == [
        "num_workers", "placement_group", "resources_per_worker"]
    assert [f.name for f in dataclasses.fields(WorkerGroupState)] == [
        "start_time", "placement_group_handle", "workers", "sync_actor"]
    assert list(inspect.signature(Worker.execute_async).parameters)[1] == "fn"  # stop_at_a_step
    assert callable(RayTrainWorker.poll_status)
    assert {"running", "error", "training_report"} <= {f.name for f in dataclasses.fields(WorkerStatus)}
    monkeypatch.setattr(module, "SynchronizationActor", module.SynchronizationActor)  # undone after
    compat.keep_synchronization_actors()
    compat.keep_synchronization_actors()  # idempotent: wraps upstream's class once
    stand_in = module.SynchronizationActor
    assert isinstance(stand_in, compat._SynchronizationActorOfWarmGroups)
    assert not isinstance(stand_in.upstream, compat._SynchronizationActorOfWarmGroups)
    assert hasattr(stand_in.upstream, "options")  # a group not started on a kept one: upstream's


def test_a_running_trial_handle_reports_and_is_told_as_the_trial_it_was():
    """trial_handle: a resumed driver reports to, and tells, the RUNNING trial it had asked for."""
    study = optuna.create_study(storage="sqlite:///:memory:", direction="maximize")
    asked = study.ask()
    asked.report(0.5, step=1)
    frozen = study.get_trials(states=(optuna.trial.TrialState.RUNNING,))[0]
    handle = compat.trial_handle(study, frozen)
    handle.report(0.75, step=2)
    study.tell(handle, 0.75)
    [trial] = study.get_trials()
    assert (trial.number, trial.state, trial.value) == (asked.number, optuna.trial.TrialState.COMPLETE, 0.75)
    assert trial.intermediate_values == {1: 0.5, 2: 0.75}


@pytest.mark.ray
def test_the_head_node_still_offers_the_resource_that_pins_the_trial_drivers(ray_cluster):
    """HEAD_NODE_RESOURCE: a task asking for it runs on the head (the trial drivers ask for it),
    and the head has one of it (simulated trials share it out by the trials run at once)."""
    head = next(n for n in ray.nodes() if n["Alive"] and compat.HEAD_NODE_RESOURCE in n["Resources"])
    assert head["Resources"][compat.HEAD_NODE_RESOURCE] == 1.0

    @ray.remote(num_cpus=0, resources={compat.HEAD_NODE_RESOURCE: 0.001})
    def where() -> str:
        return ray.get_runtime_context().get_node_id()

    assert ray.get(where.remote(), timeout=60) == head["NodeID"]
