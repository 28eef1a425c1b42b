"""Heads on top of the transformer: upsampler, convolutional map branches and the offset head."""
from __future__ import annotations

import itertools

import torch
from torch import nn


def gather_cells(features: torch.Tensor, batch_idx: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
    """Returns ``(M, C)`` feature vectors of ``features (B, C, S, S)`` at ``cells (M, 2)`` ``(x, y)``."""
    return features[batch_idx, :, cells[:, 1], cells[:, 0]]


def conv_relu(cin: int, cout: int, k: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, k, padding=k // 2), nn.ReLU(inplace=True)]


class Upsampler(nn.Module):
    """``n`` × [ConvTranspose2d(4, s=2) + BN + ReLU] from the encoder map, then a Conv(k)+ReLU neck
    at full S×S resolution (placed there so MACs grow with S as in Table 1; see README)."""

    def __init__(self, d_in: int, width: int, num_upsamples: int, kernel: int):
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(num_upsamples):
            layers += [nn.ConvTranspose2d(d_in if i == 0 else width, width, 4, stride=2, padding=1,
                                          bias=False),
                       nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
        layers += conv_relu(width if num_upsamples else d_in, width, kernel)
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # (B, d_in, s, s) -> (B, width, S, S)


class HeatmapBranch(nn.Module):
    """[Conv(k)+ReLU] × depth, then Conv1×1 to ``out_channels`` maps whose bias starts at ``bias``.

    TransCenter: one heatmap logit channel per query, bias = prior logit. CenterNet: one heatmap per
    class (prior logit), and the 2-channel size and offset maps (bias 0).
    """

    def __init__(self, width: int, out_channels: int, depth: int, kernel: int, bias: float):
        super().__init__()
        layers: list[nn.Module] = []
        for _ in range(depth):
            layers += conv_relu(width, width, kernel)
        out = nn.Conv2d(width, out_channels, 1)
        nn.init.constant_(out.bias, bias)
        self.net = nn.Sequential(*layers, out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # (B, width, S, S) -> (B, out_channels, S, S)


class OffsetHead(nn.Module):
    """Regresses offsets ``(o_x, o_y, o_w, o_h)`` of given queries at given position cells: a
    ``num_layers``-layer MLP (ReLU between layers) on the query's decoder state, concatenated with
    the upsampled feature at the cell when ``cell_dim > 0`` (``offset_features="query+cell"``,
    the paper's ``"query"`` reads the decoder state alone).

    The model calls it at each query's argmax cell; the criterion calls it at the matched
    ground-truth cell, which differs from the argmax cell only in what ``"query+cell"`` reads.
    """

    def __init__(self, d_model: int, cell_dim: int, num_layers: int = 3):
        super().__init__()
        self.use_cell = cell_dim > 0
        dims = [d_model + cell_dim] + [d_model] * (num_layers - 1)
        layers: list[nn.Module] = []
        for a, b in itertools.pairwise(dims):
            layers += [nn.Linear(a, b), nn.ReLU(inplace=True)]
        self.net = nn.Sequential(*layers, nn.Linear(dims[-1], 4))

    def forward(self, query_states: torch.Tensor, features: torch.Tensor, batch_idx: torch.Tensor,
                query_idx: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
        """Returns ``(M, 4)`` offsets (heatmap cells, Eq. 1/2 encoded as ``model.offset_encoding``).

        Args:
            query_states: ``(B, N, d)`` decoder output.
            features: ``(B, W, S, S)`` upsampled features (read only when ``use_cell``).
            batch_idx, query_idx: ``(M,)`` which image and query each row is.
            cells: ``(M, 2)`` long position cells ``(x, y)`` to evaluate at.
        """
        x = query_states[batch_idx, query_idx]  # (M, d)
        if self.use_cell:
            x = torch.cat([x, gather_cells(features, batch_idx, cells)], dim=-1)  # (M, d + W)
        return self.net(x)  # (M, 4)
