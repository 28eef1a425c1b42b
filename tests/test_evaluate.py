"""COCO AP in memory (faster-coco-eval) against known answers and pycocotools; recall helper."""

import contextlib
import io
import math

import numpy as np
import pytest
import torch

from transcenter.model.data import SyntheticConfig, SyntheticScenes, eval_transforms, make_target, to_original
from transcenter.model.evaluation.evaluate import (
    METRICS,
    evaluate,
    overlap_recall,
    recall_at_iou,
    same_cell_mask,
    xyxy_to_xywh,
)

CLASSES = ["a", "b", "c"]
# One small (< 32² px), one medium and one large (> 96² px) object, so every size bucket is defined.
SIZES = [(12, 16), (50, 40), (120, 110)]


def random_targets(n_images=8, seed=0, crowd_every=0):
    g = torch.Generator().manual_seed(seed)
    targets = []
    for i in range(n_images):
        boxes, labels = [], []
        for _k, (w, h) in enumerate(SIZES * 2):
            x0, y0 = (torch.rand(2, generator=g) * torch.tensor([300 - w, 240 - h])).round().tolist()
            boxes.append([x0, y0, x0 + w, y0 + h])
            labels.append(int(torch.randint(len(CLASSES), (), generator=g)))
        ignore = torch.zeros(len(boxes), dtype=torch.bool)
        if crowd_every:
            ignore[::crowd_every] = True
        targets.append(make_target(torch.tensor(boxes), torch.tensor(labels), 10 + i, (240, 300), ignore))
    return targets


def perfect(targets):
    return [{"image_id": t["image_id"], "boxes": t["boxes"].clone(), "scores": torch.ones(len(t["labels"])),
             "labels": t["labels"].clone()} for t in targets]


def noisy(targets, seed=1):
    """Jittered, sometimes mislabelled copies of the ground truth plus random false positives."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for t in targets:
        k = len(t["labels"])
        wh = (t["boxes"][:, 2:] - t["boxes"][:, :2]).repeat(1, 2)  # (K, 4)
        boxes = t["boxes"] + (torch.rand(k, 4, generator=g) - 0.5) * 0.4 * wh
        labels = torch.where(torch.rand(k, generator=g) < 0.15, torch.randint(3, (k,), generator=g), t["labels"])
        fp_xy = torch.rand(4, 2, generator=g) * 200
        fp = torch.cat([fp_xy, fp_xy + 10 + torch.rand(4, 2, generator=g) * 80], dim=1)
        out.append({"image_id": t["image_id"], "boxes": torch.cat([boxes, fp]),
                    "scores": torch.rand(k + 4, generator=g), "labels": torch.cat([labels, torch.randint(3, (4,))])})
    return out


def test_perfect_predictions_score_100():
    targets = random_targets()
    result = evaluate(perfect(targets), targets, CLASSES)
    for name in METRICS:
        assert result[name] == pytest.approx(100.0), name
    assert result["per_class_AP50"] == {name: pytest.approx(100.0) for name in CLASSES}


def test_shifted_predictions_score_lower():
    targets = random_targets()
    shifted = perfect(targets)
    for p in shifted:
        width = p["boxes"][:, 2:3] - p["boxes"][:, 0:1]  # (K, 1)
        p["boxes"] = p["boxes"] + torch.cat([width, torch.zeros_like(width)], dim=1).repeat(1, 2) * 0.2  # IoU 2/3
    result = evaluate(shifted, targets, CLASSES)
    assert result["AP50"] == pytest.approx(100.0)
    assert result["AP75"] == 0.0 and result["AP"] < 50.0


def test_empty_predictions_score_zero_and_missing_images_count_as_misses():
    targets = random_targets()
    empty = evaluate([], targets, CLASSES)
    for name in METRICS:
        assert empty[name] == 0.0, name
    assert all(v == 0.0 for v in empty["per_class_AP50"].values())
    half = evaluate(perfect(targets)[:4], targets, CLASSES)
    assert 30.0 < half["AP50"] < 70.0


def test_class_without_ground_truth_is_nan_and_unknown_image_raises():
    targets = random_targets()
    result = evaluate(perfect(targets), targets, CLASSES + ["unused"])
    assert math.isnan(result["per_class_AP50"]["unused"])
    bad = perfect(targets)
    bad[0]["image_id"] = 999
    with pytest.raises(ValueError, match="999"):
        evaluate(bad, targets, CLASSES)


def test_ignored_objects_are_neither_misses_nor_make_false_positives():
    targets = random_targets(crowd_every=3)
    only_kept = perfect(targets)
    for p, t in zip(only_kept, targets):
        for key in ("boxes", "scores", "labels"):
            p[key] = p[key][~t["ignore"]]
    assert evaluate(only_kept, targets, CLASSES)["AP"] == pytest.approx(100.0)
    everything = perfect(targets)
    for p, t in zip(everything, targets):
        p["scores"] = torch.where(t["ignore"], 1.0, 0.5)  # predictions on ignored objects rank first
    assert evaluate(everything, targets, CLASSES)["AP"] == pytest.approx(100.0)


def pycocotools_stats(predictions, targets):
    """Reference: pycocotools with a ground truth dict built here, independently of evaluate."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images, annotations = [], []
    for t in targets:
        images.append({"id": t["image_id"], "height": 240, "width": 300})
        for (x0, y0, x1, y1), label, crowd in zip(t["boxes"].tolist(), t["labels"].tolist(), t["ignore"].tolist()):
            annotations.append({"id": len(annotations) + 1, "image_id": t["image_id"], "category_id": label + 1,
                                "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0),
                                "iscrowd": int(crowd)})
    gt = COCO()
    gt.dataset = {"images": images, "annotations": annotations,
                  "categories": [{"id": c + 1, "name": n} for c, n in enumerate(CLASSES)]}
    rows = [[p["image_id"], x0, y0, x1 - x0, y1 - y0, s, label + 1]
            for p in predictions
            for (x0, y0, x1, y1), s, label in zip(p["boxes"].tolist(), p["scores"].tolist(), p["labels"].tolist())]
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        coco_eval = COCOeval(gt, gt.loadRes(np.array(rows, dtype=np.float64)), "bbox")
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return coco_eval.stats[:6]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_agrees_with_pycocotools(seed):
    targets = random_targets(n_images=10, seed=seed, crowd_every=4 if seed == 2 else 0)
    predictions = noisy(targets, seed=seed)[:-1]  # the last image gets no predictions at all
    ours = evaluate(predictions, targets, CLASSES)
    reference = pycocotools_stats(predictions, targets)
    for name, ref in zip(METRICS, reference):
        assert 0.0 < ref < 1.0, name  # a non-trivial case
        assert abs(ours[name] / 100.0 - ref) < 1e-6, f"{name}: {ours[name] / 100} vs {ref}"


def test_evaluate_on_a_dataset_reads_annotations_without_rendering(monkeypatch):
    ds = SyntheticScenes(SyntheticConfig(length=16), transforms=eval_transforms(200))
    # Network-space predictions (the transformed targets) mapped back to original pixels.
    predictions = []
    for i in (0, 1, 2, 3):
        _, t = ds[i]
        predictions.append({"image_id": t["image_id"], "boxes": to_original(t["boxes"], t),
                            "scores": torch.ones(len(t["labels"])), "labels": t["labels"]})
    monkeypatch.setattr(SyntheticScenes, "render", lambda *a: pytest.fail("evaluate rendered an image"))
    subset = [ds.annotations(i) for i in range(4)]
    assert evaluate(predictions, subset, ds.class_names)["AP"] == pytest.approx(100.0)
    assert evaluate(predictions, ds)["AP"] < 50.0  # the other 12 images are misses


def test_xyxy_to_xywh():
    assert xyxy_to_xywh(torch.tensor([[1.0, 2.0, 4.0, 8.0]])).tolist() == [[1.0, 2.0, 3.0, 6.0]]


def nested_target():
    boxes = torch.tensor([[10.0, 10.0, 50.0, 50.0], [25.0, 25.0, 35.0, 35.0], [70.0, 70.0, 90.0, 90.0]])
    return make_target(boxes, torch.tensor([0, 0, 1]), 0, (100, 100), torch.tensor([False, False, True]))


def test_recall_counts_one_object_per_prediction_and_skips_ignored():
    target = nested_target()
    outer_only = {"image_id": 0, "boxes": target["boxes"][:1], "scores": torch.ones(1), "labels": torch.tensor([0])}
    assert recall_at_iou([outer_only], [target]) == pytest.approx(0.5)
    nested = same_cell_mask(target["boxes"], target["labels"], cell_px=8)
    assert nested.tolist() == [True, True, False]
    inner = [torch.tensor([False, True, False])]
    assert recall_at_iou([outer_only], [target], subset_mask=inner) == 0.0
    both = {"image_id": 0, "boxes": target["boxes"][:2], "scores": torch.tensor([0.9, 0.2]),
            "labels": torch.tensor([0, 0])}
    assert recall_at_iou([both], [target], subset_mask=[nested]) == 1.0
    assert recall_at_iou([both], [target], min_score=0.5) == pytest.approx(0.5)
    wrong_class = dict(both, labels=torch.tensor([1, 1]))
    assert recall_at_iou([wrong_class], [target]) == 0.0
    assert recall_at_iou([], [target]) == 0.0
    assert math.isnan(recall_at_iou([], [target], subset_mask=[torch.zeros(3, dtype=torch.bool)]))


def test_overlap_recall_lays_cells_on_the_network_input():
    # Same-class centres at x = 14 and 18 original px: cells 1 and 2 of an 8 px grid there, but one
    # cell (1) on an input letterboxed at scale 0.5 with a 2 px left margin (x = 9 and 11).
    target = make_target(torch.tensor([[10.0, 16.0, 18.0, 24.0], [16.0, 18.0, 20.0, 22.0]]),
                         torch.tensor([0, 0]), 0, (40, 40))
    pred = {"image_id": 0, "boxes": target["boxes"][:1], "scores": torch.ones(1),
            "labels": torch.tensor([0])}
    letterboxed = dict(pred, scale=torch.tensor([0.5, 0.5]), offset=torch.tensor([2.0, 0.0]))
    assert overlap_recall([letterboxed], [target], cell_px=8) == pytest.approx(50.0)
    assert math.isnan(overlap_recall([pred], [target], cell_px=8))  # identity: no shared cell
    both = dict(letterboxed, boxes=target["boxes"], scores=torch.ones(2), labels=torch.tensor([0, 0]))
    assert overlap_recall([both], [target], cell_px=8) == pytest.approx(100.0)
