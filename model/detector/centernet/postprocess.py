"""CenterNet's decoding: 3×3 max-pool peaks of the class heatmaps, then size and offset there."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from transcenter.model.detector.box_codec import decode_boxes
from transcenter.model.detector.config import ModelConfig


def extract_peaks(heatmaps: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """CenterNet's NMS: keeps cells equal to their 3×3 max-pool, then the top ``k`` over classes
    and cells.

    Args:
        heatmaps: ``(B, C, S, S)`` probabilities.
        k: peaks per image (at most ``C·S·S``).

    Returns:
        ``scores (B, k)``, ``labels (B, k)`` long and ``cells (B, k, 2)`` long ``(x, y)``, best first.
    """
    s = heatmaps.shape[-1]
    keep = F.max_pool2d(heatmaps, 3, stride=1, padding=1) == heatmaps  # (B, C, S, S)
    scores, flat = (heatmaps * keep).flatten(1).topk(k, dim=1)  # (B, k)
    cell = flat % (s * s)  # (B, k) index within a class's map
    return scores, flat // (s * s), torch.stack([cell % s, cell // s], dim=-1)


@torch.no_grad()
def centernet_postprocess(outputs: dict[str, torch.Tensor], image_size: tuple[int, int],
                          config: ModelConfig, top_k: int = 100) -> list[dict[str, torch.Tensor]]:
    """Returns per image ``{"boxes": (k, 4) xyxy input px, "scores": (k,), "labels": (k,)}``: the
    ``top_k`` heatmap peaks (:func:`extract_peaks`), score = peak probability.

    Decoding is :func:`decode_boxes` with Eq. 1 and size cell 0, i.e. centre ``(x̄ + o_x)·R`` and
    width ``w~·R``, clamped and clipped as TransCenter's boxes.
    """
    heat = outputs["heatmap_logits"].float().sigmoid()  # (B, C, S, S)
    bsz, num_cls, s, _ = heat.shape
    scores, labels, cells = extract_peaks(heat, min(top_k, num_cls * s * s))  # (B, k), (B, k, 2)
    flat = (cells[..., 1] * s + cells[..., 0])[:, None].expand(-1, 2, -1)  # (B, 2, k)
    sizes = outputs["sizes"].float().flatten(2).gather(2, flat).transpose(1, 2)  # (B, k, 2)
    offsets = outputs["offsets"].float().flatten(2).gather(2, flat).transpose(1, 2)  # (B, k, 2)
    boxes = decode_boxes(cells, torch.zeros_like(cells), torch.cat([offsets, sizes], dim=-1),
                         image_size, s, "plain")  # (B, k, 4)
    return [{"boxes": boxes[b], "scores": scores[b], "labels": labels[b]} for b in range(bsz)]
