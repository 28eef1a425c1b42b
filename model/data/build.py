"""Opens the train and val datasets a :class:`DataConfig` names, with the matching transforms.

The one place that turns a configuration into data: the trainer, the study driver's check before
any trial, and ``python -m transcenter.model.data.inspect`` all call :func:`open_datasets`.
"""
from __future__ import annotations

import logging
from pathlib import Path

from transcenter.model.data.coco import COCODetection
from transcenter.model.data.common import AnnotatedImageDataset, Transform
from transcenter.model.data.config import AUTO, DataConfig
from transcenter.model.data.synthetic import SyntheticConfig, SyntheticScenes
from transcenter.model.data.transforms import eval_transforms, train_transforms
from transcenter.model.data.voc import VOCDetection, VOCLayout

logger = logging.getLogger(__name__)


def open_datasets(data: DataConfig, input_size: int, check_images: bool = True):
    """Returns ``(train, val)`` datasets yielding ``input_size``² images.

    Validation always uses the deterministic letterbox; training uses the augmenting pipeline
    when ``data.augment``. Both carry what ``to_original`` needs to map boxes back, and the val
    set has the train set's ``class_names``.

    Args:
        data: The data section of a trial configuration.
        input_size: Network input side in pixels.
        check_images: Probe every image file (see ``AnnotatedImageDataset``); False reads the
            annotations only (the study driver's quick check).

    Raises:
        FileNotFoundError: a missing root, split or annotation file (naming it and, for splits,
            the ones that exist).
        ValueError: bad annotations, or a split left with no usable image (naming the field).
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


def _open_voc(data: DataConfig, train_tf: Transform, val_tf: Transform,
              check_images: bool) -> tuple[AnnotatedImageDataset, AnnotatedImageDataset]:
    layout = VOCLayout.find(data.root)
    auto_train, auto_val = layout.auto_splits()
    train_splits = auto_train if data.train_splits == AUTO else data.train_splits
    val_splits = auto_val if data.val_splits == AUTO else data.val_splits
    common = dict(unknown_classes=data.unknown_classes, check_images=check_images)
    if data.val_fraction:
        train = VOCDetection(data.root, train_splits, train_tf, keep_difficult=True,
                             class_names=data.class_names, **common)
        return train, train.split_off(data.val_fraction, data.seed, val_tf)
    if not val_splits:
        raise FileNotFoundError(
            f"data.val_splits=auto: no validation split in {data.root!r} (no test split, and no "
            f"train + val pair); the splits there are: {', '.join(layout.splits())}. Set "
            f"data.val_splits, or data.val_fraction to hold out part of the training images")
    train = VOCDetection(data.root, train_splits, train_tf, class_names=data.class_names, **common)
    val = VOCDetection(data.root, val_splits, val_tf, keep_difficult=True,
                       class_names=train.class_names, field="data.val_splits", **common)
    return train, val


def _open_coco(data: DataConfig, train_tf: Transform, val_tf: Transform,
               check_images: bool) -> tuple[AnnotatedImageDataset, AnnotatedImageDataset]:
    root = Path(data.root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"data.root {str(root)!r}: no such folder")
    train_ann = _annotation_file(root, data.train_ann, "train", "data.train_ann")
    common = dict(unknown_classes=data.unknown_classes, check_images=check_images)
    train = COCODetection(_image_dirs(root, train_ann), train_ann, train_tf,
                          class_names=data.class_names, **common)
    if data.val_fraction:
        return train, train.split_off(data.val_fraction, data.seed, val_tf)
    val_ann = _annotation_file(root, data.val_ann, "val", "data.val_ann")
    if val_ann == train_ann:
        raise ValueError(f"data.val_ann: {val_ann} is the training file too; set data.val_ann, "
                         f"or data.val_fraction to hold out part of its images")
    val = COCODetection(_image_dirs(root, val_ann), val_ann, val_tf,
                        class_names=train.class_names, **common)
    return train, val


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
