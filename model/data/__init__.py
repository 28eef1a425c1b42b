"""Detection data: synthetic scenes, PASCAL VOC and COCO-format loaders, the data index, transforms.

Every dataset yields ``(image, target)``: image float32 (3, H, W) in [0, 1]; target dict with
``boxes`` (K, 4) xyxy input pixels, ``labels`` (K,) int64, ``ignore``/``iscrowd`` (K,) bool,
``image_id`` int and ``orig_size`` (2,) = (H, W); see :mod:`transcenter.model.data.common`.
"""

import importlib
from typing import Any

# Names resolve lazily (PEP 562) so that ``python -m transcenter.model.data.synthetic`` does not
# find its own module already imported by this package.
_EXPORTS = {
    "COCODetection": "coco",
    "DataConfig": "config",
    "DataFingerprint": "index",
    "IndexedDetection": "index",
    "StaleIndexError": "index",
    "open_index": "index",
    "write_index": "index",
    "open_datasets": "build",
    "LoaderSummary": "common",
    "collate": "common",
    "make_target": "common",
    "SyntheticConfig": "synthetic",
    "SyntheticScenes": "synthetic",
    "eval_transforms": "transforms",
    "to_original": "transforms",
    "train_transforms": "transforms",
    "TEST_SPLITS": "voc",
    "TRAIN_SPLITS": "voc",
    "VOCDetection": "voc",
    "VOCLayout": "voc",
    "VOC_CLASSES": "voc",
    "export_voc": "voc",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
