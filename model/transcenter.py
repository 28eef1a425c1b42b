"""The TransCenter detector (paper §3.1): ResNet → 1×1 conv → transformer → per-query heatmaps."""
from __future__ import annotations

import torch
from torch import nn

from transcenter.model.backbone import build_backbone
from transcenter.model.box_codec import argmax_cells
from transcenter.model.config import ModelConfig
from transcenter.model.heads import MLP, HeatmapBranch, Upsampler
from transcenter.model.position_encoding import sine_position_encoding
from transcenter.model.transformer import Transformer


def gather_cells(features: torch.Tensor, batch_idx: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
    """Returns ``(M, C)`` feature vectors of ``features (B, C, S, S)`` at ``cells (M, 2)`` ``(x, y)``."""
    return features[batch_idx, :, cells[:, 1], cells[:, 0]]


class TransCenter(nn.Module):
    """Forward returns a dict of named tensors:

    - ``logits`` ``(B, N, C+1)``: class logits, index C = background;
    - ``pos_logits`` / ``size_logits`` ``(B, N, S, S)``: per-query position and size heatmap logits;
    - ``offsets`` ``(B, N, 4)``: regressed offsets ``(o_x, o_y, o_w, o_h)``;
    - ``offsets_at``: ``fn(batch_idx (M,), query_idx (M,), pos_cells (M, 2)) -> (M, 4)`` offsets of
      given queries evaluated at given position cells (differs from ``offsets`` only with
      ``offset_features="query+cell"``, where training uses the ground-truth cell).
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = c = config
        self.backbone, channels = build_backbone(c.backbone, c.backbone_stride, c.backbone_weights)
        self.input_proj = nn.Conv2d(channels, c.d_model, 1)
        self.transformer = Transformer(c.d_model, c.nhead, c.num_encoder_layers,
                                       c.num_decoder_layers, c.dim_feedforward, c.dropout)
        self.query_embed = nn.Embedding(c.num_queries, c.d_model)
        self.upsampler = Upsampler(c.d_model, c.head_width, c.num_upsamples, c.head_kernel)
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
        feat = self.input_proj(self.backbone(images))  # (B, d, s, s)
        bsz, d, h, w = feat.shape
        pos = sine_position_encoding(h, w, d, device=feat.device).to(feat.dtype)  # (hw, d)
        memory, hs = self.transformer(feat.flatten(2).transpose(1, 2), pos,
                                      self.query_embed.weight)  # (B, hw, d), (B, N, d)
        features = self.upsampler(memory.transpose(1, 2).reshape(bsz, d, h, w))  # (B, W, S, S)
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


def build_model(config: ModelConfig) -> TransCenter:
    """Returns a randomly initialised (backbone optionally from a local file) TransCenter."""
    return TransCenter(config)
