import math

import pytest
import torch

from transcenter.model.data.common import drop_ignored
from transcenter.model.detector.config import LossConfig, ModelConfig, TransCenterConfig
from transcenter.model.detector.criterion import SetCriterion
from transcenter.model.detector.gaussian import gaussian_radius, render_gaussians
from transcenter.model.detector.losses import classification_loss, gaussian_focal_loss, offset_loss
from transcenter.model.detector.registry import build_model


def _sig(x):
    return 1 / (1 + math.exp(-x))


def test_classification_loss_matches_hand_computation():
    # 2 queries, C = 2 object classes + background (index 2). Query 0 positive class 1, query 1 bg.
    logits = torch.tensor([[[0.5, 2.0, -1.0], [-0.3, 0.7, 1.5]]])
    target = torch.tensor([[1, 2]])
    w = 0.1
    lp = math.log
    pos = -(lp(1 - _sig(0.5)) + lp(_sig(2.0)) + lp(1 - _sig(-1.0)))
    bg_paper = -w * (lp(_sig(1.5)) + w * (lp(1 - _sig(-0.3)) + lp(1 - _sig(0.7))))
    bg_single = -w * (lp(_sig(1.5)) + (lp(1 - _sig(-0.3)) + lp(1 - _sig(0.7))))
    got_paper = classification_loss(logits, target, w, "paper").item()
    got_single = classification_loss(logits, target, w, "single").item()
    assert got_paper == pytest.approx(pos + bg_paper, rel=1e-6)
    assert got_single == pytest.approx(pos + bg_single, rel=1e-6)


def test_focal_loss_matches_hand_computation():
    logits = torch.tensor([[[[1.0, -2.0], [0.0, 3.0]]]])  # (1, 1, 2, 2)
    target = torch.tensor([[[[1.0, 0.5], [0.0, 0.9]]]])
    a, b = 2.0, 4.0
    p = [_sig(v) for v in (1.0, -2.0, 0.0, 3.0)]
    g = [1.0, 0.5, 0.0, 0.9]
    expect = -((1 - p[0]) ** a * math.log(p[0]))
    for pi, gi in zip(p[1:], g[1:]):
        expect -= (1 - gi) ** b * pi ** a * math.log(1 - pi)
    assert gaussian_focal_loss(logits, target, a, b).item() == pytest.approx(expect, rel=1e-6)


def test_losses_stay_finite_for_extreme_logits_in_bf16():
    logits = torch.tensor([[[[40.0, -40.0]]]], dtype=torch.bfloat16)
    target = torch.tensor([[[[0.0, 1.0]]]])
    val = gaussian_focal_loss(logits, target, 2.0, 4.0)
    assert torch.isfinite(val) and val.item() > 30  # both terms maximally wrong, not inf
    cls = classification_loss(logits.view(1, 1, 2), torch.tensor([[0]]), 0.1)
    assert torch.isfinite(cls)


def test_offset_loss_is_smooth_l1_sum():
    pred = torch.tensor([[0.0, 0.5, 2.0, 0.0]])
    tgt = torch.tensor([[0.0, 0.0, 0.0, 0.0]])
    assert offset_loss(pred, tgt).item() == pytest.approx(0.5 * 0.25 + 1.5)
    assert offset_loss(torch.zeros(0, 4), torch.zeros(0, 4)).item() == 0.0


def test_gaussian_radius_corrected_form_and_rendering():
    # Corrected formula (mmdetection) for a 10x10 object at min_overlap 0.7, by hand:
    r = gaussian_radius(torch.tensor([10.0]), torch.tensor([10.0]), 0.7)
    assert r.item() == pytest.approx(0.8167, abs=1e-3)  # min(r1=0.925, r2=0.817, r3=1.62)
    hm = render_gaussians(torch.tensor([[3, 2], [0, 0]]), torch.tensor([1, 0]), 8)
    assert hm.shape == (2, 8, 8)
    assert hm[0, 2, 3] == 1.0 and hm[0].gt(0).sum() == 9  # 3x3 window around (x=3, y=2)
    sigma = 3 / 6
    assert hm[0, 2, 4].item() == pytest.approx(math.exp(-1 / (2 * sigma ** 2)), rel=1e-6)
    assert hm[1].sum() == 1.0 and hm[1, 0, 0] == 1.0  # r = 0: the peak alone


def _tiny_config(**model):
    m = dict(backbone="resnet18", input_size=64, backbone_stride=16, heatmap_size=16,
             num_queries=6, num_classes=3, d_model=32, nhead=2, num_encoder_layers=1,
             num_decoder_layers=1, dim_feedforward=64, head_width=16, head_convs=1, dropout=0.0)
    m.update(model)
    return TransCenterConfig(model=ModelConfig(**m))


@pytest.mark.parametrize("offset_features", ["query", "query+cell"])
def test_gradients_reach_every_parameter(offset_features):
    cfg = _tiny_config(offset_features=offset_features)
    model = build_model(cfg.model)
    crit = SetCriterion(cfg, model.offset_head)
    images = torch.rand(2, 3, 64, 64)
    targets = [{"boxes": torch.tensor([[4.0, 4.0, 30.0, 40.0]]), "labels": torch.tensor([1])},
               {"boxes": torch.tensor([[10.0, 12.0, 60.0, 50.0], [0.0, 0.0, 8.0, 8.0]]),
                "labels": torch.tensor([0, 2])}]
    losses = crit(model(images), targets, (64, 64))
    assert set(losses) == {"loss_cls", "loss_pos", "loss_size", "loss_offset", "loss"}
    assert all(torch.isfinite(v) and v.item() > 0 for v in losses.values())
    losses["loss"].backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    # As in DETR, the first decoder layer self-attends over all-zero targets: its value is the
    # (zero-initialised) bias, so attention weights, out_proj weight and its LayerNorm scale get no
    # gradient at the first step. Everything else must.
    dead_at_init = {"transformer.decoder.0.self_attn.attn.in_proj_weight",
                    "transformer.decoder.0.self_attn.attn.out_proj.weight",
                    "transformer.decoder.0.self_attn.norm.weight"}
    assert set(missing) <= dead_at_init
    assert not [n for n in missing if "decoder.0.self_attn" not in n]


def test_same_class_objects_in_one_cell_get_distinct_channels():
    cfg = _tiny_config()
    model = build_model(cfg.model)
    crit = SetCriterion(cfg, model.offset_head)
    # Nested same-class boxes with the same centre: one cell, two objects.
    targets = [{"boxes": torch.tensor([[20.0, 20.0, 44.0, 44.0], [28.0, 28.0, 36.0, 36.0]]),
                "labels": torch.tensor([1, 1])}]
    with torch.no_grad():
        qt = crit.build_targets(model(torch.rand(1, 3, 64, 64)), targets, (64, 64))
    assert qt.pos_cells[0].tolist() == qt.pos_cells[1].tolist()  # same centre cell
    assert len(set(qt.query_idx.tolist())) == 2  # two distinct queries
    peaks = qt.pos_heatmaps[0].flatten(1).eq(1).sum(1)  # (N,) peaks per channel
    assert peaks.sum() == 2 and peaks.max() == 1
    assert (qt.classes[0] == 1).sum() == 2 and (qt.classes[0] == 3).sum() == 4


def test_ignored_objects_are_not_trained_on():
    t = {"boxes": torch.tensor([[4.0, 4.0, 30.0, 40.0], [10.0, 10.0, 50.0, 50.0]]),
         "labels": torch.tensor([1, 2]), "ignore": torch.tensor([False, True])}
    kept = drop_ignored([t])[0]
    assert kept["labels"].tolist() == [1]


def test_background_weight_normalises_heatmap_loss():
    cfg_lo = _tiny_config()
    cfg_hi = TransCenterConfig(model=cfg_lo.model, loss=LossConfig(bg_weight=1.0))
    model = build_model(cfg_lo.model).eval()
    out = model(torch.rand(1, 3, 64, 64))
    tgt = [{"boxes": torch.tensor([[4.0, 4.0, 30.0, 40.0]]), "labels": torch.tensor([1])}]
    lo = SetCriterion(cfg_lo, model.offset_head)(out, tgt, (64, 64))
    hi = SetCriterion(cfg_hi, model.offset_head)(out, tgt, (64, 64))
    # 1 positive, 5 negatives: normaliser 1 + 0.1*5 = 1.5 vs 1 + 5 = 6.
    assert lo["loss_pos"].item() == pytest.approx(hi["loss_pos"].item() * 6 / 1.5, rel=1e-5)


@pytest.mark.parametrize("name, term", [("pos_weight", "loss_pos"), ("size_weight", "loss_size")])
def test_heatmap_weight_scales_its_term_in_the_total_only(name, term):
    cfg = _tiny_config()
    model = build_model(cfg.model).eval()
    with torch.no_grad():
        out = model(torch.rand(1, 3, 64, 64))
    tgt = [{"boxes": torch.tensor([[4.0, 4.0, 30.0, 40.0]]), "labels": torch.tensor([1])}]
    one = SetCriterion(cfg, model.offset_head)(out, tgt, (64, 64))
    doubled = SetCriterion(TransCenterConfig(model=cfg.model, loss=LossConfig(**{name: 2.0})),
                           model.offset_head)(out, tgt, (64, 64))
    assert doubled[term].item() == pytest.approx(one[term].item(), rel=1e-6)  # the loss itself
    assert (doubled["loss"] - one["loss"]).item() == pytest.approx(one[term].item(), rel=1e-5)


def test_weight_dict_names_every_weighted_loss_and_total_is_its_sum():
    cfg = TransCenterConfig(model=_tiny_config().model,
                            loss=LossConfig(cls_weight=0.5, pos_weight=2.0, size_weight=3.0,
                                            offset_weight=4.0))
    model = build_model(cfg.model).eval()
    crit = SetCriterion(cfg, model.offset_head)
    assert crit.weight_dict == {"loss_cls": 0.5, "loss_pos": 2.0, "loss_size": 3.0,
                                "loss_offset": 4.0}
    with torch.no_grad():
        losses = crit(model(torch.rand(1, 3, 64, 64)),
                      [{"boxes": torch.tensor([[4.0, 4.0, 30.0, 40.0]]), "labels": torch.tensor([1])}],
                      (64, 64))
    expect = sum(w * losses[k].item() for k, w in crit.weight_dict.items())
    assert losses["loss"].item() == pytest.approx(expect, rel=1e-6)
