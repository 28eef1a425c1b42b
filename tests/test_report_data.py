"""The report's per-class AP50 and data-set sections, from a study.json with ``class_names`` and
``dataset`` and epochs with ``AP50_class<k>`` columns; old studies without them lose only those."""

import html
import math
import os
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from transcenter.dashboards import analysis, dataset_tables, report, summary
from transcenter.model.training.experiment import trial_config
from transcenter.store.results import ResultStore

CLASSES = ["person", "<b>car</b> & co", "dog"]
CAR = "&lt;b&gt;car&lt;/b&gt; &amp; co"  # CLASSES[1] as the HTML must show it
# trial -> per epoch: (AP, [AP50 of class 0, 1, 2]); the best trial is t0 (AP 20 at its last epoch,
# 3), though t1 peaked higher (35 at epoch 2). Every other trial-epoch has other per-class numbers,
# so a wrong pick shows a wrong number.
EPOCHS = {
    "t0": [(10.0, [41.0, 42.0, 43.0]), (30.0, [66.25, 22.75, 33.25]), (20.0, [55.5, 12.5, math.nan])],
    "t1": [(5.0, [71.0, 72.0, 73.0]), (35.0, [74.0, 75.0, 76.0]), (15.0, [77.75, 88.75, 99.75])],
    "t2": [(50.0, [1.5, 2.5, 3.5])],  # still running: no trial row, so not the best trial
}


def split(images, objects, per_class, same_cell):
    return {"images": images, "objects": objects, "ignored": 7,
            "per_class": dict(zip(CLASSES, per_class)),
            "sizes": {"small": 111, "medium": 222, "large": 333},
            "objects_per_image": {"mean": 2.75, "median": 2.0, "max": 41, "empty": 9},
            "same_cell": dict(zip(("16", "32", "64", "128"), same_cell))}


DATASET = {"input_size": 512, "heatmap_sizes": [16, 32, 64, 128], "class_names": CLASSES,
           "splits": {"train": split(1234567, 9876543, [5000001, 17, 0], [0.25, 0.125, 0.0625, None]),
                      "val": split(4321, 8765, [301, 19, 0], [0.5, 0.375, 0.1875, None])}}


def record(store, meta=True):
    for trial, epochs in EPOCHS.items():
        p = {"model.heatmap_size": 32}
        for epoch, (ap, per_class) in enumerate(epochs, start=1):
            store.record_epoch(trial, epoch, p, {
                "AP": ap, "AP50": 2 * ap, **{f"AP50_class{k}": v for k, v in enumerate(per_class)}})
        if trial != "t2":
            store.record_trial(trial, p, "completed")
    if meta:
        store.write_meta({"class_names": CLASSES, "dataset": DATASET})


@pytest.fixture
def study_dir(tmp_path):
    record(ResultStore(str(tmp_path), "classes"))
    return tmp_path / "classes"


def section(text, title):
    """The HTML of the report's section titled ``title``, up to the next section."""
    start = text.index(f"<h2>{html.escape(title)}</h2>")
    end = text.find("<h2>", start + 1)
    return text[start:end if end >= 0 else len(text)]


def rows(text, first_cell):
    """The cells of the table row whose first cell (th) is ``first_cell``."""
    match = re.search(rf"<tr>\s*<th>{re.escape(first_cell)}</th>(.*?)</tr>", text, re.S)
    assert match, f"no row {first_cell!r}"
    return re.findall(r"<td>(.*?)</td>", match.group(1))


def test_class_ap50_is_the_best_trials_last_epoch_weakest_first(study_dir):
    tables = summary.collect(study_dir)
    assert (tables.best["trial_id"], tables.best["n_epochs"], tables.best["final.AP"]) == ("t0", 3, 20.0)
    table = tables.class_ap50
    assert list(table.columns) == ["class", "AP50"] and table["AP50"].dtype == "float64"
    assert table["class"].tolist() == [CLASSES[1], CLASSES[0], CLASSES[2]]
    assert table["AP50"].tolist()[:2] == [12.5, 55.5] and math.isnan(table["AP50"].iloc[2])
    unnamed = analysis.class_ap50(tables.epochs, "classes", "t1", 3, class_names=CLASSES[:1])
    assert unnamed.to_dict("list") == {"class": ["person", "class1", "class2"],
                                       "AP50": [77.75, 88.75, 99.75]}
    assert analysis.class_ap50(tables.epochs, "classes", "t1", 9).empty


def test_report_names_per_class_ap50_and_escapes_names(study_dir, tmp_path):
    document = report.write_report(study_dir, tmp_path / "r.html").read_text(encoding="utf-8")
    assert "<b>car</b>" not in document
    text = section(document, summary.CLASS_AP50_TITLE)
    assert rows(text, CAR) == ["12.5"] and rows(text, "person") == ["55.5"] and rows(text, "dog") == ["–"]
    assert text.index(f"<th>{CAR}</th>") < text.index("<th>person</th>") < text.index("<th>dog</th>")
    assert "Trial t0 of study classes at its last epoch, 3 (AP 20)" in text
    assert "Mean AP50 over the 2 classes with ground truth: 34." in text
    for wrong in ("66.25", "77.75", "1.5<", "41<"):  # other epochs, other trials, the running trial
        assert wrong not in text


def test_report_shows_the_data_set_tables(study_dir, tmp_path):
    document = report.write_report(study_dir, tmp_path / "r.html").read_text(encoding="utf-8")
    text = section(document, "Data set")
    assert html.escape(dataset_tables.SAME_CELL_NOTE) in text and "Input size: 512 px" in text
    assert rows(text, "train") == ["1234567", "9876543", "7", "2.75", "2", "41", "9", "111", "222", "333"]
    assert rows(text, "val")[:2] == ["4321", "8765"]
    # S, cell px (512 / S), share of train and val objects in percent; null -> –
    assert rows(text, "16") == ["32", "25", "50"] and rows(text, "64") == ["8", "6.25", "18.75"]
    assert rows(text, "128") == ["4", "–", "–"]
    counts = text[text.index("<details open>"):text.index("</details>")]
    assert "Objects per class and split (3 classes)" in counts
    assert rows(counts, "person") == ["5000001", "301"] and rows(counts, CAR) == ["17", "19"]
    assert rows(counts, "dog") == ["0", "0"]


def test_many_classes_are_collapsed(tmp_path):
    names = [f"c{k}" for k in range(80)]
    dataset = {"input_size": 512, "heatmap_sizes": [32], "class_names": names,
               "splits": {"val": {"images": 5, "objects": 80, "per_class": dict.fromkeys(names, 1)}}}
    store = ResultStore(str(tmp_path), "coco")
    store.record_epoch("t0", 1, {"model.heatmap_size": 32},
                       {"AP": 1.0, **{f"AP50_class{k}": 100.0 - k for k in range(80)}})
    store.record_trial("t0", {"model.heatmap_size": 32}, "completed")
    store.write_meta({"dataset": dataset})  # no top-level class_names: the data set's name them
    document = report.write_report(tmp_path / "coco", tmp_path / "r.html").read_text(encoding="utf-8")
    text = section(document, "Data set")
    assert "<details><summary>Objects per class and split (80 classes)" in text
    assert "<details open>" not in text and rows(text, "c79") == ["1"]
    assert rows(text, "val")[:3] == ["5", "80", "–"]  # a key the report lacks is an empty cell
    text = section(document, summary.CLASS_AP50_TITLE)
    assert text.count('<div class="scroll">') == 1 and rows(text, "c79") == ["21"]
    assert text.index("<th>c79</th>") < text.index("<th>c0</th>")


def test_class_names_fall_back_to_indices(tmp_path):
    record(ResultStore(str(tmp_path), "unnamed"), meta=False)
    document = report.write_report(tmp_path / "unnamed", tmp_path / "r.html").read_text(encoding="utf-8")
    text = section(document, summary.CLASS_AP50_TITLE)
    assert rows(text, "class1") == ["12.5"] and rows(text, "class0") == ["55.5"]
    assert "Data set" not in document


def test_old_study_has_neither_section(tmp_path):
    store = ResultStore(str(tmp_path), "old")
    for i in range(2):
        p = {"model.heatmap_size": 16 * (i + 1)}
        store.record_epoch(f"t{i}", 1, p, {"AP": 10.0 + i, "AP50": 20.0 + i})
        store.record_trial(f"t{i}", p, "completed")
    tables = summary.collect(tmp_path / "old")
    assert tables.class_ap50 is None and tables.datasets == {} and tables.best["trial_id"] == "t1"
    text = report.write_report(tmp_path / "old", tmp_path / "r.html").read_text(encoding="utf-8")
    assert "Per-class" not in text and "Data set" not in text and "<details" not in text
    assert "Upper limit" in text and text.rstrip().endswith("</html>")


def test_old_and_new_study_together(study_dir, tmp_path):
    old = ResultStore(str(tmp_path), "old")
    old.record_epoch("x", 1, {"model.heatmap_size": 32}, {"AP": 90.0, "AP50": 95.0})
    old.record_trial("x", {"model.heatmap_size": 32}, "completed")
    document = report.write_report([study_dir, tmp_path / "old"], tmp_path / "r.html").read_text(
        encoding="utf-8")
    assert "<h2>Data set of study classes</h2>" in document
    text = section(document, summary.CLASS_AP50_TITLE)  # the best trial is the old study's
    assert "Trial x of study old reports no per-class AP50 at its last epoch, 1." in text


def test_no_finite_ap_gives_a_sentence(tmp_path):
    store = ResultStore(str(tmp_path), "diverged")
    store.record_epoch("t0", 1, {"model.heatmap_size": 16}, {"AP": math.nan, "AP50_class0": math.nan})
    store.record_trial("t0", {"model.heatmap_size": 16}, "error", error="diverged")
    text = report.write_report(tmp_path / "diverged", tmp_path / "r.html").read_text(encoding="utf-8")
    assert summary.CLASS_AP50_TITLE in text and "No ended trial has a finite AP at its last epoch yet." in text


def test_summary_prints_the_new_tables(study_dir, capsys):
    assert summary.main([str(study_dir)]) == 0
    text = capsys.readouterr().out
    assert "== Data set of study classes ==" in text and "1234567" in text
    assert summary.CLASS_AP50_TITLE in text and CLASSES[1] in text and "55.5" in text


def test_dataset_tables_types():
    data = dataset_tables.tables(DATASET)
    assert data.input_size == 512 and data.splits.index.tolist() == ["train", "val"]
    assert data.splits["images"].dtype == "Int64" and data.splits["objects/image mean"].dtype == "float64"
    np.testing.assert_allclose(data.same_cell["cell px"], [32, 16, 8, 4])
    assert data.same_cell.loc[32, "val same cell (%)"] == 37.5
    assert pd.isna(data.same_cell.loc[128, "train same cell (%)"])
    assert data.per_class.index.tolist() == CLASSES and data.per_class.loc["dog", "val"] == 0


def test_accuracy_against_compute_section_draws_the_front_and_its_hypervolume(tmp_path):
    """AP against GMACs. Trials a (cheap, weak), b (dear, strong) and c (dominated by a)
    are planted; the front is a and b; c's AP is its last epoch's (8, not its peak 9)."""
    store = ResultStore(str(tmp_path), "mo")
    planted = {"a": (16, 1.0, [5.0, 10.0]), "b": (64, 3.0, [20.0, 30.0]), "c": (32, 2.0, [9.0, 8.0])}
    for trial, (size, gmacs, aps) in planted.items():
        for epoch, ap in enumerate(aps, start=1):
            store.record_epoch(trial, epoch, {"model.heatmap_size": size},
                               {"AP": ap, "gmacs": gmacs, "params": 1e6 * gmacs})
        store.record_trial(trial, {"model.heatmap_size": size}, "completed")
    store.write_meta({"objectives": {"AP": "max", "gmacs": "min"}})
    tables = summary.collect([str(tmp_path / "mo")])
    assert tables.compute.declared and tables.compute.front["trial_id"].tolist() == ["b", "a"]
    # reference: worst AP 8 - 10 % of the range 22 -> 5.8; worst gmacs 3 + 0.2 -> 3.2
    assert tables.compute.reference == pytest.approx({"AP": 5.8, "gmacs": 3.2})
    # a dominates AP 5.8..10 for gmacs 1..3.2, b adds AP 10..30 for gmacs 3..3.2
    assert tables.compute.hypervolume == pytest.approx((10 - 5.8) * (3.2 - 1.0) + (30 - 10) * (3.2 - 3.0))
    text = report.write_report([str(tmp_path / "mo")], tmp_path / "r.html").read_text()
    body = section(text, summary.COMPUTE_TITLE)
    assert "2 trial(s) on the Pareto front of AP (max), gmacs (min)" in body
    assert "Hypervolume 13.24" in body and body.count("<img") == 2  # front plot, hypervolume curve


def test_the_search_names_the_settings_a_study_changed_and_folds_the_preset_defaults(tmp_path):
    defaults = trial_config("smoke").to_flat_dict()
    store = ResultStore(str(tmp_path), "fixed")
    for i, size in enumerate((16, 32)):
        params = {"model.heatmap_size": size, "optim.lr": 0.5, "train.epochs": defaults["train.epochs"]}
        store.record_epoch(f"t{i}", 1, params, {"AP": 10.0 + i, "AP50": 20.0 + i})
        store.record_trial(f"t{i}", params, "completed")
    store.write_meta({"preset": "smoke", "trial_config": {**defaults, "optim.lr": 0.5},
                      "dataset": {**DATASET, "data": "synthetic"}})
    document = report.write_report(tmp_path / "fixed", tmp_path / "r.html").read_text(encoding="utf-8")
    search = section(document, "The search: each hyperparameter vs. the trial's AP50 (%) at its last epoch")
    assert "Fixed, other than the preset&#x27;s default: optim.lr = 0.5</p>" in search
    assert (f"<details><summary>The other 1 fixed settings (the preset's defaults)</summary>"
            f"<p class=\"note\">train.epochs = {defaults['train.epochs']}</p></details>") in search
    data = section(document, summary.DATASET_TITLE)
    assert html.escape(dataset_tables.SYNTHETIC_SAME_CELL_NOTE) in data


def test_real_data_gets_no_note_on_shared_centres(study_dir, tmp_path):
    document = report.write_report(study_dir, tmp_path / "r.html").read_text(encoding="utf-8")
    assert "synthetic scenes" not in section(document, summary.DATASET_TITLE)


def test_the_report_and_summary_commands_as_a_user_types_them(tmp_path):
    """Only PATH and HOME set, on a study of one searched parameter whose trial peaked mid-run: a
    trial's value is its last epoch's; one parameter gets a sentence instead of an importance bar;
    the settings the study changed are named and the preset's defaults folded; shared centres of
    synthetic scenes are explained under their table."""
    defaults = trial_config("smoke").to_flat_dict()
    store = ResultStore(str(tmp_path), "user")
    for key, size, curve in (("t0", 16, (20.0, 60.0, 40.0)), ("t1", 32, (10.0, 20.0, 30.0))):
        params = {"model.heatmap_size": size, "optim.lr": 0.5}
        for epoch, ap in enumerate(curve, start=1):
            store.record_epoch(key, epoch, params, {"AP": ap, "AP50": 2 * ap, "gmacs": 1.0 + size / 16})
        store.record_trial(key, params, "completed")
    store.write_meta({"preset": "smoke", "trial_config": {**defaults, "optim.lr": 0.5},
                      "dataset": {**DATASET, "data": "synthetic"}})
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}
    study = str(tmp_path / "user")
    printed = subprocess.run([sys.executable, "-m", "transcenter.dashboards.summary", study],
                             capture_output=True, text=True, timeout=300, env=env)
    assert printed.returncode == 0, printed.stderr[-3000:]
    trials = printed.stdout.split(summary.TRIALS_TITLE, 1)[1].split("\n\n", 1)[0]
    t0 = next(line.split() for line in trials.splitlines() if " t0 " in f" {line} ")
    assert "40" in t0 and "60" not in t0  # its last epoch's AP, not its peak
    written = subprocess.run([sys.executable, "-m", "transcenter.dashboards.report", study, "-o",
                              str(tmp_path / "report.html")],
                             capture_output=True, text=True, timeout=300, env=env)
    assert written.returncode == 0, written.stderr[-3000:]
    document = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "varies one hyperparameter (model.heatmap_size)" in section(document, summary.IMPORTANCE_TITLE)
    search = section(document, "The search: each hyperparameter vs. the trial's AP50 (%) at its last epoch")
    assert "Fixed, other than the preset&#x27;s default: optim.lr = 0.5" in search
    assert html.escape(dataset_tables.SYNTHETIC_SAME_CELL_NOTE) in section(document, summary.DATASET_TITLE)


def test_the_accuracy_against_compute_figure_is_scaled_to_the_trials_as_a_user_runs_the_report(tmp_path):
    """Only PATH and HOME set, trials at the demo's 0.3-4 GMACs: the figure's axes span the
    trials, the paper's models (25-100 GMACs) sit in a panel beside them, and the front ends at
    the costliest trial. Read from the image's alt text, which describes the axes as drawn."""
    store = ResultStore(str(tmp_path), "demo")
    for key, size, gmacs, ap in (("t0", 16, 0.3, 12.0), ("t1", 32, 0.9, 20.0), ("t2", 64, 4.0, 18.0)):
        params = {"model.heatmap_size": size}
        store.record_epoch(key, 1, params, {"AP": ap, "AP50": 2 * ap, "gmacs": gmacs})
        store.record_trial(key, params, "completed")
    store.write_meta({"objectives": {"AP": "max", "gmacs": "min"}})
    written = subprocess.run([sys.executable, "-m", "transcenter.dashboards.report", str(tmp_path / "demo"),
                              "-o", str(tmp_path / "report.html")], capture_output=True, text=True,
                             timeout=300, env={"PATH": os.environ["PATH"], "HOME": str(tmp_path)})
    assert written.returncode == 0, written.stderr[-3000:]
    body = section((tmp_path / "report.html").read_text(encoding="utf-8"), summary.COMPUTE_TITLE)
    main, side = html.unescape(re.search(r'<img alt="([^"]*)"', body).group(1)).split(" | ")
    number = r"(-?[\d.]+(?:e[+-]?\d+)?)"
    x0, x1 = map(float, re.search(rf"x: forward GMACs / image {number} to {number};", main).groups())
    assert x0 < 0.3 and 4.0 < x1 < 5.0, main  # the trials' range, a margin either side
    assert re.search(r"Pareto front from x 0.3 to 4;?", main), main
    assert side.startswith("beside the paper's models: ")
    assert float(re.search(rf"x: forward GMACs / image {number} to {number};", side).group(2)) > 100, side
