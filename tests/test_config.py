import pytest

from transcenter.model.detector.config import (
    LossConfig,
    MatcherConfig,
    ModelConfig,
    TransCenterConfig,
    from_dict,
    to_flat_dict,
)
from transcenter.model.training.experiment import parse_overrides


@pytest.mark.parametrize("kwargs, field", [
    ({"heatmap_size": 48}, "model.heatmap_size"),
    ({"heatmap_size": 8}, "model.heatmap_size"),
    ({"num_queries": 0}, "model.num_queries"),
    ({"backbone": "vgg16"}, "model.backbone"),
    ({"offset_encoding": "log"}, "model.offset_encoding"),
    ({"input_size": 500}, "model.input_size"),
    ({"d_model": 100, "nhead": 8}, "model.d_model"),
])
def test_model_config_rejects_bad_values(kwargs, field):
    with pytest.raises(ValueError, match=field):
        ModelConfig(**kwargs)


@pytest.mark.parametrize("cls, kwargs, field", [
    (LossConfig, {"alpha": -1.0}, "loss.alpha"),
    (LossConfig, {"bg_weight": -0.1}, "loss.bg_weight"),
    (LossConfig, {"bg_weight_mode": "double"}, "loss.bg_weight_mode"),
    (LossConfig, {"pos_weight": -1.0}, "loss.pos_weight"),
    (LossConfig, {"size_weight": float("nan")}, "loss.size_weight"),
    (MatcherConfig, {"cost_giou": -2.0}, "matcher.cost_giou"),
])
def test_section_configs_reject_bad_values(cls, kwargs, field):
    with pytest.raises(ValueError, match=field):
        cls(**kwargs)


def test_heatmap_size_must_be_reachable_from_encoder_map():
    # 128 px input at stride 32 is a 4x4 map; S=16 is 2 upsamplings, S=16 at stride 16 is 1.
    assert ModelConfig(input_size=128, heatmap_size=16).num_upsamples == 2
    assert ModelConfig(input_size=128, backbone_stride=16, heatmap_size=16).num_upsamples == 1
    with pytest.raises(ValueError, match="model.heatmap_size"):
        ModelConfig(input_size=1024, heatmap_size=16)


def test_from_dict_accepts_dotted_and_nested_and_rejects_unknown():
    cfg = from_dict(TransCenterConfig, {"model.heatmap_size": 32, "loss": {"alpha": 3.0},
                                        "matcher.cost_l1": 1.0})
    assert (cfg.model.heatmap_size, cfg.loss.alpha, cfg.matcher.cost_l1) == (32, 3.0, 1.0)
    assert cfg.loss.beta == 4.0
    flat = to_flat_dict(cfg)
    assert flat["model.heatmap_size"] == 32 and flat["loss.alpha"] == 3.0
    assert from_dict(TransCenterConfig, flat) == cfg
    with pytest.raises(ValueError, match="alpah"):
        from_dict(TransCenterConfig, {"loss.alpah": 1.0})
    with pytest.raises(ValueError, match="model.heatmap_size"):
        from_dict(TransCenterConfig, {"model.heatmap_size": 48})


def test_heatmap_loss_weights_default_to_the_papers_one_and_are_addressable():
    assert (LossConfig().pos_weight, LossConfig().size_weight) == (1.0, 1.0)
    cfg = from_dict(TransCenterConfig, {"loss.pos_weight": 2.0, "loss.size_weight": 0.5})
    assert (cfg.loss.pos_weight, cfg.loss.size_weight) == (2.0, 0.5)


def test_parse_overrides_reads_yaml_scalars_and_rejects_malformed_items():
    assert parse_overrides(["loss.alpha=3", "optim.lr=1.0e-4", "model.score=class", "x=[1, 2]",
                            "model.backbone_weights=null", "optim.lr=1e-4"]) == {
        "loss.alpha": 3, "optim.lr": 1e-4, "model.score": "class", "x": [1, 2],
        "model.backbone_weights": None}
    assert parse_overrides(["optim.lr=1e-4"])["optim.lr"] == 1e-4  # YAML 1.1 reads it as text
    assert parse_overrides(["model.head=nan"])["model.head"] == "nan"
    for bad in ("loss.alpha", "=3"):
        with pytest.raises(ValueError, match=r"--set .*: expected dotted.key=value"):
            parse_overrides([bad])
