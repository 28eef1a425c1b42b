"""What the detection datasets share: the target contract, bad-input policy, image reading, collate.

Target contract (every dataset, before and after transforms)::

    image   float32 (3, H, W) in [0, 1]
    target  {"boxes":     float32 (K, 4) xyxy, input pixels,
             "labels":    int64 (K,) in 0..C-1,
             "ignore":    bool (K,)  True = VOC difficult / COCO iscrowd,
             "iscrowd":   the same tensor as "ignore" (COCO's name for it),
             "image_id":  int,
             "orig_size": int64 (2,) = (H, W) of the original image}

Bad-input policy, shared by the VOC and COCO loaders:

* Problems with what the annotations *claim* (missing annotation or split file, empty split,
  malformed XML/JSON, unknown class name or category id unless ``unknown_classes="skip"``, a
  missing field, a duplicate image id in COCO's ``images``) raise an exception naming the file,
  field and value: a wrong dataset definition must not train silently.
* Problems with individual images or boxes are repaired or skipped, counted in
  ``dataset.summary`` (a :class:`LoaderSummary`) and logged: a missing, unreadable, truncated or
  unsupported image (``missing_image``, ``corrupt_image``: checked cheaply at construction from the
  file's signature, header and JPEG end marker) drops the image, as does an annotated size that
  disagrees with the image's header (``size_mismatch``); an annotation without a size takes the
  image's (``size_from_image``, a repair); a box reaching outside the image is clipped
  (``clipped_boxes``, naming the first annotation files); a box wholly outside the image
  (``outside_image``) or of zero area as written (``zero_area_box``) is dropped, the message naming
  its annotation file and giving the box as written there; an image
  listed twice is kept once (``duplicate_image``); an object of an unknown class is dropped when
  the user asked for it (``unknown_class``).
* At load time, an image that cannot be read or decoded although it passed the construction check,
  or whose decoded size disagrees with the annotation's, raises :class:`ImageError` (a
  ``ValueError`` naming the file and carrying the reason) in the parsed datasets; the index-backed
  dataset (:mod:`transcenter.model.data.index`), whose images nobody probed, counts and logs it as
  a skip and returns the next readable image instead.
"""

from __future__ import annotations

import copy
import logging
import random
import re
import warnings
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

logger = logging.getLogger(__name__)

Target = dict[str, Any]
Transform = Callable[[torch.Tensor, Target], tuple[torch.Tensor, Target]]

_JPEG_START, _JPEG_END = b"\xff\xd8", b"\xff\xd9"
_PNG_START = b"\x89PNG\r\n\x1a\n"
# Image files the loaders read (what torchvision's decode_image decodes), by extension.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")


def make_target(
    boxes: torch.Tensor,
    labels: torch.Tensor,
    image_id: int,
    orig_size: tuple[int, int],
    ignore: torch.Tensor | None = None,
) -> Target:
    """Build a target dict with the contract's dtypes.

    Args:
        boxes: (K, 4) xyxy boxes in input pixels.
        labels: (K,) class indices in 0..C-1.
        image_id: Integer id of the image.
        orig_size: (H, W) of the original image in pixels.
        ignore: (K,) bool, True for difficult/crowd objects; all False when None.

    Returns:
        The target dict described in the module docstring; ``iscrowd`` and ``ignore`` are one tensor.
    """
    boxes = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)  # (K, 4) xyxy px
    labels = torch.as_tensor(labels, dtype=torch.int64).reshape(-1)  # (K,)
    if ignore is None:
        ignore = torch.zeros(labels.shape, dtype=torch.bool)
    ignore = torch.as_tensor(ignore, dtype=torch.bool).reshape(-1)  # (K,)
    if not boxes.shape[0] == labels.shape[0] == ignore.shape[0]:
        raise ValueError(f"boxes {tuple(boxes.shape)}, labels {tuple(labels.shape)} and ignore "
                         f"{tuple(ignore.shape)} disagree on the number of objects")
    return {
        "boxes": boxes,
        "labels": labels,
        "ignore": ignore,
        "iscrowd": ignore,
        "image_id": int(image_id),
        "orig_size": torch.tensor(orig_size, dtype=torch.int64),
    }


def drop_ignored(targets: list[Target]) -> list[dict[str, torch.Tensor]]:
    """Returns per target ``{"boxes" (K', 4), "labels" (K',)}`` without the objects marked ``ignore``
    (VOC difficult, COCO crowd), which are never trained on."""
    out = []
    for t in targets:
        keep = ~t["ignore"] if "ignore" in t else slice(None)
        out.append({"boxes": t["boxes"][keep], "labels": t["labels"][keep]})
    return out


def collate(batch: list[tuple[torch.Tensor, Target]]) -> tuple[torch.Tensor, list[Target]]:
    """Stack same-size images and keep targets as a list.

    Returns:
        images: (B, 3, H, W) float tensor; targets: list of B target dicts.
    """
    images, targets = zip(*batch)
    return torch.stack(images), list(targets)


CLIPPED_FILES_SHOWN = 5  # annotation files named for clipped boxes


@dataclass
class LoaderSummary:
    """What a loader kept, repaired and skipped.

    Attributes:
        images: Images kept.
        objects: Objects kept (ignored ones included).
        per_class: Class name -> objects kept.
        clipped_boxes: Boxes that reached outside their image and were clipped to it.
        clipped_files: The first annotation files (up to ``CLIPPED_FILES_SHOWN``) with such a box.
        sizes_from_image: Images whose annotation gave no size, sized from their file's header.
        skipped: Reason -> count of images or objects left out (``missing_image``,
            ``corrupt_image``, ``outside_image``, ``zero_area_box``, ``difficult``).
    """

    images: int = 0
    objects: int = 0
    per_class: dict[str, int] = field(default_factory=dict)
    clipped_boxes: int = 0
    clipped_files: list[str] = field(default_factory=list)
    sizes_from_image: int = 0
    skipped: dict[str, int] = field(default_factory=dict)

    def skip(self, reason: str, detail: str, count: int = 1, level: int = logging.WARNING) -> None:
        """Count ``count`` items left out for ``reason`` and log where, at ``level``."""
        self.skipped[reason] = self.skipped.get(reason, 0) + count
        logger.log(level, "skipped %d (%s): %s", count, reason, detail)

    def add_image(self, labels: torch.Tensor, class_names: list[str]) -> None:
        """Count one kept image and its objects (``labels``: (K,) int64)."""
        self.images += 1
        self.objects += int(labels.numel())
        for label, n in Counter(labels.tolist()).items():
            name = class_names[label]
            self.per_class[name] = self.per_class.get(name, 0) + n

    def __str__(self) -> str:
        classes = ", ".join(f"{k}: {v}" for k, v in sorted(self.per_class.items()))
        skipped = ", ".join(f"{k}: {v}" for k, v in sorted(self.skipped.items())) or "none"
        more = ", ..." if self.clipped_boxes > len(self.clipped_files) else ""
        where = f" (in {', '.join(self.clipped_files)}{more})" if self.clipped_files else ""
        return (f"{self.images} images, {self.objects} objects ({classes}); "
                f"clipped boxes: {self.clipped_boxes}{where}; sizes from image files: "
                f"{self.sizes_from_image}; skipped: {skipped}")


def clip_and_drop(
    boxes: torch.Tensor, keep: torch.Tensor, size: tuple[int, int], summary: LoaderSummary, source: str,
    written: Callable[[list[float]], str] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Clip boxes to the image and mark for dropping those outside it or of zero area, counting each.

    Args:
        boxes: (K, 4) xyxy boxes in image pixels.
        keep: (K,) bool, objects still kept before this check.
        size: (H, W) of the image.
        summary: Receives ``clipped_boxes`` (and the first files with one), ``outside_image`` and
            ``zero_area_box`` counts.
        source: The annotation file (and entry) the boxes come from, for the messages.
        written: Turns one (4,) xyxy box back into its annotation's own words (VOC ``<bndbox>``,
            COCO ``bbox``), for the messages; the xyxy pixels when None.

    Returns:
        The clipped (K, 4) boxes and the updated (K,) keep mask.
    """
    height, width = size
    say = written or (lambda box: f"xyxy {[round(v, 2) for v in box]}")
    limits = torch.tensor([width, height, width, height], dtype=boxes.dtype)
    clipped = torch.minimum(boxes.clamp(min=0), limits)  # (K, 4) xyxy px
    moved = (clipped != boxes).any(dim=1) & keep  # (K,)
    positive = (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])  # (K,)
    outside = keep & ((boxes[:, 0] >= width) | (boxes[:, 1] >= height)
                      | (boxes[:, 2] <= 0) | (boxes[:, 3] <= 0))  # (K,)
    for reason, which, what in (
            ("outside_image", outside, f"outside the (H, W) = {tuple(size)} image"),
            ("zero_area_box", keep & ~positive & ~outside, "of zero area")):
        if which.any():
            summary.skip(reason, f"{source}: {int(which.sum())} box(es) {what}: "
                                 f"{'; '.join(say(b) for b in boxes[which].tolist())}", int(which.sum()))
    moved &= positive
    if moved.any():
        summary.clipped_boxes += int(moved.sum())
        if len(summary.clipped_files) < CLIPPED_FILES_SHOWN and source not in summary.clipped_files:
            summary.clipped_files.append(source)
        logger.debug("%s: clipped %s to %s", source, boxes[moved].tolist(), clipped[moved].tolist())
    return clipped, keep & positive


def probe_image(path: Path) -> tuple[str | None, tuple[int, int] | None]:
    """Cheap construction-time check of an image file: signature, header, JPEG end marker; the
    pixels are not decoded.

    Returns:
        ``(problem, size)``: problem is ``"missing_image"``, ``"corrupt_image"`` (empty, unknown
        signature or header, a JPEG without its end-of-image marker, i.e. truncated) or None;
        size is the header's (H, W) in pixels, None when there is a problem.
    """
    if not path.is_file():
        return "missing_image", None
    with path.open("rb") as f:
        head = f.read(12)
        if head.startswith(_JPEG_START):
            f.seek(max(path.stat().st_size - 32, 0))
            # A few encoders append padding after the marker, hence a short search, not an exact tail.
            if _JPEG_END not in f.read():
                return "corrupt_image", None
        elif not (head.startswith(_PNG_START) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")):
            return "corrupt_image", None
    try:
        with Image.open(path) as image:
            width, height = image.size
    except (UnidentifiedImageError, OSError, SyntaxError):
        return "corrupt_image", None
    return None, (height, width)


@contextmanager
def _torchvision_io() -> Iterator[None]:
    # torchvision 0.29 deprecates its io module in favour of torchcodec; the calls remain correct.
    # read_image and write_image import it when called: the study driver, which opens data sets
    # to check them, reads no image and so never loads torchvision.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


class ImageError(ValueError):
    """An image file that cannot be used at load time; the message names the file.

    Attributes:
        reason: ``missing_image``, ``corrupt_image`` (unreadable, undecodable or truncated) or
            ``size_mismatch`` (decoded size differs from the annotation's), as
            :class:`LoaderSummary` counts them.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


_SOURCE_LOCATION = re.compile(r"^\w+, \S+\.(?:cpp|cc|h):\d+, ")  # "decode_jpeg, /x/decode_jpeg.cpp:171, "


def _decoder_message(error: Exception) -> str:
    """Returns torchvision's decoder error as a person reads it: its first line, without the C++
    function and source location it starts with (``decode_jpeg, <file>.cpp:171, ``)."""
    return _SOURCE_LOCATION.sub("", str(error).split("\n", 1)[0]).strip()


def read_image(path: Path, expected_size: tuple[int, int] | None = None) -> torch.Tensor:
    """Decode an image file to float32 (3, H, W) RGB in [0, 1].

    Raises:
        ImageError: naming the file when it is missing or cannot be decoded, or its (H, W)
            differs from ``expected_size``.
    """
    from torchvision.io import ImageReadMode, decode_image, read_file

    with _torchvision_io():
        try:
            image = decode_image(read_file(str(path)), mode=ImageReadMode.RGB)  # (3, H, W) uint8
        except RuntimeError as err:
            reason = "corrupt_image" if path.is_file() else "missing_image"
            raise ImageError(reason, f"{path}: cannot decode image ({_decoder_message(err)})") from err
    if expected_size is not None and tuple(image.shape[1:]) != tuple(expected_size):
        raise ImageError("size_mismatch", f"{path}: decoded size (H, W) = {tuple(image.shape[1:])} "
                                          f"but the annotation says {tuple(expected_size)}")
    return image.float().div_(255.0)


def write_image(image: torch.Tensor, path: Path, quality: int = 95) -> None:
    """Encode a float (3, H, W) image in [0, 1] as a JPEG or, for a ``.png`` path, a PNG file."""
    from torchvision.io import encode_jpeg, encode_png, write_file

    pixels = (image * 255).round_().to(torch.uint8)  # (3, H, W)
    with _torchvision_io():
        data = encode_png(pixels) if path.suffix.lower() == ".png" else encode_jpeg(pixels, quality=quality)
        write_file(str(path), data)


@dataclass(frozen=True)
class ImageRecord:
    """One image's annotations in original pixels, as parsed by a loader.

    Attributes:
        image_id: Integer id reported in the target.
        path: Image file.
        size: (H, W) of the image in pixels, from the annotation (else the file's header).
        boxes: (K, 4) float32 xyxy boxes in original pixels.
        labels: (K,) int64 class indices.
        ignore: (K,) bool difficult/crowd flags.
    """

    image_id: int
    path: Path
    size: tuple[int, int]
    boxes: torch.Tensor
    labels: torch.Tensor
    ignore: torch.Tensor


class ImageFileDataset(Dataset, ABC):
    """A detection dataset over image files: a subclass says where image ``index`` is
    (:meth:`image_file`) and what it holds (:meth:`annotations`); this class reads, decodes and
    transforms it.

    Args:
        class_names: Class index -> name.
        transforms: Callable ``(image, target) -> (image, target)``.
        summary: What the loader kept, repaired and skipped; an empty one when None.

    Attributes:
        class_names: Class index -> name.
        num_classes: ``len(class_names)``.
        summary: :class:`LoaderSummary` of what was kept, repaired and skipped.
    """

    def __init__(self, class_names: list[str], transforms: Transform | None = None,
                 summary: LoaderSummary | None = None) -> None:
        self.class_names = list(class_names)
        self.num_classes = len(self.class_names)
        self.transforms = transforms
        self.summary = LoaderSummary() if summary is None else summary

    @abstractmethod
    def __len__(self) -> int:
        """Number of images."""

    @abstractmethod
    def image_file(self, index: int) -> tuple[Path, tuple[int, int]]:
        """Returns image ``index``'s file and its annotated (H, W) in pixels."""

    @abstractmethod
    def annotations(self, index: int) -> Target:
        """Target of image ``index`` in original pixels, without reading the image."""

    def targets(self) -> list[Target]:
        """All targets in original pixels, without reading any image."""
        return [self.annotations(i) for i in range(len(self))]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, Target]:
        """Returns image ``index`` (float32 (3, H, W) in [0, 1]) and its target, transformed.

        Raises:
            ImageError: the image file is missing, undecodable or of another size than annotated.
        """
        image = read_image(*self.image_file(index))  # (3, H, W) [0, 1]
        target = self.annotations(index)
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target

    def probe_sample(self, count: int = 32) -> list[tuple[str, str]]:
        """Probes ``count`` evenly spaced images' files (:func:`probe_image`, annotated size
        included) without decoding them: the quick check of a data set whose images were not
        probed when it was opened.

        Returns:
            ``(image file, problem)`` for each sampled image that cannot be used (problem:
            ``missing_image``, ``corrupt_image`` or ``size_mismatch``), in the data set's order;
            [] when every sampled image is whole.

        Raises:
            ValueError: no sampled image is usable, naming the first one and its problem (a
                wrong image folder or extension, typically).
        """
        sample = range(0, len(self), max(1, len(self) // count))[:count]
        problems = []
        for index in sample:
            path, annotated = self.image_file(index)
            problem, size = probe_image(path)
            problem = problem or (None if size == annotated else "size_mismatch")
            if problem:
                problems.append((str(path), problem))
        if problems and len(problems) == len(sample):
            path, problem = problems[0]
            raise ValueError(f"none of {len(sample)} sampled images is usable, e.g. {path}: "
                             f"{problem}")
        return problems


class AnnotatedImageDataset(ImageFileDataset):
    """A detection dataset over parsed :class:`ImageRecord`\\ s; loaders only parse.

    Subclasses call :meth:`add_record` while parsing; it applies the shared bad-input policy
    (module docstring) and fills ``summary``.

    Args:
        class_names: Class index -> name.
        transforms: Callable ``(image, target) -> (image, target)``.
        check_images: Probe every image file at construction (:func:`probe_image`: signature,
            header size, JPEG end marker) and skip the bad ones. False trusts the annotations and
            reads only the headers of images whose annotation has no size (fast enough to open
            a large data set's index in a study driver).

    Attributes:
        records: The kept images, in order.
    """

    def __init__(self, class_names: list[str], transforms: Transform | None = None,
                 check_images: bool = True) -> None:
        super().__init__(class_names, transforms)
        self.check_images = check_images
        self.records: list[ImageRecord] = []

    def add_record(self, path: Path, size: tuple[int, int] | None, boxes: torch.Tensor,
                   labels: torch.Tensor, ignore: torch.Tensor, keep: torch.Tensor,
                   image_id: int | None = None, annotation: str | None = None,
                   written: Callable[[list[float]], str] | None = None) -> bool:
        """Check one parsed image and keep it unless its file is missing, corrupt, or of another
        size than the annotation says.

        Args:
            path: Image file.
            size: (H, W) in pixels from the annotation; None takes the file header's.
            boxes: (K, 4) xyxy boxes in image pixels, possibly outside the image.
            labels: (K,) int64 class indices.
            ignore: (K,) bool difficult/crowd flags.
            keep: (K,) bool, False for objects the loader already decided to leave out.
            image_id: Id for the target; the record's position in the dataset when None.
            annotation: Where the boxes are written (file, and entry), for messages; the image's
                name when None.
            written: A box in its annotation's own words (:func:`clip_and_drop`).

        Returns:
            Whether the image was kept.
        """
        if self.check_images or size is None:
            problem, header = probe_image(path)
            if problem is not None:
                self.summary.skip(problem, str(path))
                return False
            if size is None:
                size = header
                self.summary.sizes_from_image += 1
            elif header != tuple(size):
                self.summary.skip("size_mismatch", f"{path}: the annotation says (H, W) = "
                                                   f"{tuple(size)}, the image file {header}")
                return False
        boxes, keep = clip_and_drop(boxes, keep, size, self.summary, annotation or path.name, written)
        record = ImageRecord(len(self.records) if image_id is None else image_id, path, tuple(size),
                             boxes[keep].contiguous(), labels[keep], ignore[keep])
        self.records.append(record)
        self.summary.add_image(record.labels, self.class_names)
        return True

    def split_off(self, fraction: float, seed: int, transforms: Transform | None) -> AnnotatedImageDataset:
        """Moves a seeded, deterministic ``fraction`` of the images (at least one, chosen by
        image id, so the order of the annotation files does not matter) into a new dataset with
        ``transforms``, and returns it; this dataset keeps the rest and its ``skipped`` counts.

        Raises:
            ValueError: fewer than two images to split.
        """
        if len(self.records) < 2:
            raise ValueError(f"data.val_fraction={fraction}: {len(self.records)} image(s) cannot "
                             f"be split into training and validation images")
        ids = sorted(r.image_id for r in self.records)
        count = min(len(ids) - 1, max(1, round(len(ids) * fraction)))
        chosen = set(random.Random(seed).sample(ids, count))
        part = copy.copy(self)
        part.transforms = transforms
        part.records = [r for r in self.records if r.image_id in chosen]
        self.records = [r for r in self.records if r.image_id not in chosen]
        whole = self.summary
        self.summary = LoaderSummary(clipped_boxes=whole.clipped_boxes,
                                     clipped_files=whole.clipped_files,
                                     sizes_from_image=whole.sizes_from_image, skipped=whole.skipped)
        part.summary = LoaderSummary()
        for dataset in (self, part):
            for r in dataset.records:
                dataset.summary.add_image(r.labels, self.class_names)
        return part

    def log_summary(self) -> None:
        """Log the summary once parsing is done."""
        logger.info("%s: %s", type(self).__name__, self.summary)

    def __len__(self) -> int:
        return len(self.records)

    def image_file(self, index: int) -> tuple[Path, tuple[int, int]]:
        return self.records[index].path, self.records[index].size

    def annotations(self, index: int) -> Target:
        r = self.records[index]
        return make_target(r.boxes.clone(), r.labels.clone(), r.image_id, r.size, r.ignore.clone())
