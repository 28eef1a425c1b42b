"""A trial's whole configuration: detector sections plus ``optim``, ``data`` and ``train``.

Presets (``smoke``, ``cpu``, ``paper``) are dotted overrides on top of the defaults, so a study's
search space, a YAML file and command-line flags all address the same names. :func:`resolve` turns
the configuration asked for into the one that trains on a given device: the trainer builds from it,
and checkpoints and the study's stored rows record it.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from transcenter.model.data.config import DataConfig
from transcenter.model.detector.config import (
    LossConfig,
    MatcherConfig,
    ModelConfig,
    TransCenterConfig,
    check,
    check_choice,
    from_dict,
    to_flat_dict,
)


@dataclass(frozen=True)
class OptimConfig:
    """AdamW with a separate backbone learning rate, warm-up, then step or cosine decay (DETR)."""

    lr: float = 1e-4
    backbone_lr: float = 1e-5
    weight_decay: float = 1e-4
    warmup_steps: int = 0
    schedule: str = "step"  # "step": ×0.1 at lr_drop_epoch; "cosine": to 0 at the last epoch
    lr_drop_epoch: int = 200
    grad_clip: float = 0.1  # max grad norm; 0 disables

    def __post_init__(self) -> None:
        for name in ("lr", "backbone_lr", "weight_decay", "grad_clip"):
            v = getattr(self, name)
            check(isinstance(v, (int, float)) and math.isfinite(v) and v >= 0, f"optim.{name}", v,
                   "must be a finite number >= 0")
        check(self.lr > 0, "optim.lr", self.lr, "must be > 0")
        check_choice("optim.schedule", self.schedule, ("step", "cosine"))
        for name in ("warmup_steps", "lr_drop_epoch"):
            v = getattr(self, name)
            check(isinstance(v, int) and v >= 0, f"optim.{name}", v, "must be an integer >= 0")


@dataclass(frozen=True)
class TrainConfig:
    """Loop settings. ``eval_every`` 1 evaluates each epoch (the lower-limit curves need epoch 1)."""

    epochs: int = 10
    batch_size: int = 8
    seed: int = 0
    eval_every: int = 1
    device: str = "auto"  # "auto" (CUDA when present), "cpu", "cuda"
    amp: bool = True  # bf16 autocast; CUDA only (resolve() turns it off elsewhere)
    threads: int = 0  # torch CPU threads per process; 0 keeps torch's default
    channels_last: bool = True  # NHWC memory format for the conv trunk and heads (faster: README)
    compile: bool = False  # torch.compile the model (the first steps pay the compilation)

    def __post_init__(self) -> None:
        for name in ("amp", "channels_last", "compile"):
            check(isinstance(getattr(self, name), bool), f"train.{name}", getattr(self, name),
                  "must be true or false")
        for name in ("epochs", "batch_size", "eval_every"):
            v = getattr(self, name)
            check(isinstance(v, int) and v >= 1, f"train.{name}", v, "must be an integer >= 1")
        check_choice("train.device", self.device, ("auto", "cpu", "cuda"))


@dataclass(frozen=True)
class TrialConfig:
    """Everything one trial needs, addressable by dotted names (``optim.lr``, ``model.heatmap_size``).

    Checked across sections at construction: ``model.num_classes`` comes from the data (synthetic
    ``data.num_classes``, or ``data.class_names``); giving another number is an error naming both.
    Where only the data files know the classes (VOC, COCO without ``data.class_names``),
    the class count is None until :meth:`with_class_names` is given the loaded names.
    :attr:`detector` carries the derived count in ``model.num_classes``.
    (``ModelConfig`` itself checks input size against heatmap size and backbone stride, and
    ``DataConfig`` that VOC/COCO have a root.)
    """

    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    matcher: MatcherConfig = field(default_factory=MatcherConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        count, given = self.data.class_count, self.model.num_classes
        if count is not None and given is not None:
            check(given == count, "model.num_classes", given,
                  f"the data set has {count} classes ({_class_source(self.data)}); leave "
                  f"model.num_classes unset, it is derived from the data")

    @property
    def num_classes(self) -> int | None:
        """The class count: ``model.num_classes`` if set, else the data's; None while only the
        data files know it."""
        return self.model.num_classes if self.model.num_classes is not None else self.data.class_count

    def with_class_names(self, names: list[str] | tuple[str, ...]) -> TrialConfig:
        """Returns this configuration with the classes of the opened data set: ``data.class_names``
        and ``model.num_classes`` set from ``names`` (synthetic data: checked, unchanged).

        Raises:
            ValueError: the names disagree with ``data.class_names`` or ``model.num_classes``.
        """
        names = tuple(names)
        if self.data.name == "synthetic":
            check(len(names) == self.data.num_classes, "data.num_classes", self.data.num_classes,
                  f"the synthetic scenes have {len(names)} classes")
            return self
        check(self.data.class_names in (None, names), "data.class_names", self.data.class_names,
              f"the data set's classes are {list(names)}")
        return dataclasses.replace(self, data=dataclasses.replace(self.data, class_names=names))

    @property
    def detector(self) -> TransCenterConfig:
        """The model/loss/matcher sections that build the network, criterion and postprocess,
        with ``model.num_classes`` = :attr:`num_classes`."""
        model = dataclasses.replace(self.model, num_classes=self.num_classes)
        return TransCenterConfig(model, self.loss, self.matcher)

    def to_flat_dict(self) -> dict[str, Any]:
        """Returns ``{dotted.name: value}`` for every field."""
        return to_flat_dict(self)


def _class_source(data: DataConfig) -> str:
    if data.name == "synthetic":
        return f"data.num_classes={data.num_classes}"
    return "data.class_names, or the classes in the data files"


_SMALL_MODEL = {
    "model.backbone": "resnet18", "model.backbone_stride": 16, "model.input_size": 128,
    "model.heatmap_size": 16, "model.num_queries": 10, "model.d_model": 96, "model.nhead": 4,
    "model.num_encoder_layers": 2, "model.num_decoder_layers": 2, "model.dim_feedforward": 192,
    "model.head_width": 64, "model.head_convs": 2, "model.dropout": 0.0,
    "model.offset_features": "query+cell", "loss.bg_weight_mode": "single",
    "optim.lr": 3e-4, "optim.backbone_lr": 3e-4,
}

PRESETS: dict[str, dict[str, Any]] = {
    # Seconds per trial on CPU: tiny model and data, for tests and job-submission checks.
    "smoke": {**_SMALL_MODEL, "model.d_model": 32, "model.nhead": 2, "model.num_encoder_layers": 1,
              "model.num_decoder_layers": 1, "model.dim_feedforward": 64, "model.head_width": 32,
              "model.head_convs": 1, "model.input_size": 64, "model.backbone_stride": 16,
              "data.num_train": 32, "data.num_val": 16, "train.batch_size": 8, "train.epochs": 2},
    # The CPU demo: the throwaway prototype's scale, minutes per trial on 2 cores.
    # Calibrated for the heatmap-size study (4 trials, 2 at a time, 1 thread each, < 15 min on 2
    # cores): 216 steps of batch 8 per trial; S=128 costs ~5x S=16 a step and sets the pace. With
    # channels-last, 7 epochs took 7.9 min and 9 epochs 9.1 min on an idle 2-core machine; seeds 0
    # and 1 had the same lower-limit leader (S=16), and the first epochs do not depend on the
    # total, so the spare time goes to training.
    "cpu": {**_SMALL_MODEL, "data.num_train": 192, "data.num_val": 64, "train.batch_size": 8,
            "train.epochs": 9},
    # The paper: ResNet-50 at 512 px, VOC, one A100 per trial; DETR's backbone practice (frozen
    # BatchNorm, stem and layer1 frozen, backbone lr 1e-5) on ImageNet weights (model.backbone_weights).
    "paper": {"data.name": "voc", "train.batch_size": 16, "train.epochs": 70,
              "model.backbone_norm": "frozen", "model.backbone_trainable": "layer2",
              "optim.lr_drop_epoch": 50, "data.augment": True, "data.num_workers": 8},
}


def trial_config(preset: str | None = None, overrides: dict[str, Any] | None = None) -> TrialConfig:
    """Returns the defaults, then ``PRESETS[preset]``, then ``overrides`` (dotted or nested).

    Unknown presets or keys raise ``ValueError`` naming them.
    """
    cfg = TrialConfig()
    if preset is not None:
        if preset not in PRESETS:
            raise ValueError(f"preset={preset!r}: must be one of {sorted(PRESETS)}")
        cfg = from_dict(TrialConfig, PRESETS[preset], cfg)
    return from_dict(TrialConfig, overrides or {}, cfg)


def resolve(config: TrialConfig, device: str, world_size: int = 1) -> TrialConfig:
    """Returns the configuration that trains when ``config`` runs on ``world_size`` processes of
    ``device`` (``"cpu"`` or ``"cuda"``): every setting that would not take effect there replaced by
    the one that does, so that what is built, checkpointed and stored is the same.

    - ``model.backbone_norm=frozen`` or ``model.backbone_trainable`` other than ``all`` without
      ``model.backbone_weights`` → ``batch`` and ``all``: frozen statistics and frozen stages are
      DETR's practice for pretrained weights; from random init they would leave the backbone
      unnormalised and partly random.
    - ``model.backbone_norm=sync`` unless several CUDA processes → ``batch``: ``SyncBatchNorm``
      needs GPUs, and one process's batch statistics are all there is to synchronise.
    - ``train.amp`` off on CPU: the bf16 autocast is CUDA's only.
    - ``train.device`` → ``device`` (``auto`` chosen, or a device the launcher overrode).
    """
    check_choice("device", device, ("cpu", "cuda"))
    check(isinstance(world_size, int) and world_size >= 1, "world_size", world_size,
          "must be an integer >= 1")
    model, train = config.model, config.train
    norm, trainable = model.backbone_norm, model.backbone_trainable
    if model.backbone_weights is None and (norm == "frozen" or trainable != "all"):
        norm, trainable = "batch", "all"
    if norm == "sync" and not (device == "cuda" and world_size > 1):
        norm = "batch"
    return dataclasses.replace(
        config,
        model=dataclasses.replace(model, backbone_norm=norm, backbone_trainable=trainable),
        train=dataclasses.replace(train, amp=train.amp and device == "cuda", device=device))


def substitutions(asked: TrialConfig, resolved: TrialConfig,
                  sections: tuple[str, ...] = ("model", "train")) -> str:
    """Returns the fields of ``sections`` that :func:`resolve` changed, as ``name: asked ->
    resolved`` items joined by ``; `` (empty when none did)."""
    return "; ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in
                     config_diff(asked, resolved, sections).items())


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """Returns ``{dotted.key: value}`` for command-line ``--set`` items ``dotted.key=value``; values
    are read with ``yaml.safe_load``: ``3`` → int, ``1.0e-4`` → float, ``[1, 2]`` → list, ``null``
    → None; a number YAML 1.1 reads as text (``1e-4``, without the dot) is a float too.

    Raises:
        ValueError: an item has no ``=`` or an empty key, naming it.
    """
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set {item!r}: expected dotted.key=value")
        out[key] = _number_or_text(yaml.safe_load(value))
    return out


def _number_or_text(value: Any) -> Any:
    """Returns ``value`` as a float when it is text that reads as a finite number (``"1e-4"``)."""
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return value
        return number if math.isfinite(number) else value
    return value


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Reads a YAML mapping of (dotted or nested) overrides with ``yaml.safe_load``."""
    text = Path(path).read_text()
    data = yaml.safe_load(text) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of config keys, got {type(data).__name__}")
    return data


def config_diff(a: TrialConfig | dict, b: TrialConfig | dict, sections=("model",)) -> dict[str, tuple]:
    """Returns ``{dotted name: (a, b)}`` for fields of ``sections`` that differ."""
    fa = a if isinstance(a, dict) else a.to_flat_dict()
    fb = b if isinstance(b, dict) else b.to_flat_dict()
    keys = [k for k in set(fa) | set(fb) if k.split(".")[0] in sections]
    return {k: (fa.get(k), fb.get(k)) for k in sorted(keys) if fa.get(k) != fb.get(k)}

