"""COCO-format detection loader (any COCO-style JSON, not only COCO itself: any number of
categories, ids in any order and with gaps).

Category ids are mapped, in ascending id order, to contiguous labels 0..C-1 (``cat_ids[label]``
gives the id back), or by name to a given class list; ``bbox`` xywh becomes xyxy pixels;
``iscrowd`` becomes ``ignore``. Images without annotations are kept as negatives; an image without
``height``/``width`` takes its file's. The target's ``image_id`` is COCO's image id. Bad input
follows the policy in :mod:`transcenter.model.data.common`.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from transcenter.model.data.common import AnnotatedImageDataset, Transform


def _field(entry: dict[str, Any], key: str, where: str) -> Any:
    if key not in entry:
        raise ValueError(f"{where}: missing field {key!r}")
    return entry[key]


def load_coco_json(ann_file: Path) -> dict[str, Any]:
    """Read a COCO JSON file and check its top-level fields.

    Raises:
        FileNotFoundError: the file is missing.
        ValueError: malformed JSON or a missing ``images``/``annotations``/``categories`` field.
    """
    if not ann_file.is_file():
        raise FileNotFoundError(f"COCO annotation file not found: {ann_file}")
    try:
        data = json.loads(ann_file.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{ann_file}: malformed JSON ({err})") from err
    for key in ("images", "annotations", "categories"):
        _field(data, key, str(ann_file))
    if not data["categories"]:
        raise ValueError(f"{ann_file}: field 'categories' is empty")
    return data


class COCODetection(AnnotatedImageDataset):
    """Images and boxes of a COCO-format JSON as ``(image, target)`` pairs (contract in ``common``).

    Args:
        image_dir: Folder the images' ``file_name`` is relative to, or candidate folders: the
            first that holds the first image's file is taken (:func:`find_image_dir`).
        ann_file: COCO-format JSON.
        transforms: Callable ``(image, target) -> (image, target)``.
        class_names: Class order (e.g. the training JSON's, for the validation JSON); categories
            are matched to it by name. None: this JSON's categories in ascending id order.
        unknown_classes: ``"error"``: an annotation whose category is not a known class raises
            naming file, annotation and value; ``"skip"``: it is left out and counted
            (``unknown_class``).
        check_images: See :class:`~transcenter.model.data.common.AnnotatedImageDataset`.

    Attributes:
        cat_ids: Label -> COCO category id (None for a class this JSON does not list).

    Raises:
        ValueError: an annotation with an unknown ``category_id`` (unless skipped) or
            ``image_id``, a malformed ``bbox``, a duplicate image or category id, or a missing
            field (message names the file, annotation id, field and value).
    """

    def __init__(self, image_dir: str | Path | Sequence[Path], ann_file: str | Path,
                 transforms: Transform | None = None, class_names: Sequence[str] | None = None,
                 unknown_classes: str = "error", check_images: bool = True) -> None:
        ann_file = Path(ann_file)
        data = load_coco_json(ann_file)
        name_of = _unique_by_id(data["categories"], f"{ann_file} category", "name")
        ids = sorted(name_of)
        super().__init__([str(name_of[i]) for i in ids] if class_names is None else list(class_names),
                         transforms, check_images)
        label_of_name = {name: label for label, name in enumerate(self.class_names)}
        label_of = {cat_id: label_of_name[str(n)] for cat_id, n in name_of.items() if str(n) in label_of_name}
        self.cat_ids: list[int | None] = [None] * self.num_classes
        for cat_id, label in label_of.items():
            self.cat_ids[label] = cat_id
        images = _unique_by_id(data["images"], f"{ann_file} image")
        if not isinstance(image_dir, (str, Path)):
            first = next(iter(images.values()), {}).get("file_name", "")
            image_dir = find_image_dir(image_dir, first)
        self.image_dir = Path(image_dir)
        per_image: dict[Any, list[tuple[list[float], int, bool]]] = defaultdict(list)
        unknown: dict[Any, int] = defaultdict(int)
        for ann in data["annotations"]:
            where = f"{ann_file} annotation {ann.get('id', '?')}"
            image_id, cat_id = _field(ann, "image_id", where), _field(ann, "category_id", where)
            bbox = _field(ann, "bbox", where)
            if image_id not in images:
                raise ValueError(f"{where}: field 'image_id' has unknown image {image_id!r}")
            if not (isinstance(bbox, list) and len(bbox) == 4
                    and all(isinstance(v, (int, float)) for v in bbox)):
                raise ValueError(f"{where}: field 'bbox' is not 4 numbers: {bbox!r}")
            if cat_id not in label_of:
                if unknown_classes == "error":
                    known = "not a category of this file" if cat_id not in name_of else \
                        f"category {name_of[cat_id]!r} is not one of the classes {self.class_names}"
                    raise ValueError(f"{where}: field 'category_id' has unknown category {cat_id!r} "
                                     f"({known}; data.unknown_classes=skip leaves such objects out)")
                unknown[cat_id] += 1
                continue
            per_image[image_id].append((bbox, label_of[cat_id], bool(ann.get("iscrowd", 0))))
        for cat_id, count in unknown.items():
            self.summary.skip("unknown_class", f"{ann_file}: category_id {cat_id!r}", count)
        from torchvision.ops import box_convert  # here: build.py imports this module for every data set

        for image_id, img in images.items():
            where = f"{ann_file} image {image_id}"
            size = (int(_field(img, "height", where)), int(_field(img, "width", where))) \
                if img.get("height") and img.get("width") else None
            objects = per_image.get(image_id, [])
            xywh = torch.tensor([o[0] for o in objects], dtype=torch.float32).reshape(-1, 4)
            labels = torch.tensor([o[1] for o in objects], dtype=torch.int64)
            crowd = torch.tensor([o[2] for o in objects], dtype=torch.bool)
            self.add_record(self.image_dir / _field(img, "file_name", where), size,
                            box_convert(xywh, "xywh", "xyxy"), labels, crowd,
                            torch.ones_like(crowd), image_id=image_id, annotation=where,
                            written=_bbox)
        self.log_summary()


def _unique_by_id(entries: list[dict[str, Any]], where: str, value: str | None = None) -> dict[Any, Any]:
    """Returns ``{entry["id"]: entry}`` (or ``entry[value]``) for a COCO list.

    Raises:
        ValueError: an entry has no ``id`` (or ``value``) field, or an id appears twice.
    """
    out: dict[Any, Any] = {}
    for entry in entries:
        key = _field(entry, "id", where)
        if key in out:
            raise ValueError(f"{where}s: field 'id' has the duplicate value {key!r}")
        out[key] = entry if value is None else _field(entry, value, f"{where} {key}")
    return out


def find_image_dir(candidates: Sequence[Path], file_name: str) -> Path:
    """Returns the first candidate folder holding ``file_name``, else the first that exists, else
    the first (whose images then count as missing)."""
    for folder in candidates:
        if (folder / file_name).is_file():
            return folder
    return next((f for f in candidates if f.is_dir()), candidates[0])


def _bbox(box: list[float]) -> str:
    """Returns a (4,) xyxy pixel box as the COCO ``bbox`` [x, y, width, height] it was read from."""
    x0, y0, x1, y1 = box
    return f"bbox [{x0:g}, {y0:g}, {x1 - x0:g}, {y1 - y0:g}]"
