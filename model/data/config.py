"""Which data set a trial trains on and how to open it: :class:`DataConfig` (torch-free).

Splits and classes come from the data unless given:

* VOC (``data.name=voc``): ``data.root`` is any VOC-layout folder: ``VOCdevkit/VOC<year>/``,
  ``VOC<year>/`` folders, or one flat folder with ``Annotations/``, ``JPEGImages/`` and
  ``ImageSets/Main/``. ``data.train_splits``/``data.val_splits`` are comma-separated
  ``<year>/<split>`` names (``2007/trainval,2012/trainval``), or ``<split>`` for every folder that
  lists it; ``auto`` (the default) picks the paper's 07+12 trainval / 07 test on the VOC devkit and,
  in general, every folder's ``trainval`` (else ``train``) for training and ``test`` for
  validation; with no ``test`` split anywhere, ``train`` and ``val``.
* COCO (``data.name=coco``): ``data.train_ann``/``data.val_ann`` are the annotation JSONs
  (absolute or relative to ``data.root``); by default the one ``*train*.json`` and ``*val*.json``
  in ``data.root/annotations`` (or ``data.root``).
* ``data.val_fraction`` > 0 splits the training images instead: a seeded (``data.seed``),
  deterministic fraction of them becomes the validation split (one COCO JSON, or a VOC export
  with a single split).
* Classes: ``data.class_names`` when given, else COCO's categories in ascending id order, else a
  ``classes.txt``/``labels.txt`` beside VOC's annotations (one name a line), else the sorted names
  found in the training annotations. ``data.unknown_classes`` says what an object of another class
  does: ``error`` (the default: names file and class) or ``skip`` (counted and logged).
* ``data.index``: the data index the study driver wrote (``<study>/data/index.arrow``, see
  :mod:`transcenter.model.data.index`): opened instead of parsing the annotation files, and refused
  when it was built from other annotation files or options than these. None parses them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from transcenter.model.detector.config import check, check_choice

AUTO = "auto"


def _names(value: Any) -> tuple[str, ...] | None:
    """``class_names`` as given (list, tuple or comma-separated text) -> tuple of names or None."""
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else list(value)
    return tuple(str(v).strip() for v in items)


@dataclass(frozen=True)
class DataConfig:
    """Which dataset and how to load it. Synthetic scenes need no files (the embedded default)."""

    name: str = "synthetic"  # "synthetic", "voc" or "coco"
    root: str | None = None  # VOC-layout folder, or COCO folder with the images and annotations
    train_splits: str = AUTO  # VOC: "2007/trainval,2012/trainval", "trainval", or "auto"
    val_splits: str = AUTO  # VOC: "2007/test", "val", or "auto"
    train_ann: str | None = None  # COCO: annotation JSON of the training split
    val_ann: str | None = None  # COCO: annotation JSON of the validation split
    val_fraction: float = 0.0  # > 0: validation = this seeded fraction of the training images
    class_names: tuple[str, ...] | None = None  # None: from the data (module docstring)
    unknown_classes: str = "error"  # "error" or "skip": an object of a class not in class_names
    index: str | None = None  # voc/coco: data index file or URI to open instead of parsing
    num_train: int = 512  # synthetic: images per epoch
    num_val: int = 128  # synthetic: validation images
    num_classes: int = 3  # synthetic only; VOC and COCO take theirs from the data
    overlap_fraction: float = 0.5  # synthetic: images with a same-class pair sharing a cell
    augment: bool = False  # training transforms: scale jitter, crop, flip, colour
    num_workers: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        check_choice("data.name", self.name, ("synthetic", "voc", "coco"))
        check_choice("data.unknown_classes", self.unknown_classes, ("error", "skip"))
        if self.name != "synthetic":
            check(bool(self.root), "data.root", self.root, f"is required for data.name={self.name!r}")
        for name in ("num_train", "num_val", "num_classes"):
            v = getattr(self, name)
            check(isinstance(v, int) and v >= 1, f"data.{name}", v, "must be an integer >= 1")
        check(isinstance(self.num_workers, int) and self.num_workers >= 0, "data.num_workers",
              self.num_workers, "must be an integer >= 0")
        check(0.0 <= self.overlap_fraction <= 1.0, "data.overlap_fraction", self.overlap_fraction,
              "must be in [0, 1]")
        check(isinstance(self.val_fraction, (int, float)) and 0.0 <= self.val_fraction < 1.0,
              "data.val_fraction", self.val_fraction, "must be in [0, 1)")
        for name in ("train_splits", "val_splits"):
            v = getattr(self, name)
            check(isinstance(v, str) and bool(v.strip()), f"data.{name}", v,
                  "must be 'auto' or comma-separated <year>/<split> names")
        if self.val_fraction:
            check(self.name != "synthetic", "data.val_fraction", self.val_fraction,
                  "is for voc/coco (synthetic scenes have data.num_val)")
            check(self.val_ann is None and self.val_splits == AUTO, "data.val_fraction",
                  self.val_fraction, "splits the training images: leave data.val_ann and "
                                     "data.val_splits unset")
        if self.index is not None:
            check(self.name != "synthetic", "data.index", self.index,
                  "is for voc/coco (synthetic scenes have no annotation files)")
            check(isinstance(self.index, str) and bool(self.index.strip()), "data.index",
                  self.index, "must be a path or URI")
        names = _names(self.class_names)
        object.__setattr__(self, "class_names", names)
        if names is not None:
            check(self.name != "synthetic", "data.class_names", names,
                  "is for voc/coco (synthetic classes are set by data.num_classes)")
            check(len(names) >= 1 and all(names), "data.class_names", names,
                  "must be non-empty names")
            duplicates = sorted({n for n in names if names.count(n) > 1})
            check(not duplicates, "data.class_names", names, f"lists {duplicates} twice")

    @property
    def class_count(self) -> int | None:
        """Number of classes when the configuration fixes it (synthetic, or ``class_names``
        given); None when it comes from the data files."""
        if self.name == "synthetic":
            return self.num_classes
        return None if self.class_names is None else len(self.class_names)
