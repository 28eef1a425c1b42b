"""Training one trial without Ray: the trial configuration and presets (:mod:`.experiment`, light:
no torch, imported by the study driver for validation), datasets by name (:mod:`.datasets`), the
epoch loop (:mod:`.engine`), checkpoints (:mod:`.checkpoint`) and the command line
(``python -m transcenter.model.training.train``). Import rule: may import the detector, the data,
the evaluation and :mod:`transcenter.store.metric_names`; the detector never imports this package.
"""
