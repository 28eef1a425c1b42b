"""Set criterion: decode → Hungarian matching → per-query targets → the paper's losses."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from transcenter.model.data.common import drop_ignored
from transcenter.model.detector.box_codec import encode_boxes, to_heatmap_coords
from transcenter.model.detector.config import TransCenterConfig
from transcenter.model.detector.gaussian import object_radius, render_gaussians
from transcenter.model.detector.heads import OffsetHead
from transcenter.model.detector.losses import (
    classification_loss,
    gaussian_focal_loss,
    global_count,
    offset_loss,
    weighted_total,
)
from transcenter.model.detector.matcher import HungarianMatcher
from transcenter.model.detector.postprocess import decode_predictions


@dataclass
class QueryTargets:
    """Targets of one batch after matching.

    ``classes`` ``(B, N)`` long (C = background); ``pos_heatmaps`` / ``size_heatmaps``
    ``(B, N, S, S)``; ``batch_idx`` / ``query_idx`` ``(M,)`` matched queries; ``pos_cells``
    ``(M, 2)``; ``offsets`` ``(M, 4)``.
    """

    classes: torch.Tensor
    pos_heatmaps: torch.Tensor
    size_heatmaps: torch.Tensor
    batch_idx: torch.Tensor
    query_idx: torch.Tensor
    pos_cells: torch.Tensor
    offsets: torch.Tensor


class SetCriterion(nn.Module):
    """Computes ``loss_cls`` (Eq. 3), ``loss_pos`` / ``loss_size`` (Eq. 4), ``loss_offset`` and
    their weighted sum ``loss`` (:attr:`weight_dict`). The normalisers ``pos`` and ``neg`` are
    counted over the batch, summed across data-parallel workers and clamped to at least 1; the
    offset loss is averaged over positive queries and is 0 without any.

    Args:
        config: the model, loss and matcher sections.
        offset_head: the model's own :class:`OffsetHead` (shared, not a copy): the offset loss
            evaluates it at each matched query's ground-truth position cell, from the model's
            ``query_states`` and ``features`` outputs.
    """

    def __init__(self, config: TransCenterConfig, offset_head: OffsetHead):
        super().__init__()
        self.config = config
        self.matcher = HungarianMatcher(config.matcher)
        self.offset_head = offset_head
        lc = config.loss
        self.weight_dict = {"loss_cls": lc.cls_weight, "loss_pos": lc.pos_weight,
                            "loss_size": lc.size_weight, "loss_offset": lc.offset_weight}

    @torch.no_grad()
    def build_targets(self, outputs: dict, targets: list[dict], image_size: tuple[int, int]
                      ) -> QueryTargets:
        """Matches queries to objects and renders each matched query's own heatmap channels."""
        m, lc = self.config.model, self.config.loss
        s = m.heatmap_size
        logits = outputs["logits"]
        bsz, n = logits.shape[:2]
        device = logits.device
        boxes = decode_predictions(outputs, image_size, s, m.offset_encoding)  # (B, N, 4)
        indices = self.matcher(logits.detach().float().sigmoid(), boxes, targets, image_size)
        batch_idx = torch.cat([torch.full_like(q, b) for b, (q, _) in enumerate(indices)]).to(device)
        query_idx = torch.cat([q for q, _ in indices]).to(device)
        gt_boxes = torch.cat([t["boxes"][g.to(t["boxes"].device)] for t, (_, g) in
                              zip(targets, indices)]).to(device).float()  # (M, 4)
        gt_labels = torch.cat([t["labels"][g.to(t["labels"].device)] for t, (_, g) in
                               zip(targets, indices)]).to(device)  # (M,)
        pos_cells, size_cells, offsets = encode_boxes(gt_boxes, image_size, s, m.offset_encoding)
        radius = object_radius(to_heatmap_coords(gt_boxes, image_size, s)[:, 2:], lc.min_overlap,
                               lc.min_radius)  # (M,)
        classes = torch.full((bsz, n), m.num_classes, dtype=torch.long, device=device)
        classes[batch_idx, query_idx] = gt_labels
        pos_hm = torch.zeros(bsz, n, s, s, device=device)
        size_hm = torch.zeros(bsz, n, s, s, device=device)
        # One channel per query and at most one object per query: plain assignment, no max-merge.
        pos_hm[batch_idx, query_idx] = render_gaussians(pos_cells, radius, s)
        size_hm[batch_idx, query_idx] = render_gaussians(size_cells, radius, s)
        return QueryTargets(classes, pos_hm, size_hm, batch_idx, query_idx, pos_cells, offsets)

    def forward(self, outputs: dict, targets: list[dict], image_size: tuple[int, int]
                ) -> dict[str, torch.Tensor]:
        """Returns a dict of scalar fp32 losses: ``loss_cls, loss_pos, loss_size, loss_offset, loss``.

        Args:
            outputs: the model's output dict.
            targets: per image ``boxes (K, 4)`` xyxy input px, ``labels (K,)``, optional ``ignore``.
            image_size: ``(H, W)`` of the input batch in pixels.
        """
        lc = self.config.loss
        qt = self.build_targets(outputs, drop_ignored(targets), image_size)
        bsz, n = qt.classes.shape
        device = qt.classes.device
        num_pos = global_count(len(qt.query_idx), device)
        num_all = global_count(bsz * n, device)
        num_neg = max(num_all - num_pos, 0.0)
        hm_norm = num_pos + lc.bg_weight * num_neg
        with torch.autocast(device.type, enabled=False):
            loss_cls = classification_loss(outputs["logits"], qt.classes, lc.bg_weight,
                                           lc.bg_weight_mode) / num_all
            loss_pos = gaussian_focal_loss(outputs["pos_logits"], qt.pos_heatmaps, lc.alpha,
                                           lc.beta) / hm_norm
            loss_size = gaussian_focal_loss(outputs["size_logits"], qt.size_heatmaps, lc.alpha,
                                            lc.beta) / hm_norm
            pred_off = self.offset_head(outputs["query_states"], outputs["features"], qt.batch_idx,
                                        qt.query_idx, qt.pos_cells)  # (M, 4)
            loss_offset = offset_loss(pred_off, qt.offsets) / num_pos
        losses = {"loss_cls": loss_cls, "loss_pos": loss_pos, "loss_size": loss_size,
                  "loss_offset": loss_offset}
        return {**losses, "loss": weighted_total(losses, self.weight_dict)}
