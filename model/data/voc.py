"""PASCAL VOC and any VOC-layout export (labelImg, CVAT, Label Studio): layout, splits, classes,
the loader, and a writer.

Layouts (:class:`VOCLayout`): ``VOCdevkit/VOC<year>/``, ``VOC<year>/`` folders, or one flat folder,
each with ``Annotations/*.xml``, ``JPEGImages/`` (``.jpg``, ``.jpeg``, ``.png`` or ``.webp``) and
``ImageSets/Main/<split>.txt``; a folder without ``ImageSets/Main`` has one split, ``all``, of every
annotation. Splits are named ``<year>/<split>`` (``<split>`` alone in a flat folder).

Coordinates: VOC's ``bndbox`` holds 1-based inclusive pixel indices; they become continuous xyxy
pixel coordinates ``(xmin - 1, ymin - 1, xmax, ymax)`` (Detectron2's convention), so a box that
covers pixel columns 0..9 is ``x0 = 0, x1 = 10``; :func:`export_voc` writes the inverse. Bad input
follows the policy in :mod:`transcenter.model.data.common`.
"""

from __future__ import annotations

import logging
import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset

from transcenter.model.data.common import (
    IMAGE_EXTENSIONS,
    AnnotatedImageDataset,
    Target,
    Transform,
    write_image,
)

logger = logging.getLogger(__name__)

VOC_CLASSES = [
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
]
TRAIN_SPLITS = ("2007/trainval", "2012/trainval")  # the paper's training set
TEST_SPLITS = ("2007/test",)  # the paper's evaluation set
CLASS_FILES = ("classes.txt", "labels.txt")
ALL = "all"  # the split of a folder without ImageSets/Main: every annotation
_BOX_FIELDS = ("xmin", "ymin", "xmax", "ymax")
_YEAR = re.compile(r"VOC(.+)")


def _split_names(main: Path) -> list[str]:
    """Split names in ``ImageSets/Main``, without VOC's per-class files (``cat_trainval.txt``)."""
    stems = {p.stem for p in main.glob("*.txt")}
    return sorted(s for s in stems if not ("_" in s and s.rsplit("_", 1)[1] in stems))


@dataclass(frozen=True)
class VOCLayout:
    """The VOC-layout folders under a root.

    Attributes:
        root: The folder the user named.
        folders: Key -> folder holding ``Annotations/``: the year for ``VOC<year>`` folders
            (``"2007"``), ``""`` for a flat folder.
        split_names: Key -> the split names its ``ImageSets/Main`` lists (``[ALL]`` without one),
            read once by :meth:`find`.
    """

    root: Path
    folders: dict[str, Path]
    split_names: dict[str, list[str]]

    @classmethod
    def find(cls, root: str | Path) -> VOCLayout:
        """Returns the layout under ``root``.

        Raises:
            FileNotFoundError: ``root`` is missing or holds no VOC-layout folder (the message
                says what was looked for and what is there).
        """
        root = Path(root).expanduser()
        if not root.is_dir():
            raise FileNotFoundError(f"data.root {str(root)!r}: no such folder")
        base = root / "VOCdevkit" if (root / "VOCdevkit").is_dir() else root
        if (base / "Annotations").is_dir():
            year = _YEAR.fullmatch(base.name)
            return cls._of(root, {year.group(1) if year else "": base})
        folders = {m.group(1): p for p in sorted(base.iterdir())
                   if p.is_dir() and (m := _YEAR.fullmatch(p.name)) and (p / "Annotations").is_dir()}
        if not folders:
            seen = sorted(p.name for p in base.iterdir())[:20]
            raise FileNotFoundError(
                f"data.root {str(root)!r} is not a VOC-layout folder: expected VOCdevkit/VOC<year>/, "
                f"VOC<year>/ or a folder with Annotations/, JPEGImages/ and ImageSets/Main/ "
                f"(found {seen or 'nothing'})")
        return cls._of(root, folders)

    @classmethod
    def _of(cls, root: Path, folders: dict[str, Path]) -> VOCLayout:
        mains = {key: folder / "ImageSets" / "Main" for key, folder in folders.items()}
        return cls(root, folders, {key: _split_names(main) if main.is_dir() else [ALL]
                                   for key, main in mains.items()})

    def _splits_of(self, key: str) -> list[str]:
        return self.split_names[key]

    def splits(self) -> list[str]:
        """Every split's name: ``<year>/<split>``, or ``<split>`` in a flat folder."""
        return [f"{key}/{split}" if key else split
                for key in self.folders for split in self._splits_of(key)]

    def resolve(self, spec: str | Sequence[str | tuple[str, str]], field: str) -> list[tuple[str, str]]:
        """Returns the ``(folder key, split)`` pairs a split list names.

        Args:
            spec: Comma-separated names (``"2007/trainval,2012/trainval"``; ``"trainval"`` is
                every folder's trainval), or a sequence of names or ``(year, split)`` pairs.
            field: The config field, for the error message.

        Raises:
            FileNotFoundError: a named split does not exist (the message lists those that do).
        """
        items = [i.strip() for i in spec.split(",")] if isinstance(spec, str) else list(spec)
        pairs: list[tuple[str, str]] = []
        for item in items:
            key, _, split = ("/".join(item) if isinstance(item, tuple) else item).rpartition("/")
            keys = [key] if key else list(self.folders)
            found = [(k, split) for k in keys if k in self.folders and split in self._splits_of(k)]
            if not found:
                raise FileNotFoundError(
                    f"{field}={item if isinstance(item, str) else '/'.join(item)!r}: no such VOC split "
                    f"in {str(self.root)!r}; the splits there are: {', '.join(self.splits()) or 'none'}")
            pairs.extend(p for p in found if p not in pairs)
        return pairs

    def auto_splits(self) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        """Returns ``(train, val)`` pairs for ``auto`` (see :mod:`transcenter.model.data.config`):
        with a ``test`` split anywhere, each folder's trainval (else train) and every test;
        otherwise each folder's train and val, else its trainval, train or only split, and no val."""
        def has(key: str, split: str) -> bool:
            return split in self._splits_of(key)

        tests = [(k, "test") for k in self.folders if has(k, "test") and self._annotated(k, "test")]
        if tests:
            return [(k, "trainval" if has(k, "trainval") else "train") for k in self.folders
                    if has(k, "trainval") or has(k, "train")], tests
        if any(has(k, "train") and has(k, "val") for k in self.folders):
            return ([(k, "train") for k in self.folders if has(k, "train")],
                    [(k, "val") for k in self.folders if has(k, "val")])
        train = []
        for key in self.folders:
            splits = self._splits_of(key)
            named = [s for s in ("trainval", "train") if s in splits]
            if named or len(splits) == 1:
                train.append((key, (named or splits)[0]))
        return train, []

    def _annotated(self, key: str, split: str) -> bool:
        """Whether the first image of a split has its annotation (VOC2012's test set has none)."""
        ids = self.ids(key, split)
        return bool(ids) and self.annotation(key, ids[0]).is_file()

    def ids(self, key: str, split: str) -> list[str]:
        """Image ids of one split, in file order.

        Raises:
            ValueError: the split lists no ids.
        """
        folder = self.folders[key]
        if split == ALL and not (folder / "ImageSets" / "Main").is_dir():
            return sorted(p.stem for p in (folder / "Annotations").glob("*.xml"))
        path = folder / "ImageSets" / "Main" / f"{split}.txt"
        ids = [line.split()[0] for line in path.read_text().splitlines() if line.strip()]
        if not ids:
            raise ValueError(f"VOC split file is empty: {path}")
        return ids

    def annotation(self, key: str, file_id: str) -> Path:
        """The XML file of an image id."""
        return self.folders[key] / "Annotations" / f"{file_id}.xml"

    def image_files(self, key: str) -> dict[str, Path]:
        """Image id -> file in ``JPEGImages/`` (any extension; a supported one wins a tie)."""
        files: dict[str, Path] = {}
        rank = {ext: i for i, ext in enumerate(IMAGE_EXTENSIONS)}
        folder = self.folders[key] / "JPEGImages"
        for p in (folder.iterdir() if folder.is_dir() else ()):
            best = files.get(p.stem)
            if best is None or rank.get(p.suffix.lower(), 99) < rank.get(best.suffix.lower(), 99):
                files[p.stem] = p
        return files

    def class_file(self) -> Path | None:
        """The first ``classes.txt``/``labels.txt`` beside the annotations or in the root."""
        for folder in (*self.folders.values(), self.root):
            for name in CLASS_FILES:
                if (folder / name).is_file():
                    return folder / name
        return None


def read_class_file(path: Path) -> list[str]:
    """Class names, one a line, in file order.

    Raises:
        ValueError: the file lists no name, or one name twice.
    """
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    twice = sorted({n for n in names if names.count(n) > 1})
    if not names or twice:
        raise ValueError(f"{path}: " + (f"lists {twice} twice" if twice else "lists no class"))
    return names


def _text(node: ET.Element, tag: str, path: Path) -> str:
    child = node.find(tag)
    if child is None or child.text is None or not child.text.strip():
        raise ValueError(f"{path}: missing field <{tag}>")
    return child.text.strip()


def _number(node: ET.Element, tag: str, path: Path) -> float:
    value = _text(node, tag, path)
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"{path}: field <{tag}> is not a number: {value!r}") from None


@dataclass(frozen=True)
class VOCAnnotation:
    """One parsed VOC XML file.

    Attributes:
        size: (H, W) in pixels, None when the file has no ``<size>`` (or says 0 × 0).
        names: Class name per object.
        boxes: (K, 4) float32 xyxy in continuous pixels (may still lie outside the image).
        difficult: (K,) bool.
    """

    size: tuple[int, int] | None
    names: list[str]
    boxes: torch.Tensor
    difficult: torch.Tensor


def parse_annotation(path: Path) -> VOCAnnotation:
    """Parse one VOC XML file (see :class:`VOCAnnotation`).

    Raises:
        FileNotFoundError: the file is missing.
        ValueError: malformed XML, or a missing or non-numeric field (message names file, field
            and value).
    """
    if not path.is_file():
        raise FileNotFoundError(f"VOC annotation file not found: {path}")
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as err:
        raise ValueError(f"{path}: malformed XML ({err})") from err
    size_node = root.find("size")
    size = None
    if size_node is not None:
        size = (int(_number(size_node, "height", path)), int(_number(size_node, "width", path)))
        size = size if min(size) > 0 else None
    boxes, names, difficult = [], [], []
    for obj in root.iter("object"):
        name = _text(obj, "name", path)
        box_node = obj.find("bndbox")
        if box_node is None:
            raise ValueError(f"{path}: object {name!r} has no field <bndbox>")
        x0, y0, x1, y1 = (_number(box_node, tag, path) for tag in _BOX_FIELDS)
        boxes.append([x0 - 1.0, y0 - 1.0, x1, y1])
        names.append(name)
        flag = obj.find("difficult")
        difficult.append(flag is not None and (flag.text or "0").strip() == "1")
    return VOCAnnotation(size, names, torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                         torch.tensor(difficult, dtype=torch.bool))


class VOCDetection(AnnotatedImageDataset):
    """Images and boxes of VOC-layout splits as ``(image, target)`` pairs (contract in ``common``).

    Args:
        root: Any VOC-layout folder (:class:`VOCLayout`).
        splits: Split names (``"2007/trainval,2012/trainval"``, a sequence of names or of
            ``(year, split)`` pairs); :data:`TRAIN_SPLITS` (07+12 trainval) by default.
        transforms: Callable ``(image, target) -> (image, target)``.
        keep_difficult: Keep ``difficult`` objects with ``ignore = True`` (use for evaluation);
            when False they are left out and counted as ``skipped["difficult"]``.
        class_names: Class order; None reads ``classes.txt``/``labels.txt`` beside the
            annotations, else takes the sorted names found in these splits' annotations.
        unknown_classes: ``"error"``: an object whose class is not in ``class_names`` raises
            naming file and name; ``"skip"``: it is left out and counted (``unknown_class``).
        check_images: See :class:`~transcenter.model.data.common.AnnotatedImageDataset`.
        field: The config field the splits came from, for error messages.

    Attributes:
        ids: VOC file id of each image.
        class_source: Where the class names came from (``"given"``, the class file, or
            ``"annotations"``).
    """

    def __init__(self, root: str | Path, splits: str | Sequence = TRAIN_SPLITS,
                 transforms: Transform | None = None, keep_difficult: bool = False,
                 class_names: Sequence[str] | None = None, unknown_classes: str = "error",
                 check_images: bool = True, field: str = "data.train_splits") -> None:
        layout = VOCLayout.find(root)
        parsed: list[tuple[Path, Path, VOCAnnotation]] = []
        seen: set[tuple[str, str]] = set()
        duplicates = []
        images: dict[str, dict[str, Path]] = {}  # key -> its JPEGImages listing, read once
        for key, split in layout.resolve(splits, field):
            if key not in images:
                images[key] = layout.image_files(key)
            for file_id in layout.ids(key, split):
                if (key, file_id) in seen:
                    duplicates.append(f"{key}/{file_id}" if key else file_id)
                    continue
                seen.add((key, file_id))
                xml = layout.annotation(key, file_id)
                parsed.append((xml, images[key].get(file_id, xml.parent.parent / "JPEGImages" / f"{file_id}.jpg"),
                               parse_annotation(xml)))
        class_file = layout.class_file() if class_names is None else None
        if class_names is not None:
            self.class_source = "given"
        elif class_file is not None:
            class_names, self.class_source = read_class_file(class_file), str(class_file)
        else:
            class_names = sorted({n for _, _, a in parsed for n in a.names})
            self.class_source = "annotations"
        super().__init__(list(class_names), transforms, check_images)
        if duplicates:
            self.summary.skip("duplicate_image", f"listed twice: {duplicates[:10]}", len(duplicates))
        label_of = {name: i for i, name in enumerate(self.class_names)}
        for xml, image, ann in parsed:
            self._add(xml, image, ann, label_of, keep_difficult, unknown_classes)
        self.log_summary()

    @property
    def ids(self) -> list[str]:
        return [r.path.stem for r in self.records]

    def _add(self, xml: Path, image: Path, ann: VOCAnnotation, label_of: dict[str, int],
             keep_difficult: bool, unknown_classes: str) -> None:
        known = torch.tensor([n in label_of for n in ann.names], dtype=torch.bool)  # (K,)
        if not known.all():
            unknown = sorted({n for n in ann.names if n not in label_of})
            if unknown_classes == "error":
                raise ValueError(f"{xml}: field <name> has unknown class {unknown[0]!r}; the "
                                 f"classes are {self.class_names} (data.class_names, or "
                                 f"data.unknown_classes=skip to leave such objects out)")
            self.summary.skip("unknown_class", f"{xml.name}: {unknown}", int((~known).sum()))
        labels = torch.tensor([label_of.get(n, 0) for n in ann.names], dtype=torch.int64)  # (K,)
        keep = known & (torch.ones_like(ann.difficult) if keep_difficult else ~ann.difficult)  # (K,)
        dropped = known & ann.difficult & ~keep
        if dropped.any():
            self.summary.skip("difficult", xml.name, int(dropped.sum()), level=logging.DEBUG)
        self.add_record(image, ann.size, ann.boxes, labels, ann.difficult, keep, annotation=str(xml),
                        written=_bndbox)


def annotation_xml(file_id: str, target: Target, size: tuple[int, int], class_names: Sequence[str]) -> ET.ElementTree:
    """VOC XML for one image; boxes (K, 4) xyxy px become 1-based inclusive ``bndbox`` indices."""
    root = ET.Element("annotation")
    ET.SubElement(root, "filename").text = f"{file_id}.jpg"
    size_node = ET.SubElement(root, "size")
    for tag, value in (("width", size[1]), ("height", size[0]), ("depth", 3)):
        ET.SubElement(size_node, tag).text = str(value)
    for box, label, ignore in zip(target["boxes"].tolist(), target["labels"].tolist(), target["ignore"].tolist()):
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = class_names[label]
        ET.SubElement(obj, "difficult").text = str(int(ignore))
        bndbox = ET.SubElement(obj, "bndbox")
        corners = (round(box[0]) + 1, round(box[1]) + 1, round(box[2]), round(box[3]))
        for tag, value in zip(_BOX_FIELDS, corners):
            ET.SubElement(bndbox, tag).text = str(value)
    tree = ET.ElementTree(root)
    ET.indent(tree)
    return tree


def export_voc(dataset: Dataset, root: str | Path, val_fraction: float = 0.2,
               test_fraction: float = 0.2, folder: str = "VOCdevkit/VOC2007",
               image_format: str = "jpg", id_prefix: str = "") -> Path:
    """Write a contract dataset (e.g. ``SyntheticScenes``) as one VOC-layout folder.

    Writes ``<root>/<folder>/{Annotations/*.xml, ImageSets/Main/{train,val,trainval,test}.txt,
    JPEGImages/*.<image_format>}``; image i gets id ``f"{id_prefix}{i:06d}"``. The last
    ``test_fraction`` of the images form ``test``, the ``val_fraction`` before them ``val``, the rest
    ``train`` (each at least one image). Boxes are rounded to whole pixels; ``ignore`` becomes
    ``difficult``. ``folder="."`` writes a flat export, ``"VOC2012"`` a year without a devkit.

    Returns:
        The folder written.
    """
    n = len(dataset)
    n_test, n_val = max(1, int(n * test_fraction)), max(1, int(n * val_fraction))
    if n - n_test - n_val < 1:
        raise ValueError(f"export_voc: {n} images cannot fill train, val and test splits")
    year_dir = Path(root) / folder
    for sub in ("Annotations", "ImageSets/Main", "JPEGImages"):
        (year_dir / sub).mkdir(parents=True, exist_ok=True)
    ids = [f"{id_prefix}{i:06d}" for i in range(n)]
    for i, file_id in enumerate(ids):
        image, target = dataset[i]
        write_image(image, year_dir / "JPEGImages" / f"{file_id}.{image_format}")
        annotation_xml(file_id, target, tuple(image.shape[1:]), dataset.class_names).write(
            year_dir / "Annotations" / f"{file_id}.xml")
    n_train = n - n_test - n_val
    splits = {"train": ids[:n_train], "val": ids[n_train:n - n_test],
              "trainval": ids[:n - n_test], "test": ids[n - n_test:]}
    for name, split_ids in splits.items():
        (year_dir / "ImageSets" / "Main" / f"{name}.txt").write_text("\n".join(split_ids) + "\n")
    logger.info("exported %d images to %s", n, year_dir)
    return year_dir


def _bndbox(box: list[float]) -> str:
    """Returns a (4,) xyxy pixel box as the ``<bndbox>`` it was read from (1-based xmin, ymin)."""
    x0, y0, x1, y1 = box
    return f"<bndbox> xmin={x0 + 1:g} ymin={y0 + 1:g} xmax={x1:g} ymax={y1:g}"
