"""What both detector heads share (paper §3.1 steps 1-4 and 6): ResNet → 1×1 conv → sine positions →
transformer → upsampler to the S×S feature map the heads read."""
from __future__ import annotations

import torch
from torch import nn

from transcenter.model.detector.backbone import build_backbone
from transcenter.model.detector.config import ModelConfig
from transcenter.model.detector.heads import Upsampler
from transcenter.model.detector.position_encoding import sine_position_encoding
from transcenter.model.detector.transformer import Transformer


class Trunk(nn.Module):
    """Backbone, input projection, transformer and upsampler; a head subclasses it.

    Args:
        config: the model configuration.
        decoder: build the transformer decoder and its ``num_queries`` learned queries
            (TransCenter); without it only the encoder exists (CenterNet), so parameter counts
            hold nothing a head does not use.
    """

    def __init__(self, config: ModelConfig, decoder: bool):
        super().__init__()
        self.config = c = config
        self.backbone, channels = build_backbone(c.backbone, c.backbone_stride, c.backbone_weights,
                                                 c.backbone_norm, c.backbone_trainable)
        self.input_proj = nn.Conv2d(channels, c.d_model, 1)
        self.transformer = Transformer(c.d_model, c.nhead, c.num_encoder_layers,
                                       c.num_decoder_layers if decoder else 0, c.dim_feedforward,
                                       c.dropout)
        self.query_embed = nn.Embedding(c.num_queries, c.d_model) if decoder else None
        self.upsampler = Upsampler(c.d_model, c.head_width, c.num_upsamples, c.head_kernel)

    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Returns the upsampled features ``(B, W, S, S)`` and the decoder output ``(B, N, d)``
        (None without a decoder), for ``images (B, 3, H, W)``."""
        feat = self.input_proj(self.backbone(images))  # (B, d, s, s)
        bsz, d, h, w = feat.shape
        pos = sine_position_encoding(h, w, d, device=feat.device).to(feat.dtype)  # (hw, d)
        src = feat.flatten(2).transpose(1, 2)  # (B, hw, d)
        if self.query_embed is None:
            memory, hs = self.transformer.encode(src, pos), None  # (B, hw, d)
        else:
            memory, hs = self.transformer(src, pos, self.query_embed.weight)  # (B, hw, d), (B, N, d)
        features = self.upsampler(memory.transpose(1, 2).reshape(bsz, d, h, w))  # (B, W, S, S)
        return features, hs
