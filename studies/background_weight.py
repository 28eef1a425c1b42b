"""Background weight study: w_bg of Eq. 3 and Eq. 4's normaliser (paper: 0.1), log-uniform.

    python studies/background_weight.py --set loss.bg_weight_mode=single
"""
from transcenter.platform.cli import main
from transcenter.platform.search import Float, SearchSpace

SPACE = SearchSpace({"loss.bg_weight": Float(0.01, 1.0, log=True)})

if __name__ == "__main__":
    raise SystemExit(main("background_weight", SPACE, __doc__))
