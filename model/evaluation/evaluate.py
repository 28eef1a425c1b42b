"""Detection metrics: COCO AP in memory with faster-coco-eval, plus recall on selected objects.

Predictions are per-image dicts ``{"image_id": int, "boxes": (M, 4) xyxy float in ORIGINAL image
pixels, "scores": (M,), "labels": (M,) int64}`` (map network outputs back with
``transforms.to_original`` first). Ground truth is a dataset exposing ``targets()`` (original
pixels, images not loaded) or a list of contract target dicts. Objects flagged ``ignore`` are COCO
``iscrowd`` regions: not counted as misses, and predictions on them are not false positives.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from faster_coco_eval import COCO, COCOeval_faster

from transcenter.model.data.common import Target

logger = logging.getLogger(__name__)

Prediction = dict[str, Any]
METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")  # order of COCOeval's first six stats


def xyxy_to_xywh(boxes: torch.Tensor) -> torch.Tensor:
    """(M, 4) xyxy -> (M, 4) COCO xywh (top-left corner, width, height), same units."""
    return torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1)


def _targets_and_names(dataset_or_targets: Any, class_names: Sequence[str] | None) -> tuple[
        list[Target], list[str]]:
    if hasattr(dataset_or_targets, "targets"):
        targets = dataset_or_targets.targets()
        class_names = class_names or dataset_or_targets.class_names
    else:
        targets = list(dataset_or_targets)
    if class_names is None:
        top = max((int(t["labels"].max()) for t in targets if t["labels"].numel()), default=0)
        class_names = [str(c) for c in range(top + 1)]
    return targets, list(class_names)


def coco_ground_truth(targets: Sequence[Target], class_names: Sequence[str]) -> dict[str, Any]:
    """COCO-format dict of ``targets`` (original pixels); category id = label + 1, area = box area."""
    images, annotations = [], []
    for t in targets:
        height, width = t["orig_size"].tolist()
        images.append({"id": int(t["image_id"]), "height": height, "width": width})
        xywh = xyxy_to_xywh(t["boxes"].double())  # (K, 4) xywh px
        for box, label, ignore in zip(xywh.tolist(), t["labels"].tolist(), t["ignore"].tolist()):
            annotations.append({"id": len(annotations) + 1, "image_id": int(t["image_id"]),
                                "category_id": label + 1, "bbox": box, "area": box[2] * box[3],
                                "iscrowd": int(ignore)})
    if len({img["id"] for img in images}) != len(images):
        raise ValueError("ground truth holds duplicate image_id values")
    categories = [{"id": c + 1, "name": name} for c, name in enumerate(class_names)]
    return {"images": images, "annotations": annotations, "categories": categories}


def detection_rows(predictions: Sequence[Prediction]) -> np.ndarray:
    """(N, 7) float64 rows ``[image_id, x, y, w, h, score, category_id]`` for ``COCO.loadRes``."""
    rows = [torch.cat([torch.full((len(p["scores"]), 1), float(p["image_id"]), dtype=torch.float64),
                       xyxy_to_xywh(torch.as_tensor(p["boxes"]).double().reshape(-1, 4)),
                       torch.as_tensor(p["scores"]).double().reshape(-1, 1),
                       torch.as_tensor(p["labels"]).double().reshape(-1, 1) + 1], dim=1)
            for p in predictions]
    return torch.cat(rows).numpy() if rows else np.zeros((0, 7))


def _percent(value: float) -> float:
    """COCO's -1 (no ground truth in that bucket) becomes NaN; otherwise 0-100."""
    return math.nan if value < 0 else 100.0 * float(value)


def evaluate(predictions: Sequence[Prediction], dataset_or_targets: Any,
             class_names: Sequence[str] | None = None) -> dict[str, Any]:
    """COCO box AP of ``predictions`` against the ground truth.

    Args:
        predictions: Per-image prediction dicts (module docstring); images without one count as
            all misses.
        dataset_or_targets: A dataset with ``targets()`` and ``class_names``, or target dicts.
        class_names: Class index -> name; defaults to the dataset's, else ``"0".."C-1"``.

    Returns:
        ``{"AP", "AP50", "AP75", "APs", "APm", "APl"}`` on the 0-100 scale (COCO's definitions, up to
        100 detections per image, size buckets by box area) and ``per_class_AP50`` (class name ->
        AP50). A metric whose bucket holds no ground truth is NaN (COCO reports -1).

    Raises:
        ValueError: a prediction names an image_id absent from the ground truth.
    """
    targets, class_names = _targets_and_names(dataset_or_targets, class_names)
    ground_truth = COCO(coco_ground_truth(targets, class_names), print_function=logger.debug)
    rows = detection_rows(predictions)  # (N, 7)
    unknown = set(rows[:, 0].astype(np.int64).tolist()) - set(ground_truth.getImgIds())
    if unknown:
        raise ValueError(f"predictions for image_id(s) not in the ground truth: {sorted(unknown)[:10]}")
    results = ground_truth.loadRes(rows if len(rows) else [])
    coco_eval = COCOeval_faster(ground_truth, results, "bbox", print_function=logger.debug)
    coco_eval.evaluate()
    coco_eval.accumulate()
    coco_eval.summarize()
    metrics: dict[str, Any] = {name: _percent(v) for name, v in zip(METRICS, coco_eval.stats[:6])}
    precision = coco_eval.eval["precision"][0, :, :, 0, -1]  # (R, K) at IoU 0.5, all areas, 100 dets
    metrics["per_class_AP50"] = {
        name: _percent(precision[:, k].mean()) if (precision[:, k] > -1).all() else math.nan
        for k, name in enumerate(class_names)}
    return metrics


def _match(pred: Prediction, target: Target, iou: float, min_score: float) -> torch.Tensor:
    """(K,) bool: ground-truth objects matched one-to-one, greedily by score, at IoU >= ``iou``."""
    from torchvision.ops import box_iou  # here: the study driver's data check imports this module

    keep = torch.as_tensor(pred["scores"]) >= min_score  # (M,)
    order = torch.as_tensor(pred["scores"])[keep].argsort(descending=True)
    boxes = torch.as_tensor(pred["boxes"]).float()[keep][order]  # (M', 4) xyxy orig px
    labels = torch.as_tensor(pred["labels"])[keep][order]  # (M',)
    overlap = box_iou(boxes, target["boxes"].float())  # (M', K)
    overlap[labels[:, None] != target["labels"][None, :]] = -1.0
    matched = torch.zeros(len(target["labels"]), dtype=torch.bool)  # (K,)
    for row in overlap:
        row = row.masked_fill(matched, -1.0)
        best = int(row.argmax()) if row.numel() else -1
        if best >= 0 and row[best] >= iou:
            matched[best] = True
    return matched


def recall_at_iou(predictions: Sequence[Prediction], targets: Sequence[Target], iou: float = 0.5,
                  subset_mask: Sequence[torch.Tensor] | None = None, min_score: float = 0.0) -> float:
    """Recall of selected ground-truth objects at an IoU threshold.

    Each prediction (score >= ``min_score``, best first) claims at most one unclaimed same-class
    object with IoU >= ``iou``, so one box cannot recall two nested objects.

    Args:
        predictions: Per-image prediction dicts in original pixels.
        targets: Target dicts in original pixels.
        iou: IoU threshold.
        subset_mask: Per target, (K,) bool selecting the objects counted (e.g. :func:`same_cell_mask`);
            all objects when None. Ignored objects never count.
        min_score: Predictions below this score are dropped first.

    Returns:
        Matched / selected objects in [0, 1]; NaN when no object is selected.
    """
    by_image = {int(p["image_id"]): p for p in predictions}
    hits = total = 0
    for i, target in enumerate(targets):
        selected = ~target["ignore"] if subset_mask is None else subset_mask[i] & ~target["ignore"]  # (K,)
        pred = by_image.get(int(target["image_id"]))
        if pred is not None:
            hits += int((_match(pred, target, iou, min_score) & selected).sum())
        total += int(selected.sum())
    return hits / total if total else math.nan


def same_cell_mask(boxes: torch.Tensor, labels: torch.Tensor, cell_px: float) -> torch.Tensor:
    """(K,) bool: objects whose centre shares a ``cell_px`` grid cell with another same-class object.

    Args:
        boxes: (K, 4) xyxy, in the same pixels as ``cell_px``.
        labels: (K,) class indices.
        cell_px: Heatmap cell side in pixels.
    """
    cells = torch.div(boxes[:, :2] + boxes[:, 2:], 2 * cell_px, rounding_mode="floor")  # (K, 2)
    same = (cells[:, None] == cells[None]).all(dim=2) & (labels[:, None] == labels[None])  # (K, K)
    same.fill_diagonal_(False)
    return same.any(dim=1)


def overlap_recall(predictions: Sequence[Prediction], targets: Sequence[Target], cell_px: float,
                   iou: float = 0.5) -> float:
    """Recall (0-100) at IoU ``iou`` of the objects sharing their heatmap cell with another
    same-class object (:func:`same_cell_mask`): the paper's Fig. 2 case, which a CenterNet-style
    per-class heatmap can decode only one of.

    Cells are laid on the network input, where the heatmap's cell side is ``cell_px``
    (``input_size / heatmap_size``): each target's original-pixel boxes are mapped there with its
    prediction's ``scale`` and ``offset`` (``input_px = orig_px · scale + offset``, as the
    transforms record them; identity when absent). Recall itself is measured in original pixels.

    Args:
        predictions: Per-image prediction dicts in original pixels, optionally with ``scale`` and
            ``offset`` (2,) x then y.
        targets: Target dicts in original pixels.
        cell_px: Heatmap cell side in input pixels.
        iou: IoU threshold.

    Returns:
        Percent in [0, 100]; NaN when no such object exists.
    """
    by_image = {int(p["image_id"]): p for p in predictions}
    masks = []
    for t in targets:
        pred = by_image.get(int(t["image_id"]), {})
        scale = torch.as_tensor(pred.get("scale", (1.0, 1.0))).float().repeat(2)  # (4,)
        offset = torch.as_tensor(pred.get("offset", (0.0, 0.0))).float().repeat(2)  # (4,)
        # A flip reverses x0/x1 but keeps the centre, which is all the mask reads.
        masks.append(same_cell_mask(t["boxes"].float() * scale + offset, t["labels"], cell_px))  # (K,)
    return 100.0 * recall_at_iou(predictions, targets, iou, masks)
