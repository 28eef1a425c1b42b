"""Accuracy against compute: the Pareto front of AP against forward GMACs (paper Tables 1 and 4).

Heatmap size × number of queries × head width × backbone depth, with two objectives, AP (max)
and gmacs (min: forward GMACs of one image at the input size, from the configuration).
Multi-objective TPE proposes trials and every trial trains every epoch: on the paper's crossing
curves every early-stopping policy measured lost the front's high-AP end in more seeds than
training to the end (docs/design.md). ``--asha`` stops trials by non-dominated sorting among trials
of the same heatmap size, audited by sentinels (``--stopping asha``: among all trials). The report
draws every trial, the front and the paper's models; ``--constraint "gmacs<=5"`` keeps the search
under a budget.

    python studies/accuracy_vs_compute.py --num-samples 12         # CPU demo on local Ray
    python studies/accuracy_vs_compute.py --preset smoke --epochs 2 --sampler nsga2
"""
from transcenter.platform.cli import main
from transcenter.platform.search import Categorical, SearchSpace

SPACE = SearchSpace({"model.heatmap_size": Categorical([16, 32, 64]),
                     "model.num_queries": Categorical([5, 10, 20]),
                     "model.head_width": Categorical([32, 64, 128]),
                     "model.backbone": Categorical(["resnet18", "resnet34"])})
ASHA = False  # the study's default: no early stopping (--asha turns it on)

if __name__ == "__main__":
    raise SystemExit(main("accuracy_vs_compute", SPACE, __doc__, sampler="tpe", asha=ASHA,
                          objectives=("AP:max", "gmacs:min")))
