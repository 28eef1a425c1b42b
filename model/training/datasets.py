"""Builds the train/val datasets a :class:`DataConfig` names, with the matching transforms."""
from __future__ import annotations

from pathlib import Path

from torch.utils.data import Dataset

from transcenter.model.data import (TEST_SPLITS, TRAIN_SPLITS, COCODetection, SyntheticConfig,
                                    SyntheticScenes, VOCDetection, eval_transforms,
                                    train_transforms)
from transcenter.model.training.experiment import DataConfig


def build_datasets(data: DataConfig, input_size: int) -> tuple[Dataset, Dataset]:
    """Returns ``(train, val)`` datasets yielding ``input_size``² images.

    Validation always uses the deterministic letterbox; training uses the augmenting pipeline
    when ``data.augment``. Both carry what ``to_original`` needs to map boxes back.
    """
    train_tf = (train_transforms(input_size) if data.augment else eval_transforms(input_size))
    val_tf = eval_transforms(input_size)
    if data.name == "synthetic":
        def scenes(split: str, length: int) -> SyntheticScenes:
            cfg = SyntheticConfig(num_classes=data.num_classes, image_size=input_size,
                                  length=length, seed=data.seed,
                                  overlap_fraction=data.overlap_fraction,
                                  overlap_cell_px=max(1, input_size // 16))
            return SyntheticScenes(cfg, split, train_tf if split == "train" else val_tf)
        return scenes("train", data.num_train), scenes("val", data.num_val)
    if data.name == "voc":
        return (VOCDetection(data.root, TRAIN_SPLITS, train_tf),
                VOCDetection(data.root, TEST_SPLITS, val_tf, keep_difficult=True))
    root = Path(data.root)
    train_ann = data.train_ann or root / "annotations" / "instances_train.json"
    val_ann = data.val_ann or root / "annotations" / "instances_val.json"
    return (COCODetection(root / "images", train_ann, train_tf),
            COCODetection(root / "images", val_ann, val_tf))
