"""Box encoding to heatmap cells + offsets and decoding back (paper §3.2-3.3, Eq. 1 and Eq. 2).

Coordinates: boxes are xyxy in input pixels. With stride ``R = image_side / S`` the continuous
heatmap coordinates are ``x~ = cx / R_x``, ``w~ = w / R_x`` (same for y, h); cells are their floors
clamped to ``[0, S-1]``. Offsets are ordered ``(o_x, o_y, o_w, o_h)``; cells ``(x, y)``.
"""
from __future__ import annotations

import torch
from torchvision.ops import box_convert


def _scale(cells: torch.Tensor, heatmap_size: int, encoding: str) -> torch.Tensor:
    """Returns the Eq. 2 factor ``exp(cell / S)`` (``encoding="exp"``) or 1 (Eq. 1, ``"plain"``)."""
    if encoding == "plain":
        return torch.ones_like(cells)
    if encoding == "exp":
        return torch.exp(cells / heatmap_size)
    raise ValueError(f"offset_encoding={encoding!r}: must be 'exp' or 'plain'")


def _strides(image_size: tuple[int, int], heatmap_size: int, like: torch.Tensor) -> torch.Tensor:
    """Returns ``(R_x, R_y, R_x, R_y)`` pixels per cell for an image of ``(H, W)`` pixels."""
    h, w = image_size
    return torch.tensor([w / heatmap_size, h / heatmap_size] * 2, device=like.device, dtype=like.dtype)


def _float(x: torch.Tensor) -> torch.Tensor:
    """Floating tensors keep their precision (fp64 for exact tests); others become fp32."""
    return x if x.is_floating_point() else x.float()


def to_heatmap_coords(boxes: torch.Tensor, image_size: tuple[int, int], heatmap_size: int) -> torch.Tensor:
    """Returns ``(K, 4)`` continuous ``(x~, y~, w~, h~)`` in heatmap cells for xyxy pixel boxes."""
    boxes = _float(boxes)
    return box_convert(boxes, "xyxy", "cxcywh") / _strides(image_size, heatmap_size, boxes)


def encode_boxes(boxes: torch.Tensor, image_size: tuple[int, int], heatmap_size: int,
                 encoding: str = "exp") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Encodes ground-truth boxes as heatmap cells and regression offsets (Eq. 1 / Eq. 2).

    Args:
        boxes: ``(K, 4)`` xyxy in input pixels.
        image_size: ``(H, W)`` of the input in pixels.
        heatmap_size: S.
        encoding: ``"exp"`` (Eq. 2, paper default) or ``"plain"`` (Eq. 1).

    Returns:
        ``pos_cell`` ``(K, 2)`` long ``(x̄, ȳ)``, ``size_cell`` ``(K, 2)`` long ``(w̄, h̄)``, and
        ``offsets`` ``(K, 4)`` float ``(o_x, o_y, o_w, o_h)``.
    """
    cont = to_heatmap_coords(boxes, image_size, heatmap_size)  # (K, 4)
    cells = cont.floor().clamp(0, heatmap_size - 1)  # (K, 4)
    offsets = (cont - cells) * _scale(cells, heatmap_size, encoding)  # (K, 4)
    cells = cells.long()
    return cells[:, :2], cells[:, 2:], offsets


def decode_boxes(pos_cell: torch.Tensor, size_cell: torch.Tensor, offsets: torch.Tensor,
                 image_size: tuple[int, int], heatmap_size: int, encoding: str = "exp",
                 clamp: bool = True) -> torch.Tensor:
    """Inverts :func:`encode_boxes`: ``x~ = x̄ + o_x·exp(−x̄/S)`` (Eq. 2) or ``x̄ + o_x`` (Eq. 1).

    Args:
        pos_cell: ``(..., 2)`` position cells ``(x̄, ȳ)``.
        size_cell: ``(..., 2)`` size cells ``(w̄, h̄)``.
        offsets: ``(..., 4)`` offsets.
        clamp: clamp width/height to >= 1 px and clip boxes to the image (a zero or negative size would make GIoU NaN),
            so that degenerate predictions never give NaN GIoU.

    Returns:
        ``(..., 4)`` boxes xyxy in input pixels.
    """
    offsets = _float(offsets)
    cells = torch.cat([pos_cell, size_cell], dim=-1).to(offsets.dtype)  # (..., 4)
    cont = cells + offsets / _scale(cells, heatmap_size, encoding)  # (..., 4)
    cxcywh = cont * _strides(image_size, heatmap_size, offsets)  # (..., 4) px
    if clamp:
        cxcywh = torch.cat([cxcywh[..., :2], cxcywh[..., 2:].clamp(min=1.0)], dim=-1)
    boxes = box_convert(cxcywh, "cxcywh", "xyxy")
    if clamp:
        h, w = image_size
        boxes = torch.stack([boxes[..., 0].clamp(0, w), boxes[..., 1].clamp(0, h),
                             boxes[..., 2].clamp(0, w), boxes[..., 3].clamp(0, h)], dim=-1)
    return boxes


def argmax_cells(heatmaps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns the argmax cell ``(..., 2)`` long ``(x, y)`` and peak logit ``(...)`` of ``(..., S, S)``."""
    s = heatmaps.shape[-1]
    peak, flat = heatmaps.flatten(-2).max(dim=-1)  # (...), (...)
    return torch.stack([flat % s, flat // s], dim=-1), peak
