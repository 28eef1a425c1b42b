import itertools
import json
import subprocess
import sys

import pytest

from transcenter.model.evaluation.complexity import PAPER_TABLE1


@pytest.fixture(scope="module")
def table():
    out = subprocess.run([sys.executable, "-m", "transcenter.model.evaluation.complexity", "--json"],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def test_table1_params_within_1_percent_and_macs_within_5_percent(table):
    assert [r["heatmap_size"] for r in table] == [16, 32, 64, 128]
    for row in table:
        params, macs = PAPER_TABLE1[row["heatmap_size"]]
        assert abs(row["params"] / params - 1) < 0.01, row
        assert abs(row["macs"] / macs - 1) < 0.05, row


def test_each_doubling_adds_one_transposed_conv(table):
    steps = [b["params"] - a["params"] for a, b in itertools.pairwise(table)]
    # ConvTranspose2d(256, 256, 4) without bias + BatchNorm(256): 256*256*16 + 512.
    assert steps == [256 * 256 * 16 + 512] * 3


@pytest.mark.parametrize("head", ["transcenter", "centernet"])
def test_the_count_on_the_meta_device_equals_a_forward_pass_on_the_cpu(head):
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    from transcenter.model.detector.config import ModelConfig
    from transcenter.model.detector.registry import build_model
    from transcenter.model.evaluation.complexity import count

    config = ModelConfig(head=head, backbone="resnet18", input_size=128, num_classes=3,
                         heatmap_size=32, num_queries=10, d_model=64, nhead=2, dim_feedforward=128)
    model = build_model(config).train()
    counter = FlopCounterMode(display=False)
    with sdpa_kernel(SDPBackend.MATH), counter:
        model(torch.rand(1, 3, 128, 128))  # (1, 3, H, W)
    assert count(config) == {"heatmap_size": 32, "params": sum(p.numel() for p in model.parameters()),
                             "macs": counter.get_total_flops() // 2}
