"""Gaussian heatmap targets (paper Eq. 5) with CenterNet's size-adaptive radius."""
from __future__ import annotations

import torch


def gaussian_radius(height: torch.Tensor, width: torch.Tensor, min_overlap: float = 0.7) -> torch.Tensor:
    """CenterNet's object-size-adaptive radius, in the corrected form that mmdetection uses.

    Args:
        height, width: ``(K,)`` object size in heatmap cells (continuous).
        min_overlap: minimum IoU a box shifted by the radius must keep with the ground truth.

    Returns:
        ``(K,)`` float radius in cells (not floored).
    """
    h, w = height.float(), width.float()
    b1 = h + w
    c1 = w * h * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 - torch.sqrt(b1 ** 2 - 4 * c1)) / 2
    b2 = 2 * (h + w)
    c2 = (1 - min_overlap) * w * h
    r2 = (b2 - torch.sqrt(b2 ** 2 - 16 * c2)) / 8
    a3 = 4 * min_overlap
    b3 = -2 * min_overlap * (h + w)
    c3 = (min_overlap - 1) * w * h
    r3 = (b3 + torch.sqrt(b3 ** 2 - 4 * a3 * c3)) / (2 * a3)
    return torch.minimum(torch.minimum(r1, r2), r3)


def object_radius(size_cont: torch.Tensor, min_overlap: float, min_radius: int) -> torch.Tensor:
    """Returns ``(K,)`` long radius ``max(floor(gaussian_radius(h~, w~)), min_radius)``.

    Args:
        size_cont: ``(K, 2)`` continuous object size ``(w~, h~)`` in cells.
    """
    r = gaussian_radius(size_cont[:, 1], size_cont[:, 0], min_overlap).floor().long()
    return r.clamp(min=min_radius)


def render_gaussians(centers: torch.Tensor, radius: torch.Tensor, heatmap_size: int) -> torch.Tensor:
    """Renders one truncated Gaussian per object (Eq. 5), all objects at once.

    ``g = exp(-((x - x̂)² + (y - ŷ)²) / (2φ²))`` inside the ``(2r+1)²`` window, 0 outside,
    with ``φ = (2r + 1) / 6``. The peak cell is exactly 1.

    Args:
        centers: ``(K, 2)`` long peak cells ``(x̂, ŷ)``.
        radius: ``(K,)`` long radius in cells.

    Returns:
        ``(K, S, S)`` float32 heatmaps.
    """
    grid = torch.arange(heatmap_size, device=centers.device)
    dx = (grid[None, :] - centers[:, :1]).float()  # (K, S) along x
    dy = (grid[None, :] - centers[:, 1:]).float()  # (K, S) along y
    r = radius.float()[:, None]  # (K, 1)
    sigma = (2 * r + 1) / 6
    gx = torch.exp(-dx ** 2 / (2 * sigma ** 2)) * (dx.abs() <= r)  # (K, S)
    gy = torch.exp(-dy ** 2 / (2 * sigma ** 2)) * (dy.abs() <= r)  # (K, S)
    return gy[:, :, None] * gx[:, None, :]  # (K, S, S): separable Gaussian, rows = y
