"""Opens the train and val datasets a :class:`DataConfig` names, with the matching transforms.

The one place that turns a configuration into data: the trainer, the study driver's check before
any trial, and ``python -m transcenter.model.data.inspect`` all call :func:`open_datasets`. With
``data.index`` set it opens that data index (:mod:`transcenter.model.data.index`) instead of
parsing; :func:`data_fingerprint` says which annotation files and options an index must match.
"""
from __future__ import annotations

import logging
from pathlib import Path

from transcenter.model.data.coco import COCODetection
from transcenter.model.data.common import AnnotatedImageDataset, Transform
from transcenter.model.data.config import AUTO, DataConfig
from transcenter.model.data.index import DataFingerprint, open_index
from transcenter.model.data.synthetic import SyntheticConfig, SyntheticScenes
from transcenter.model.data.transforms import eval_transforms, train_transforms
from transcenter.model.data.voc import VOCDetection, VOCLayout

logger = logging.getLogger(__name__)


def open_datasets(data: DataConfig, input_size: int, check_images: bool = True):
    """Returns ``(train, val)`` datasets yielding ``input_size``² images.

    Validation always uses the deterministic letterbox; training uses the augmenting pipeline
    when ``data.augment``. Both carry what ``to_original`` needs to map boxes back, and the val
    set has the train set's ``class_names``. With ``data.index`` set, both come from that index
    (:class:`~transcenter.model.data.index.IndexedDetection`), after hashing the annotation files
    it must have been built from; nothing is parsed and no image probed.

    Args:
        data: The data section of a trial configuration.
        input_size: Network input side in pixels.
        check_images: Probe every image file (see ``AnnotatedImageDataset``); False reads the
            annotations only (the study driver's quick check). Unused with ``data.index``.

    Raises:
        FileNotFoundError: a missing root, split or annotation file (naming it and, for splits,
            the ones that exist).
        ValueError: bad annotations, or a split left with no usable image (naming the field).
        StaleIndexError: ``data.index`` is missing, or was built from other data (a ValueError).
    """
    train_tf = train_transforms(input_size) if data.augment else eval_transforms(input_size)
    val_tf = eval_transforms(input_size)
    if data.name == "synthetic":
        def scenes(split: str, length: int) -> SyntheticScenes:
            cfg = SyntheticConfig(num_classes=data.num_classes, image_size=input_size,
                                  length=length, seed=data.seed,
                                  overlap_fraction=data.overlap_fraction,
                                  overlap_cell_px=max(1, input_size // 16))
            return SyntheticScenes(cfg, split, train_tf if split == "train" else val_tf)
        return scenes("train", data.num_train), scenes("val", data.num_val)
    if data.index is not None:
        return open_index(data.index, data_fingerprint(data), train_tf, val_tf)
    opener = _open_voc if data.name == "voc" else _open_coco
    train, val = opener(data, train_tf, val_tf, check_images)
    for dataset, field in ((train, "train"), (val, "val")):
        if not len(dataset):
            raise ValueError(f"data ({data.name} at {data.root}): the {field} split has no usable "
                             f"image ({dataset.summary})")
    shared = {r.path for r in train.records} & {r.path for r in val.records}
    if shared:
        logger.warning("%d validation image(s) are also training images, e.g. %s", len(shared),
                       sorted(shared)[0])
    return train, val


def data_fingerprint(data: DataConfig) -> DataFingerprint:
    """Returns the fingerprint of what parsing ``data`` (VOC or COCO) reads besides the images:
    its options and :func:`annotation_files`, hashed now.

    Raises:
        FileNotFoundError, ValueError: as :func:`open_datasets` for a missing root or split.
    """
    return DataFingerprint.of(data, annotation_files(data))


def annotation_files(data: DataConfig) -> list[Path]:
    """Returns the files parsing ``data`` reads besides the images, in parsing order. VOC: per
    split its list (``ImageSets/Main/<split>.txt``) and the XML files it names, then the class file
    if there is one (whether or not ``data.class_names`` is given, so that an index matches either
    way); COCO: the training JSON and (without ``data.val_fraction``) the validation JSON.

    Raises:
        FileNotFoundError, ValueError: as :func:`open_datasets` for a missing root or split.
    """
    if data.name == "coco":
        _, train_ann, val_ann = _coco_files(data)
        return [train_ann] + ([val_ann] if val_ann else [])
    layout = VOCLayout.find(data.root)
    train_splits, val_splits = _voc_splits(data, layout)
    files = []
    for key, split in dict.fromkeys(layout.resolve(train_splits, "data.train_splits")
                                    + layout.resolve(val_splits, "data.val_splits")):
        listing = layout.folders[key] / "ImageSets" / "Main" / f"{split}.txt"
        files += [listing] if listing.is_file() else []
        files += [layout.annotation(key, file_id) for file_id in layout.ids(key, split)]
    class_file = layout.class_file()
    return files + ([class_file] if class_file else [])


def _voc_splits(data: DataConfig, layout: VOCLayout) -> tuple[str | list, str | list]:
    """Returns the (train, val) split lists ``data`` names (``auto`` resolved to pairs); val is
    empty with ``data.val_fraction``.

    Raises:
        FileNotFoundError: ``auto`` finds no validation split and there is no val_fraction.
    """
    auto_train, auto_val = layout.auto_splits()
    train_splits = auto_train if data.train_splits == AUTO else data.train_splits
    if data.val_fraction:
        return train_splits, []
    val_splits = auto_val if data.val_splits == AUTO else data.val_splits
    if not val_splits:
        raise FileNotFoundError(
            f"data.val_splits=auto: no validation split in {data.root!r} (no test split, and no "
            f"train + val pair); the splits there are: {', '.join(layout.splits())}. Set "
            f"data.val_splits, or data.val_fraction to hold out part of the training images")
    return train_splits, val_splits


def _open_voc(data: DataConfig, train_tf: Transform, val_tf: Transform,
              check_images: bool) -> tuple[AnnotatedImageDataset, AnnotatedImageDataset]:
    layout = VOCLayout.find(data.root)
    train_splits, val_splits = _voc_splits(data, layout)
    common = dict(unknown_classes=data.unknown_classes, check_images=check_images)
    if data.val_fraction:
        train = VOCDetection(data.root, train_splits, train_tf, keep_difficult=True,
                             class_names=data.class_names, **common)
        return train, train.split_off(data.val_fraction, data.seed, val_tf)
    train = VOCDetection(data.root, train_splits, train_tf, class_names=data.class_names, **common)
    val = VOCDetection(data.root, val_splits, val_tf, keep_difficult=True,
                       class_names=train.class_names, field="data.val_splits", **common)
    return train, val


def _open_coco(data: DataConfig, train_tf: Transform, val_tf: Transform,
               check_images: bool) -> tuple[AnnotatedImageDataset, AnnotatedImageDataset]:
    root, train_ann, val_ann = _coco_files(data)
    common = dict(unknown_classes=data.unknown_classes, check_images=check_images)
    train = COCODetection(_image_dirs(root, train_ann), train_ann, train_tf,
                          class_names=data.class_names, **common)
    if val_ann is None:
        return train, train.split_off(data.val_fraction, data.seed, val_tf)
    val = COCODetection(_image_dirs(root, val_ann), val_ann, val_tf,
                        class_names=train.class_names, **common)
    return train, val


def _coco_files(data: DataConfig) -> tuple[Path, Path, Path | None]:
    """Returns ``(root, training JSON, validation JSON)``; no validation JSON with
    ``data.val_fraction``.

    Raises:
        FileNotFoundError: no root folder, or an annotation file missing or not found.
        ValueError: the validation JSON is the training one.
    """
    root = Path(data.root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"data.root {str(root)!r}: no such folder")
    train_ann = _annotation_file(root, data.train_ann, "train", "data.train_ann")
    if data.val_fraction:
        return root, train_ann, None
    val_ann = _annotation_file(root, data.val_ann, "val", "data.val_ann")
    if val_ann == train_ann:
        raise ValueError(f"data.val_ann: {val_ann} is the training file too; set data.val_ann, "
                         f"or data.val_fraction to hold out part of its images")
    return root, train_ann, val_ann


def _annotation_file(root: Path, given: str | None, role: str, field: str) -> Path:
    """``given`` (absolute, or relative to ``root``), else the one JSON in ``root/annotations``
    (or ``root``) whose name contains ``role``, else (for training) the only JSON there.

    Raises:
        FileNotFoundError: the given file is missing, or none or several files match (naming
            them and the field to set).
    """
    if given:
        path = Path(given).expanduser()
        path = path if path.is_absolute() else root / path
        if not path.is_file():
            raise FileNotFoundError(f"{field}={given!r}: COCO annotation file not found: {path}")
        return path
    folder = root / "annotations" if (root / "annotations").is_dir() else root
    files = sorted(folder.glob("*.json"))
    matching = [f for f in files if role in f.stem.lower()]
    if role == "val":
        matching = [f for f in matching if "train" not in f.stem.lower()]
    candidates = matching or (files if len(files) == 1 and role == "train" else [])
    if len(candidates) != 1:
        found = ", ".join(f.name for f in files) or "no JSON file"
        raise FileNotFoundError(f"{field} is unset and {folder} has {found}: set {field} to the "
                                f"{role} annotation JSON" + (" (or data.val_fraction)" if role == "val" else ""))
    return candidates[0]


def _image_dirs(root: Path, ann_file: Path) -> list[Path]:
    """Candidate image folders for a COCO JSON, most specific first: for
    ``instances_train2017.json``, ``images/train2017``, ``train2017``, ``images``, the root."""
    split = ann_file.stem.removeprefix("instances_")
    return [root / "images" / split, root / split, root / "images", root]
