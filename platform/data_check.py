"""The study driver's check of the data set, once, before Ray or any trial starts.

Opens the data set the trials will train on with its annotations only (layout, splits, class
list, every annotation file), probes a sample of its image files, and measures the data-set
report (``python -m transcenter.model.data.inspect``) that the study stores with its results.
A bad ``--data-root`` is refused in seconds with the loader's own one-line error instead of
failing every trial inside its worker.

For VOC and COCO it also leaves the data index (:mod:`transcenter.model.data.index`) where the
study keeps it, and every trial opens that instead of parsing the annotation files again. A
resumed study reuses its index when the annotation files and options still match it, and
rebuilds it otherwise.

The data stack (the loaders, and torch with them) is imported when a data set is opened, not with
this module: a driver that opens none (a simulated study, a resumed synthetic one) never loads it.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from transcenter.model.data.config import DataConfig
from transcenter.model.training.experiment import TrialConfig
from transcenter.platform.errors import StudyError

logger = logging.getLogger(__name__)

SAMPLE_IMAGES = 32  # image files probed per split
NAMED_PROBLEMS = 3  # sampled images that cannot be used, named one per line


@dataclass(frozen=True)
class DataCheck:
    """What the driver learnt from the data set.

    Attributes:
        class_names: Class index -> name, as every trial will see them.
        report: The data-set report (:func:`~transcenter.model.data.inspect.dataset_report`).
        index: The data index every trial opens (path or URI); None for synthetic data.
        summary: The check in a line (source, images per split, classes, seconds); "" when the
            data set was not opened.
    """

    class_names: list[str]
    report: dict[str, Any]
    index: str | None = None
    summary: str = ""

    @property
    def trial_overrides(self) -> dict[str, Any]:
        """Config fields every trial gets so that none re-derives the classes differently or parses
        the data set again: ``data.class_names`` and ``data.index`` (VOC, COCO; synthetic scenes
        have fixed names and no files, and simulated trials read no data)."""
        if self.report.get("data") in ("synthetic", "simulated"):
            return {}
        return {"data.class_names": self.class_names,
                **({"data.index": self.index} if self.index else {})}


def check_data(config: TrialConfig, index_uri: str | None = None) -> DataCheck:
    """Opens and checks the data set of ``config`` (a trial's configuration before the searched
    fields are applied) and, for VOC/COCO with ``index_uri``, leaves its data index there: the
    one already there when it matches the annotation files and options, else a new one.

    Raises:
        StudyError: ``data: <the loader's message>``, naming the file, field and value.
    """
    from transcenter.model.data.inspect import dataset_report

    start = time.perf_counter()
    size = config.model.input_size
    index = index_uri if config.data.name != "synthetic" else None
    try:
        train, val = _open(config.data, size, index)
        for split, dataset in (("train", train), ("val", val)):
            problems = dataset.probe_sample(SAMPLE_IMAGES) if hasattr(dataset, "probe_sample") else []
            for path, problem in problems[:NAMED_PROBLEMS]:
                logger.warning("data: %s: %s (%s split; the trials skip it)", path,
                               problem.replace("_", " "), split)
            if len(problems) > NAMED_PROBLEMS:
                logger.warning("data: %d more sampled %s images cannot be used",
                               len(problems) - NAMED_PROBLEMS, split)
        config.with_class_names(train.class_names)
    except (OSError, ValueError) as e:
        raise StudyError(f"data: {e}") from e
    report = {"data": config.data.name, **dataset_report({"train": train, "val": val}, size)}
    summary = (f"{config.data.name}, {len(train)} train and {len(val)} val images, "
               f"{len(train.class_names)} classes, checked in {time.perf_counter() - start:.1f} s")
    return DataCheck(list(train.class_names), report, index, summary)


def _open(data: DataConfig, size: int, index: str | None) -> tuple[Any, Any]:
    """Returns (train, val): from the data index at ``index`` when it matches ``data``, else
    parsed (annotations only) and, with ``index``, written there."""
    from transcenter.model.data.build import data_fingerprint, open_datasets
    from transcenter.model.data.index import MissingIndexError, StaleIndexError, open_index, write_index

    if index is None:
        return open_datasets(data, size, check_images=False)
    fingerprint = data_fingerprint(data)
    try:
        train, val = open_index(index, fingerprint)
        logger.info("data: the data index %s matches the annotation files: reused", index)
        return train, val
    except MissingIndexError:
        logger.info("data: writing the data index %s", index)
    except StaleIndexError as e:
        logger.warning("data: rebuilding the data index: %s", e)
    train, val = open_datasets(data, size, check_images=False)
    write_index(train, val, fingerprint, index)
    return train, val
