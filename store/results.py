"""Result store: every trial-epoch and every trial of a study as plain parquet.

Layout (a contract that users and `transcenter.dashboards` rely on)::

    <storage_path>/<study>/epochs/<trial_id>.parquet   one row per epoch of that trial
    <storage_path>/<study>/trials/<trial_id>.parquet   one row: the trial's summary

so ``pandas.read_parquet("<storage_path>/<study>/epochs")`` reads every trial-epoch with no project
code; ``<storage_path>/<study>/study.json`` holds the study's metadata, e.g. ``search_space``:
``{dotted name: {"type": "float", "low": .., "high": .., "log": bool} | {"type": "categorical",
"values": [..]}}`` (the scale the dashboards' importance analysis uses). Columns:

- epochs: ``study, trial_id, status`` (str), ``epoch`` (int64, 1-based), ``time_s`` (float64, wall
  seconds of that epoch), ``node_ip`` (str, the Ray node that trained it; null if unknown),
  ``device`` (str, the device it trained on in words, e.g. ``NVIDIA H200`` or ``cpu x2``; null if
  unknown), one column per hyperparameter under its dotted name, then the metrics
  (float64): always the `REQUIRED_METRICS` (null where not reported), then any extra ones.
- trials: ``study, trial_id, status, error`` (str, error null unless given), ``n_epochs`` (int64,
  the epochs stored, 1 to ``n_epochs``), ``node_ip`` (str, the node of its last stored epoch), the
  hyperparameters, ``final.<metric>`` (float64: the metric at the trial's last epoch, where it
  completed or was stopped; null without epochs). A trial's value of any metric is its value at its
  last epoch: what Optuna is told, and what the dashboards, replay and MLflow report. Studies
  written by earlier versions also have ``best.<metric>`` and ``best_epoch``, which readers ignore.

One file per trial, rewritten whole on every write, rather than one file per trial-epoch: a retried or
resumed epoch replaces its row by key (no duplicates, no compaction step), a study of T trials is T
small files instead of T x epochs tiny ones (what object-store listings and readers pay for), and the
rewrite costs only the trial's few dozen rows. Each write goes to a hidden temporary name in the same
directory (``.<trial_id>.parquet.tmp-<uuid>``, ignored by pyarrow and pandas because it starts with a
dot) and is then moved onto the final name: a local rename is atomic, and on object stores the final
object appears whole, so a reader sees the old file or the new one, never a torn one. The
read-modify-write is not locked: one writer per trial (Tune's callback, on the driver) is assumed.

Types are fixed by the value, never by the file, so every file of a study agrees and pyarrow unifies
them: metrics are always float64; a hyperparameter is bool, int64, float64 or str after its Python
value (numpy scalars included; lists and tuples are stored as JSON text). A name that a search space
samples both as int and float, or that may be None, should be declared in ``param_types``.

Hyperparameter names are dotted config paths (``model.heatmap_size``); metric names have no dot.
That is how a reader tells them apart, so it is enforced. NaN and inf metrics are stored as they are,
because diverged trials must be recorded; a metric that is not a real number raises ValueError.
Plain ``pandas.read_parquet(dir)`` takes its schema from one file, so a column only some trials have
(an extra metric, a conditional hyperparameter) is best read with `ResultStore.read_epochs`, which
unifies the schemas of all files.
"""

from __future__ import annotations

import json
import logging
import math
import numbers
import posixpath
import re
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from transcenter.store import uri

# The metric vocabulary of the store, re-exported for its readers (the dashboards).
from transcenter.store.metric_names import COCO_AP_KEYS, LOSS_KEYS, OVERLAP_RECALL  # noqa: F401

logger = logging.getLogger(__name__)

STATUSES = ("running", "completed", "stopped", "error")
READ_THREADS = 16  # files read at once by read_parquet_dir
META_FILE = "study.json"
REQUIRED_METRICS = LOSS_KEYS + COCO_AP_KEYS
EPOCH_COLUMNS = {
    "study": pa.string(), "trial_id": pa.string(), "epoch": pa.int64(),
    "status": pa.string(), "time_s": pa.float64(), "node_ip": pa.string(), "device": pa.string(),
}
TRIAL_COLUMNS = {
    "study": pa.string(), "trial_id": pa.string(), "status": pa.string(),
    "error": pa.string(), "n_epochs": pa.int64(), "node_ip": pa.string(),
}
SUMMARY_PREFIXES = ("final.", "best.")  # summary columns (best.*: studies of earlier versions)
_PARAM_TYPES = {"bool": pa.bool_(), "int64": pa.int64(), "float64": pa.float64(), "string": pa.string()}
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_TEMPORARY = re.compile(r"\..+\.tmp-[0-9a-f]{32}")


def flatten_params(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flattens nested hyperparameters to dotted names.

    Args:
        params: ``{"model": {"heatmap_size": 32}}``, ``{"model.heatmap_size": 32}`` or a mix.
        prefix: Prepended to every name (used by the recursion).

    Returns:
        ``{"model.heatmap_size": 32}``: one entry per leaf, values untouched.

    Raises:
        ValueError: If two spellings name the same parameter.
    """
    flat: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        leaves = flatten_params(value, f"{name}.") if isinstance(value, Mapping) else {name: value}
        for leaf, leaf_value in leaves.items():
            if leaf in flat:
                raise ValueError(f"hyperparameter {leaf!r} is given twice")
            flat[leaf] = leaf_value
    return flat


def is_param_column(name: str) -> bool:
    """Tells whether a store column holds a hyperparameter (a dotted name, not final./best.)."""
    return "." in name and not name.startswith(SUMMARY_PREFIXES)


def list_parquet_files(filesystem: pafs.FileSystem, path: str) -> list[str]:
    """Returns the sorted paths of a directory's visible ``*.parquet`` files ([] if it is missing).

    Names starting with ``.`` or ``_`` (temporary files) are skipped, as pyarrow's readers do.
    """
    infos = filesystem.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    return sorted(
        info.path for info in infos
        if info.type == pafs.FileType.File and info.base_name.endswith(".parquet")
        and not info.base_name.startswith((".", "_"))
    )


def read_parquet_dir(filesystem: pafs.FileSystem, path: str) -> pa.Table | None:
    """Reads every visible ``*.parquet`` file of a directory into one table.

    Args:
        filesystem: The filesystem holding ``path``.
        path: A directory.

    Returns:
        All rows, with the files' schemas unified (int64 and float64 promote to float64, a column
        missing from a file is null there), or None when there is no file.
    """
    files = list_parquet_files(filesystem, path)
    if not files:
        return None
    # A study holds one small file per trial: reading each costs more in its footer and in the
    # round trip (S3) than in its rows, and several at once overlap that.
    with ThreadPoolExecutor(max_workers=min(READ_THREADS, len(files))) as pool:
        tables = list(pool.map(lambda file: read_parquet_file(filesystem, file), files))
    return pa.concat_tables(tables, promote_options="permissive")


def read_parquet_file(filesystem: pafs.FileSystem, path: str) -> pa.Table:
    """Returns the rows of the parquet file ``path`` (one trial's epochs or summary).

    The file is read whole in one request: a reader that fetched its footer and its pages in
    separate ranged requests could mix two versions of a file replaced meanwhile (on S3). It is
    parsed in the calling thread (no Arrow dataset scan, no Arrow thread pool), so a read still in
    flight as the process exits leaves no Arrow task behind.
    """
    with filesystem.open_input_stream(path) as f:
        data = f.read()
    return pq.ParquetFile(pa.BufferReader(data)).read(use_threads=False)


class ResultStore:
    """Writes and reads one study's epochs and trials (see the module docstring for the layout).

    A store keeps the epoch table it last wrote for each trial not yet recorded as ended, so
    recording an epoch rewrites the trial's file without reading it back first; while it writes, it
    must be the only writer of those files (in a study, the driver's store is).

    Args:
        storage_path: A local path or any URI pyarrow understands (``file://``, ``s3://``, ``gs://``);
            with ``filesystem``, a path inside that filesystem.
        study: The study's name, a directory under ``storage_path``.
        filesystem: A pyarrow filesystem; by default resolved from ``storage_path``.
        param_types: Declared types of hyperparameters by dotted name: ``"bool"``, ``"int64"``,
            ``"float64"`` or ``"string"``; undeclared ones are typed after their value.
        after_temp_write: Called between writing a file's temporary copy and moving it in place
            (the platform's fault tests kill the study driver there); picklable when the store is.
    """

    def __init__(
        self,
        storage_path: str,
        study: str,
        filesystem: pafs.FileSystem | None = None,
        param_types: Mapping[str, str] | None = None,
        after_temp_write: Callable[[], None] | None = None,
    ) -> None:
        _check_name("study", study)
        unknown = set((param_types or {}).values()) - set(_PARAM_TYPES)
        if unknown:
            raise ValueError(f"param_types: unknown types {sorted(unknown)}, use {sorted(_PARAM_TYPES)}")
        if filesystem is None:
            filesystem, storage_path = uri.filesystem(storage_path)
        self.filesystem = filesystem
        self.study = study
        self.root = posixpath.join(storage_path, study) if storage_path else study
        self.param_types = {k: _PARAM_TYPES[v] for k, v in (param_types or {}).items()}
        self.after_temp_write = after_temp_write
        self._written: dict[str, pa.Table] = {}  # trial -> the epoch table this store last wrote

    @classmethod
    def open(cls, study_dir: str, filesystem: pafs.FileSystem | None = None) -> ResultStore:
        """Opens an existing study directory ``<storage_path>/<study>`` (local path or URI)."""
        study_dir = study_dir.rstrip("/")
        if filesystem is None:
            study_dir = uri.resolve(study_dir)
        parent, study = posixpath.split(study_dir)
        return cls(parent, study, filesystem=filesystem)

    def exists(self) -> bool:
        """Tells whether the study has at least one epoch or trial file."""
        return any(list_parquet_files(self.filesystem, self._dir(kind)) for kind in ("epochs", "trials"))

    def record_epoch(
        self,
        trial_id: str,
        epoch: int,
        params: Mapping[str, Any],
        metrics: Mapping[str, Any],
        status: str = "running",
        time_s: float | None = None,
        node_ip: str | None = None,
        device: str | None = None,
    ) -> None:
        """Stores one epoch of a trial, replacing an earlier row of the same epoch.

        Args:
            trial_id: The trial; also its file name.
            epoch: 1-based epoch number.
            params: The trial's hyperparameters, nested or dotted.
            metrics: Metric name to real number (NaN and inf allowed); missing required metrics are
                stored as null.
            status: One of `STATUSES`.
            time_s: Wall time of this epoch in seconds.
            node_ip: The address of the Ray node that trained this epoch (rank 0).
            device: The device that trained it, in words.

        Raises:
            ValueError: On a bad name, epoch, status, parameter or non-numeric metric.
        """
        _check_name("trial_id", trial_id)
        if isinstance(epoch, bool) or not isinstance(epoch, numbers.Integral) or epoch < 1:
            raise ValueError(f"trial {trial_id}: epoch must be an int >= 1, got {epoch!r}")
        _check_status(trial_id, status)
        where = f"trial {trial_id}, epoch {epoch}"
        row = {"study": self.study, "trial_id": trial_id, "epoch": int(epoch), "status": status,
               "time_s": None if time_s is None else float(time_s), "node_ip": node_ip,
               "device": device}
        types = dict(EPOCH_COLUMNS)
        self._add_params(row, types, params, where)
        for name in REQUIRED_METRICS:
            row[name], types[name] = None, pa.float64()
        for name, value in metrics.items():
            row[name], types[name] = _metric(name, value, where), pa.float64()
        new = pa.Table.from_pylist([row], schema=pa.schema(types))
        old = self._read_trial_epochs(trial_id)
        if old is not None:
            keep = pc.not_equal(old["epoch"], pa.scalar(int(epoch), pa.int64()))
            new = pa.concat_tables([old.filter(keep), new], promote_options="permissive")
        new = new.sort_by("epoch").select(list(types) + [c for c in new.column_names if c not in types])
        self._write_trial_epochs(trial_id, new)

    def mark_last_epoch(self, trial_id: str, status: str) -> None:
        """Sets the status of the trial's last stored epoch (no-op for a trial with no epochs).

        Raises:
            ValueError: On a bad name or status.
        """
        _check_name("trial_id", trial_id)
        _check_status(trial_id, status)
        old = self._read_trial_epochs(trial_id)
        if old is None or old.num_rows == 0:
            return
        last = pc.equal(old["epoch"], pc.max(old["epoch"]))
        statuses = pc.if_else(last, pa.scalar(status, pa.string()), old["status"])
        table = old.set_column(old.schema.get_field_index("status"), "status", statuses)
        self._write_trial_epochs(trial_id, table)

    def remove_temporaries(self) -> int:
        """Deletes the temporary files that writes interrupted by a crash left behind (hidden
        ``.<name>.tmp-<uuid>`` files in ``epochs/``, ``trials/`` and the study folder); returns
        how many."""
        removed = 0
        for directory in (self.root, self._dir("epochs"), self._dir("trials")):
            infos = self.filesystem.get_file_info(pafs.FileSelector(directory, allow_not_found=True))
            for info in infos:
                if info.type == pafs.FileType.File and _TEMPORARY.fullmatch(info.base_name):
                    _delete_quietly(self.filesystem, info.path)
                    removed += 1
        return removed

    def record_trial(
        self,
        trial_id: str,
        params: Mapping[str, Any],
        status: str,
        error: str | None = None,
    ) -> None:
        """Stores the trial's summary row, computing its last epoch's metrics from its stored epochs.

        Args:
            trial_id: The trial.
            params: Its hyperparameters, nested or dotted.
            status: One of `STATUSES`.
            error: The error message of a failed trial.

        Raises:
            ValueError: On a bad name, status or parameter.
        """
        _check_name("trial_id", trial_id)
        _check_status(trial_id, status)
        row: dict[str, Any] = {"study": self.study, "trial_id": trial_id, "status": status,
                               "error": error}
        types = dict(TRIAL_COLUMNS)
        self._add_params(row, types, params, f"trial {trial_id}")
        old = self._read_trial_epochs(trial_id)
        epochs = old.to_pandas() if old is not None else pd.DataFrame(
            {c: pd.Series(dtype="float64") for c in ("epoch", *REQUIRED_METRICS)})
        summary = summarize_epochs(epochs)
        row.update(summary)
        nodes = epochs.sort_values("epoch")["node_ip"].dropna() if "node_ip" in epochs else []
        row["node_ip"] = str(nodes.iloc[-1]) if len(nodes) else None
        types.update({name: pa.float64() for name in summary if name.startswith(SUMMARY_PREFIXES)})
        table = pa.Table.from_pylist([row], schema=pa.schema(types))
        self._write_atomic(table, self._file("trials", trial_id))
        if status != "running":
            self._written.pop(trial_id, None)  # it ended: no more epochs in this run

    def read_epochs(self) -> pd.DataFrame:
        """Returns every trial-epoch, one row each, sorted by trial and epoch (empty if none)."""
        return self._read("epochs", EPOCH_COLUMNS, ["trial_id", "epoch"])

    def read_trials(self) -> pd.DataFrame:
        """Returns one row per trial, sorted by trial (empty if none)."""
        return self._read("trials", TRIAL_COLUMNS, ["trial_id"])

    def write_meta(self, meta: Mapping[str, Any]) -> None:
        """Writes the study's metadata (JSON-serialisable; e.g. ``search_space``, see the module
        docstring) to ``<study>/study.json``, atomically, replacing what was there."""
        self._write_bytes_atomic(json.dumps(meta, indent=1, sort_keys=True).encode(),
                                 posixpath.join(self.root, META_FILE))

    def read_meta(self) -> dict[str, Any]:
        """Returns the study's metadata, ``{}`` for a study that has none."""
        path = posixpath.join(self.root, META_FILE)
        if self.filesystem.get_file_info(path).type == pafs.FileType.NotFound:
            return {}
        with self.filesystem.open_input_stream(path) as f:
            return json.loads(f.read())

    def _read(self, kind: str, columns: Mapping[str, pa.DataType], order: list[str]) -> pd.DataFrame:
        table = read_parquet_dir(self.filesystem, self._dir(kind))
        if table is None:
            metric_types = {m: pa.float64() for m in REQUIRED_METRICS} if kind == "epochs" else {}
            table = pa.schema({**columns, **metric_types}).empty_table()
        return table.sort_by([(c, "ascending") for c in order]).to_pandas()

    def _write_trial_epochs(self, trial_id: str, table: pa.Table) -> None:
        self._write_atomic(table, self._file("epochs", trial_id))
        self._written[trial_id] = table

    def _read_trial_epochs(self, trial_id: str) -> pa.Table | None:
        if trial_id in self._written:
            return self._written[trial_id]
        path = self._file("epochs", trial_id)
        if self.filesystem.get_file_info(path).type != pafs.FileType.File:
            return None
        return read_parquet_file(self.filesystem, path)

    def _add_params(self, row: dict, types: dict, params: Mapping[str, Any], where: str) -> None:
        for name, value in flatten_params(params).items():
            if not is_param_column(name):
                raise ValueError(f"{where}: hyperparameter {name!r} must be a dotted config path "
                                 "(section.field), not starting with final./best.")
            row[name], types[name] = _param(name, value, self.param_types.get(name), where)

    def _dir(self, kind: str) -> str:
        return posixpath.join(self.root, kind)

    def _file(self, kind: str, trial_id: str) -> str:
        return posixpath.join(self._dir(kind), f"{trial_id}.parquet")

    def _write_atomic(self, table: pa.Table, path: str) -> None:
        sink = pa.BufferOutputStream()
        # A trial's file is rewritten whole with each epoch and always read whole: column
        # statistics and dictionaries would cost a quarter of the write and serve no reader.
        pq.write_table(table, sink, write_statistics=False, use_dictionary=False)
        self._write_bytes_atomic(sink.getvalue().to_pybytes(), path)
        logger.debug("wrote %d rows to %s", table.num_rows, path)

    def _write_bytes_atomic(self, data: bytes, path: str) -> None:
        """Writes ``data`` to a hidden temporary name beside ``path``, then moves it there."""
        directory, name = posixpath.split(path)
        self.filesystem.create_dir(directory, recursive=True)
        tmp = posixpath.join(directory, f".{name}.tmp-{uuid.uuid4().hex}")
        try:
            with self.filesystem.open_output_stream(tmp) as out:
                out.write(data)
            if self.after_temp_write is not None:
                self.after_temp_write()
            self.filesystem.move(tmp, path)
        except BaseException:
            _delete_quietly(self.filesystem, tmp)
            raise


def summarize_epochs(epochs: pd.DataFrame) -> dict[str, Any]:
    """Summarises one trial's epochs.

    Args:
        epochs: The trial's rows as stored (``epoch`` and metric columns; any order).

    Returns:
        ``n_epochs`` (rows) and ``final.<m>`` for every metric m: its value at the last epoch, as
        stored (NaN and inf kept); None for every metric when there is no epoch.
    """
    metrics = [c for c in epochs.columns if not is_param_column(c) and c not in EPOCH_COLUMNS]
    final = epochs.loc[epochs["epoch"].idxmax()] if len(epochs) else None
    summary: dict[str, Any] = {"n_epochs": len(epochs)}
    summary.update({f"final.{m}": None if final is None else float(final[m]) for m in metrics})
    return summary


def _check_name(kind: str, name: str) -> None:
    # Names become file and directory names: a leading "." or "_" would hide them from readers.
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(f"{kind} {name!r} must match {_NAME.pattern}")


def _check_status(trial_id: str, status: str) -> None:
    if status not in STATUSES:
        raise ValueError(f"trial {trial_id}: status {status!r} is not one of {STATUSES}")


def _metric(name: str, value: Any, where: str) -> float:
    if "." in name or name in EPOCH_COLUMNS:
        raise ValueError(f"{where}: metric name {name!r} must have no dot and not be a fixed column")
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise ValueError(f"{where}: metric {name!r} is not a number: {value!r}")
    return float(value)


def _param(name: str, value: Any, declared: pa.DataType | None, where: str) -> tuple[Any, pa.DataType]:
    """Returns the value as stored and its arrow type (declared, else inferred from the value)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, (list, tuple)):
        value = json.dumps(value)
    if value is None:
        if declared is None:
            raise ValueError(f"{where}: hyperparameter {name!r} is None; declare it in param_types")
        return None, declared
    inferred = (pa.bool_() if isinstance(value, bool) else pa.int64() if isinstance(value, int)
                else pa.float64() if isinstance(value, float) else pa.string() if isinstance(value, str)
                else None)
    if inferred is None:
        raise ValueError(f"{where}: hyperparameter {name!r} has unsupported type {type(value).__name__}")
    if declared is None or declared == inferred:
        return value, inferred
    if declared == pa.float64() and inferred == pa.int64():
        return float(value), declared
    if declared == pa.int64() and inferred == pa.float64() and math.isfinite(value) and value == int(value):
        return int(value), declared
    raise ValueError(f"{where}: hyperparameter {name!r} = {value!r} is not a {declared}")


def _delete_quietly(filesystem: pafs.FileSystem, path: str) -> None:
    try:
        filesystem.delete_file(path)
    except FileNotFoundError:
        pass
    except OSError:
        logger.warning("could not remove temporary file %s", path)
