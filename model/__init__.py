"""TransCenter detector in pure PyTorch (no Ray).

Public entry points:
    TransCenterConfig, ModelConfig, LossConfig, MatcherConfig  -- validated configs
    build_model(config)        -> TransCenter nn.Module
    build_criterion(config)    -> SetCriterion (matching + losses)
    postprocess(outputs, ...)  -> per-image detections
"""
from transcenter.model.config import LossConfig, MatcherConfig, ModelConfig, TransCenterConfig
from transcenter.model.criterion import SetCriterion, build_criterion
from transcenter.model.postprocess import postprocess
from transcenter.model.transcenter import TransCenter, build_model

__all__ = [
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
