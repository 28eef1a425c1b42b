"""Sine positional encoding for 2-D feature maps (as DETR)."""
from __future__ import annotations

import math

import torch


def sine_position_encoding(height: int, width: int, dim: int, device=None,
                           temperature: float = 10000.0) -> torch.Tensor:
    """Returns ``(H*W, dim)`` encodings, first ``dim/2`` channels for y, last ``dim/2`` for x.

    Positions are normalised to ``(0, 2π]`` as DETR's ``PositionEmbeddingSine(normalize=True)``.
    """
    half = dim // 2
    eps = 1e-6
    y = torch.arange(1, height + 1, dtype=torch.float32, device=device) / (height + eps) * 2 * math.pi
    x = torch.arange(1, width + 1, dtype=torch.float32, device=device) / (width + eps) * 2 * math.pi
    idx = torch.arange(half, dtype=torch.float32, device=device)
    freq = temperature ** (2 * torch.div(idx, 2, rounding_mode="floor") / half)  # (half,)

    def enc(v: torch.Tensor) -> torch.Tensor:
        p = v[:, None] / freq  # (L, half)
        return torch.stack([p[:, 0::2].sin(), p[:, 1::2].cos()], dim=2).flatten(1)  # (L, half)

    ey, ex = enc(y), enc(x)  # (H, half), (W, half)
    pos = torch.cat([ey[:, None, :].expand(height, width, half),
                     ex[None, :, :].expand(height, width, half)], dim=-1)  # (H, W, dim)
    return pos.reshape(height * width, dim)
