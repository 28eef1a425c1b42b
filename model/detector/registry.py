"""The detector heads by name (``model.head``): each head's network, criterion and postprocess.

``build_model``, ``build_criterion`` and ``postprocess`` are the entry points the training loop,
the evaluation and the tests use; they look ``config.head`` up in :data:`HEADS`, so neither head's
modules import the other's.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from transcenter.model.detector.centernet.criterion import CenterNetCriterion
from transcenter.model.detector.centernet.model import CenterNet
from transcenter.model.detector.centernet.postprocess import centernet_postprocess
from transcenter.model.detector.config import ModelConfig, TransCenterConfig
from transcenter.model.detector.criterion import SetCriterion
from transcenter.model.detector.postprocess import transcenter_postprocess
from transcenter.model.detector.transcenter import TransCenter

Detections = list[dict[str, torch.Tensor]]


@dataclass(frozen=True)
class Head:
    """One detector head.

    Args:
        model: builds the randomly initialised network (backbone optionally from a local file).
        criterion: builds the loss module for the network it is given (its outputs' scorer).
        postprocess: ``(outputs, image_size (H, W) px, config, top_k) -> detections``, per image
            ``{"boxes": (k, 4) xyxy input px, "scores": (k,), "labels": (k,)}``, best first.
    """

    model: Callable[[ModelConfig], nn.Module]
    criterion: Callable[[TransCenterConfig, nn.Module], nn.Module]
    postprocess: Callable[[dict[str, torch.Tensor], tuple[int, int], ModelConfig, int], Detections]


# The same names, in the same order, as ``config.HEADS`` (which validates ``model.head`` torch-free).
HEADS: dict[str, Head] = {
    "transcenter": Head(
        model=TransCenter,
        criterion=lambda config, model: SetCriterion(config, model.offset_head),
        postprocess=transcenter_postprocess),
    "centernet": Head(
        model=CenterNet,
        criterion=lambda config, model: CenterNetCriterion(config.model, config.loss),
        postprocess=centernet_postprocess),
}


def build_model(config: ModelConfig) -> nn.Module:
    """Returns the randomly initialised (backbone optionally from a local file) network that
    ``config.head`` names: :class:`TransCenter` or the :class:`CenterNet` baseline.

    Raises:
        ValueError: ``config.num_classes`` is unset (it comes from the data set: build the
            model from a ``TrialConfig`` whose data has been opened).
    """
    if config.num_classes is None:
        raise ValueError("model.num_classes is unset: it comes from the data set; open the data "
                         "first (TrialConfig.with_class_names) or set data.class_names")
    return HEADS[config.head].model(config)


def build_criterion(config: TransCenterConfig, model: nn.Module) -> nn.Module:
    """Returns the criterion of ``config.model.head`` for ``model`` (the unwrapped network of
    :func:`build_model`): TransCenter's :class:`SetCriterion`, which evaluates the model's offset
    head at matched cells, or the baseline's :class:`CenterNetCriterion`."""
    return HEADS[config.model.head].criterion(config, model)


def postprocess(outputs: dict[str, torch.Tensor], image_size: tuple[int, int],
                config: ModelConfig, top_k: int = 100) -> Detections:
    """Returns ``config.head``'s detections of ``outputs``: per image ``{"boxes": (k, 4) xyxy input
    px, "scores": (k,), "labels": (k,)}``, the ``top_k`` best first (see
    :func:`transcenter_postprocess` and :func:`centernet_postprocess`)."""
    return HEADS[config.head].postprocess(outputs, image_size, config, top_k)
