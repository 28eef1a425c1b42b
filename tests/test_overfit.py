"""The small CPU configuration overfits 8 fixed images (recall >= 0.9 at IoU 0.5).

The model, criterion and optimiser are driven directly (as ``TrialRunner`` does: AdamW groups,
grad clipping), on one fixed batch of 8 synthetic scenes. Every ``CHECK_EVERY`` steps the model is
evaluated in eval mode (BatchNorm running statistics) through the evaluation's own
``postprocess``; the run stops as soon as recall reaches the target. A throwaway prototype reached
recall 1.0 in 80 s at S = 16; here it typically takes ~75 steps (~25 s on 2 quiet cores).
"""
import time

import pytest
import torch
from torch import nn

from transcenter.model.data import SyntheticConfig, SyntheticScenes, collate
from transcenter.model.detector.criterion import SetCriterion
from transcenter.model.detector.registry import build_model, postprocess
from transcenter.model.evaluation.evaluate import recall_at_iou
from transcenter.model.training.engine import build_optimizer
from transcenter.model.training.experiment import trial_config

NUM_IMAGES = 8
MAX_STEPS = 200  # ~0.2-0.3 s a step at batch 8 on 2 cores: well under 2 minutes even when used up
CHECK_EVERY = 25
TARGET_RECALL = 0.9


def _recall(model: nn.Module, images: torch.Tensor, targets: list[dict], cfg, top_k: int) -> float:
    """Recall at IoU 0.5 of each image's ``top_k`` best-scored detections, model in eval mode."""
    model.eval()
    with torch.no_grad():
        outputs = model(images)
    model.train()
    size = tuple(images.shape[-2:])
    dets = postprocess(outputs, size, cfg.model, top_k=top_k)
    preds = [dict(d, image_id=t["image_id"]) for d, t in zip(dets, targets)]
    return recall_at_iou(preds, targets, iou=0.5)


@pytest.mark.slow
def test_small_model_overfits_eight_images():
    torch.set_num_threads(2)
    torch.manual_seed(0)
    cfg = trial_config("cpu", {"model.heatmap_size": 16})
    assert (cfg.model.backbone, cfg.model.input_size, cfg.model.num_queries) == ("resnet18", 128, 10)
    size = cfg.model.input_size
    scenes = SyntheticScenes(SyntheticConfig(num_classes=cfg.data.num_classes, image_size=size,
                                             length=NUM_IMAGES, overlap_cell_px=size // 16))
    images, targets = collate([scenes[i] for i in range(NUM_IMAGES)])  # (8, 3, 128, 128)
    # Only the top max_objects (3) detections per image may recall anything: stricter than the
    # evaluation's top 100 (all N = 10 queries), so idle queries cannot pick up objects by chance.
    top_k = scenes.config.max_objects
    assert sum(len(t["labels"]) for t in targets) >= NUM_IMAGES

    model = build_model(cfg.detector.model).train()
    criterion = SetCriterion(cfg.detector, model.offset_head)
    optimizer = build_optimizer(model, cfg.optim)
    start = time.perf_counter()
    recall, step, history = 0.0, 0, []
    while step < MAX_STEPS and recall < TARGET_RECALL:
        losses = criterion(model(images), targets, (size, size))
        optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
        optimizer.step()
        step += 1
        if step % CHECK_EVERY == 0:
            recall = _recall(model, images, targets, cfg, top_k)
            history.append((step, round(losses["loss"].item(), 3), round(recall, 3)))
    elapsed = time.perf_counter() - start
    print(f"overfit: recall {recall:.3f} after {step} steps in {elapsed:.1f} s "
          f"(step, loss, recall): {history}")
    assert torch.isfinite(losses["loss"])
    assert recall >= TARGET_RECALL, f"recall {recall:.3f} < {TARGET_RECALL} after {step} steps: {history}"
