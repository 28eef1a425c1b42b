"""The detector: configuration, network (backbone, transformer, heads), box codec, Gaussian targets,
Hungarian matcher, losses, criterion and postprocessing, for the paper's TransCenter head and the
CenterNet baseline (:mod:`transcenter.model.detector.centernet`); :mod:`.registry` maps
``model.head`` to each head's model, criterion and postprocess. Import rule: nothing here imports
:mod:`transcenter.model.training` or :mod:`transcenter.model.evaluation` (only the pure helpers of
:mod:`transcenter.model.data` and :mod:`transcenter.store.metric_names`), and this ``__init__``
imports nothing, so ``detector.config`` stays free of torch.
"""
