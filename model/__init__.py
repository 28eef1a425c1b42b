"""TransCenter detector in pure PyTorch (no Ray).

Entry points, each dispatching on ``ModelConfig.head`` (the paper's ``"transcenter"`` or the
CenterNet-style baseline ``"centernet"``):
    transcenter.model.config       TransCenterConfig, ModelConfig, LossConfig, MatcherConfig
    transcenter.model.transcenter  build_model(config)     -> TransCenter / CenterNet nn.Module
    transcenter.model.criterion    build_criterion(config) -> SetCriterion / CenterNetCriterion
    transcenter.model.postprocess  postprocess(outputs, ...) -> per-image detections
    transcenter.model.engine       TrialRunner: one trial's training loop

The package itself imports nothing: a process that only reads configs (a study's trial driver, the
Ray Train controller) never pays torchvision's import (seconds per process on a small machine).
"""
