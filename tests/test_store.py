"""The result store: layout, types, replacement of retried epochs, filesystems, atomic writes."""

import io
import math
import signal
import subprocess
import sys
import textwrap

import fsspec
import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from transcenter.store.results import (
    REQUIRED_METRICS,
    ResultStore,
    flatten_params,
    is_param_column,
    read_parquet_file,
)

PARAMS = {"model": {"heatmap_size": 32}, "loss": {"alpha": 2.0, "beta": 4.0, "bg_weight": 0.1},
          "matcher.cost_class": 1.0, "matcher.cost_l1": 5.0, "matcher.cost_giou": 2.0,
          "optim.lr": 3e-4, "loss.bg_weight_mode": "paper", "data.flip": True}
METRICS = {"loss": 3.5, "loss_cls": 0.5, "loss_pos": 1.25, "loss_size": 1.5, "loss_offset": 0.25,
           "AP": 0.25, "AP50": 0.5, "AP75": 0.125, "APs": 0.0625, "APm": 0.1875, "APl": 0.375}


def metrics(**changes):
    return {**METRICS, **changes}


def test_round_trip_exact_values_and_dtypes(tmp_path):
    store = ResultStore(str(tmp_path), "hm")
    assert not store.exists()
    store.record_epoch("t0", 1, PARAMS, metrics(), time_s=12.5)
    store.record_epoch("t0", 2, PARAMS, metrics(AP=0.5, extra=7), status="completed", time_s=11.0)
    assert store.exists()

    df = pd.read_parquet(tmp_path / "hm" / "epochs")  # no project code
    assert len(df) == 2
    row = df.sort_values("epoch").iloc[1]
    assert (row["study"], row["trial_id"], row["epoch"], row["status"]) == ("hm", "t0", 2, "completed")
    assert row["time_s"] == 11.0 and row["AP"] == 0.5 and row["extra"] == 7.0
    assert row["model.heatmap_size"] == 32 and row["optim.lr"] == 3e-4 and row["loss.alpha"] == 2.0
    assert row["loss.bg_weight_mode"] == "paper" and bool(row["data.flip"]) is True
    dtypes = df.dtypes
    assert dtypes["epoch"] == "int64" and dtypes["model.heatmap_size"] == "int64"
    assert dtypes["data.flip"] == "bool"
    for column in ("time_s", "loss.alpha", "loss.beta", "loss.bg_weight", "matcher.cost_class",
                   "matcher.cost_l1", "matcher.cost_giou", "optim.lr", *REQUIRED_METRICS, "extra"):
        assert dtypes[column] == "float64", column
    for column in ("study", "trial_id", "status", "loss.bg_weight_mode"):
        assert pd.api.types.is_string_dtype(dtypes[column]), column
    pd.testing.assert_frame_equal(store.read_epochs(), df.sort_values(["trial_id", "epoch"])
                                  .reset_index(drop=True), check_like=True)


def test_missing_metrics_are_null_and_nan_inf_are_stored(tmp_path):
    store = ResultStore(str(tmp_path), "hm")
    store.record_epoch("t0", 1, PARAMS, {"loss": math.nan, "AP": math.inf})
    row = store.read_epochs().iloc[0]
    assert math.isnan(row["loss"]) and row["AP"] == math.inf
    assert all(math.isnan(row[m]) for m in REQUIRED_METRICS if m not in ("loss", "AP"))


def test_retried_epoch_replaces_its_row(tmp_path):
    store = ResultStore(str(tmp_path), "hm")
    for epoch in (1, 2, 3):
        store.record_epoch("t0", epoch, PARAMS, metrics(AP=epoch / 10))
    store.record_epoch("t0", 2, PARAMS, metrics(AP=0.9))  # resumed from epoch 1's checkpoint
    store.record_epoch("t0", 3, PARAMS, metrics(AP=0.8))
    df = store.read_epochs()
    assert df["epoch"].tolist() == [1, 2, 3]
    assert df["AP"].tolist() == [0.1, 0.9, 0.8]


def test_trials_of_one_study_unify_into_one_frame(tmp_path):
    store = ResultStore(str(tmp_path), "hm")
    store.record_epoch("t0", 1, PARAMS, metrics())
    other = {**flatten_params(PARAMS), "model.heatmap_size": 64, "optim.lr": 1e-3}
    store.record_epoch("t1", 1, other, metrics(AP=0.5))
    df = pd.read_parquet(tmp_path / "hm" / "epochs")
    assert sorted(df["trial_id"]) == ["t0", "t1"]
    assert df.dtypes["model.heatmap_size"] == "int64" and df.dtypes["optim.lr"] == "float64"
    assert sorted(df["model.heatmap_size"]) == [32, 64]


def test_declared_param_types_make_mixed_samples_agree(tmp_path):
    declared = {"loss.alpha": "float64", "model.heatmap_size": "int64"}
    store = ResultStore(str(tmp_path), "hm", param_types=declared)
    store.record_epoch("t0", 1, {"loss.alpha": 2, "model.heatmap_size": 32.0}, metrics())
    store.record_epoch("t1", 1, {"loss.alpha": 2.5, "model.heatmap_size": 64}, metrics())
    df = pd.read_parquet(tmp_path / "hm" / "epochs")
    assert df.dtypes["loss.alpha"] == "float64" and df.dtypes["model.heatmap_size"] == "int64"
    assert sorted(df["loss.alpha"]) == [2.0, 2.5]
    with pytest.raises(ValueError, match="model.heatmap_size"):
        store.record_epoch("t2", 1, {"model.heatmap_size": 32.5}, metrics())


def test_trial_table_is_the_last_epoch_and_error(tmp_path):
    store = ResultStore(str(tmp_path), "hm")
    for epoch, ap in ((1, 0.2), (3, 0.3), (2, 0.4)):  # recorded out of order; AP peaks at epoch 2
        store.record_epoch("t0", epoch, PARAMS, metrics(AP=ap, AP50=ap + 0.25))
    store.record_trial("t0", PARAMS, "completed")
    store.record_epoch("t1", 1, PARAMS, metrics(AP=math.nan))
    store.record_trial("t1", PARAMS, "error", error="CUDA out of memory")
    store.record_trial("t2", PARAMS, "error", error="failed before epoch 1")
    trials = store.read_trials().set_index("trial_id")
    assert not [c for c in trials.columns if c.startswith("best")]
    t0 = trials.loc["t0"]
    assert (t0["status"], t0["n_epochs"]) == ("completed", 3)
    assert (t0["final.AP"], t0["final.AP50"]) == (0.3, 0.55)  # epoch 3's, not the peak's
    assert t0["model.heatmap_size"] == 32 and pd.isna(t0["error"])
    t1 = trials.loc["t1"]
    assert t1["error"] == "CUDA out of memory" and t1["n_epochs"] == 1 and math.isnan(t1["final.AP"])
    assert trials.loc["t2", "n_epochs"] == 0 and math.isnan(trials.loc["t2", "final.AP"])
    assert trials.dtypes["n_epochs"] == "int64" and trials.dtypes["model.heatmap_size"] == "int64"
    assert pd.read_parquet(tmp_path / "hm" / "trials").shape[0] == 3


def test_file_uri_and_subtree_filesystem(tmp_path):
    uri_store = ResultStore(f"file://{tmp_path}/uri", "hm")
    uri_store.record_epoch("t0", 1, PARAMS, metrics())
    assert (tmp_path / "uri" / "hm" / "epochs" / "t0.parquet").is_file()
    assert ResultStore.open(f"file://{tmp_path}/uri/hm").read_epochs()["AP"].tolist() == [0.25]

    (tmp_path / "sub").mkdir()
    subtree = pafs.SubTreeFileSystem(str(tmp_path / "sub"), pafs.LocalFileSystem())
    sub_store = ResultStore("results", "hm", filesystem=subtree)
    sub_store.record_epoch("t0", 1, PARAMS, metrics(AP=0.75))
    sub_store.record_trial("t0", PARAMS, "completed")
    assert (tmp_path / "sub" / "results" / "hm" / "trials" / "t0.parquet").is_file()
    assert sub_store.read_trials()["final.AP"].tolist() == [0.75]
    assert pd.read_parquet(tmp_path / "sub" / "results" / "hm" / "epochs")["AP"].tolist() == [0.75]


class FailingMove(pafs.LocalFileSystem):
    def move(self, src, dest):
        raise OSError("simulated crash before rename")


def test_failed_rename_keeps_old_file_and_removes_temp(tmp_path):
    ResultStore(str(tmp_path), "hm").record_epoch("t0", 1, PARAMS, metrics(AP=0.25))
    failing = ResultStore(str(tmp_path), "hm", filesystem=FailingMove())
    with pytest.raises(OSError, match="simulated"):
        failing.record_epoch("t0", 1, PARAMS, metrics(AP=0.99))
    epochs_dir = tmp_path / "hm" / "epochs"
    assert [p.name for p in epochs_dir.iterdir()] == ["t0.parquet"]
    assert pd.read_parquet(epochs_dir)["AP"].tolist() == [0.25]


def test_writer_killed_between_write_and_rename(tmp_path):
    ResultStore(str(tmp_path), "hm").record_epoch("t0", 1, PARAMS, metrics(AP=0.25))
    script = textwrap.dedent(f"""
        import os, signal
        import pyarrow.fs as pafs
        from transcenter.store.results import ResultStore
        class Killed(pafs.LocalFileSystem):
            def move(self, src, dest):
                os.kill(os.getpid(), signal.SIGKILL)
        store = ResultStore({str(tmp_path)!r}, "hm", filesystem=Killed())
        store.record_epoch("t0", 1, {PARAMS!r}, {{"AP": 0.99}})
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    epochs_dir = tmp_path / "hm" / "epochs"
    leftovers = [p.name for p in epochs_dir.iterdir() if p.name != "t0.parquet"]
    assert len(leftovers) == 1 and leftovers[0].startswith(".t0.parquet.tmp-")
    assert pd.read_parquet(epochs_dir)["AP"].tolist() == [0.25]
    assert ResultStore(str(tmp_path), "hm").read_epochs()["AP"].tolist() == [0.25]


@pytest.mark.parametrize("value", ["0.5", None, True, [0.5]])
def test_non_numeric_metric_names_trial_epoch_and_key(tmp_path, value):
    store = ResultStore(str(tmp_path), "hm")
    with pytest.raises(ValueError, match=r"trial t7, epoch 3: metric 'AP50'"):
        store.record_epoch("t7", 3, PARAMS, metrics(AP50=value))
    assert not store.exists()


@pytest.mark.parametrize("kwargs", [
    {"trial_id": ".hidden"}, {"trial_id": "a/b"}, {"epoch": 0}, {"status": "done"},
    {"params": {"lr": 0.1}}, {"params": {"final.AP": 0.1}}, {"params": {"best.AP": 0.1}},
    {"metrics": {"best.AP": 0.1}},
    {"params": {"model.heatmap_size": None}},
])
def test_bad_input_is_rejected(tmp_path, kwargs):
    call = {"trial_id": "t0", "epoch": 1, "params": PARAMS, "metrics": METRICS, **kwargs}
    with pytest.raises(ValueError):
        ResultStore(str(tmp_path), "hm").record_epoch(**call)


def test_summary_columns_are_not_hyperparameters():
    """best.* and best_epoch are in trial tables written by earlier versions."""
    assert is_param_column("model.heatmap_size")
    assert not any(map(is_param_column, ["final.AP", "best.AP", "best_epoch", "n_epochs", "AP"]))


def test_flatten_params():
    assert flatten_params({"model": {"heatmap_size": 32}, "loss.alpha": 2.0}) == {
        "model.heatmap_size": 32, "loss.alpha": 2.0}
    with pytest.raises(ValueError, match="model.heatmap_size"):
        flatten_params({"model": {"heatmap_size": 32}, "model.heatmap_size": 64})


def test_empty_study_reads_typed_empty_frames(tmp_path):
    store = ResultStore(str(tmp_path), "nothing")
    epochs, trials = store.read_epochs(), store.read_trials()
    assert epochs.empty and trials.empty
    assert epochs.dtypes["epoch"] == "int64" and epochs.dtypes["AP50"] == "float64"
    assert {"study", "trial_id", "status", "error", "n_epochs"} <= set(trials.columns)

class _RangedFile(fsspec.spec.AbstractBufferedFile):
    def _fetch_range(self, start, end):
        data = self.fs.objects[self.path][start:end]
        self.fs.replace_after_fetch()
        return data


class RangedStore(fsspec.AbstractFileSystem):
    """Objects in memory whose open files fetch byte ranges of the object's current version in
    separate requests, as an S3 reader does; ``replace_after_fetch`` runs after each request."""

    cachable = False

    def __init__(self):
        super().__init__()
        self.objects, self.replace_after_fetch = {}, lambda: None

    def info(self, path, **kwargs):
        path = self._strip_protocol(path)
        if path not in self.objects:
            raise FileNotFoundError(path)
        return {"name": path, "size": len(self.objects[path]), "type": "file"}

    def _open(self, path, mode="rb", **kwargs):
        return _RangedFile(self, self._strip_protocol(path), mode, block_size=64, cache_type="none")


def _parquet(rows):
    sink = io.BytesIO()
    pq.write_table(pa.table({"epoch": list(range(rows)), "AP": [0.5] * rows}), sink)
    return sink.getvalue()


def test_a_file_replaced_while_it_is_read_reads_as_one_version():
    store = RangedStore()
    old, new = _parquet(1), _parquet(40)
    store.objects["study/trial.parquet"] = old

    def replace():
        store.objects["study/trial.parquet"] = new
    store.replace_after_fetch = replace
    table = read_parquet_file(pafs.PyFileSystem(pafs.FSSpecHandler(store)), "study/trial.parquet")
    assert table.num_rows in (1, 40)
