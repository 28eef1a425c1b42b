"""Turns TransCenter's outputs into boxes and per-image detections."""
from __future__ import annotations

import torch

from transcenter.model.detector.box_codec import argmax_cells, decode_boxes
from transcenter.model.detector.config import ModelConfig


def decode_predictions(outputs: dict[str, torch.Tensor], image_size: tuple[int, int],
                       heatmap_size: int, encoding: str) -> torch.Tensor:
    """Returns ``(B, N, 4)`` xyxy input-pixel boxes from each query's argmax position and size
    cells and its ``offsets`` (detached: matching and decoding take no gradient)."""
    pos_cells, _ = argmax_cells(outputs["pos_logits"].detach())  # (B, N, 2)
    size_cells, _ = argmax_cells(outputs["size_logits"].detach())  # (B, N, 2)
    return decode_boxes(pos_cells, size_cells, outputs["offsets"].detach(), image_size,
                        heatmap_size, encoding)


@torch.no_grad()
def transcenter_postprocess(outputs: dict[str, torch.Tensor], image_size: tuple[int, int],
                            config: ModelConfig, top_k: int = 100) -> list[dict[str, torch.Tensor]]:
    """Returns per image ``{"boxes": (k, 4) xyxy input px, "scores": (k,), "labels": (k,)}``,
    the ``top_k`` queries by score, best first.

    The score follows ``config.score`` (the paper does not state it): ``class`` = max object-class
    probability; ``class_x_peak`` × the query's position-heatmap peak probability;
    ``class_x_fg`` × (1 − background probability).
    """
    probs = outputs["logits"].float().sigmoid()  # (B, N, C+1)
    scores, labels = probs[..., :-1].max(dim=-1)  # (B, N)
    if config.score == "class_x_peak":
        scores = scores * argmax_cells(outputs["pos_logits"].float())[1].sigmoid()
    elif config.score == "class_x_fg":
        scores = scores * (1 - probs[..., -1])
    boxes = decode_predictions(outputs, image_size, config.heatmap_size, config.offset_encoding)
    k = min(top_k, scores.shape[1])
    top, idx = scores.topk(k, dim=1)  # (B, k)
    return [{"boxes": boxes[b, idx[b]], "scores": top[b], "labels": labels[b, idx[b]]}
            for b in range(scores.shape[0])]
