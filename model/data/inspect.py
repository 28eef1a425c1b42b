"""Data-set report: images, objects, classes, box sizes and same-cell centres per split.

The paper's question is how many objects a per-class centre heatmap (CenterNet) cannot represent:
two objects of one class whose centres fall in one heatmap cell give a single peak, so one of
them is lost, whereas TransCenter's per-query heatmaps separate them. For each heatmap size S the
report gives the share of objects whose centre shares its cell with another object of its class.

Geometry is validation's: each image is letterboxed to ``input_size``×``input_size``
(``DetectionTransform(input_size, train=False)``), boxes map to network-input pixels by
``input_px = orig_px · (resized_w / W, resized_h / H) + offset``, and the heatmap cell side is
``input_size / S`` input pixels. Box sizes use COCO's area buckets (< 32², < 96², larger) on the
mapped boxes. Objects flagged ``ignore`` (VOC difficult, COCO crowd) are left out of every count
except ``ignored``. Only annotations are read (``dataset.targets()``), never images.

Command line::

    python -m transcenter.model.data.inspect --data voc --data-root DIR [--input-size 512] [--json]
        [--index <study>/data/index.arrow]

``--index`` reads the data index a study driver wrote (:mod:`transcenter.model.data.index`)
instead of parsing the annotation files, when it was built from these files with these options;
otherwise they are parsed and a note on stderr says why.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
from collections.abc import Sequence
from typing import Any

import torch

from transcenter.model.data.transforms import DetectionTransform
from transcenter.model.evaluation.evaluate import same_cell_mask

HEATMAP_SIZES = (16, 32, 64, 128)
SIZE_LIMITS = {"small": 32.0 ** 2, "medium": 96.0 ** 2}  # COCO: area < 32², < 96², else large
# Images are batched into one same_cell_mask call up to this many objects: the call's (K, K)
# comparison grows with K², its fixed cost per call dominates below a few hundred objects.
_CHUNK_OBJECTS = 256


def split_stats(dataset: Any, input_size: int,
                heatmap_sizes: Sequence[int] = HEATMAP_SIZES) -> dict[str, Any]:
    """Counts of one split, measured at the network input (module docstring).

    Args:
        dataset: Object with ``class_names`` (list of str) and ``targets()`` returning contract
            target dicts in original pixels (``boxes`` (K, 4) xyxy, ``labels`` (K,),
            ``ignore`` (K,), ``orig_size`` (2,) = (H, W)).
        input_size: Side of the square network input in pixels.
        heatmap_sizes: Heatmap sides S; the cell side is ``input_size / S`` input pixels.

    Returns:
        A JSON-serialisable dict: ``images``, ``objects`` (not ignored), ``ignored``,
        ``per_class`` {class name: objects, every class}, ``sizes`` {"small", "medium",
        "large": objects}, ``objects_per_image`` {"mean": float, "median": float, "max": int,
        "empty": images without objects} (mean/median None for no images) and ``same_cell``
        {str(S): share in [0, 1] of objects sharing their cell with a same-class object, None when
        there are no objects}; for a loaded data set also its check's counts (:func:`_checks`).

    Raises:
        ValueError: a label outside ``0..len(class_names)-1``.
    """
    if input_size < 1:
        raise ValueError(f"input_size = {input_size}: must be >= 1")
    names = list(dataset.class_names)
    boxes, labels, counts, ignored = _input_boxes(dataset.targets(), input_size)
    if labels.numel() and not 0 <= int(labels.min()) <= int(labels.max()) < len(names):
        bad = labels[(labels < 0) | (labels >= len(names))][0]
        raise ValueError(f"label {int(bad)} outside the {len(names)} classes {names}")
    objects = int(labels.numel())
    per_class = torch.bincount(labels, minlength=len(names)).tolist()  # (C,)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])  # (N,) input px²
    small = int((area < SIZE_LIMITS["small"]).sum())
    medium = int((area < SIZE_LIMITS["medium"]).sum()) - small
    per_image = counts.tolist()
    shares = {}
    for s in heatmap_sizes:
        together = _same_cell(boxes, labels, counts, input_size / s)  # (N,) bool
        shares[str(s)] = float(together.sum()) / objects if objects else None
    return {
        "images": len(per_image),
        "objects": objects,
        "ignored": ignored,
        "per_class": dict(zip(names, per_class)),
        "sizes": {"small": small, "medium": medium, "large": objects - small - medium},
        "objects_per_image": {
            "mean": objects / len(per_image) if per_image else None,
            "median": float(statistics.median(per_image)) if per_image else None,
            "max": max(per_image, default=0),
            "empty": per_image.count(0),
        },
        "same_cell": shares,
        **_checks(getattr(dataset, "summary", None)),
    }


def _checks(summary: Any) -> dict[str, Any]:
    """Returns what the loader's check repaired and left out (its ``LoaderSummary``):
    ``clipped_boxes``, ``clipped_files`` (the first files with one), ``sizes_from_image`` and
    ``skipped`` {reason: count}; empty for a dataset without one (synthetic scenes)."""
    if summary is None:
        return {}
    return {"clipped_boxes": summary.clipped_boxes, "clipped_files": list(summary.clipped_files),
            "sizes_from_image": summary.sizes_from_image, "skipped": dict(summary.skipped)}


def _input_boxes(targets: list[dict[str, Any]], input_size: int) -> tuple[
        torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Kept (not ignored) objects of all images mapped to network-input pixels.

    Returns:
        boxes (N, 4) float64 xyxy input px, labels (N,) int64, objects per image (I,) int64 (the
        objects of image i follow those of image i-1), and the number of ignored objects.
    """
    placement = DetectionTransform(input_size, train=False).placement
    affine: dict[tuple[int, int], list[float]] = {}  # (H, W) -> [sx, sy, sx, sy, ox, oy, ox, oy]
    rows, boxes, labels, ignore, counts = [], [], [], [], []
    for t in targets:  # per image only list appends; the arithmetic runs once on all objects
        size = tuple(t["orig_size"].tolist())  # (H, W)
        if size not in affine:
            where = placement(size)
            sx, sy = where.resized[1] / size[1], where.resized[0] / size[0]
            affine[size] = [sx, sy, sx, sy, *where.offset, *where.offset]
        rows.append(affine[size])
        boxes.append(t["boxes"])
        labels.append(t["labels"])
        ignore.append(t["ignore"])
        counts.append(len(t["labels"]))
    if not rows:
        return torch.zeros(0, 4, dtype=torch.float64), torch.zeros(0, dtype=torch.int64), torch.zeros(
            0, dtype=torch.int64), 0
    counts_t = torch.tensor(counts, dtype=torch.int64)  # (I,)
    keep = ~torch.cat(ignore).bool()  # (N_all,)
    image = torch.repeat_interleave(torch.arange(len(rows)), counts_t)[keep]  # (N,) image index
    per_object = torch.tensor(rows, dtype=torch.float64)[image]  # (N, 8) scale x4, offset x4
    # float64, so that a centre on a cell border falls on the same side in every computation
    mapped = torch.cat(boxes)[keep].double() * per_object[:, :4] + per_object[:, 4:]  # (N, 4) xyxy input px
    kept = torch.bincount(image, minlength=len(rows))  # (I,)
    return mapped, torch.cat(labels)[keep].long(), kept, int((~keep).sum())


def _same_cell(boxes: torch.Tensor, labels: torch.Tensor, counts: torch.Tensor,
               cell_px: float) -> torch.Tensor:
    """(N,) bool: objects sharing their ``cell_px`` cell with a same-class object of their image.

    Consecutive images go through :func:`same_cell_mask` together, each image's objects under
    labels of their own (``image · C + label``) so that objects of different images never match.

    Args:
        boxes: (N, 4) xyxy input px, images in order. labels: (N,). counts: (I,) objects per image.
        cell_px: Cell side in input pixels.
    """
    if labels.numel() == 0:
        return torch.zeros(0, dtype=torch.bool)
    image = torch.repeat_interleave(torch.arange(len(counts)), counts)  # (N,)
    keys = image * (int(labels.max()) + 1) + labels  # (N,) one key per (image, class)
    out, start, end = [], 0, 0
    for k in counts.tolist():
        if end > start and end - start + k > _CHUNK_OBJECTS:
            out.append(same_cell_mask(boxes[start:end], keys[start:end], cell_px))  # (end - start,)
            start = end
        end += k
    if end > start:
        out.append(same_cell_mask(boxes[start:end], keys[start:end], cell_px))
    return torch.cat(out)


def dataset_report(splits: dict[str, Any], input_size: int,
                   heatmap_sizes: Sequence[int] = HEATMAP_SIZES) -> dict[str, Any]:
    """Returns ``{"input_size", "heatmap_sizes": [S, ...], "class_names" (of the first split),
    "splits": {name: split_stats(...)}}``, JSON-serialisable."""
    first = next(iter(splits.values()), None)
    return {
        "input_size": int(input_size),
        "heatmap_sizes": [int(s) for s in heatmap_sizes],
        "class_names": list(first.class_names) if first is not None else [],
        "splits": {name: split_stats(ds, input_size, heatmap_sizes) for name, ds in splits.items()},
    }


def format_report(report: dict[str, Any]) -> str:
    """Plain-text tables of a :func:`dataset_report`: per split, per class, per heatmap size."""
    splits = report["splits"]
    names = list(splits)
    size = report["input_size"]
    overview = [["split", "images", "objects", "ignored", "obj/img", "median", "max", "empty",
                 "small", "medium", "large"]]
    for name, s in splits.items():
        per = s["objects_per_image"]
        overview.append([name, s["images"], s["objects"], s["ignored"], _number(per["mean"], "{:.2f}"),
                         _number(per["median"], "{:g}"), per["max"], per["empty"], *s["sizes"].values()])
    classes = list(report["class_names"])
    for s in splits.values():
        classes += [c for c in s["per_class"] if c not in classes]
    per_class = [["class", *names]] + [[c, *(s["per_class"].get(c, 0) for s in splits.values())]
                                       for c in classes]
    checked = [["split", "clipped boxes", "sizes from image files", "left out"]]
    for name, s in splits.items():
        if "skipped" in s:
            left_out = ", ".join(f"{k}: {v}" for k, v in sorted(s["skipped"].items())) or "none"
            where = f" ({', '.join(s['clipped_files'])})" if s["clipped_files"] else ""
            checked.append([name, f"{s['clipped_boxes']}{where}", s["sizes_from_image"], left_out])
    cells = [["S", "cell px", *names]]
    for hs in report["heatmap_sizes"]:
        cells.append([hs, f"{size / hs:g}", *(_share(s, hs) for s in splits.values())])
    return "\n".join([
        f"Input {size}×{size} px (validation letterbox). Ignored: VOC difficult / COCO crowd objects, "
        "left out of every other count.",
        "",
        "Images and objects (obj/img: mean objects per image; empty: images without objects;",
        f"small/medium/large: COCO box-area buckets < 32², < 96², larger, at the {size} px input)",
        _table(overview),
        "",
        "Objects per class",
        _table(per_class),
        "",
        *(["What the data check repaired and left out (images or objects, by reason)",
           _table(checked), ""] if len(checked) > 1 else []),
        "Objects whose centre shares its heatmap cell with another object of the same class (S×S heatmap)",
        _table(cells),
        "A per-class centre heatmap (CenterNet) holds one peak per cell and class, so at that S it\n"
        "cannot separate these objects; TransCenter's per-query heatmaps can.",
    ])


def _share(stats: dict[str, Any], heatmap_size: int) -> str:
    """``"4.10% (123)"``: the same-cell share of one split at S = ``heatmap_size`` and its object count."""
    share = stats["same_cell"].get(str(heatmap_size))
    return "-" if share is None else f"{share:.2%} ({round(share * stats['objects'])})"


def _number(value: float | None, fmt: str) -> str:
    return "-" if value is None else fmt.format(value)


def _table(rows: list[list[Any]]) -> str:
    """Rows as text columns: the first column left-aligned, the others right-aligned."""
    text = [[str(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in text) for i in range(len(text[0]))]
    return "\n".join("  ".join(v.ljust(w) if i == 0 else v.rjust(w)
                               for i, (v, w) in enumerate(zip(row, widths))) for row in text)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry: print the report of the train and val splits; returns the exit status
    (2 with ``error: ...`` on stderr for a bad configuration or unreadable data)."""
    parser = argparse.ArgumentParser(prog="python -m transcenter.model.data.inspect",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=("synthetic", "voc", "coco"), default="synthetic")
    parser.add_argument("--data-root", metavar="DIR", help="VOC-layout or COCO folder")
    parser.add_argument("--input-size", type=int, default=512, help="network input side in pixels")
    parser.add_argument("--heatmap-sizes", type=int, nargs="+", default=list(HEATMAP_SIZES), metavar="S")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="data.* config override, repeatable (e.g. data.val_splits=2007/test)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--index", metavar="URI",
                        help="a study's data index (<study>/data/index.arrow, a path or URI): read "
                             "instead of parsing the annotation files when it was built from them "
                             "with these options; otherwise they are parsed (a note on stderr "
                             "says why)")
    args = parser.parse_args(argv)
    try:
        # Imported here, so that this module imports without the training package and the loaders.
        from transcenter.model.training.experiment import parse_overrides, trial_config

        if args.input_size < 1 or any(s < 1 for s in args.heatmap_sizes):
            raise ValueError(f"--input-size {args.input_size} and --heatmap-sizes "
                             f"{args.heatmap_sizes} must be >= 1")
        extra = parse_overrides(args.set)
        others = [k for k in extra if not k.startswith("data.")]
        if others:
            raise ValueError(f"--set {others}: only data.* keys describe the data set")
        overrides = {"data.name": args.data, "data.root": args.data_root, **extra}
        config = trial_config(None, overrides)
        from transcenter.model.data.build import open_datasets
        from transcenter.model.data.index import StaleIndexError

        data = dataclasses.replace(config.data, index=args.index) if args.index else config.data
        try:
            train, val = open_datasets(data, args.input_size, check_images=False)
        except StaleIndexError as err:
            print(f"note: {err}; parsing the annotation files instead", file=sys.stderr)
            train, val = open_datasets(dataclasses.replace(data, index=None), args.input_size,
                                       check_images=False)
        report = dataset_report({"train": train, "val": val}, args.input_size, args.heatmap_sizes)
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(report) if args.json else format_report(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
