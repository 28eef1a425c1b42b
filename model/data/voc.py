"""PASCAL VOC: the loader (the paper's 07+12 trainval for training, 07 test for evaluation) and a writer.

Coordinates: VOC's ``bndbox`` holds 1-based inclusive pixel indices; they become continuous xyxy
pixel coordinates ``(xmin - 1, ymin - 1, xmax, ymax)`` (Detectron2's convention), so a box that
covers pixel columns 0..9 is ``x0 = 0, x1 = 10``; :func:`export_voc` writes the inverse. Bad input
follows the policy in :mod:`transcenter.model.data.common`.
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Sequence

import torch

from torch.utils.data import Dataset

from transcenter.model.data.common import AnnotatedImageDataset, Target, Transform, write_jpeg

logger = logging.getLogger(__name__)

VOC_CLASSES = [
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
]
TRAIN_SPLITS = (("2007", "trainval"), ("2012", "trainval"))
TEST_SPLITS = (("2007", "test"),)
_BOX_FIELDS = ("xmin", "ymin", "xmax", "ymax")


def voc_year_dir(root: str | Path, year: str) -> Path:
    """``root/VOCdevkit/VOC<year>``, or ``root/VOC<year>`` when root already is the devkit."""
    root = Path(root)
    devkit = root / "VOCdevkit"
    return (devkit if devkit.is_dir() else root) / f"VOC{year}"


def read_split(year_dir: Path, split: str) -> list[str]:
    """Image ids listed in ``ImageSets/Main/<split>.txt``.

    Raises:
        FileNotFoundError: the split file is missing.
        ValueError: the split file lists no ids.
    """
    path = year_dir / "ImageSets" / "Main" / f"{split}.txt"
    if not path.is_file():
        raise FileNotFoundError(f"VOC split file not found: {path}")
    ids = [line.split()[0] for line in path.read_text().splitlines() if line.strip()]
    if not ids:
        raise ValueError(f"VOC split file is empty: {path}")
    return ids


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


def parse_annotation(path: Path, class_names: Sequence[str]) -> tuple[
        tuple[int, int], torch.Tensor, torch.Tensor, torch.Tensor]:
    """Parse one VOC XML file.

    Returns:
        size (H, W) in pixels, boxes (K, 4) float32 xyxy in continuous pixels (may still lie outside
        the image), labels (K,) int64, difficult (K,) bool.

    Raises:
        FileNotFoundError: the file is missing.
        ValueError: malformed XML, a missing or non-numeric field, or an unknown class name
            (message names file, field and value).
    """
    if not path.is_file():
        raise FileNotFoundError(f"VOC annotation file not found: {path}")
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as err:
        raise ValueError(f"{path}: malformed XML ({err})") from err
    size_node = root.find("size")
    if size_node is None:
        raise ValueError(f"{path}: missing field <size>")
    size = (int(_number(size_node, "height", path)), int(_number(size_node, "width", path)))
    boxes, labels, difficult = [], [], []
    for obj in root.iter("object"):
        name = _text(obj, "name", path)
        if name not in class_names:
            raise ValueError(f"{path}: field <name> has unknown class {name!r}")
        box_node = obj.find("bndbox")
        if box_node is None:
            raise ValueError(f"{path}: object {name!r} has no field <bndbox>")
        x0, y0, x1, y1 = (_number(box_node, tag, path) for tag in _BOX_FIELDS)
        boxes.append([x0 - 1.0, y0 - 1.0, x1, y1])
        labels.append(class_names.index(name))
        flag = obj.find("difficult")
        difficult.append(flag is not None and (flag.text or "0").strip() == "1")
    return (size, torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            torch.tensor(labels, dtype=torch.int64), torch.tensor(difficult, dtype=torch.bool))


class VOCDetection(AnnotatedImageDataset):
    """PASCAL VOC images and boxes as ``(image, target)`` pairs (contract in ``common``).

    Args:
        root: Folder holding ``VOCdevkit`` (or the devkit folder itself).
        splits: (year, split) pairs, e.g. :data:`TRAIN_SPLITS` (07+12 trainval, the default) or
            :data:`TEST_SPLITS` (07 test).
        transforms: Callable ``(image, target) -> (image, target)``.
        keep_difficult: Keep ``difficult`` objects with ``ignore = True`` (use for evaluation);
            when False they are left out and counted as ``skipped["difficult"]``.
        class_names: Class order; VOC's 20 classes by default.

    Image ids are the position in the dataset; ``ids[i]`` is the VOC file id of image i.
    """

    def __init__(self, root: str | Path, splits: Sequence[tuple[str, str]] = TRAIN_SPLITS,
                 transforms: Transform | None = None, keep_difficult: bool = False,
                 class_names: Sequence[str] = VOC_CLASSES) -> None:
        super().__init__(list(class_names), transforms)
        self.ids: list[str] = []
        for year, split in splits:
            year_dir = voc_year_dir(root, year)
            for file_id in read_split(year_dir, split):
                self._add(year_dir, file_id, keep_difficult)
        self.log_summary()

    def _add(self, year_dir: Path, file_id: str, keep_difficult: bool) -> None:
        xml_path = year_dir / "Annotations" / f"{file_id}.xml"
        size, boxes, labels, difficult = parse_annotation(xml_path, self.class_names)
        keep = torch.ones_like(difficult) if keep_difficult else ~difficult  # (K,)
        if not keep.all():
            self.summary.skip("difficult", xml_path.name, int((~keep).sum()), level=logging.DEBUG)
        if self.add_record(year_dir / "JPEGImages" / f"{file_id}.jpg", size, boxes, labels, difficult, keep):
            self.ids.append(file_id)


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
               test_fraction: float = 0.2) -> Path:
    """Write a contract dataset (e.g. ``SyntheticScenes``) as a VOC2007 layout.

    Writes ``VOCdevkit/VOC2007/{Annotations/*.xml, ImageSets/Main/{train,val,trainval,test}.txt,
    JPEGImages/*.jpg}`` under ``root``; image i gets id ``f"{i:06d}"``. The last ``test_fraction``
    of the images form ``test``, the ``val_fraction`` before them ``val``, the rest ``train``
    (each at least one image). Boxes are rounded to whole pixels; ``ignore`` becomes ``difficult``.

    Returns:
        The ``VOCdevkit/VOC2007`` folder.
    """
    n = len(dataset)
    n_test, n_val = max(1, int(n * test_fraction)), max(1, int(n * val_fraction))
    if n - n_test - n_val < 1:
        raise ValueError(f"export_voc: {n} images cannot fill train, val and test splits")
    year_dir = Path(root) / "VOCdevkit" / "VOC2007"
    for sub in ("Annotations", "ImageSets/Main", "JPEGImages"):
        (year_dir / sub).mkdir(parents=True, exist_ok=True)
    ids = [f"{i:06d}" for i in range(n)]
    for i, file_id in enumerate(ids):
        image, target = dataset[i]
        write_jpeg(image, year_dir / "JPEGImages" / f"{file_id}.jpg")
        annotation_xml(file_id, target, tuple(image.shape[1:]), dataset.class_names).write(
            year_dir / "Annotations" / f"{file_id}.xml")
    n_train = n - n_test - n_val
    splits = {"train": ids[:n_train], "val": ids[n_train:n - n_test],
              "trainval": ids[:n - n_test], "test": ids[n - n_test:]}
    for name, split_ids in splits.items():
        (year_dir / "ImageSets" / "Main" / f"{name}.txt").write_text("\n".join(split_ids) + "\n")
    logger.info("exported %d images to %s", n, year_dir)
    return year_dir
