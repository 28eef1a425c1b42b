"""The TransCenter detector (paper §3.1): ResNet → 1×1 conv → transformer → per-query heatmaps."""
from __future__ import annotations

import torch
from torch import nn

from transcenter.model.detector.box_codec import argmax_cells
from transcenter.model.detector.config import ModelConfig
from transcenter.model.detector.heads import HeatmapBranch, OffsetHead
from transcenter.model.detector.trunk import Trunk


class TransCenter(Trunk):
    """Forward returns a dict of named tensors (nothing else, so tracing and export see tensors):

    - ``logits`` ``(B, N, C+1)``: class logits, index C = background;
    - ``pos_logits`` / ``size_logits`` ``(B, N, S, S)``: per-query position and size heatmap logits;
    - ``offsets`` ``(B, N, 4)``: offsets ``(o_x, o_y, o_w, o_h)`` at each query's argmax position
      cell;
    - ``query_states`` ``(B, N, d)`` and ``features`` ``(B, W, S, S)``: the decoder output and the
      upsampled features, the inputs of :attr:`offset_head` for offsets at other cells (the
      criterion evaluates it at the matched ground-truth cell; with ``offset_features="query"`` the
      result does not depend on the cell).
    """

    def __init__(self, config: ModelConfig):
        super().__init__(config, decoder=True)
        c = config
        self.pos_head = HeatmapBranch(c.head_width, c.num_queries, c.head_convs, c.head_kernel,
                                      c.heatmap_bias)
        self.size_head = HeatmapBranch(c.head_width, c.num_queries, c.head_convs, c.head_kernel,
                                       c.heatmap_bias)
        self.class_head = nn.Linear(c.d_model, c.num_classes + 1)
        self.offset_head = OffsetHead(c.d_model,
                                      c.head_width if c.offset_features == "query+cell" else 0)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        features, hs = self.encode(images)  # (B, W, S, S), (B, N, d)
        bsz, n = hs.shape[:2]
        pos_logits = self.pos_head(features)  # (B, N, S, S)
        size_logits = self.size_head(features)  # (B, N, S, S)
        b_idx = torch.arange(bsz, device=images.device).repeat_interleave(n)  # (B*N,)
        q_idx = torch.arange(n, device=images.device).repeat(bsz)  # (B*N,)
        cells = argmax_cells(pos_logits.detach())[0].flatten(0, 1)  # (B*N, 2)
        offsets = self.offset_head(hs, features, b_idx, q_idx, cells).view(bsz, n, 4)
        return {"logits": self.class_head(hs), "pos_logits": pos_logits,
                "size_logits": size_logits, "offsets": offsets, "query_states": hs,
                "features": features}
