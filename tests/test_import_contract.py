"""Each process imports only what it needs: every entry module in a fresh interpreter, checked
against what that process must not load. The trial actor and the Train controller load
neither torch nor anything of the model's stack (the controller of a trial with one worker is
checked in its own process by ``tests/test_ray_train.py``)."""
import json
import subprocess
import sys

import pytest
from data_fixtures import single_year_voc

# The model's heavy stack and everything of the study driver's.
NOT_IN_TRIAL_ACTORS = ("torch", "torchvision", "faster_coco_eval", "matplotlib", "PIL",
                       "transcenter.dashboards", "transcenter.model.data.build",
                       "transcenter.model.detector.transcenter", "transcenter.platform.study",
                       "transcenter.platform.cli", "transcenter.platform.data_check",
                       "transcenter.platform.search", "optuna", "mlflow")
ENTRIES = {
    # The Tune trial actor unpickles trial.trainable; the Train controller unpickles the trainer's
    # worker function (platform/trainer.py).
    "transcenter.platform.trial": NOT_IN_TRIAL_ACTORS,
    "transcenter.platform.trainer": NOT_IN_TRIAL_ACTORS,
    # A simulated trial's actor unpickles simulate.simulated_trainable.
    "transcenter.platform.simulate": NOT_IN_TRIAL_ACTORS,
    # Every node of a cluster runs the storage probe as a Ray task before the study starts.
    "transcenter.platform.storage_check": NOT_IN_TRIAL_ACTORS,
    # Train workers run the model, never the driver's code or the dashboards.
    "transcenter.platform.worker": ("matplotlib", "transcenter.dashboards",
                                    "transcenter.platform.study", "transcenter.platform.cli",
                                    "transcenter.platform.search", "optuna", "mlflow"),
    # The study driver writes its report by running the dashboards in a subprocess, loads the
    # data stack (torch) only when it opens a data set, and mlflow only for a study that logs to it.
    "transcenter.platform.cli": ("matplotlib", "transcenter.dashboards", "torch", "torchvision",
                                 "mlflow"),
    # The replay runs the searcher and scheduler in simulated time: no training stack.
    "transcenter.platform.replay": NOT_IN_TRIAL_ACTORS[:5] + ("transcenter.dashboards",),
}


def loaded_by(module: str, names: tuple[str, ...]) -> list[str]:
    code = (f"import sys, json; import {module}; "
            f"print(json.dumps([n for n in {list(names)!r} if n in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("module", sorted(ENTRIES))
def test_entry_module_loads_nothing_its_process_must_not(module):
    assert loaded_by(module, ENTRIES[module]) == []


def test_the_check_itself_sees_a_module_that_is_loaded():
    assert loaded_by("transcenter.platform.study", ("transcenter.platform.data_check",)) == [
        "transcenter.platform.data_check"]


@pytest.mark.parametrize("data", ["synthetic", "voc"])
def test_the_drivers_data_check_loads_no_torchvision(data, tmp_path):
    """The driver opens the data sets, reads their annotations and writes the data index without
    torchvision (about 2 s of CPU per driver run that it would cost): it reads no image."""
    overrides = {"data.num_train": 8, "data.num_val": 4}
    index = None
    if data == "voc":
        overrides = {"data.name": "voc", "data.root": str(single_year_voc(tmp_path / "voc", length=8))}
        index = str(tmp_path / "index.arrow")
    code = ("import sys, json\n"
            "from transcenter.model.training.experiment import trial_config\n"
            "from transcenter.platform.data_check import check_data\n"
            f"check = check_data(trial_config('smoke', {overrides!r}), {index!r})\n"
            "print(json.dumps([check.summary, 'torchvision' in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    summary, loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary.startswith(f"{data}, ") and not loaded
    assert index is None or (tmp_path / "index.arrow").is_file()
