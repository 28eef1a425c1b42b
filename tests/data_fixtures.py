"""Data sets in the layouts users bring, written by the tests (no download): VOC-layout folders
from synthetic scenes, and COCO JSONs with COCO's 80 non-contiguous category ids."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from transcenter.model.data import SyntheticConfig, SyntheticScenes, export_voc
from transcenter.model.data.common import write_image

# COCO 2017's 80 category ids: 1..90 with gaps.
COCO_IDS = [i for i in range(1, 91) if i not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)]


def scenes(length: int, seed: int = 1, size: int = 64) -> SyntheticScenes:
    """Small synthetic scenes with 3 classes and same-class pairs sharing a 16-px cell."""
    return SyntheticScenes(SyntheticConfig(length=length, image_size=size, seed=seed,
                                           overlap_fraction=0.5, overlap_cell_px=size // 4))


def single_year_voc(root: Path, length: int = 10) -> Path:
    """``root/VOC2007/`` (no devkit) with train, val, trainval and test splits; returns root."""
    export_voc(scenes(length), root, folder="VOC2007")
    return root


def flat_png_export(root: Path, length: int = 10, splits: tuple[str, ...] | None = None) -> Path:
    """A flat export (Annotations/, JPEGImages/*.png, ImageSets/Main/) as labelImg or CVAT write
    one; ``splits`` keeps only those split files. Returns root."""
    export_voc(scenes(length), root, folder=".", image_format="png")
    if splits is not None:
        for path in (root / "ImageSets" / "Main").glob("*.txt"):
            if path.stem not in splits:
                path.unlink()
    return root


def voc_07_12(root: Path) -> Path:
    """``root/VOCdevkit/VOC2007`` (trainval, test) and ``VOC2012`` (trainval, train, val; no
    test), as the real devkit; returns root."""
    export_voc(scenes(10, seed=1), root, folder="VOCdevkit/VOC2007")
    year = export_voc(scenes(8, seed=2), root, folder="VOCdevkit/VOC2012", id_prefix="2012_")
    (year / "ImageSets" / "Main" / "test.txt").unlink()
    return root


def coco_80(root: Path, images: int = 12, size: tuple[int, int] = (60, 80), seed: int = 0,
            image_dir: str = "images", ann_name: str = "instances.json") -> tuple[Path, dict]:
    """A COCO JSON over COCO's 80 non-contiguous category ids (listed out of order), with random
    boxes on noise images, one image without annotations and one crowd box.

    Returns:
        The JSON's path and its content.
    """
    gen = torch.Generator().manual_seed(seed)
    (root / image_dir).mkdir(parents=True, exist_ok=True)
    (root / "annotations").mkdir(exist_ok=True)
    entries, annotations = [], []
    height, width = size
    for i in range(images):
        write_image(torch.rand(3, height, width, generator=gen), root / image_dir / f"{i:04d}.jpg")
        entries.append({"id": 1000 + i, "file_name": f"{i:04d}.jpg", "height": height, "width": width})
        for _ in range(0 if i == images - 1 else 3):
            x, y = (torch.rand(2, generator=gen) * torch.tensor([width - 20, height - 20])).tolist()
            w, h = (8 + torch.rand(2, generator=gen) * 12).tolist()
            category = COCO_IDS[int(torch.randint(80, (), generator=gen))]
            annotations.append({"id": len(annotations) + 1, "image_id": 1000 + i, "category_id": category,
                                "bbox": [x, y, w, h], "area": w * h, "iscrowd": int(len(annotations) == 1)})
    categories = [{"id": c, "name": f"category {c}"} for c in reversed(COCO_IDS)]
    data = {"images": entries, "annotations": annotations, "categories": categories}
    path = root / "annotations" / ann_name
    path.write_text(json.dumps(data))
    return path, data


def copy_tree(src: Path, dst: Path) -> Path:
    """A copy of a fixture folder to damage in one test; returns ``dst``."""
    shutil.copytree(src, dst)
    return dst
