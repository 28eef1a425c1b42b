"""Hungarian matcher study: the class, L1 and GIoU cost weights (paper §3.4; DETR's 1, 5, 2).

    python studies/matcher_costs.py --num-samples 16
"""
from transcenter.platform.cli import main
from transcenter.platform.search import Float, SearchSpace

SPACE = SearchSpace({"matcher.cost_class": Float(0.5, 4.0), "matcher.cost_l1": Float(1.0, 10.0),
                     "matcher.cost_giou": Float(0.5, 5.0)})

if __name__ == "__main__":
    raise SystemExit(main("matcher_costs", SPACE, __doc__))
