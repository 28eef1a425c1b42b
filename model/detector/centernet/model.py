"""CenterNet-style baseline network (Zhou et al. 2019, "Objects as Points") on TransCenter's trunk.

Per-class centre heatmaps plus width/height and centre-offset maps, read from the same upsampled
S×S features as the TransCenter head (``model.head = "centernet"``). A class's heatmap target is the
element-wise max of its objects' Gaussians (:mod:`.targets`), so two same-class objects whose
centres share a cell give ONE peak and decode to ONE detection: the case the paper's per-query
heatmaps solve (Fig. 2). The losses (:mod:`.criterion`) are CenterNet's: the Gaussian focal loss
(the same function as Eq. 4), L1 on the size and L1 on the offset at each object's centre cell,
each normalised by the number of objects.
"""
from __future__ import annotations

import torch

from transcenter.model.detector.config import ModelConfig
from transcenter.model.detector.heads import HeatmapBranch
from transcenter.model.detector.trunk import Trunk


class CenterNet(Trunk):
    """The trunk without a decoder, and three convolutional branches on its S×S features.

    Forward returns a dict of named tensors:

    - ``heatmap_logits`` ``(B, C, S, S)``: per-class centre heatmap logits;
    - ``sizes`` ``(B, 2, S, S)``: ``(w~, h~)`` box size in heatmap cells;
    - ``offsets`` ``(B, 2, S, S)``: ``(x~ − x̄, y~ − ȳ)`` centre offset within the cell (Eq. 1).
    """

    def __init__(self, config: ModelConfig):
        super().__init__(config, decoder=False)
        c = config
        self.heatmap_head = HeatmapBranch(c.head_width, c.num_classes, c.head_convs, c.head_kernel,
                                          c.heatmap_bias)
        self.size_head = HeatmapBranch(c.head_width, 2, c.head_convs, c.head_kernel, 0.0)
        self.offset_head = HeatmapBranch(c.head_width, 2, c.head_convs, c.head_kernel, 0.0)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        features, _ = self.encode(images)  # (B, W, S, S)
        return {"heatmap_logits": self.heatmap_head(features),  # (B, C, S, S)
                "sizes": self.size_head(features),  # (B, 2, S, S)
                "offsets": self.offset_head(features)}  # (B, 2, S, S)
