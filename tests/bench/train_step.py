"""Training-step cost: prints ONE JSON object.

Seconds per step, split into ``data`` (waiting for the loader's next batch + copy to the device),
``forward`` (model, under bf16 autocast on CUDA), ``matcher_targets`` (``SetCriterion.build_targets``:
decoding, Hungarian matching and Gaussian target rendering; ``matcher`` is the Hungarian part of it),
``loss`` (the rest of the criterion), ``backward`` and ``optimizer`` (grad clipping + AdamW step).
Segments are timed with a device synchronisation at each boundary, so on CUDA they add up to a
slightly serialised step. Model, criterion, optimiser, loader and autocast are the
:class:`TrialRunner`'s own.

Runs:

* ``cpu``: the ``cpu`` preset (ResNet-18 cut at stride 16, 128 px, S=16, N=10, batch 8) on CPU.
* ``paper`` (CUDA only): ResNet-50, 512 px, S=64, N=100, batch 16, bf16 autocast, synthetic scenes
  through the preset's 8 loader workers; reports peak ``torch.cuda.max_memory_allocated`` and MFU
  against ``--peak-tflops`` (989: H100 SXM bf16 dense), with training FLOPs taken as
  3 × forward MACs × 2 (``transcenter.model.evaluation.complexity.count``).
* ``cpu_contiguous`` and, with ``--compile``, ``cpu_compile``: the same without
  ``train.channels_last`` (NCHW, the former default) / with ``train.compile``;
  ``compile_s`` is the first step's time (compilation), left out of the mean.
* ``share_n100_s64``: the share of the criterion (``matcher_targets`` + ``loss``) in a step at
  N=100, S=64 (goal <= 5 %). From
  the ``paper`` run on CUDA; on CPU from the paper head and transformer (d=256, 6+6 layers, N=100,
  S=64 from a 16×16 encoder map, exactly as at 512 px) on a ResNet-50 cut at stride 16 at a
  reduced input. A cheaper backbone only shrinks the step, so that share is an upper bound.

    python tests/bench/train_step.py [--steps 10] [--warmup 3] [--peak-tflops 989] [--compile]

DETR-R50's step beside TransCenter's: ``tests/bench/detr_side_by_side.py``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import resource
import time
from collections import defaultdict
from contextlib import contextmanager

import torch
from torch import nn

from transcenter.model.evaluation.complexity import count
from transcenter.model.training.engine import TrialRunner
from transcenter.model.training.experiment import PRESETS, TrialConfig, trial_config

SEGMENTS = ("data", "forward", "matcher_targets", "loss", "backward", "optimizer")
SHARE_GOAL = 0.05


def _rss_mb() -> float:
    """Peak resident set size of this process so far, MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _batches(loader):
    while True:  # cycle through epochs if the bench outlasts one
        yield from loader


def bench(cfg: TrialConfig, steps: int, warmup: int) -> dict:
    """Times ``warmup + steps`` training steps of ``cfg``; returns the mean of the last ``steps``."""
    runner = TrialRunner(cfg)
    model, criterion, optimizer = runner.model.train(), runner.criterion, runner.optimizer
    device = runner.device
    cuda = device.type == "cuda"
    times: dict[str, float] = defaultdict(float)

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(device)

    @contextmanager
    def timed(key: str):
        sync()
        start = time.perf_counter()
        yield
        sync()
        times[key] += time.perf_counter() - start

    # Instance attributes shadow the methods SetCriterion.forward calls.
    build_targets, match = criterion.build_targets, criterion.matcher.forward

    def timed_build_targets(*args, **kwargs):
        with timed("matcher_targets"):
            return build_targets(*args, **kwargs)

    def timed_match(*args, **kwargs):
        with timed("matcher"):
            return match(*args, **kwargs)

    criterion.build_targets, criterion.matcher.forward = timed_build_targets, timed_match
    batches = _batches(runner.train_loader)
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    first_step, loop_start = None, time.perf_counter()
    for i in range(warmup + steps):
        if i == 1:
            first_step = time.perf_counter() - loop_start
        if i == warmup:
            times.clear()
            step_start = time.perf_counter()
        with timed("data"):
            images, targets = next(batches)
            images = images.to(device, non_blocking=True)
            targets = [{k: v.to(device) if torch.is_tensor(v) else v for k, v in t.items()}
                       for t in targets]
        with timed("forward"), runner._autocast():
            outputs = model(images)
        with timed("criterion"):
            losses = criterion(outputs, targets, runner.image_size)
        with timed("backward"):
            optimizer.zero_grad(set_to_none=True)
            losses["loss"].backward()
        with timed("optimizer"):
            if cfg.optim.grad_clip > 0:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
            optimizer.step()
    sync()
    wall = (time.perf_counter() - step_start) / steps
    times["loss"] = times.pop("criterion") - times["matcher_targets"]
    per_step = {k: times[k] / steps for k in SEGMENTS}
    per_step["matcher"] = times["matcher"] / steps
    per_step["targets"] = per_step["matcher_targets"] - per_step["matcher"]
    total = sum(per_step[k] for k in SEGMENTS)
    m = cfg.model
    out = {"config": {"backbone": m.backbone, "backbone_stride": m.backbone_stride,
                      "input_size": m.input_size, "heatmap_size": m.heatmap_size,
                      "num_queries": m.num_queries, "d_model": m.d_model,
                      "layers": [m.num_encoder_layers, m.num_decoder_layers],
                      "batch": cfg.train.batch_size,
                      "amp_bf16": cuda and cfg.train.amp, "channels_last": cfg.train.channels_last,
                      "compile": cfg.train.compile},
           "device": torch.cuda.get_device_name(device) if cuda else f"cpu x{torch.get_num_threads()}",
           "steps": steps, "warmup": warmup,
           "s_per_step": {k: round(v, 5) for k, v in per_step.items()},
           "s_per_step_total": round(total, 5), "s_per_step_wall": round(wall, 5),
           "share": {k: round(per_step[k] / total, 4) for k in SEGMENTS},
           "images_per_s": round(cfg.train.batch_size / wall, 2),
           "objects_per_image": round(float(sum(len(t["labels"]) for t in targets)) / len(targets), 2)}
    if cfg.train.compile and first_step is not None:
        out["compile_s"] = round(first_step, 2)  # the first step: compilation + one step
    if cuda:
        out["peak_mem_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 3)
    else:
        out["peak_rss_mib_so_far"] = round(_rss_mb(), 1)
    return out


def replace_train(cfg: TrialConfig, **fields) -> TrialConfig:
    """``cfg`` with some ``train`` fields changed."""
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, **fields))


def paper_run(args, extra: dict | None = None) -> dict:
    """The paper configuration on CUDA (``extra``: overrides, for a dry run of this code on CPU)."""
    # One override dict with the preset: the preset alone (VOC without a root) does not validate.
    paper = trial_config(None, {**PRESETS["paper"], "data.name": "synthetic", "data.num_classes": 8,
                                "model.heatmap_size": 64, "train.device": "cuda",
                                "data.num_train": 16 * (args.steps + args.warmup), **(extra or {})})
    run = bench(paper, args.steps, args.warmup)
    macs = count(paper.detector.model)["macs"]  # forward MACs of one image
    flops = 3 * 2 * macs * paper.train.batch_size  # forward + backward (~2x forward), 2 FLOPs/MAC
    run["macs_per_image_fwd"] = macs
    run["achieved_tflops"] = round(flops / run["s_per_step_wall"] / 1e12, 3)
    run["peak_tflops"] = args.peak_tflops
    run["mfu"] = round(run["achieved_tflops"] / args.peak_tflops, 4)
    return run


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=10, help="timed steps per run")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps before them")
    p.add_argument("--peak-tflops", type=float, default=989.0,
                   help="accelerator peak, TFLOP/s, for MFU (default: H100 SXM bf16 dense)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--compile", action="store_true", help="also time the cpu preset under torch.compile")
    p.add_argument("--share-input", type=int, default=256,
                   help="CPU only: input size of the N=100, S=64 share run")
    p.add_argument("--share-batch", type=int, default=2, help="CPU only: batch of the share run")
    p.add_argument("--share-steps", type=int, default=2, help="CPU only: timed steps of the share run")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    cuda = torch.cuda.is_available()
    result: dict = {"torch": torch.__version__, "python": platform.python_version(),
                    "cuda": torch.cuda.get_device_name() if cuda else None}

    cpu = trial_config("cpu", {"train.device": "cpu", "train.threads": args.threads,
                               "data.num_train": 8 * (args.steps + args.warmup)})
    result["cpu"] = bench(cpu, args.steps, args.warmup)
    result["cpu_contiguous"] = bench(replace_train(cpu, channels_last=False), args.steps, args.warmup)
    if args.compile:
        result["cpu_compile"] = bench(replace_train(cpu, compile=True), args.steps, max(args.warmup, 2))

    if cuda:
        run = paper_run(args)
        result["paper"] = run
        how = "the paper run (512 px, batch 16, bf16, CUDA)"
    else:
        result["paper"] = {"skipped": "CUDA not available"}
        head = trial_config(None, {**PRESETS["paper"], "data.name": "synthetic",
                                   "data.num_classes": 8, "data.augment": False,
                                   "data.num_workers": 0, "model.backbone_stride": 16,
                                   "model.input_size": args.share_input, "model.heatmap_size": 64,
                                   "train.batch_size": args.share_batch, "train.device": "cpu",
                                   "train.threads": args.threads,
                                   "data.num_train": args.share_batch * (args.share_steps + 1)})
        run = bench(head, args.share_steps, 1)
        result["share_run_cpu"] = run
        how = (f"CPU, fp32: paper transformer + head (d=256, 6+6, N=100, S=64 from a 16x16 "
               f"encoder map as at 512 px) on ResNet-50 cut at stride 16, input "
               f"{args.share_input}, batch {args.share_batch}; the cheaper backbone makes this "
               f"share an upper bound for the full model")
    share = round(run["share"]["matcher_targets"] + run["share"]["loss"], 4)
    result["share_n100_s64"] = {"matcher_targets_plus_loss": share, "goal_max": SHARE_GOAL,
                                "ok": share <= SHARE_GOAL, "measured_on": how}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
