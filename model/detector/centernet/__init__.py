"""The CenterNet-style baseline head (Zhou et al. 2019, "Objects as Points") on TransCenter's trunk:
its network (:mod:`.model`), per-class targets (:mod:`.targets`), losses (:mod:`.criterion`) and
peak decoding (:mod:`.postprocess`), registered as ``model.head = "centernet"`` in
:mod:`transcenter.model.detector.registry`. Import rule: as the rest of the detector, nothing here
imports training or evaluation, and TransCenter's own modules never import this package.
"""
