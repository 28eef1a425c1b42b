"""The TransCenter detector (paper §3.1): ResNet → 1×1 conv → transformer → per-query heatmaps."""
from __future__ import annotations

import torch
from torch import nn

from transcenter.model.box_codec import argmax_cells
from transcenter.model.centernet import CenterNet
from transcenter.model.config import ModelConfig
from transcenter.model.heads import MLP, HeatmapBranch, gather_cells
from transcenter.model.trunk import Trunk


class TransCenter(Trunk):
    """Forward returns a dict of named tensors:

    - ``logits`` ``(B, N, C+1)``: class logits, index C = background;
    - ``pos_logits`` / ``size_logits`` ``(B, N, S, S)``: per-query position and size heatmap logits;
    - ``offsets`` ``(B, N, 4)``: regressed offsets ``(o_x, o_y, o_w, o_h)``;
    - ``offsets_at``: ``fn(batch_idx (M,), query_idx (M,), pos_cells (M, 2)) -> (M, 4)`` offsets of
      given queries evaluated at given position cells (differs from ``offsets`` only with
      ``offset_features="query+cell"``, where training uses the ground-truth cell).
    """

    def __init__(self, config: ModelConfig):
        super().__init__(config, decoder=True)
        c = config
        self.pos_head = HeatmapBranch(c.head_width, c.num_queries, c.head_convs, c.head_kernel,
                                      c.heatmap_bias)
        self.size_head = HeatmapBranch(c.head_width, c.num_queries, c.head_convs, c.head_kernel,
                                       c.heatmap_bias)
        self.class_head = nn.Linear(c.d_model, c.num_classes + 1)
        cell_dim = c.head_width if c.offset_features == "query+cell" else 0
        self.offset_head = MLP(c.d_model + cell_dim, c.d_model, 4, 3)

    def _offsets(self, hs: torch.Tensor, features: torch.Tensor, batch_idx: torch.Tensor,
                 query_idx: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
        x = hs[batch_idx, query_idx]  # (M, d)
        if self.config.offset_features == "query+cell":
            x = torch.cat([x, gather_cells(features, batch_idx, cells)], dim=-1)  # (M, d + W)
        return self.offset_head(x)  # (M, 4)

    def forward(self, images: torch.Tensor) -> dict:
        c = self.config
        features, hs = self.encode(images)  # (B, W, S, S), (B, N, d)
        bsz = features.shape[0]
        pos_logits = self.pos_head(features)  # (B, N, S, S)
        size_logits = self.size_head(features)  # (B, N, S, S)
        n = c.num_queries
        b_idx = torch.arange(bsz, device=images.device).repeat_interleave(n)  # (B*N,)
        q_idx = torch.arange(n, device=images.device).repeat(bsz)  # (B*N,)
        cells = argmax_cells(pos_logits.detach())[0].flatten(0, 1)  # (B*N, 2)
        offsets = self._offsets(hs, features, b_idx, q_idx, cells).view(bsz, n, 4)

        def offsets_at(batch_idx, query_idx, pos_cells):
            return self._offsets(hs, features, batch_idx, query_idx, pos_cells)

        return {"logits": self.class_head(hs), "pos_logits": pos_logits,
                "size_logits": size_logits, "offsets": offsets, "offsets_at": offsets_at}


def build_model(config: ModelConfig) -> TransCenter | CenterNet:
    """Returns the randomly initialised (backbone optionally from a local file) detector that
    ``config.head`` names: :class:`TransCenter` or the :class:`CenterNet` baseline."""
    return CenterNet(config) if config.head == "centernet" else TransCenter(config)
