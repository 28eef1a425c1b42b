"""One test per workaround in platform/compat.py: each fails when upstream Ray or Optuna changes the
behaviour the workaround relies on, so an upgrade says which workaround to drop or redo."""
import dataclasses
import inspect
import os
import subprocess
import sys

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
from transcenter.platform.search import Float, SearchSpace


def test_other_ray_or_optuna_versions_are_refused_naming_both():
    compat.check_versions("2.60.0", "5.0.1")  # the pinned ones
    with pytest.raises(ImportError, match=r"written for Ray 2\.60\.x and Optuna 5\.x, but Ray "
                                          r"2\.61\.0 and Optuna 5\.0\.1 are installed"):
        compat.check_versions("2.61.0", "5.0.1")
    with pytest.raises(ImportError, match=r"but Ray 2\.60\.0 and Optuna 6\.0\.0 are installed"):
        compat.check_versions("2.60.0", "6.0.0")


def _noop(config):
    pass


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


def test_upstream_still_runs_a_controller_actor_and_tune_reports_through_a_queue_actor():
    """LeanTorchTrainer's in-process controller and the trial's ReportToTune: drop them once Ray
    Train runs the controller of a run under Tune without an actor of its own, and once Tune's
    report callback no longer needs a queue actor to reach the trial. The overridden hook must
    still receive the controller's constructor arguments."""
    from ray.train.v2._internal.execution.controller import TrainController
    from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    assert "ray.remote(" in inspect.getsource(DataParallelTrainer._initialize_and_run_controller)
    assert "_get_or_create_inter_actor_queue" in inspect.getsource(TuneReportCallback.__init__)
    fit = inspect.getsource(DataParallelTrainer.fit)
    passed = {"train_fn_ref", "scaling_policy", "failure_policy", "train_run_context", "callbacks",
              "validation_config"}
    assert all(f"{name}=" in fit for name in passed)
    assert passed <= set(inspect.signature(TrainController.__init__).parameters)


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


def test_ray_init_still_skips_token_auth_for_an_explicit_address():
    """enable_token_auth_if_token_available: drop it once ray.init(address=...) honours a token."""
    source = inspect.getsource(ray._private.worker.init)
    assert 'if address in (None, "auto"):' in source
    assert "maybe_enable_token_auth_if_token_available" in source


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
    """WORKER_ENV: every knob is still one Ray Train reads."""
    known = {v for k, v in vars(train_constants).items() if k.endswith("_ENV_VAR")}
    assert set(compat.WORKER_ENV) <= known


def test_job_working_dirs_are_still_unpacked_where_we_look(tmp_path, monkeypatch):
    """job_working_dir: Ray unpacks --working-dir under runtime_resources/working_dir_files."""
    import ray._private.runtime_env.working_dir as working_dir

    assert '"working_dir_files"' in inspect.getsource(working_dir)
    copy = tmp_path / "runtime_resources" / "working_dir_files" / "_ray_pkg_0"
    copy.mkdir(parents=True)
    monkeypatch.chdir(copy)
    assert compat.job_working_dir() == str(copy)
    monkeypatch.chdir(tmp_path)
    assert compat.job_working_dir() is None


def test_tune_still_propagates_aws_credentials_into_runtime_envs():
    """keep_secrets_out_of_runtime_envs: drop it once Tune stops copying the driver's AWS keys into
    trial actors' runtime envs (which Ray's runtime-env agent logs in clear text)."""
    from ray.tune.execution import class_cache

    assert '"AWS_SECRET_ACCESS_KEY",' in inspect.getsource(class_cache)
    compat.keep_secrets_out_of_runtime_envs()
    assert not compat.SECRET_ENV_VARS & class_cache.ENV_VARS_TO_PROPAGATE
    assert "PL_DISABLE_FORK" in class_cache.DEFAULT_ENV_VARS  # the rest is untouched
