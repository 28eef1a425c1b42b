"""COCO-format detection loader (any COCO-style JSON, not only COCO itself).

Category ids are mapped, in ascending id order, to contiguous labels 0..C-1 (``cat_ids[label]``
gives the id back); ``bbox`` xywh becomes xyxy pixels; ``iscrowd`` becomes ``ignore``. Images
without annotations are kept as negatives; the target's ``image_id`` is COCO's image id. Bad
input follows the policy in :mod:`transcenter.model.data.common`.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from torchvision.ops import box_convert

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
        image_dir: Folder the images' ``file_name`` is relative to.
        ann_file: COCO-format JSON.
        transforms: Callable ``(image, target) -> (image, target)``.

    Attributes:
        cat_ids: Label -> COCO category id.

    Raises:
        ValueError: an annotation with an unknown ``category_id`` or ``image_id``, a malformed
            ``bbox``, or a missing field (message names the file, annotation id, field and value).
    """

    def __init__(self, image_dir: str | Path, ann_file: str | Path, transforms: Transform | None = None) -> None:
        ann_file = Path(ann_file)
        data = load_coco_json(ann_file)
        categories = sorted(data["categories"], key=lambda c: _field(c, "id", f"{ann_file} category"))
        super().__init__([str(_field(c, "name", f"{ann_file} category {c['id']}")) for c in categories],
                         transforms)
        self.cat_ids: list[int] = [c["id"] for c in categories]
        label_of = {cat_id: label for label, cat_id in enumerate(self.cat_ids)}
        images = {_field(img, "id", f"{ann_file} image"): img for img in data["images"]}
        per_image: dict[int, list[tuple[list[float], int, bool]]] = defaultdict(list)
        for ann in data["annotations"]:
            where = f"{ann_file} annotation {ann.get('id', '?')}"
            image_id, cat_id = _field(ann, "image_id", where), _field(ann, "category_id", where)
            bbox = _field(ann, "bbox", where)
            if image_id not in images:
                raise ValueError(f"{where}: field 'image_id' has unknown image {image_id!r}")
            if cat_id not in label_of:
                raise ValueError(f"{where}: field 'category_id' has unknown category {cat_id!r}")
            if not (isinstance(bbox, list) and len(bbox) == 4
                    and all(isinstance(v, (int, float)) for v in bbox)):
                raise ValueError(f"{where}: field 'bbox' is not 4 numbers: {bbox!r}")
            per_image[image_id].append((bbox, label_of[cat_id], bool(ann.get("iscrowd", 0))))
        for image_id, img in images.items():
            where = f"{ann_file} image {image_id}"
            size = (int(_field(img, "height", where)), int(_field(img, "width", where)))
            objects = per_image.get(image_id, [])
            xywh = torch.tensor([o[0] for o in objects], dtype=torch.float32).reshape(-1, 4)
            labels = torch.tensor([o[1] for o in objects], dtype=torch.int64)
            crowd = torch.tensor([o[2] for o in objects], dtype=torch.bool)
            self.add_record(Path(image_dir) / _field(img, "file_name", where), size,
                            box_convert(xywh, "xywh", "xyxy"), labels, crowd,
                            torch.ones_like(crowd), image_id=image_id)
        self.log_summary()
