"""The CenterNet baseline head, and why its encoding loses one of two same-class objects
that share a heatmap cell while TransCenter's per-query channels keep both (paper Fig. 2)."""
import math

import pytest
import torch

from transcenter.model.detector.centernet.criterion import CenterNetCriterion
from transcenter.model.detector.centernet.model import CenterNet
from transcenter.model.detector.centernet.postprocess import extract_peaks
from transcenter.model.detector.centernet.targets import center_targets
from transcenter.model.detector.config import LossConfig, ModelConfig, TransCenterConfig
from transcenter.model.detector.criterion import SetCriterion
from transcenter.model.detector.registry import build_criterion, build_model, postprocess
from transcenter.model.evaluation.evaluate import recall_at_iou
from transcenter.model.training.engine import TrialRunner
from transcenter.model.training.experiment import trial_config
from transcenter.store.metric_names import AP_KEYS

SIZE = 64  # input pixels; S = 16 gives 4 px cells
# Nested same-class boxes with one centre (32, 32): both in cell (8, 8); and one other object.
NESTED = {"boxes": torch.tensor([[20.0, 20.0, 44.0, 44.0], [28.0, 28.0, 36.0, 36.0],
                                 [2.0, 4.0, 14.0, 12.0]]),
          "labels": torch.tensor([1, 1, 0]), "image_id": 0,
          "ignore": torch.zeros(3, dtype=torch.bool)}


def _config(head: str) -> TransCenterConfig:
    return TransCenterConfig(model=ModelConfig(
        head=head, backbone="resnet18", input_size=SIZE, backbone_stride=16, heatmap_size=16,
        num_queries=6, num_classes=3, d_model=32, nhead=2, num_encoder_layers=1,
        num_decoder_layers=1, dim_feedforward=64, head_width=16, head_convs=1, dropout=0.0))


def _logit(p: torch.Tensor) -> torch.Tensor:
    return torch.logit(p.clamp(1e-6, 1 - 1e-6))


def _recall(outputs: dict, cfg: TransCenterConfig) -> float:
    det = postprocess(outputs, (SIZE, SIZE), cfg.model)[0]
    return recall_at_iou([dict(det, image_id=0)], [NESTED], iou=0.5)


def test_centernet_target_has_one_peak_for_two_same_class_objects_in_one_cell():
    cfg = _config("centernet")
    ct = center_targets([NESTED], (SIZE, SIZE), 3, 16)
    assert ct.cells[0].tolist() == ct.cells[1].tolist() == [8, 8]
    assert len(ct.batch_idx) == 3  # every object keeps its own size/offset term...
    peaks = ct.heatmaps[0].eq(1).flatten(1).sum(1)  # (C,) peaks per class heatmap
    assert peaks.tolist() == [1, 1, 0]  # ...but class 1 has ONE peak for its two objects
    # Decode the perfect target: the true heatmap, and at every centre cell that object's size and
    # offset (the nested pair's cell can hold only one size: the last object written wins).
    sizes, offsets = torch.zeros(1, 2, 16, 16), torch.zeros(1, 2, 16, 16)
    for (x, y), size, offset in zip(ct.cells.tolist(), ct.sizes, ct.offsets):
        sizes[0, :, y, x], offsets[0, :, y, x] = size, offset
    outputs = {"heatmap_logits": _logit(ct.heatmaps), "sizes": sizes, "offsets": offsets}
    scores = extract_peaks(ct.heatmaps, 100)[0]  # (1, 100)
    assert int((scores > 0.5).sum()) == 2  # two confident detections for three objects
    det = postprocess(outputs, (SIZE, SIZE), cfg.model)[0]
    found = {tuple(b) for b in det["boxes"][:2].tolist()}
    assert found == {tuple(b) for b in NESTED["boxes"][1:].tolist()}  # inner + other, exactly
    assert _recall(outputs, cfg) == pytest.approx(2 / 3)  # the outer nested box is lost


def test_transcenter_target_has_two_channels_and_decodes_both():
    cfg = _config("transcenter")
    model = build_model(cfg.model)
    with torch.no_grad():
        qt = SetCriterion(cfg, model.offset_head).build_targets(model(torch.rand(1, 3, SIZE, SIZE)), [NESTED],
                                             (SIZE, SIZE))
    assert len(set(qt.query_idx.tolist())) == 3
    peaks = qt.pos_heatmaps[0].flatten(1).eq(1).sum(1)  # (N,) peaks per query channel
    assert peaks.sum() == 3 and peaks.max() == 1
    # The perfect target decodes to all three objects, the nested pair included.
    logits = torch.full((1, 6, 4), -10.0)  # (B, N, C+1)
    logits[0, qt.query_idx, qt.classes[0, qt.query_idx]] = 10.0
    offsets = torch.zeros(1, 6, 4)
    offsets[0, qt.query_idx] = qt.offsets
    outputs = {"logits": logits, "pos_logits": _logit(qt.pos_heatmaps),
               "size_logits": _logit(qt.size_heatmaps), "offsets": offsets}
    assert _recall(outputs, cfg) == 1.0


def test_different_classes_in_one_cell_keep_their_peaks():
    target = dict(NESTED, labels=torch.tensor([1, 2, 0]))
    ct = center_targets([target], (SIZE, SIZE), 3, 16)
    assert ct.heatmaps[0].eq(1).flatten(1).sum(1).tolist() == [1, 1, 1]


def test_extract_peaks_keeps_3x3_local_maxima_per_class():
    heat = torch.zeros(1, 2, 8, 8)
    heat[0, 0, 2, 2], heat[0, 0, 2, 3] = 0.9, 0.8  # (x=2, y=2) suppresses its neighbour (x=3)
    heat[0, 0, 6, 6] = 0.7
    heat[0, 1, 2, 3] = 0.6  # another class's map: not suppressed by class 0
    scores, labels, cells = extract_peaks(heat, 3)
    assert scores[0].tolist() == pytest.approx([0.9, 0.7, 0.6])
    assert labels[0].tolist() == [0, 0, 1]
    assert cells[0].tolist() == [[2, 2], [6, 6], [3, 2]]


def test_centernet_forward_loss_backward_and_postprocess():
    cfg = _config("centernet")
    model = build_model(cfg.model)
    assert isinstance(model, CenterNet)
    names = [n for n, _ in model.named_parameters()]
    assert not any(n.startswith(("transformer.decoder", "query_embed")) for n in names)
    out = model(torch.rand(2, 3, SIZE, SIZE))
    assert out["heatmap_logits"].shape == (2, 3, 16, 16)
    assert out["sizes"].shape == out["offsets"].shape == (2, 2, 16, 16)
    targets = [NESTED, {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}]
    losses = build_criterion(cfg, model)(out, targets, (SIZE, SIZE))
    assert set(losses) == {"loss_pos", "loss_size", "loss_offset", "loss"}
    assert all(torch.isfinite(v) and v.item() > 0 for v in losses.values())
    losses["loss"].backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing
    model.eval()
    with torch.no_grad():
        dets = postprocess(model(torch.rand(2, 3, SIZE, SIZE)), (SIZE, SIZE), cfg.model, top_k=7)
    for d in dets:
        assert d["boxes"].shape == (7, 4) and d["scores"].shape == d["labels"].shape == (7,)
        assert (d["scores"][:-1] >= d["scores"][1:]).all() and d["labels"].max() < 3
        assert (d["boxes"] >= 0).all() and (d["boxes"] <= SIZE).all()


def test_centernet_regression_losses_are_l1_means_per_object_and_coordinate():
    cfg = _config("centernet")
    ct = center_targets([NESTED], (SIZE, SIZE), 3, 16)
    out = {"heatmap_logits": _logit(ct.heatmaps), "sizes": torch.zeros(1, 2, 16, 16),
           "offsets": torch.zeros(1, 2, 16, 16)}
    losses = CenterNetCriterion(cfg.model, cfg.loss)(out, [NESTED], (SIZE, SIZE))
    # Sizes in 4 px cells: (6, 6), (2, 2), (3, 2); offsets of centres (32, 32), (8, 8) -> all 0.
    assert losses["loss_size"].item() == pytest.approx((12 + 4 + 5) / 6)
    assert losses["loss_offset"].item() == 0.0
    assert losses["loss_pos"].item() < 1e-6  # the heatmap is its own target
    assert losses["loss"].item() == pytest.approx(0.1 * 21 / 6, rel=1e-4)


def test_head_is_validated():
    with pytest.raises(ValueError, match="model.head"):
        ModelConfig(head="detr")


def test_engine_trains_and_evaluates_the_centernet_head():
    cfg = trial_config("smoke", {"model.head": "centernet", "data.overlap_fraction": 1.0,
                                 "data.num_train": 8, "data.num_val": 8, "train.epochs": 1})
    row = TrialRunner(cfg).run_epoch()
    assert "loss_cls" not in row and math.isfinite(row["loss"])
    assert set(AP_KEYS) <= set(row)
    assert 0.0 <= row["overlap_recall"] <= 100.0  # every val image holds a nested pair


def test_centernet_pos_weight_scales_its_heatmap_term_in_the_total_only():
    cfg = _config("centernet")
    out = {"heatmap_logits": torch.zeros(1, 3, 16, 16), "sizes": torch.zeros(1, 2, 16, 16),
           "offsets": torch.zeros(1, 2, 16, 16)}
    one = CenterNetCriterion(cfg.model, cfg.loss)(out, [NESTED], (SIZE, SIZE))
    doubled = CenterNetCriterion(cfg.model, LossConfig(pos_weight=2.0))(out, [NESTED], (SIZE, SIZE))
    assert doubled["loss_pos"].item() == pytest.approx(one["loss_pos"].item(), rel=1e-6)
    assert (doubled["loss"] - one["loss"]).item() == pytest.approx(one["loss_pos"].item(), rel=1e-5)
