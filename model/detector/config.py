"""Validated, frozen configuration dataclasses for the detector.

Every field is addressable by a dotted name (``model.heatmap_size``, ``loss.alpha``,
``matcher.cost_giou``) so Tune search spaces and YAML files can override it; see
:func:`from_dict` and :func:`to_flat_dict`.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

BACKBONES = ("resnet18", "resnet34", "resnet50")
# Names of the heads in transcenter.model.detector.registry (kept here, torch-free, to validate).
HEADS = ("transcenter", "centernet")
BACKBONE_NORMS = ("frozen", "batch", "sync")
BACKBONE_TRAINABLE = ("all", "layer2", "layer3", "layer4", "none")  # the first stage that trains


def check(cond: bool, name: str, value: Any, why: str) -> None:
    """Raises ``ValueError("<name>=<value!r>: <why>")`` unless ``cond``: the error every config
    field gives, naming the dotted field and the bad value."""
    if not cond:
        raise ValueError(f"{name}={value!r}: {why}")


def check_choice(name: str, value: Any, choices: tuple) -> None:
    """Raises ``ValueError`` naming ``name`` and ``value`` unless ``value`` is one of ``choices``."""
    check(value in choices, name, value, f"must be one of {choices}")


def _check_nonneg(obj: Any, prefix: str, names: tuple[str, ...]) -> None:
    for n in names:
        v = getattr(obj, n)
        check(isinstance(v, (int, float)) and math.isfinite(v) and v >= 0, f"{prefix}.{n}", v,
               "must be a finite number >= 0")


def _is_pow2(x: int) -> bool:
    return isinstance(x, int) and x > 0 and (x & (x - 1)) == 0


@dataclass(frozen=True)
class ModelConfig:
    """Architecture (paper §3.1) and decoding options.

    ``backbone_norm`` and ``backbone_trainable`` follow DETR's practice when set to ``frozen`` and
    ``layer2`` (the ``paper`` preset): frozen BatchNorm statistics, stem and ``layer1`` frozen.
    Both need ``backbone_weights``; without them the backbone refuses them, and the trainer
    resolves them to ``batch`` and ``all`` (:func:`transcenter.model.training.experiment.resolve`).

    ``heatmap_size`` S must be a power of two >= 16 and a power-of-two multiple of the encoder map
    (``input_size / backbone_stride``); each doubling adds one transposed convolution.

    ``head`` picks the detector on the shared backbone, encoder and upsampler: ``"transcenter"``
    (the paper: decoder queries with their own heatmaps) or ``"centernet"`` (the baseline of
    :mod:`transcenter.model.detector.centernet`: per-class centre heatmaps, no decoder); see
    :mod:`transcenter.model.detector.registry`. The CenterNet head ignores ``num_queries``,
    ``num_decoder_layers``, ``offset_encoding``, ``offset_features`` and ``score``.
    """

    head: str = "transcenter"  # "transcenter" (paper) or "centernet" (the CenterNet baseline)
    backbone: str = "resnet50"
    backbone_weights: str | None = None  # local file path of a torchvision state dict; never downloaded
    backbone_norm: str = "batch"  # "frozen" (DETR, FrozenBatchNorm2d), "batch", "sync" (SyncBatchNorm under DDP)
    backbone_trainable: str = "all"  # stages that train: "all", "layer2" (DETR), "layer3", "layer4", "none"
    backbone_stride: int = 32  # 32: C5 features (paper); 16: stop after layer3 (small CPU runs)
    input_size: int = 512
    num_classes: int | None = None  # None: from the data set (TrialConfig derives it)
    heatmap_size: int = 64
    num_queries: int = 100
    d_model: int = 256
    nhead: int = 8
    num_encoder_layers: int = 6
    num_decoder_layers: int = 6
    dim_feedforward: int = 2048
    dropout: float = 0.1
    head_width: int = 256
    head_convs: int = 3  # [Conv3x3 + ReLU] x head_convs per branch, then Conv1x1 -> N
    head_kernel: int = 3
    heatmap_bias: float = -2.19  # logit of a 0.1 prior, as CenterNet
    offset_encoding: str = "exp"  # "exp" = Eq. 2 (paper), "plain" = Eq. 1 (CenterNet)
    offset_features: str = "query"  # "query" (paper) or "query+cell" (also the upsampled feature at the cell)
    score: str = "class_x_peak"  # "class", "class_x_peak", "class_x_fg" (postprocess.py)

    def __post_init__(self) -> None:
        check_choice("model.head", self.head, HEADS)
        check_choice("model.backbone", self.backbone, BACKBONES)
        check_choice("model.backbone_stride", self.backbone_stride, (16, 32))
        check_choice("model.backbone_norm", self.backbone_norm, BACKBONE_NORMS)
        check_choice("model.backbone_trainable", self.backbone_trainable, BACKBONE_TRAINABLE)
        check(not (self.backbone_trainable == "layer4" and self.backbone_stride == 16),
              "model.backbone_trainable", self.backbone_trainable,
              "layer4 is cut at backbone_stride=16: nothing would train")
        check_choice("model.offset_encoding", self.offset_encoding, ("exp", "plain"))
        check_choice("model.offset_features", self.offset_features, ("query", "query+cell"))
        check_choice("model.score", self.score, ("class", "class_x_peak", "class_x_fg"))
        check(_is_pow2(self.heatmap_size) and self.heatmap_size >= 16, "model.heatmap_size",
               self.heatmap_size, "must be a power of two >= 16")
        check(isinstance(self.input_size, int) and self.input_size % self.backbone_stride == 0,
               "model.input_size", self.input_size,
               f"must be a multiple of backbone_stride={self.backbone_stride}")
        enc = self.input_size // self.backbone_stride
        check(self.heatmap_size >= enc and _is_pow2(self.heatmap_size // enc)
               and self.heatmap_size % enc == 0, "model.heatmap_size", self.heatmap_size,
               f"must be a power-of-two multiple of the encoder map size {enc} "
               f"(input_size / backbone_stride)")
        check(self.num_classes is None or (isinstance(self.num_classes, int) and self.num_classes >= 1),
              "model.num_classes", self.num_classes, "must be an integer >= 1 (or unset: from the data)")
        for name in ("num_queries", "d_model", "nhead", "dim_feedforward",
                     "head_width", "head_convs"):
            v = getattr(self, name)
            check(isinstance(v, int) and v >= 1, f"model.{name}", v, "must be an integer >= 1")
        for name in ("num_encoder_layers", "num_decoder_layers"):
            v = getattr(self, name)
            check(isinstance(v, int) and v >= (1 if "decoder" in name else 0), f"model.{name}", v,
                   "must be an integer >= 1 (decoder) / >= 0 (encoder)")
        check(self.d_model % self.nhead == 0, "model.d_model", self.d_model,
               f"must be divisible by nhead={self.nhead}")
        check(self.head_kernel in (1, 3, 5, 7), "model.head_kernel", self.head_kernel,
               "must be an odd kernel size in (1, 3, 5, 7)")
        check(0.0 <= self.dropout < 1.0, "model.dropout", self.dropout, "must be in [0, 1)")

    @property
    def encoder_size(self) -> int:
        """Side of the encoder feature map in cells."""
        return self.input_size // self.backbone_stride

    @property
    def num_upsamples(self) -> int:
        """Number of stride-2 transposed convolutions from the encoder map to S×S."""
        return int(math.log2(self.heatmap_size // self.encoder_size))


@dataclass(frozen=True)
class LossConfig:
    """Loss weights and target rendering (paper §3.5, Eq. 3-5).

    The total loss is ``cls_weight·loss_cls + pos_weight·loss_pos + size_weight·loss_size +
    offset_weight·loss_offset`` (the paper weighs both heatmap losses 1). The CenterNet head uses
    ``alpha``, ``beta``, ``min_overlap`` and ``min_radius`` for its focal loss and Gaussians,
    ``pos_weight`` for its centre-heatmap loss, ``offset_weight`` for its L1 offset loss and
    ``wh_weight`` for its L1 size loss; the other fields are TransCenter's.
    """

    alpha: float = 2.0
    beta: float = 4.0
    bg_weight: float = 0.1
    bg_weight_mode: str = "paper"  # "paper": w_bg twice as Eq. 3 reads; "single": once
    cls_weight: float = 1.0
    pos_weight: float = 1.0  # position-heatmap focal loss (CenterNet: its centre heatmaps)
    size_weight: float = 1.0  # size-heatmap focal loss (TransCenter only)
    offset_weight: float = 1.0
    wh_weight: float = 0.1  # CenterNet head only: its L1 width/height loss weight (CenterNet's 0.1)
    min_overlap: float = 0.7
    min_radius: int = 0

    def __post_init__(self) -> None:
        _check_nonneg(self, "loss", ("alpha", "beta", "bg_weight", "cls_weight", "pos_weight",
                                     "size_weight", "offset_weight", "wh_weight", "min_radius"))
        check_choice("loss.bg_weight_mode", self.bg_weight_mode, ("paper", "single"))
        check(0.0 < self.min_overlap < 1.0, "loss.min_overlap", self.min_overlap,
               "must be in (0, 1)")
        check(isinstance(self.min_radius, int), "loss.min_radius", self.min_radius,
               "must be an integer")


@dataclass(frozen=True)
class MatcherConfig:
    """Hungarian matching cost weights λ_cls, λ_L1, λ_giou (paper §3.4; DETR's 1, 5, 2)."""

    cost_class: float = 1.0
    cost_l1: float = 5.0
    cost_giou: float = 2.0

    def __post_init__(self) -> None:
        _check_nonneg(self, "matcher", ("cost_class", "cost_l1", "cost_giou"))
        check(self.cost_class + self.cost_l1 + self.cost_giou > 0, "matcher", self,
               "at least one cost weight must be > 0")


@dataclass(frozen=True)
class TransCenterConfig:
    """The detector's whole configuration: ``model``, ``loss`` and ``matcher`` sections."""

    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    matcher: MatcherConfig = field(default_factory=MatcherConfig)


def to_flat_dict(cfg: Any, prefix: str = "") -> dict[str, Any]:
    """Returns ``{dotted.name: value}`` for every leaf field of a (nested) config dataclass."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(v):
            out.update(to_flat_dict(v, key + "."))
        else:
            out[key] = v
    return out


def from_dict(cls: type, values: dict[str, Any] | None = None, base: Any = None) -> Any:
    """Builds config ``cls`` from nested and/or dotted overrides on top of ``base`` (or defaults).

    ``{"model": {"heatmap_size": 32}, "loss.alpha": 3}`` both work. Unknown names raise
    ``ValueError`` naming the key, so a typo in a search space or YAML file cannot pass silently.
    """
    base = base if base is not None else cls()
    nested: dict[str, Any] = {}
    for key, v in (values or {}).items():
        head, _, rest = key.partition(".")
        if rest:
            nested.setdefault(head, {})[rest] = v
        elif isinstance(v, dict):
            nested.setdefault(head, {}).update(v)
        else:
            nested[head] = v
    names = {f.name: f for f in dataclasses.fields(cls)}
    changes: dict[str, Any] = {}
    for key, v in nested.items():
        if key not in names:
            raise ValueError(f"unknown config key {key!r} for {cls.__name__}; known: {sorted(names)}")
        cur = getattr(base, key)
        if dataclasses.is_dataclass(cur):
            if not isinstance(v, dict):
                raise ValueError(f"config key {key!r} is a section; got {v!r}")
            changes[key] = from_dict(type(cur), v, cur)
        else:
            changes[key] = v
    return dataclasses.replace(base, **changes)
