"""The data-set tables of a study, from the data-set report that ``study.json`` holds as ``dataset``.

They show what the data holds before any GPU hour is spent on it: images and objects per split, how
crowded the images are, and at which heatmap size S same-class objects still share a heatmap cell
(what a per-class centre heatmap cannot separate and TransCenter's per-query heatmaps can). The
report's layout, as the data side writes it::

    {"input_size": 512, "heatmap_sizes": [16, 32, 64, 128], "class_names": [...],
     "splits": {"train": {"images", "objects", "ignored", "per_class": {name: n},
                          "sizes": {"small", "medium", "large"},
                          "objects_per_image": {"mean", "median", "max", "empty"},
                          "same_cell": {"16": share in [0, 1] or null, ...},
                          "clipped_boxes", "clipped_files", "sizes_from_image",
                          "skipped": {reason: n}}, "val": {...}}}

A key missing from a split gives an empty cell, not an error: the tables are for reading.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

SPLITS_NOTE = ("ignored: VOC difficult / COCO crowd objects, left out of every other count; "
               "empty images: without objects; small / medium / large: COCO box-area buckets "
               "(< 32², < 96², larger) at the network input.")
SAME_CELL_NOTE = ("Share (%) of each split's objects whose centre falls in the same heatmap cell "
                  "(input size / S px square) as the centre of another object of the same class: "
                  "a per-class centre heatmap (CenterNet-style) cannot separate these objects at "
                  "that S, TransCenter's per-query heatmaps can.")
SYNTHETIC_SAME_CELL_NOTE = (
    "These are synthetic scenes, which place a share of same-class objects (data.overlap_fraction of "
    "the images hold a nested pair) on one shared centre by design: those pairs share a cell at "
    "every S, however small the cells, so the share does not fall as S grows.")

# splits table column -> (the split's sub-dict or None for the split itself, key)
_SPLIT_COLUMNS = {
    "images": (None, "images"),
    "objects": (None, "objects"),
    "ignored": (None, "ignored"),
    "objects/image mean": ("objects_per_image", "mean"),
    "objects/image median": ("objects_per_image", "median"),
    "objects/image max": ("objects_per_image", "max"),
    "empty images": ("objects_per_image", "empty"),
    "small": ("sizes", "small"),
    "medium": ("sizes", "medium"),
    "large": ("sizes", "large"),
    "clipped boxes": (None, "clipped_boxes"),
    "sizes from image files": (None, "sizes_from_image"),
}
_FRACTIONAL = {"objects/image mean", "objects/image median"}
_CHECK_COLUMNS = ["clipped boxes", "sizes from image files"]  # reports of checked data sets only


@dataclass(frozen=True)
class DataSetTables:
    """The tables of one data-set report.

    Attributes:
        input_size: The network's input side in pixels (None when the report does not say).
        splits: `splits_table`.
        same_cell: `same_cell_table`.
        per_class: `per_class_table`.
        source: The data set's name (``synthetic``, ``voc``, ``coco``; None when the report does not
            say).
    """

    input_size: int | None
    splits: pd.DataFrame
    same_cell: pd.DataFrame
    per_class: pd.DataFrame
    source: str | None = None

    @property
    def same_cell_note(self) -> str:
        """What the same-cell table's numbers owe to the data set itself ("" for real data)."""
        return SYNTHETIC_SAME_CELL_NOTE if self.source == "synthetic" else ""


def tables(dataset: Mapping[str, Any]) -> DataSetTables:
    """Returns every table of a data-set report (``study.json``'s ``dataset``)."""
    return DataSetTables(input_size=dataset.get("input_size"), splits=splits_table(dataset),
                         same_cell=same_cell_table(dataset), per_class=per_class_table(dataset),
                         source=dataset.get("data"))


def splits_table(dataset: Mapping[str, Any]) -> pd.DataFrame:
    """Counts per split.

    Returns:
        Indexed by split (in the report's order): ``images``, ``objects``, ``ignored``,
        ``objects/image mean``, ``median``, ``max``, ``empty images`` (no object) and the
        ``small``, ``medium``, ``large`` object counts, and what the data check repaired and left
        out: ``clipped boxes``, ``sizes from image files`` and ``left out`` ("reason: count, ...").
        Counts are nullable ``Int64`` (so that large ones print whole), mean and median float64; a
        missing entry is NA. The last three only for a report of a checked data set (synthetic
        scenes and reports of earlier versions have none).
    """
    splits = _splits(dataset)
    columns = {}
    for column, (group, key) in _SPLIT_COLUMNS.items():
        values = [(split if group is None else split.get(group) or {}).get(key)
                  for split in splits.values()]
        columns[column] = (np.asarray([np.nan if v is None else v for v in values], dtype="float64")
                           if column in _FRACTIONAL else pd.array(values, dtype="Int64"))
    checked = any("skipped" in split for split in splits.values())
    if checked:
        columns["left out"] = [None if split.get("skipped") is None else
                               ", ".join(f"{k}: {v}" for k, v in sorted(split["skipped"].items()))
                               or "none" for split in splits.values()]
    table = pd.DataFrame(columns, index=pd.Index(list(splits), name="split"))
    return table if checked else table.drop(columns=_CHECK_COLUMNS)


def same_cell_table(dataset: Mapping[str, Any]) -> pd.DataFrame:
    """Same-class objects sharing a heatmap cell, per heatmap size S and split.

    Returns:
        Indexed by S (ascending; ``heatmap_sizes``, else the sizes the splits report): ``cell px``
        (input size / S; NaN without ``input_size``) and ``<split> same cell (%)``, the share of
        the split's objects (percent, 0-100; NaN where the report gives null).
    """
    splits = _splits(dataset)
    sizes = dataset.get("heatmap_sizes") or {
        int(s) for split in splits.values() for s in (split.get("same_cell") or {})}
    sizes = sorted(int(s) for s in sizes)
    input_size = dataset.get("input_size")
    table = pd.DataFrame(index=pd.Index(sizes, name="S"))
    table["cell px"] = [input_size / s if input_size else np.nan for s in sizes]
    for name, split in splits.items():
        shares = {int(s): v for s, v in (split.get("same_cell") or {}).items()}
        table[f"{name} same cell (%)"] = np.asarray(
            [np.nan if shares.get(s) is None else 100.0 * shares[s] for s in sizes], dtype="float64")
    return table


def per_class_table(dataset: Mapping[str, Any]) -> pd.DataFrame:
    """Objects per class and split.

    Returns:
        Indexed by class name (``class_names`` order, then any other class a split counts), one
        nullable ``Int64`` column per split (0 where the split has none of that class).
    """
    splits = _splits(dataset)
    names = list(dataset.get("class_names") or [])
    for split in splits.values():
        names += [n for n in (split.get("per_class") or {}) if n not in names]
    table = pd.DataFrame(index=pd.Index(names, name="class", dtype="object"))
    for split_name, split in splits.items():
        counts = split.get("per_class") or {}
        table[split_name] = pd.array([counts.get(n, 0) for n in names], dtype="Int64")
    return table


def _splits(dataset: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return {str(name): split or {} for name, split in (dataset.get("splits") or {}).items()}
