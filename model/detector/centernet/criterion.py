"""CenterNet's losses: Gaussian focal loss on the centre heatmaps, L1 on size and offset."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from transcenter.model.data.common import drop_ignored
from transcenter.model.detector.centernet.targets import center_targets
from transcenter.model.detector.config import LossConfig, ModelConfig
from transcenter.model.detector.heads import gather_cells
from transcenter.model.detector.losses import gaussian_focal_loss, global_count, weighted_total


class CenterNetCriterion(nn.Module):
    """Computes ``loss_pos`` (focal loss on the centre heatmaps), ``loss_size`` and ``loss_offset``
    (L1 at the centre cells, mean over objects and the two coordinates as CenterNet's RegL1Loss)
    and ``loss = pos_weight·loss_pos + wh_weight·loss_size + offset_weight·loss_offset``
    (:attr:`weight_dict`). There is no ``loss_cls``: the class is the heatmap channel.

    Every object keeps its own size and offset term even when another same-class object shares its
    cell, so that cell's regression is pulled between the two boxes, as in CenterNet.
    """

    def __init__(self, model: ModelConfig, loss: LossConfig):
        super().__init__()
        self.model_config, self.loss_config = model, loss
        self.weight_dict = {"loss_pos": loss.pos_weight, "loss_size": loss.wh_weight,
                            "loss_offset": loss.offset_weight}

    def forward(self, outputs: dict[str, torch.Tensor], targets: list[dict],
                image_size: tuple[int, int]) -> dict[str, torch.Tensor]:
        """Returns a dict of scalar fp32 losses: ``loss_pos, loss_size, loss_offset, loss``.

        Args:
            outputs: :class:`~transcenter.model.detector.centernet.model.CenterNet`'s output dict.
            targets: per image ``boxes (K, 4)`` xyxy input px, ``labels (K,)``, optional ``ignore``.
            image_size: ``(H, W)`` of the input batch in pixels.
        """
        m, lc = self.model_config, self.loss_config
        ct = center_targets(drop_ignored(targets), image_size, m.num_classes, m.heatmap_size,
                            lc.min_overlap, lc.min_radius)
        device = ct.heatmaps.device
        num_objects = global_count(len(ct.batch_idx), device)
        with torch.autocast(device.type, enabled=False):
            loss_pos = gaussian_focal_loss(outputs["heatmap_logits"], ct.heatmaps, lc.alpha,
                                           lc.beta) / num_objects
            sizes = gather_cells(outputs["sizes"].float(), ct.batch_idx, ct.cells)  # (K, 2)
            offsets = gather_cells(outputs["offsets"].float(), ct.batch_idx, ct.cells)  # (K, 2)
            loss_size = F.l1_loss(sizes, ct.sizes, reduction="sum") / (2 * num_objects)
            loss_offset = F.l1_loss(offsets, ct.offsets, reduction="sum") / (2 * num_objects)
        losses = {"loss_pos": loss_pos, "loss_size": loss_size, "loss_offset": loss_offset}
        return {**losses, "loss": weighted_total(losses, self.weight_dict)}
