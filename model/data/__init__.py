"""Detection data: synthetic scenes, PASCAL VOC and COCO-format loaders, and their transforms.

Every dataset yields ``(image, target)``: image float32 (3, H, W) in [0, 1]; target dict with
``boxes`` (K, 4) xyxy input pixels, ``labels`` (K,) int64, ``ignore``/``iscrowd`` (K,) bool,
``image_id`` int and ``orig_size`` (2,) = (H, W); see :mod:`transcenter.model.data.common`.
"""

from transcenter.model.data.coco import COCODetection
from transcenter.model.data.common import LoaderSummary, collate, make_target
from transcenter.model.data.synthetic import SyntheticConfig, SyntheticScenes
from transcenter.model.data.transforms import eval_transforms, to_original, train_transforms
from transcenter.model.data.voc import TEST_SPLITS, TRAIN_SPLITS, VOC_CLASSES, VOCDetection, export_voc

__all__ = [
    "COCODetection",
    "LoaderSummary",
    "SyntheticConfig",
    "SyntheticScenes",
    "TEST_SPLITS",
    "TRAIN_SPLITS",
    "VOCDetection",
    "VOC_CLASSES",
    "collate",
    "eval_transforms",
    "export_voc",
    "make_target",
    "to_original",
    "train_transforms",
]
