"""The study driver's check of the data set, once, before Ray or any trial starts.

Opens the data set the trials will train on with its annotations only (layout, splits, class
list, every annotation file), probes a sample of its image files, and measures the data-set
report (``python -m transcenter.model.data.inspect``) that the study stores with its results.
A bad ``--data-root`` is refused in seconds with the loader's own one-line error instead of
failing every trial inside its worker.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from transcenter.model.data.build import open_datasets
from transcenter.model.data.inspect import dataset_report
from transcenter.model.training.experiment import TrialConfig
from transcenter.platform.errors import StudyError

logger = logging.getLogger(__name__)

SAMPLE_IMAGES = 32  # image files probed per split


@dataclass(frozen=True)
class DataCheck:
    """What the driver learnt from the data set.

    Attributes:
        class_names: Class index -> name, as every trial will see them.
        report: The data-set report (:func:`~transcenter.model.data.inspect.dataset_report`).
    """

    class_names: list[str]
    report: dict[str, Any]

    @property
    def trial_overrides(self) -> dict[str, Any]:
        """Config fields every trial gets so that none re-derives the classes differently:
        ``data.class_names`` (VOC, COCO; synthetic scenes have fixed names)."""
        return {} if self.report.get("data") == "synthetic" else {"data.class_names": self.class_names}


def check_data(config: TrialConfig) -> DataCheck:
    """Opens and checks the data set of ``config`` (a trial's configuration before the searched
    fields are applied).

    Raises:
        StudyError: ``data: <the loader's message>``, naming the file, field and value.
    """
    start = time.perf_counter()
    size = config.model.input_size
    try:
        train, val = open_datasets(config.data, size, check_images=False)
        for split, dataset in (("train", train), ("val", val)):
            problems = dataset.probe_sample(SAMPLE_IMAGES) if hasattr(dataset, "probe_sample") else {}
            if problems:
                logger.warning("data: %s split: sampled images with problems (the trials skip "
                               "them): %s", split, problems)
        config.with_class_names(train.class_names)
    except (OSError, ValueError) as e:
        raise StudyError(f"data: {e}") from e
    report = {"data": config.data.name, **dataset_report({"train": train, "val": val}, size)}
    logger.info("data: %s, %d train and %d val images, %d classes, checked in %.1f s",
                config.data.name, len(train), len(val), len(train.class_names),
                time.perf_counter() - start)
    return DataCheck(list(train.class_names), report)
