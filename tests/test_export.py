"""The models' outputs are dicts of tensors only (DETR's convention), so ``torch.export`` and
tracing take them as they are."""
import pytest
import torch

from transcenter.model.detector.registry import build_model
from transcenter.model.training.experiment import trial_config


@pytest.mark.parametrize("head, offset_features", [("transcenter", "query"),
                                                    ("transcenter", "query+cell"),
                                                    ("centernet", "query")])
def test_export_succeeds_and_every_output_is_a_tensor(head, offset_features):
    cfg = trial_config("smoke", {"model.head": head, "model.offset_features": offset_features})
    model = build_model(cfg.detector.model).eval()
    images = torch.rand(2, 3, cfg.model.input_size, cfg.model.input_size)
    exported = torch.export.export(model, (images,))
    with torch.no_grad():
        expected = model(images)
        got = exported.module()(images)
    assert all(torch.is_tensor(v) for v in expected.values()), expected.keys()
    assert set(got) == set(expected)
    for name, value in expected.items():
        assert torch.allclose(got[name], value, atol=1e-5), name
