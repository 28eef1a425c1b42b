"""TransCenter's training step beside DETR-R50's, in one process on the same batches: prints ONE
JSON object.

DETR's code is not part of this project: fetch facebookresearch/detr (commit 29901c5) and pass its
folder with ``--detr`` (without it, only TransCenter's side is timed). Its model, criterion (aux loss
on, Hungarian matching), AdamW groups
(backbone lr 1e-5) and grad clipping 0.1 are its own (``main.py``'s defaults, 20 classes, random
init: its backbone would download ImageNet weights, so that is switched off). Both see the same
512×512 synthetic images and boxes (``--objects`` per image), batch ``--batch``, fp32 on CPU.

TransCenter runs the ``paper`` preset (ResNet-50 C5, d=256, 6+6 layers, N=100) at each ``--sizes``
S, with DETR's backbone practice (frozen BatchNorm, stem + layer1 frozen: random weights written
to a temp file stand in for ImageNet's, which cost the same) and channels-last memory, and, as
``S<n>_before``, the former defaults: every backbone stage training on batch statistics, NCHW.
``ratio_to_detr`` is s/step over DETR's; ``macs_ratio`` the forward-MACs ratio it may reach.

    python tests/bench/detr_side_by_side.py --detr /path/to/detr [--steps 3] [--threads 2]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time

import torch
import torchvision
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from transcenter.model.evaluation.complexity import count
from transcenter.model.training.engine import TrialRunner
from transcenter.model.training.experiment import PRESETS, trial_config


def batches(size: int, batch: int, objects: int, count_: int, seed: int = 0) -> list:
    """``count_`` batches of random images with ``objects`` random boxes each: (images (B, 3, H, W),
    targets with boxes xyxy px and labels in 0..7)."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(count_):
        images = torch.rand(batch, 3, size, size, generator=gen)
        targets = []
        for _ in range(batch):
            xy = torch.rand(objects, 2, generator=gen) * size * 0.7
            wh = 16 + torch.rand(objects, 2, generator=gen) * size * 0.25
            targets.append({"boxes": torch.cat([xy, xy + wh], 1).clamp(max=size),
                            "labels": torch.randint(8, (objects,), generator=gen),
                            "ignore": torch.zeros(objects, dtype=torch.bool)})
        out.append((images, targets))
    return out


def timed_steps(step, data: list, warmup: int) -> dict:
    """Runs ``step(images, targets) -> {segment: seconds}`` on each batch; returns the mean
    seconds per step and per segment over the batches after ``warmup``."""
    totals: dict[str, float] = {}
    for i, (images, targets) in enumerate(data):
        start = time.perf_counter()
        segments = step(images, targets)
        segments["step"] = time.perf_counter() - start
        if i >= warmup:
            for k, v in segments.items():
                totals[k] = totals.get(k, 0.0) + v
    n = len(data) - warmup
    return {k: round(v / n, 4) for k, v in totals.items()}


def segment_timer():
    """Returns ``(mark, segments)``: ``mark(name)`` closes the segment since the previous mark."""
    segments: dict[str, float] = {}
    last = [time.perf_counter()]

    def mark(name: str) -> None:
        now = time.perf_counter()
        segments[name] = now - last[0]
        last[0] = now
    return mark, segments


def transcenter_step(size: int, heatmap_size: int, batch: int, weights: str | None, extra: dict):
    cfg = trial_config(None, {**PRESETS["paper"], "data.name": "synthetic", "data.num_classes": 8,
                              "data.num_train": batch, "data.num_val": batch, "data.num_workers": 0,
                              "data.augment": False, "model.input_size": size,
                              "model.heatmap_size": heatmap_size, "model.backbone_weights": weights,
                              "train.device": "cpu", "train.batch_size": batch, **extra})
    runner = TrialRunner(cfg)
    model, criterion, optimizer = runner.model.train(), runner.criterion, runner.optimizer

    def step(images, targets):
        mark, segments = segment_timer()
        outputs = model(images.contiguous(memory_format=runner.memory_format))
        mark("forward")
        losses = criterion(outputs, targets, (size, size))
        mark("criterion")
        optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        mark("backward")
        nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
        optimizer.step()
        mark("optimizer")
        return segments
    return step, count(cfg.detector.model)["macs"]


def detr_step(root: str, size: int):
    sys.path.insert(0, root)
    import models.backbone as detr_backbone
    from main import get_args_parser
    from models import build_model
    from util.misc import nested_tensor_from_tensor_list

    detr_backbone.is_main_process = lambda: False  # pretrained=False: nothing is downloaded
    args = get_args_parser().parse_args(["--dataset_file", "voc", "--device", "cpu"])
    model, criterion, _ = build_model(args)
    groups = [{"params": [p for n, p in model.named_parameters() if "backbone" not in n and p.requires_grad]},
              {"params": [p for n, p in model.named_parameters() if "backbone" in n and p.requires_grad],
               "lr": args.lr_backbone}]
    optimizer = torch.optim.AdamW(groups, lr=args.lr, weight_decay=args.weight_decay)
    model.train(), criterion.train()
    counter = FlopCounterMode(display=False)
    with counter:
        model(nested_tensor_from_tensor_list([torch.zeros(3, size, size)]))
    macs = counter.get_total_flops() // 2  # forward MACs of one image

    def step(images, targets):
        detr_targets = [{"labels": t["labels"],
                         "boxes": torchvision.ops.box_convert(t["boxes"] / size, "xyxy", "cxcywh")}
                        for t in targets]
        mark, segments = segment_timer()
        outputs = model(nested_tensor_from_tensor_list(list(images)))
        mark("forward")
        losses = criterion(outputs, detr_targets)
        loss = sum(losses[k] * criterion.weight_dict[k] for k in losses if k in criterion.weight_dict)
        mark("criterion")
        optimizer.zero_grad()
        loss.backward()
        mark("backward")
        nn.utils.clip_grad_norm_(model.parameters(), args.clip_max_norm)
        optimizer.step()
        mark("optimizer")
        return segments
    return step, macs


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--detr", help="folder of a facebookresearch/detr checkout (without it only "
                                  "TransCenter is timed)")
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--objects", type=int, default=4)
    p.add_argument("--steps", type=int, default=3, help="timed steps per model")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--sizes", type=int, nargs="+", default=[16, 64])
    p.add_argument("--contiguous", action="store_true",
                   help="also time TransCenter without train.channels_last (NCHW)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    data = batches(args.size, args.batch, args.objects, args.steps + args.warmup)
    result = {"torch": torch.__version__, "device": f"cpu x{args.threads}", "input": args.size,
              "batch": args.batch, "objects_per_image": args.objects, "steps": args.steps}
    detr, detr_macs = {}, None
    if args.detr:
        step, detr_macs = detr_step(args.detr, args.size)
        detr = timed_steps(step, data, args.warmup)
        result["detr_r50"] = {**detr, "macs_fwd": detr_macs}
    else:
        result["detr_r50"] = {"skipped": "pass --detr <facebookresearch/detr checkout>"}
    with tempfile.NamedTemporaryFile(suffix=".pt") as weights:
        torch.save(torchvision.models.resnet50().state_dict(), weights.name)
        variants = {f"S{s}": (s, weights.name, {}) for s in args.sizes}
        variants[f"S{args.sizes[0]}_before"] = (args.sizes[0], None, {  # the former defaults
            "model.backbone_norm": "batch", "model.backbone_trainable": "all",
            "train.channels_last": False})
        if args.contiguous:
            variants.update({f"S{s}_contiguous": (s, weights.name, {"train.channels_last": False})
                             for s in args.sizes})
        for name, (s, path, extra) in variants.items():
            step, macs = transcenter_step(args.size, s, args.batch, path, extra)
            run = timed_steps(step, data, args.warmup)
            run["macs_fwd"] = macs
            if detr:
                run["ratio_to_detr"] = round(run["step"] / detr["step"], 3)
                run["macs_ratio"] = round(macs / detr_macs, 3)
            result[name] = run
    print(json.dumps(result))


if __name__ == "__main__":
    main()
