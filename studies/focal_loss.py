"""Focal loss study: the Gaussian focal loss exponents α and β (paper Eq. 4; paper: 2 and 4).

    python studies/focal_loss.py --num-samples 12
"""
from transcenter.platform.cli import main
from transcenter.platform.search import Float, SearchSpace

SPACE = SearchSpace({"loss.alpha": Float(0.5, 4.0), "loss.beta": Float(1.0, 8.0)})

if __name__ == "__main__":
    raise SystemExit(main("focal_loss", SPACE, __doc__))
