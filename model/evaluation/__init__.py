"""Measuring detectors: COCO AP and recall of same-cell objects (:mod:`.evaluate`), and the paper's
Table 1 parameter and MAC counts (``python -m transcenter.model.evaluation.complexity --json``).
Import rule: may import the detector and the data, never :mod:`transcenter.model.training`; the
detector never imports this package.
"""
