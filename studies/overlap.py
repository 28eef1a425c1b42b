"""Overlap study: the paper's central claim (Fig. 2), TransCenter vs. a CenterNet-style head.

Both heads (same backbone, transformer encoder and upsampler) × heatmap sizes, on synthetic scenes
where every image holds a nested same-class pair sharing its centre (``data.overlap_fraction=1.0``,
fixed below; ``--set data.overlap_fraction=...`` overrides it). The CPU demo's budget is set in
optimizer steps, not epochs: 400 steps of batch 8 (400 images × 8 epochs), the steps TransCenter
needed to pass the CenterNet cap on nested-object scenes it was not tuned on. Every epoch reports
``overlap_recall``, the recall at IoU 0.5 of objects that share their heatmap cell with a
same-class object, beside AP; the report puts them side by side per head. A CenterNet heatmap
has one peak for such a pair, so its overlap recall is capped near 50 %.

    python studies/overlap.py                      # CPU demo on local Ray: 6 trials
    python studies/overlap.py --preset smoke --epochs 1
"""
from transcenter.platform.cli import main
from transcenter.platform.search import Categorical, SearchSpace

STEPS = 400  # optimizer steps per trial at the preset's batch of 8


def step_budget(steps: int, images: int, batch: int = 8) -> dict:
    """Config fields that train ``steps`` optimizer steps of ``batch`` on ``images`` images."""
    return {"data.num_train": images, "train.batch_size": batch,
            "train.epochs": max(1, round(steps * batch / images))}


SPACE = SearchSpace({"model.head": Categorical(["transcenter", "centernet"]),
                     "model.heatmap_size": Categorical([16, 32, 64])})

if __name__ == "__main__":
    raise SystemExit(main("overlap", SPACE, __doc__, sampler="grid",
                          fixed={"data.overlap_fraction": 1.0},
                          fixed_by_preset={"cpu": step_budget(STEPS, images=400)}))
