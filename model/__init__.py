"""TransCenter detector in pure PyTorch (no Ray), in three jobs plus what they share.

    transcenter.model.detector      the network, box codec, matcher, losses, criterion, postprocess;
                                    ``registry`` builds each head's model and criterion and decodes
                                    its outputs (``build_model``, ``build_criterion``, ``postprocess``)
    transcenter.model.training      trial configuration and presets, the training loop
                                    (``engine.TrialRunner``), checkpoints, the ``train`` CLI
    transcenter.model.evaluation    COCO AP and overlap recall, Table 1 parameter/MAC counts
    transcenter.model.data          synthetic scenes, VOC and COCO loaders, transforms
    transcenter.store.metric_names  names of the metrics an epoch reports (no torch)

The package re-exports nothing, so ``import transcenter.model`` loads no torch: a process that only
reads configs (a study's trial driver, the Ray Train controller) never pays torchvision's import
(seconds per process on a small machine).
"""
