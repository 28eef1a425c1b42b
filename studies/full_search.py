"""Full search: heatmap size, focal loss, background weight, matcher costs and learning rate
together, with Optuna TPE and audited ASHA early stopping on AP50 (rungs compare trials of the
same heatmap size, sentinel trials audit each rung; README "Early stopping, and when to trust it").

    python studies/full_search.py --num-samples 32 --epochs 8
"""
from transcenter.platform.cli import main
from transcenter.platform.search import Categorical, Float, SearchSpace

SPACE = SearchSpace({
    "model.heatmap_size": Categorical([16, 32, 64, 128]),
    "loss.alpha": Float(0.5, 4.0),
    "loss.beta": Float(1.0, 8.0),
    "loss.bg_weight": Float(0.01, 1.0, log=True),
    "matcher.cost_class": Float(0.5, 4.0),
    "matcher.cost_l1": Float(1.0, 10.0),
    "matcher.cost_giou": Float(0.5, 5.0),
    "optim.lr": Float(5e-5, 1e-3, log=True),
})
ASHA = True  # the study's default: audited early stopping (--no-asha turns it off)

if __name__ == "__main__":
    raise SystemExit(main("full_search", SPACE, __doc__, asha=ASHA))
