"""CenterNet-style baseline (Zhou et al. 2019, "Objects as Points") on TransCenter's trunk.

Per-class centre heatmaps plus width/height and centre-offset maps, read from the same upsampled
S×S features as the TransCenter head (``model.head = "centernet"``). A class's heatmap target is the
element-wise max of its objects' Gaussians, so two same-class objects whose centres share a cell
give ONE peak and decode to ONE detection: the case the paper's per-query heatmaps solve (Fig. 2).
The losses are CenterNet's: the Gaussian focal loss (the same function as Eq. 4), L1 on the size
and L1 on the offset at each object's centre cell, each normalised by the number of objects.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from transcenter.model.box_codec import decode_boxes, encode_boxes, to_heatmap_coords
from transcenter.model.config import LossConfig, ModelConfig
from transcenter.model.data.common import drop_ignored
from transcenter.model.gaussian import object_radius, render_gaussians
from transcenter.model.heads import HeatmapBranch, gather_cells
from transcenter.model.losses import gaussian_focal_loss, global_count
from transcenter.model.trunk import Trunk


class CenterNet(Trunk):
    """The trunk without a decoder, and three convolutional branches on its S×S features.

    Forward returns a dict of named tensors:

    - ``heatmap_logits`` ``(B, C, S, S)``: per-class centre heatmap logits;
    - ``sizes`` ``(B, 2, S, S)``: ``(w~, h~)`` box size in heatmap cells;
    - ``offsets`` ``(B, 2, S, S)``: ``(x~ − x̄, y~ − ȳ)`` centre offset within the cell (Eq. 1).
    """

    def __init__(self, config: ModelConfig):
        super().__init__(config, decoder=False)
        c = config
        self.heatmap_head = HeatmapBranch(c.head_width, c.num_classes, c.head_convs, c.head_kernel,
                                          c.heatmap_bias)
        self.size_head = HeatmapBranch(c.head_width, 2, c.head_convs, c.head_kernel, 0.0)
        self.offset_head = HeatmapBranch(c.head_width, 2, c.head_convs, c.head_kernel, 0.0)

    def forward(self, images: torch.Tensor) -> dict:
        features, _ = self.encode(images)  # (B, W, S, S)
        return {"heatmap_logits": self.heatmap_head(features),  # (B, C, S, S)
                "sizes": self.size_head(features),  # (B, 2, S, S)
                "offsets": self.offset_head(features)}  # (B, 2, S, S)


@dataclass
class CenterTargets:
    """CenterNet targets of one batch.

    ``heatmaps`` ``(B, C, S, S)``: per class, the element-wise max of its objects' Gaussians;
    per object (K in the batch): ``batch_idx`` ``(K,)``, centre ``cells`` ``(K, 2)`` long
    ``(x̄, ȳ)``, ``sizes`` ``(K, 2)`` ``(w~, h~)`` in cells, ``offsets`` ``(K, 2)`` ``(x~ − x̄, y~ − ȳ)``.
    """

    heatmaps: torch.Tensor
    batch_idx: torch.Tensor
    cells: torch.Tensor
    sizes: torch.Tensor
    offsets: torch.Tensor


@torch.no_grad()
def center_targets(targets: list[dict], image_size: tuple[int, int], num_classes: int,
                   heatmap_size: int, min_overlap: float = 0.7, min_radius: int = 0) -> CenterTargets:
    """Renders CenterNet's targets: one Gaussian per object (Eq. 5, the same radius as TransCenter's),
    merged per class by element-wise max as CenterNet's ``draw_umich_gaussian``.

    Args:
        targets: per image ``boxes (K_b, 4)`` xyxy input px and ``labels (K_b,)``.
        image_size: ``(H, W)`` of the input batch in pixels.
    """
    s = heatmap_size
    device = targets[0]["boxes"].device
    boxes = torch.cat([t["boxes"] for t in targets]).float()  # (K, 4)
    labels = torch.cat([t["labels"] for t in targets]).to(device)  # (K,)
    batch_idx = torch.cat([torch.full((len(t["labels"]),), b, dtype=torch.long, device=device)
                           for b, t in enumerate(targets)])  # (K,)
    cells, _, offsets = encode_boxes(boxes, image_size, s, "plain")  # (K, 2), _, (K, 4)
    sizes = to_heatmap_coords(boxes, image_size, s)[:, 2:]  # (K, 2) (w~, h~)
    radius = object_radius(sizes, min_overlap, min_radius)  # (K,)
    channel = (batch_idx * num_classes + labels)[:, None, None].expand(-1, s, s)  # (K, S, S)
    heatmaps = torch.zeros(len(targets) * num_classes, s, s, device=device).scatter_reduce_(
        0, channel, render_gaussians(cells, radius, s), "amax")  # (B*C, S, S)
    return CenterTargets(heatmaps.view(len(targets), num_classes, s, s), batch_idx, cells, sizes,
                         offsets[:, :2])


class CenterNetCriterion(nn.Module):
    """Computes ``loss_pos`` (focal loss on the centre heatmaps), ``loss_size`` and ``loss_offset``
    (L1 at the centre cells, mean over objects and the two coordinates as CenterNet's RegL1Loss)
    and ``loss = loss_pos + wh_weight·loss_size + offset_weight·loss_offset``. There is no
    ``loss_cls``: the class is the heatmap channel.

    Every object keeps its own size and offset term even when another same-class object shares its
    cell, so that cell's regression is pulled between the two boxes, as in CenterNet.
    """

    def __init__(self, model: ModelConfig, loss: LossConfig):
        super().__init__()
        self.model_config, self.loss_config = model, loss

    def forward(self, outputs: dict, targets: list[dict], image_size: tuple[int, int]
                ) -> dict[str, torch.Tensor]:
        """Returns a dict of scalar fp32 losses: ``loss_pos, loss_size, loss_offset, loss``.

        Args:
            outputs: :class:`CenterNet`'s output dict.
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
        total = loss_pos + lc.wh_weight * loss_size + lc.offset_weight * loss_offset
        return {"loss_pos": loss_pos, "loss_size": loss_size, "loss_offset": loss_offset,
                "loss": total}


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
def centernet_postprocess(outputs: dict, image_size: tuple[int, int], config: ModelConfig,
                          top_k: int = 100) -> list[dict[str, torch.Tensor]]:
    """Returns per image ``{"boxes": (k, 4) xyxy input px, "scores": (k,), "labels": (k,)}``: the
    ``top_k`` heatmap peaks (:func:`extract_peaks`), score = peak probability.

    Decoding is :func:`decode_boxes` with Eq. 1 and size cell 0, i.e. centre ``(x̄ + o_x)·R`` and
    width ``w~·R``, clamped and clipped as TransCenter's boxes (paper.md setting 6).
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
