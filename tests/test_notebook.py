"""docs/analysis.ipynb runs top to bottom on a small planted study, in a kernel of this interpreter."""

import math
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from transcenter.store.results import ResultStore

NOTEBOOK = Path(__file__).resolve().parents[1] / "docs" / "analysis.ipynb"
GMACS = {16: 2.0, 32: 5.1, 64: 17.4}  # per heatmap size, as the configuration gives them
# trial: (heatmap size, AP per epoch, status); NaN: not evaluated that epoch; None: still running.
PLANTED = {
    "trial-00000": (16, [8.0, 12.0, math.nan, 20.0], "completed"),
    "trial-00001": (16, [6.0, 10.0, 14.0, 16.0], "stopped"),
    "trial-00002": (32, [7.0, 14.0, 45.0, 30.0], "completed"),  # peaked mid-way: worth its last, 30
    "trial-00003": (32, [5.0, 9.0, math.inf, math.inf], "error"),  # diverged at epoch 3
    "trial-00004": (64, [4.0, 15.0, 28.0, 40.0], "completed"),  # the best trial
    "trial-00005": (64, [3.0, 11.0], None),
}


def epoch_metrics(size, epoch, ap):
    loss_pos, loss_size = 4.0 * size / 16 / epoch, 2.0 / epoch
    return {"loss": loss_pos + loss_size + 0.3, "loss_cls": 0.2 / epoch, "loss_pos": loss_pos,
            "loss_size": loss_size, "loss_offset": 0.1, "AP": ap, "AP50": 1.8 * ap, "AP75": 0.9 * ap,
            "APs": 0.4 * ap, "APm": ap, "APl": 1.4 * ap, "gmacs": GMACS[size], "params": 1e6 * size}


@pytest.fixture
def study_dir(tmp_path):
    store = ResultStore(str(tmp_path), "heatmap_size")
    for trial, (size, aps, status) in PLANTED.items():
        params = {"model.heatmap_size": size, "loss.alpha": 2.0, "optim.lr": 1e-3 * size / 16}
        for epoch, ap in enumerate(aps, start=1):
            store.record_epoch(trial, epoch, params, epoch_metrics(size, epoch, ap), time_s=1.0)
        if status is not None:
            store.record_trial(trial, params, status)
    return tmp_path / "heatmap_size"


def test_the_notebook_is_stored_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert code and all(cell.outputs == [] and cell.execution_count is None for cell in code)
    assert sum("parameters" in cell.metadata.get("tags", []) for cell in code) == 1


@pytest.mark.timeout(180)
def test_every_cell_runs_on_a_finished_study(study_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("MPLBACKEND", "Agg")  # the kernel inherits it: no display
    nb = nbformat.read(NOTEBOOK, as_version=4)
    at = next(i for i, cell in enumerate(nb.cells) if "parameters" in cell.metadata.get("tags", []))
    # as papermill does: the test's values in a cell after the notebook's parameters cell
    nb.cells.insert(at + 1, nbformat.v4.new_code_cell(f"STUDY = {str(study_dir)!r}"))
    nb.cells.append(nbformat.v4.new_code_cell("import sys\nprint(sys.prefix)"))
    # raises CellExecutionError, naming the cell and its traceback, if any cell raises
    NotebookClient(nb, kernel_name="python3", timeout=60, startup_timeout=60,
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    printed = ["".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")
               for cell in nb.cells if cell.cell_type == "code"]
    assert printed[-1].strip() == sys.prefix  # the kernel is this interpreter's (the venv's) python
    assert "best trial trial-00004: AP 40.0 at its last epoch, 4" in "".join(printed), printed
    # the front (2, 20), (5.1, 30), (17.4, 40) up to AP 0 and 1.1 x 17.4 GMACs
    assert "hypervolume 500.6 " in "".join(printed), printed
