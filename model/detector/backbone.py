"""ResNet backbone from torchvision (random init, or weights from a local file; never downloaded),
with DETR's practice as options: frozen BatchNorm statistics and frozen early stages.

DETR (and the paper, built on its code) starts from ImageNet weights, replaces every BatchNorm by
``FrozenBatchNorm2d`` (batch statistics at detection's small per-GPU batches are noisy) and trains
only ``layer2``..``layer4`` at a low learning rate. Both only make sense on pretrained weights: from
random init, frozen statistics leave the network unnormalised and frozen stages stay random, so
without ``weights_path`` they are refused here. The trainer resolves them to ``batch`` and ``all``
before it builds the model (:func:`transcenter.model.training.experiment.resolve`), so that what
it stores is what it built.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torchvision
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

# Stages in order; ``trainable=<stage>`` trains that one and every later one.
STAGES = ("stem", "layer1", "layer2", "layer3", "layer4")


def freeze_batchnorm(module: nn.Module) -> nn.Module:
    """Returns ``module`` with every ``BatchNorm2d`` inside replaced by a ``FrozenBatchNorm2d``
    carrying its statistics and affine parameters (constant from then on)."""
    if isinstance(module, nn.BatchNorm2d):
        frozen = FrozenBatchNorm2d(module.num_features, eps=module.eps)
        for name in ("weight", "bias", "running_mean", "running_var"):
            getattr(frozen, name).copy_(getattr(module, name).detach())
        return frozen
    for name, child in module.named_children():
        setattr(module, name, freeze_batchnorm(child))
    return module


def build_backbone(name: str, stride: int = 32, weights_path: str | None = None,
                   norm: str = "batch", trainable: str = "all") -> tuple[nn.Module, int]:
    """Returns ``(module, out_channels)``: ResNet stem + layers up to C5 (stride 32) or C4 (stride 16).

    Args:
        name: ``resnet18``, ``resnet34`` or ``resnet50``.
        stride: 32 keeps ``layer4`` (paper); 16 stops after ``layer3``.
        weights_path: optional local path to a torchvision ResNet ``state_dict`` (``fc.*`` ignored).
        norm: ``frozen`` (``FrozenBatchNorm2d``: DETR), ``batch`` (``BatchNorm2d``), or ``sync``
            (``BatchNorm2d`` here; the trainer converts it to ``SyncBatchNorm`` under DDP on GPUs).
        trainable: ``all``; ``layer2`` (DETR: stem and ``layer1`` frozen), ``layer3``, ``layer4``
            (that stage and the later ones train); ``none``. A frozen stage's parameters have
            ``requires_grad=False`` (no gradient computed or stored, no optimiser state) and its
            BatchNorms are frozen too.

    Raises:
        ValueError: ``frozen`` or a frozen stage without ``weights_path``, naming the fields and
            the fix.
    """
    if weights_path is None and (norm == "frozen" or trainable != "all"):
        raise ValueError(f"model.backbone_norm={norm!r} and model.backbone_trainable={trainable!r} "
                         f"are DETR's practice for pretrained weights, but model.backbone_weights "
                         f"is unset (random init): give a local ImageNet state dict, or use "
                         f"'batch' and 'all' (what the trainer's resolve() makes of them)")
    net = getattr(torchvision.models, name)(weights=None)
    if weights_path is not None:
        _load(net, name, weights_path)
    stages = {"stem": nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool),
              "layer1": net.layer1, "layer2": net.layer2, "layer3": net.layer3}
    if stride == 32:
        stages["layer4"] = net.layer4
    first = len(STAGES) if trainable == "none" else (0 if trainable == "all" else STAGES.index(trainable))
    for i, (stage, module) in enumerate(stages.items()):
        if norm == "frozen" or i < first:
            stages[stage] = module = freeze_batchnorm(module)
        if i < first:
            module.requires_grad_(False)
    block = list(stages.values())[-1][-1]
    out_channels = (block.conv3 if hasattr(block, "conv3") else block.conv2).out_channels
    return nn.Sequential(*stages["stem"], *(stages[s] for s in STAGES[1:] if s in stages)), out_channels


def _load(net: nn.Module, name: str, weights_path: str) -> None:
    """Loads a local torchvision ResNet state dict into ``net`` (``fc.*`` ignored).

    Raises:
        FileNotFoundError: no such file. ValueError: the weights do not fit ``name``.
    """
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
