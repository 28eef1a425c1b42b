"""Train one trial from the command line, without Ray.

    python -m transcenter.model.training.train --preset cpu --set model.heatmap_size=32 --epochs 5 \\
        --output runs/s32

Config precedence: defaults < ``--preset`` < ``--config`` YAML < ``--set`` < ``--epochs``. Each epoch's
metrics are printed as one JSON line and appended to ``<output>/metrics.jsonl``; the checkpoint
``<output>/checkpoint.pt`` is rewritten atomically after every epoch and ``--resume`` continues it.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from transcenter.model.training.checkpoint import load_checkpoint, save_checkpoint
from transcenter.model.training.engine import TrialRunner, configure_process
from transcenter.model.training.experiment import PRESETS, load_yaml, parse_overrides, trial_config


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m transcenter.model.training.train",
                                description="Train one TransCenter trial (no Ray).")
    p.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    p.add_argument("--config", help="YAML file of (dotted or nested) config overrides")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one field, e.g. --set loss.alpha=3 (repeatable)")
    p.add_argument("--epochs", type=int, help="shorthand for --set train.epochs=N")
    p.add_argument("--output", default="runs/trial", help="folder for checkpoint and metrics")
    p.add_argument("--resume", action="store_true", help="continue from <output>/checkpoint.pt")
    args = p.parse_args(argv)

    try:
        overrides = load_yaml(args.config) if args.config else {}
        overrides.update(parse_overrides(args.set))
        if args.epochs is not None:
            overrides["train.epochs"] = args.epochs
        cfg = trial_config(args.preset, overrides)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = Path(args.output)
    ckpt = out / "checkpoint.pt"
    if ckpt.exists() and not args.resume:
        print(f"error: {ckpt} exists; pass --resume to continue it or choose another --output",
              file=sys.stderr)
        return 2
    configure_process(cfg)
    runner = TrialRunner(cfg, progress=True)
    if args.resume and ckpt.exists():
        runner.load_state_dict(load_checkpoint(ckpt))
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "metrics.jsonl", "a") as log:
        while runner.epoch < cfg.train.epochs:
            metrics = runner.run_epoch()
            save_checkpoint(runner.state_dict(), ckpt)
            line = json.dumps(metrics)
            print(line, flush=True)
            log.write(line + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
