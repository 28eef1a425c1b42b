"""DETR-style Hungarian matching on decoded boxes (paper §3.4)."""
from __future__ import annotations

import torch
from scipy.optimize import linear_sum_assignment
from torch import nn
from torchvision.ops import box_convert, generalized_box_iou

from transcenter.model.detector.config import MatcherConfig


class HungarianMatcher(nn.Module):
    """Assigns each ground-truth object to one query, per image, minimising
    ``λ_cls·(−p̂(c)) + λ_L1·L1(cxcywh / image size) + λ_giou·(−GIoU)``.
    """

    def __init__(self, config: MatcherConfig):
        super().__init__()
        self.config = config

    @torch.no_grad()
    def forward(self, class_prob: torch.Tensor, boxes: torch.Tensor, targets: list[dict],
                image_size: tuple[int, int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Matches queries to objects.

        Args:
            class_prob: ``(B, N, C+1)`` sigmoid class probabilities.
            boxes: ``(B, N, 4)`` decoded boxes, xyxy input pixels.
            targets: per image, ``boxes`` ``(K_b, 4)`` xyxy px and ``labels`` ``(K_b,)``.
            image_size: ``(H, W)`` input pixels, for the L1 normalisation.

        Returns:
            Per image ``(query_idx, target_idx)``, two int64 tensors of length ``K_b``.
        """
        bsz, num_q = boxes.shape[:2]
        sizes = [len(t["boxes"]) for t in targets]
        if sum(sizes) == 0:
            empty = torch.empty(0, dtype=torch.int64)
            return [(empty, empty) for _ in targets]
        h, w = image_size
        norm = torch.tensor([w, h, w, h], dtype=torch.float32, device=boxes.device)
        tgt_boxes = torch.cat([t["boxes"] for t in targets]).float()  # (K, 4)
        tgt_labels = torch.cat([t["labels"] for t in targets])  # (K,)
        out_boxes = boxes.flatten(0, 1).float()  # (B*N, 4)
        cost_class = -class_prob.flatten(0, 1).float()[:, tgt_labels]  # (B*N, K)
        cost_l1 = torch.cdist(box_convert(out_boxes, "xyxy", "cxcywh") / norm,
                              box_convert(tgt_boxes, "xyxy", "cxcywh") / norm, p=1)  # (B*N, K)
        cost_giou = -generalized_box_iou(out_boxes, tgt_boxes)  # (B*N, K)
        c = self.config
        cost = c.cost_class * cost_class + c.cost_l1 * cost_l1 + c.cost_giou * cost_giou
        cost = cost.view(bsz, num_q, -1).cpu()
        if not torch.isfinite(cost).all():
            raise FloatingPointError("matching cost has NaN/inf entries (diverged predictions?)")
        out = []
        for b, chunk in enumerate(cost.split(sizes, dim=-1)):
            q, t = linear_sum_assignment(chunk[b].numpy())
            out.append((torch.as_tensor(q, dtype=torch.int64), torch.as_tensor(t, dtype=torch.int64)))
        return out
