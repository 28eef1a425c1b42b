"""Parameter and MAC counts of the paper configuration (Table 1).

``python -m transcenter.model.evaluation.complexity --json`` prints a JSON list of
``{"heatmap_size", "params", "macs"}`` for S = 16, 32, 64, 128 at 512×512 with ResNet-50 and
VOC's 20 classes. MACs come from ``torch.utils.flop_counter.FlopCounterMode`` (2 FLOPs per MAC),
run in train mode under the MATH attention backend so attention is counted. The model is built on
PyTorch's meta device: every operator sees shapes only, so counting does no arithmetic and holds no
activations; the counts equal a forward pass on the CPU (``tests/test_complexity.py``).
Backbone: torchvision's ResNet-50 (v1.5, stride on the 3×3), ~21.59 G MACs alone.
"""
from __future__ import annotations

import argparse
import json
import warnings

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from transcenter.model.detector.config import ModelConfig
from transcenter.model.detector.registry import build_model

PAPER_TABLE1 = {16: (45.79e6, 25.07e9), 32: (46.84e6, 28.81e9), 64: (47.89e6, 43.74e9),
                128: (48.94e6, 103.46e9)}


def count(config: ModelConfig) -> dict:
    """Returns ``{"heatmap_size", "params", "macs"}`` for one image of ``config.input_size``²."""
    with torch.device("meta"), warnings.catch_warnings():
        # Backbone weights from a file load into meta parameters as a no-op, with a warning each.
        warnings.filterwarnings("ignore", message=".*non-meta parameter in the checkpoint")
        model = build_model(config).train()
        x = torch.zeros(1, 3, config.input_size, config.input_size)  # (1, 3, H, W)
    counter = FlopCounterMode(display=False)
    with sdpa_kernel(SDPBackend.MATH), counter:
        model(x)
    return {"heatmap_size": config.heatmap_size,
            "params": sum(p.numel() for p in model.parameters()),
            "macs": counter.get_total_flops() // 2}


def table(sizes=(16, 32, 64, 128), **overrides) -> list[dict]:
    """Returns :func:`count` for each heatmap size, with the paper's Table 1 values where known."""
    rows = []
    for s in sizes:
        row = count(ModelConfig(heatmap_size=s, **{"num_classes": 20, **overrides}))
        if s in PAPER_TABLE1:
            row["paper_params"], row["paper_macs"] = PAPER_TABLE1[s]
        rows.append(row)
    return rows


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--sizes", type=int, nargs="+", default=[16, 32, 64, 128])
    args = p.parse_args(argv)
    rows = table(args.sizes)
    if args.json:
        print(json.dumps([{k: r[k] for k in ("heatmap_size", "params", "macs")} for r in rows]))
        return
    print(f"{'S':>5} {'params (M)':>11} {'paper':>7} {'MACs (G)':>9} {'paper':>7}")
    for r in rows:
        pp, pm = (r.get("paper_params", float("nan")), r.get("paper_macs", float("nan")))
        print(f"{r['heatmap_size']:>5} {r['params'] / 1e6:>11.3f} {pp / 1e6:>7.2f} "
              f"{r['macs'] / 1e9:>9.2f} {pm / 1e9:>7.2f}")


if __name__ == "__main__":
    main()
