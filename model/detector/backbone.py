"""ResNet backbone from torchvision (random init, or weights from a local file; never downloaded)."""
from __future__ import annotations

from pathlib import Path

import torch
import torchvision
from torch import nn


def build_backbone(name: str, stride: int = 32, weights_path: str | None = None) -> tuple[nn.Module, int]:
    """Returns ``(module, out_channels)``: ResNet stem + layers up to C5 (stride 32) or C4 (stride 16).

    Args:
        name: ``resnet18``, ``resnet34`` or ``resnet50``.
        stride: 32 keeps ``layer4`` (paper); 16 stops after ``layer3``.
        weights_path: optional local path to a torchvision ResNet ``state_dict`` (``fc.*`` ignored).
    """
    net = getattr(torchvision.models, name)(weights=None)
    if weights_path is not None:
        path = Path(weights_path)
        if not path.is_file():
            raise FileNotFoundError(f"model.backbone_weights={weights_path!r}: no such file")
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        missing, unexpected = net.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.startswith("fc.")]
        if missing or unexpected:
            raise ValueError(f"model.backbone_weights={weights_path!r} does not fit {name}: "
                             f"missing {missing[:5]}, unexpected {unexpected[:5]}")
    layers = [net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3]
    last = net.layer3
    if stride == 32:
        layers.append(net.layer4)
        last = net.layer4
    block = last[-1]
    out_channels = (block.bn3 if hasattr(block, "bn3") else block.bn2).num_features
    return nn.Sequential(*layers), out_channels
