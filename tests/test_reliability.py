"""Fault injection on local Ray: a SIGKILLed worker, a diverging trial, an out-of-memory trial and a
trial whose input file vanished, in one study. The killed trial resumes from its checkpoint (Ray
Train's retry); the failing ones end at once as `error`, with no retry (each fault fires once, so a
retry would have completed them), naming the epoch; the others go on; no row is lost or duplicated."""
import optuna
import pytest

from transcenter.platform.search import Categorical, SearchSpace
from transcenter.platform.study import StudySpec, run_study

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_faults_in_one_study(ray_cluster, inject_faults, tmp_path):
    inject_faults([
        {"match": {"loss.cls_weight": 1.0}, "kind": "kill", "epoch": 2, "when": "after",
         "marker": str(tmp_path / "kill")},
        {"match": {"loss.cls_weight": 2.0}, "kind": "nan", "epoch": 2, "when": "before",
         "marker": str(tmp_path / "nan")},
        {"match": {"loss.cls_weight": 3.0}, "kind": "oom", "epoch": 1, "when": "before",
         "marker": str(tmp_path / "oom")},
        {"match": {"loss.cls_weight": 4.0}, "kind": "missing_file", "epoch": 2, "when": "before",
         "marker": str(tmp_path / "missing")},
    ])
    space = SearchSpace({"loss.cls_weight": Categorical([1.0, 2.0, 3.0, 4.0])})
    spec = StudySpec.create(name="faults", space=space,
                            sampler="grid", preset="smoke", max_concurrent_trials=2,
                            overrides={"data.num_train": 16, "data.num_val": 8, "train.epochs": 3,
                                "train.threads": 1}, storage_path=str(tmp_path))
    store = run_study(spec)
    assert all((tmp_path / m).exists() for m in ("kill", "nan", "oom", "missing"))  # every fault fired
    trials = store.read_trials().set_index("loss.cls_weight")
    epochs = store.read_epochs()
    assert not epochs.duplicated(["trial_id", "epoch"]).any()

    killed = trials.loc[1.0]
    assert killed["status"] == "completed" and killed["n_epochs"] == 3
    assert sorted(epochs.loc[epochs.trial_id == killed["trial_id"], "epoch"]) == [1, 2, 3]

    diverged = trials.loc[2.0]
    assert diverged["status"] == "error"
    assert "diverged at epoch 2" in diverged["error"] and "loss_pos" in diverged["error"]
    assert sorted(epochs.loc[epochs.trial_id == diverged["trial_id"], "epoch"]) == [1]

    oom = trials.loc[3.0]
    assert oom["status"] == "error" and "out of memory at epoch 1" in oom["error"]
    assert (epochs.trial_id == oom["trial_id"]).sum() == 0

    bad_input = trials.loc[4.0]
    assert bad_input["status"] == "error"
    assert bad_input["error"] == "FileNotFoundError at epoch 2: injected: no such file at epoch 2"
    assert sorted(epochs.loc[epochs.trial_id == bad_input["trial_id"], "epoch"]) == [1]

    ot = optuna.load_study(study_name="faults", storage=f"sqlite:///{tmp_path}/faults/optuna.db")
    states = {t.params["loss.cls_weight"]: t.state for t in ot.trials}
    assert states == {1.0: optuna.trial.TrialState.COMPLETE, 2.0: optuna.trial.TrialState.FAIL,
                      3.0: optuna.trial.TrialState.FAIL, 4.0: optuna.trial.TrialState.FAIL}
