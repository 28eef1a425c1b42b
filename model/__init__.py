"""TransCenter detector in pure PyTorch (no Ray).

Public entry points (each dispatches on ``ModelConfig.head``: the paper's ``"transcenter"`` or
the CenterNet-style baseline ``"centernet"``):
    TransCenterConfig, ModelConfig, LossConfig, MatcherConfig  -- validated configs
    build_model(config)        -> TransCenter / CenterNet nn.Module
    build_criterion(config)    -> SetCriterion (matching + losses) / CenterNetCriterion
    postprocess(outputs, ...)  -> per-image detections
"""
from transcenter.model.centernet import CenterNet, CenterNetCriterion
from transcenter.model.config import LossConfig, MatcherConfig, ModelConfig, TransCenterConfig
from transcenter.model.criterion import SetCriterion, build_criterion
from transcenter.model.postprocess import postprocess
from transcenter.model.transcenter import TransCenter, build_model

__all__ = [
    "CenterNet",
    "CenterNetCriterion",
    "LossConfig",
    "MatcherConfig",
    "ModelConfig",
    "SetCriterion",
    "TransCenter",
    "TransCenterConfig",
    "build_criterion",
    "build_model",
    "postprocess",
]
