"""Heatmap size study: S in {16, 32, 64, 128}, everything else the same.

Reproduces the paper's Fig. 6 (lower limit: AP50 in the first epochs, smaller heatmaps learn
faster) and Table 4 (upper limit: best AP per heatmap size). A grid, swept by Optuna's
GridSampler so the trials land in the Optuna study like any other.

    python studies/heatmap_size.py                      # CPU demo on local Ray, synthetic data
    ray job submit --working-dir . -- python studies/heatmap_size.py --preset smoke
"""
from transcenter.platform.cli import main
from transcenter.platform.search import Categorical, SearchSpace

SPACE = SearchSpace({"model.heatmap_size": Categorical([16, 32, 64, 128])})

if __name__ == "__main__":
    raise SystemExit(main("heatmap_size", SPACE, __doc__, sampler="grid"))
