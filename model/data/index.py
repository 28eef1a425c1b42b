"""The data index: a columnar copy of an opened (train, val) pair, parsed once per study.

Parsing every annotation file and probing every image in each Ray Train worker of each trial
costs tens of seconds and gigabytes at COCO scale. The study driver parses once and writes this
index (``<study>/data/index.arrow``); a trial's ``data.index`` names it and
:func:`~transcenter.model.data.build.open_datasets` opens it instead of parsing.

Format: one Arrow IPC file (feather v2, uncompressed), memory-mapped and read column-wise. Record
batch 0 is the training split, 1 the validation split, one row per image::

    path      string                               image file, relative to data.root
                                                   (absolute when outside it)
    size      fixed_size_list<int32>[2]            (H, W) px
    image_id  int64                                the target's image_id
    boxes     list<fixed_size_list<float32>[4]>    (K, 4) xyxy original px
    labels    list<int64>                          (K,) class indices
    ignore    list<uint8>                          (K,) 1 = VOC difficult / COCO crowd

The schema metadata holds JSON: under ``transcenter.index`` the format version, data.root, the
class list and each split's :class:`~transcenter.model.data.common.LoaderSummary`; under
``transcenter.fingerprint`` the :class:`DataFingerprint` it was built from.

Fingerprint: the DataConfig fields that change what is parsed (name, root, splits, annotation
files, val_fraction, seed when val_fraction > 0, unknown_classes, class_names; not input_size
or augment, which only change transforms), and for each annotation file the parse reads (VOC:
the split lists, the class file, every XML of the splits; COCO: the JSONs) its path relative to
data.root, its size and the SHA-256 of its content. Content rather than modification times, so
that a node that copied the data set at another time still matches, and a relabelled box that kept
its file's size does not. Hashing costs a small part of parsing the same files
(``tests/bench/data_open.py`` measures both). A given class
list equal to the index's own matches an index built without one: parsing with it gives the same
data.

Where it is read: an index on a local filesystem (a path or ``file://``: the study's own folder)
is memory-mapped where it is, after the same check; the driver replaces it only by renaming a new
file into place, so a reader's mapping stays whole. :func:`open_index` copies an index at any other
URI pyarrow opens (``s3://``) into ``<tempfile.gettempdir()>/transcenter-index/<key>.arrow``, once
per node: a file lock serialises the node's workers and the copy is renamed into place. The key hashes the reader's
fingerprint and the source's location, size and modification time, so a rebuilt index is copied
again and a cached copy is reused without touching the source's bytes.

Stale index: refused. An index that is missing, unreadable or built from other annotation files
or options than the reader's raises :class:`StaleIndexError`, one line naming the index and what
differs; a worker never parses in its place, so a trial trains on what the driver checked and
reported, or fails saying why.

Bad images: the driver probes only a sample of an index's images. :class:`IndexedDetection` turns
an image that cannot be read or decoded, or whose size differs from the annotation's, into a skip
counted in its ``summary`` (once per image, in the process that read it: a DataLoader worker's
count stays in that worker) and logged, and returns the next readable image.

Memory: a split keeps its columns as numpy views of the memory-mapped Arrow buffers, no
per-image Python objects, so forked DataLoader workers share those pages instead of copying them
as they touch reference counts and garbage-collector headers (pytorch#13246); targets are built
per image on demand.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import torch
from pyarrow import ipc

from transcenter.model.data.common import (
    AnnotatedImageDataset,
    ImageError,
    ImageFileDataset,
    LoaderSummary,
    Target,
    Transform,
    make_target,
)
from transcenter.model.data.config import DataConfig
from transcenter.store.uri import filesystem

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
SPLITS = ("train", "val")  # record batch order
OPTION_FIELDS = ("name", "root", "train_splits", "val_splits", "train_ann", "val_ann",
                 "val_fraction", "seed", "unknown_classes", "class_names")
_META_KEY, _FINGERPRINT_KEY = b"transcenter.index", b"transcenter.fingerprint"
_SCHEMA = pa.schema([
    ("path", pa.string()),
    ("size", pa.list_(pa.int32(), 2)),
    ("image_id", pa.int64()),
    ("boxes", pa.list_(pa.list_(pa.float32(), 4))),
    ("labels", pa.list_(pa.int64())),
    ("ignore", pa.list_(pa.uint8())),
])


class StaleIndexError(ValueError):
    """The data index cannot stand for the configured data: unreadable, or built from other
    annotation files or options; the message names the index and what differs."""


class MissingIndexError(StaleIndexError):
    """There is no data index at the given location."""


@dataclass(frozen=True)
class DataFingerprint:
    """What a parsed data set depends on besides its images (module docstring).

    Attributes:
        options: :data:`OPTION_FIELDS` -> value in JSON types (root absolute, class_names a list
            or None, seed None when val_fraction is 0).
        files: ``(path relative to data.root, size in bytes, SHA-256 hex)`` per annotation file,
            in parsing order; ``(path, -1, "")`` for a missing one (the parse names it).
    """

    options: dict[str, Any]
    files: tuple[tuple[str, int, str], ...]

    def __post_init__(self) -> None:
        if set(self.options) != set(OPTION_FIELDS):
            raise ValueError(f"fingerprint options {sorted(self.options)}: expected {sorted(OPTION_FIELDS)}")
        object.__setattr__(self, "files", tuple((str(p), int(n), str(d)) for p, n, d in self.files))

    @classmethod
    def of(cls, data: DataConfig, files: Sequence[Path]) -> DataFingerprint:
        """Returns the fingerprint of ``data``'s options and of ``files`` (hashed now)."""
        root = os.path.abspath(os.path.expanduser(data.root))
        options = {name: getattr(data, name) for name in OPTION_FIELDS}
        options.update(root=root, val_fraction=float(data.val_fraction),
                       seed=data.seed if data.val_fraction else None,
                       class_names=None if data.class_names is None else list(data.class_names))
        return cls(options, tuple(_file_entry(os.path.abspath(f), root) for f in files))

    @property
    def digest(self) -> str:
        """SHA-256 hex of the options and files."""
        return _sha256([self.options, self.files])

    def differences(self, built: DataFingerprint, class_names: Sequence[str]) -> list[str]:
        """Returns what differs between the data this fingerprint describes and the data an index
        was built from (its fingerprint ``built`` and resolved ``class_names``): one phrase per
        option, one for the annotation files; [] when it matches."""
        theirs = dict(built.options)
        if self.options["class_names"] == list(class_names):
            theirs["class_names"] = self.options["class_names"]  # parses to the same data
        out = [f"data.{k}: index {theirs[k]!r}, here {self.options[k]!r}"
               for k in OPTION_FIELDS if theirs[k] != self.options[k]]
        ours = {path: rest for path, *rest in self.files}
        built_files = {path: rest for path, *rest in built.files}
        changed = [p for p in dict.fromkeys([*ours, *built_files]) if ours.get(p) != built_files.get(p)]
        if changed:
            out.append(f"{len(changed)} annotation file(s) differ from those it was built from: "
                       + ", ".join(changed[:3]) + (", ..." if len(changed) > 3 else ""))
        return out


def _file_entry(path: str, root: str) -> tuple[str, int, str]:
    """``(path relative to root, or absolute outside it; size in bytes; SHA-256 hex)`` of an
    absolute ``path``; size -1 and digest "" for a missing file."""
    try:
        with open(path, "rb", buffering=0) as f:
            size = os.fstat(f.fileno()).st_size
            # One read for a small file: file_digest's 256 KiB buffer per call doubles VOC's time.
            digest = hashlib.sha256(f.read()) if size < 1 << 20 else hashlib.file_digest(f, "sha256")
        return _relative(path, root), size, digest.hexdigest()
    except FileNotFoundError:
        return _relative(path, root), -1, ""


def _relative(path: str, root: str) -> str:
    """An absolute ``path`` relative to the absolute ``root`` if it lies inside, else as is (string
    operations: pathlib's take seconds on 100,000 paths)."""
    inside = os.path.join(root, "")
    return path[len(inside):] if path.startswith(inside) else path


def _sha256(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def _filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """Returns the pyarrow filesystem of a local path or URI (S3's retrying for a while:
    :func:`transcenter.store.uri.filesystem`) and the path inside it."""
    if "://" in uri:
        return filesystem(uri)
    return pafs.LocalFileSystem(), str(Path(uri).expanduser().absolute())


def write_index(train: AnnotatedImageDataset, val: AnnotatedImageDataset,
                fingerprint: DataFingerprint, uri: str) -> None:
    """Writes the index of a parsed (train, val) pair to ``uri`` (a local path or a URI pyarrow
    opens), whole or not at all: locally through a temporary file renamed into place; an object
    store publishes an object only when its upload completes."""
    root = fingerprint.options["root"]
    meta = {"version": FORMAT_VERSION, "root": root, "class_names": list(train.class_names),
            "summaries": {name: asdict(ds.summary) for name, ds in zip(SPLITS, (train, val))}}
    schema = _SCHEMA.with_metadata({_META_KEY: json.dumps(meta),
                                    _FINGERPRINT_KEY: json.dumps(asdict(fingerprint))})
    batches = [_record_batch(ds, root) for ds in (train, val)]
    fs, path = _filesystem(uri)
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    local = isinstance(fs, pafs.LocalFileSystem)
    temp = f"{path}.{uuid.uuid4().hex}.tmp" if local else path
    try:
        with fs.open_output_stream(temp) as sink, ipc.new_file(sink, schema) as writer:
            for batch in batches:
                writer.write_batch(batch)
        if local:
            fs.move(temp, path)
    finally:
        if local and fs.get_file_info(temp).type != pafs.FileType.NotFound:
            fs.delete_file(temp)
    logger.info("data index: %d train and %d val images written to %s", len(train), len(val), uri)


def _record_batch(dataset: AnnotatedImageDataset, root: str) -> pa.RecordBatch:
    """One split's rows (module docstring), image paths relative to ``root``."""
    records = dataset.records
    counts = np.fromiter((len(r.labels) for r in records), np.int32, len(records))  # (N,)
    offsets = pa.array(np.concatenate([[0], np.cumsum(counts)]).astype(np.int32))  # (N + 1,)
    boxes = np.concatenate([r.boxes.numpy() for r in records] + [np.zeros((0, 4), np.float32)])  # (M, 4)
    labels = np.concatenate([r.labels.numpy() for r in records] + [np.zeros(0, np.int64)])  # (M,)
    ignore = np.concatenate([r.ignore.numpy() for r in records] + [np.zeros(0, bool)])  # (M,)
    sizes = np.array([r.size for r in records], np.int32).reshape(-1)  # (N * 2,) H, W
    paths = [_relative(os.path.abspath(r.path), root) for r in records]
    columns = [
        pa.array(paths, pa.string()),
        pa.FixedSizeListArray.from_arrays(pa.array(sizes), 2),
        pa.array(np.array([int(r.image_id) for r in records], np.int64)),
        pa.ListArray.from_arrays(offsets, pa.FixedSizeListArray.from_arrays(pa.array(boxes.reshape(-1)), 4)),
        pa.ListArray.from_arrays(offsets, pa.array(labels)),
        pa.ListArray.from_arrays(offsets, pa.array(ignore.astype(np.uint8))),
    ]
    return pa.record_batch(columns, schema=_SCHEMA)


def open_index(uri: str, fingerprint: DataFingerprint, train_transforms: Transform | None = None,
               val_transforms: Transform | None = None,
               cache_dir: Path | None = None) -> tuple[IndexedDetection, IndexedDetection]:
    """Returns the (train, val) splits of the index at ``uri``, from this node's cache
    (:func:`cached_index`).

    Raises:
        StaleIndexError: the index is missing, unreadable, or was built from other data than
            ``fingerprint`` describes.
    """
    file = cached_index(uri, fingerprint, cache_dir)
    return IndexedDetection(file, "train", train_transforms), IndexedDetection(file, "val", val_transforms)


def cached_index(uri: str, fingerprint: DataFingerprint, cache_dir: Path | None = None) -> Path:
    """Returns the local file to memory-map for the index at ``uri``, checked against
    ``fingerprint``: the index itself when it is on a local filesystem; else this node's copy, which
    the first caller makes in ``cache_dir`` (default ``<tempfile.gettempdir()>/transcenter-index``)
    and later ones reuse.

    Raises:
        MissingIndexError: no file at ``uri``.
        StaleIndexError: the file is no index of this format, or differs (one line naming both).
    """
    fs, path = _filesystem(uri)
    info = fs.get_file_info(path)
    if info.type != pafs.FileType.File:
        raise MissingIndexError(f"data.index {uri}: no index there (the study driver writes it; "
                                f"unset data.index to parse the annotation files instead)")
    if fs.type_name == "local":
        _check(Path(path), fingerprint, uri)
        return Path(path)
    folder = Path(cache_dir) if cache_dir else Path(tempfile.gettempdir()) / "transcenter-index"
    folder.mkdir(parents=True, exist_ok=True)
    key = _sha256([FORMAT_VERSION, fingerprint.digest, fs.type_name, path, info.size, info.mtime_ns])
    local = folder / f"{key[:32]}.arrow"
    with (folder / ".lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not local.is_file():
            temp = folder / f".{local.name}.{os.getpid()}.tmp"
            try:
                with fs.open_input_stream(path) as source, temp.open("wb") as copy:
                    shutil.copyfileobj(source, copy, 1 << 22)
                _check(temp, fingerprint, uri)
                os.replace(temp, local)
            finally:
                temp.unlink(missing_ok=True)
            logger.info("data index %s copied to %s", uri, local)
    return local


def _check(file: Path, fingerprint: DataFingerprint, uri: str) -> None:
    """Raises :class:`StaleIndexError` unless ``file`` is an index of this format built from the
    data ``fingerprint`` describes."""
    try:
        metadata = ipc.open_file(pa.memory_map(str(file))).schema.metadata or {}
        meta = json.loads(metadata[_META_KEY])
        built = DataFingerprint(**json.loads(metadata[_FINGERPRINT_KEY]))
    except (pa.ArrowInvalid, KeyError, TypeError, ValueError) as err:
        raise StaleIndexError(f"data.index {uri}: not a data index ({err})") from err
    if meta.get("version") != FORMAT_VERSION:
        raise StaleIndexError(f"data.index {uri}: format version {meta.get('version')}, this code "
                              f"reads {FORMAT_VERSION}; rerun the study driver to rebuild it")
    differ = fingerprint.differences(built, meta["class_names"])
    if differ:
        raise StaleIndexError(f"data.index {uri} was built from other data than this node has: "
                              + "; ".join(differ) + "; rerun the study driver (--resume rebuilds "
                              "it) or unset data.index")


class IndexedDetection(ImageFileDataset):
    """One split of a data index as ``(image, target)`` pairs (contract in ``common``).

    Args:
        file: A local index file (:func:`cached_index` gives one).
        split: ``"train"`` or ``"val"``.
        transforms: Callable ``(image, target) -> (image, target)``.

    Attributes:
        file: The index file.
        split: The split.
        root: data.root, which relative image paths are joined to.
    """

    def __init__(self, file: Path, split: str, transforms: Transform | None = None) -> None:
        if split not in SPLITS:
            raise ValueError(f"split {split!r}: must be one of {SPLITS}")
        reader = ipc.open_file(pa.memory_map(str(file)))
        meta = json.loads(reader.schema.metadata[_META_KEY])
        super().__init__(meta["class_names"], transforms, LoaderSummary(**meta["summaries"][split]))
        self.file, self.split, self.root = Path(file), split, Path(meta["root"])
        batch = reader.get_batch(SPLITS.index(split))
        paths = batch.column("path")
        self._path_offsets = _view(paths, np.int32, extra=1)  # (N + 1,)
        self._path_bytes = np.frombuffer(paths.buffers()[2], np.uint8)  # utf-8 of all paths
        self._sizes = _view(batch.column("size").values, np.int32).reshape(-1, 2)  # (N, 2) (H, W) px
        self._image_ids = _view(batch.column("image_id"), np.int64)  # (N,)
        # The objects of image i are rows offsets[i]:offsets[i + 1] of boxes, labels and ignore.
        self._offsets = _view(batch.column("labels"), np.int32, extra=1)  # (N + 1,)
        self._boxes = _view(batch.column("boxes").values.values, np.float32).reshape(-1, 4)  # (M, 4) xyxy px
        self._labels = _view(batch.column("labels").values, np.int64)  # (M,)
        self._ignore = _view(batch.column("ignore").values, np.uint8).view(np.bool_)  # (M,)
        self._unreadable: set[int] = set()  # images found bad in this process

    def __len__(self) -> int:
        return len(self._image_ids)

    def image_file(self, index: int) -> tuple[Path, tuple[int, int]]:
        index = range(len(self))[index]
        start, end = self._path_offsets[index], self._path_offsets[index + 1]
        height, width = self._sizes[index].tolist()
        return self.root / self._path_bytes[start:end].tobytes().decode(), (height, width)

    def annotations(self, index: int) -> Target:
        index = range(len(self))[index]
        start, end = self._offsets[index], self._offsets[index + 1]
        return make_target(torch.from_numpy(self._boxes[start:end].copy()),  # (K, 4) xyxy px
                           torch.from_numpy(self._labels[start:end].copy()),  # (K,)
                           int(self._image_ids[index]), tuple(self._sizes[index].tolist()),
                           torch.from_numpy(self._ignore[start:end].copy()))  # (K,)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, Target]:
        """Returns image ``index`` and its target, transformed; an image that cannot be read is
        counted in ``summary.skipped`` (once per process), logged, and the next readable image
        (and its target) is returned in its place.

        Raises:
            IndexError: ``index`` is out of range.
            ValueError: no image of the split is readable.
        """
        first = range(len(self))[index]
        for step in range(len(self)):
            i = (first + step) % len(self)
            if i in self._unreadable:
                continue
            try:
                return super().__getitem__(i)
            except ImageError as err:
                self._unreadable.add(i)
                self.summary.skip(err.reason, f"{err} ({self.split} image {i} of {self.file}; "
                                              f"the next readable image is used)")
        raise ValueError(f"{self.file}: no image of the {self.split} split is readable")


def _view(array: pa.Array, dtype: type, extra: int = 0) -> np.ndarray:
    """A read-only numpy view of an Arrow array's second buffer: a primitive array's values, or
    (``extra=1``) a list or string array's offsets. ``Array.to_numpy`` would import pandas."""
    return np.frombuffer(array.buffers()[1], dtype)[array.offset:array.offset + len(array) + extra]
