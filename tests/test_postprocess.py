import pytest
import torch

from transcenter.model.detector.config import ModelConfig
from transcenter.model.detector.registry import postprocess


def _outputs(num_classes=2, n=3, s=16):
    logits = torch.full((1, n, num_classes + 1), -5.0)
    logits[0, 0, 1] = 3.0  # query 0: class 1, confident
    logits[0, 1, 0] = 1.0  # query 1: class 0, less so
    pos = torch.full((1, n, s, s), -5.0)
    size = torch.full((1, n, s, s), -5.0)
    pos[0, 0, 4, 8] = 4.0  # query 0 centre cell (x=8, y=4)
    size[0, 0, 2, 3] = 4.0  # query 0 size cell (w=3, h=2)
    return {"logits": logits, "pos_logits": pos, "size_logits": size,
            "offsets": torch.zeros(1, n, 4)}


def test_postprocess_decodes_boxes_and_ranks_by_score():
    cfg = ModelConfig(input_size=128, heatmap_size=16, num_classes=2, num_queries=3,
                      offset_encoding="plain")
    det = postprocess(_outputs(), (128, 128), cfg, top_k=2)[0]
    assert det["boxes"].shape == (2, 4) and det["labels"].tolist() == [1, 0]
    assert det["scores"][0] > det["scores"][1]
    # stride 8 px: centre (64, 32), size (24, 16) -> xyxy (52, 24, 76, 40)
    assert torch.allclose(det["boxes"][0], torch.tensor([52.0, 24.0, 76.0, 40.0]))


def test_score_modes_differ_as_documented():
    out = _outputs()
    base = dict(input_size=128, heatmap_size=16, num_classes=2, num_queries=3)
    cls = postprocess(out, (128, 128), ModelConfig(score="class", **base))[0]["scores"]
    peak = postprocess(out, (128, 128), ModelConfig(score="class_x_peak", **base))[0]["scores"]
    fg = postprocess(out, (128, 128), ModelConfig(score="class_x_fg", **base))[0]["scores"]
    p_cls, p_peak, p_bg = (torch.sigmoid(torch.tensor(v)).item() for v in (3.0, 4.0, -5.0))
    assert cls[0].item() == pytest.approx(p_cls, rel=1e-6)
    assert peak[0].item() == pytest.approx(p_cls * p_peak, rel=1e-6)
    assert fg[0].item() == pytest.approx(p_cls * (1 - p_bg), rel=1e-6)
