"""CenterNet's targets: per-class centre heatmaps (max-merged Gaussians) plus each object's centre
cell, size and offset."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from transcenter.model.detector.box_codec import encode_boxes, to_heatmap_coords
from transcenter.model.detector.gaussian import object_radius, render_gaussians


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
