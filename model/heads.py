"""Heads on top of the transformer: upsampler + convolutional map branches, class and offset heads."""
from __future__ import annotations

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


class MLP(nn.Module):
    """``num_layers`` linear layers with ReLU between them."""

    def __init__(self, d_in: int, hidden: int, d_out: int, num_layers: int = 3):
        super().__init__()
        dims = [d_in] + [hidden] * (num_layers - 1)
        layers: list[nn.Module] = []
        for a, b in zip(dims[:-1], dims[1:]):
            layers += [nn.Linear(a, b), nn.ReLU(inplace=True)]
        self.net = nn.Sequential(*layers, nn.Linear(dims[-1], d_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
