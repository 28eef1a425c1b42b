"""Synthetic detection scenes: coloured shapes on a noisy background, rendered with torch ops.

Each class is a shape *and* a colour (``red_rectangle``, ``green_ellipse``, ...). A configurable
fraction of images holds a *nested pair*: a large outline of a class and a smaller filled shape of
the same class at exactly the same centre, so both centres fall in one heatmap cell (the paper's
Fig. 2 case). Image i of a split is a pure function of (seed, split, i), so DataLoader workers agree
and :meth:`SyntheticScenes.annotations` produces the boxes without rendering.

Boxes are integer pixel bounds: an object covering pixel columns x0..x1-1 has ``x1`` as its right
edge, and every shape touches all four sides of its box, so the boxes are tight. Widths and
heights are odd, which puts box centres on pixel centres and lets nested shapes share them exactly.

Command line: ``python -m transcenter.model.data.synthetic --export-voc DIR [--num-images N --seed S]``.
"""

from __future__ import annotations

import argparse
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path

import torch
from torch.utils.data import Dataset

from transcenter.model.data.common import Target, Transform, make_target
from transcenter.model.data.voc import export_voc

logger = logging.getLogger(__name__)

_EPS = 1e-6
# Masks over normalised box coordinates u (1, w), v (h, 1) in [-1, 1]; each shape touches all four
# box sides and is star-shaped about the centre, so a shape scaled down about it nests inside.
SHAPES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "rectangle": lambda u, v: (u.abs() <= 1 + _EPS) & (v.abs() <= 1 + _EPS),
    "ellipse": lambda u, v: u * u + v * v <= 1 + _EPS,
    "triangle": lambda u, v: u.abs() <= (v + 1) / 2 + _EPS,
    "cross": lambda u, v: (u.abs() <= 1 / 3 + _EPS) | (v.abs() <= 1 / 3 + _EPS),
    "diamond": lambda u, v: u.abs() + v.abs() <= 1 + _EPS,
    "wedge": lambda u, v: u.abs() <= (1 - v) / 2 + _EPS,
    "saltire": lambda u, v: (u.abs() - v.abs()).abs() <= 1 / 3 + _EPS,
    "hexagon": lambda u, v: u.abs() <= 1 - v.abs() / 2 + _EPS,
}
COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.92, 0.18, 0.18), "green": (0.20, 0.82, 0.25), "blue": (0.25, 0.42, 0.98),
    "yellow": (0.95, 0.88, 0.20), "magenta": (0.88, 0.28, 0.88), "cyan": (0.20, 0.88, 0.88),
    "orange": (0.98, 0.56, 0.12), "white": (0.97, 0.97, 0.97),
}
MIN_OBJECT_PX = 5  # smallest box side
MIN_NESTED_PX = 15  # smallest outline side that leaves room for the inner shape and a gap
HOLE_SCALE = 0.6  # an outline is its shape minus the shape scaled by this about the centre
INNER_SCALE = 0.4  # the inner filled shape's side relative to the outline's
BACKGROUND_MAX = 0.35  # background colour channels are uniform in [0, BACKGROUND_MAX]
PLACEMENT_TRIES = 50


@dataclass(frozen=True)
class SyntheticConfig:
    """Synthetic scene settings.

    Attributes:
        num_classes: Number of classes, 1..8; class c is ``list(COLOURS)[c]`` + ``list(SHAPES)[c]``.
        image_size: Square image side in pixels.
        min_objects: Fewest objects per image (a nested pair counts as two, so images holding one
            have at least two objects).
        max_objects: Most objects per image.
        length: Images per split.
        seed: Base seed; image i of split s is a pure function of (seed, s, i).
        overlap_fraction: Fraction of images holding a same-class nested pair, in [0, 1].
        overlap_cell_px: Heatmap cell side in pixels that the nested pair's centres share
            (default 8: one cell of a 16×16 heatmap on 128 px images).
        object_size: (low, high) box side as a fraction of ``image_size``.
        noise_std: Standard deviation of additive Gaussian pixel noise.
    """

    num_classes: int = 3
    image_size: int = 128
    min_objects: int = 1
    max_objects: int = 3
    length: int = 1024
    seed: int = 0
    overlap_fraction: float = 0.5
    overlap_cell_px: int = 8
    object_size: tuple[float, float] = (0.1, 0.5)
    noise_std: float = 0.03

    def __post_init__(self) -> None:
        lo, hi = self.object_size
        nested = self.overlap_fraction > 0
        checks = [
            ("num_classes", 1 <= self.num_classes <= len(SHAPES), f"must be in 1..{len(SHAPES)}"),
            ("image_size", self.image_size >= 16, "must be >= 16"),
            ("min_objects", 0 <= self.min_objects <= self.max_objects, "must be in 0..max_objects"),
            ("max_objects", self.max_objects >= (2 if nested else 1),
             "must be >= 1, and >= 2 when overlap_fraction > 0 (a nested pair is two objects)"),
            ("length", self.length >= 1, "must be >= 1"),
            ("overlap_fraction", 0.0 <= self.overlap_fraction <= 1.0, "must be in [0, 1]"),
            ("overlap_cell_px", 1 <= self.overlap_cell_px <= self.image_size, "must be in 1..image_size"),
            ("object_size", 0 < lo <= hi <= 1 and lo * self.image_size >= MIN_OBJECT_PX
             and (not nested or hi * self.image_size >= MIN_NESTED_PX),
             f"must be 0 < low <= high <= 1 with low * image_size >= {MIN_OBJECT_PX} px and, when "
             f"overlap_fraction > 0, high * image_size >= {MIN_NESTED_PX} px"),
            ("noise_std", self.noise_std >= 0, "must be >= 0"),
        ]
        for name, ok, requirement in checks:
            if not ok:
                raise ValueError(f"SyntheticConfig.{name} = {getattr(self, name)!r}: {requirement}")


@dataclass(frozen=True)
class SceneObject:
    """One shape: class, integer box (x0, y0, width, height) in pixels, outline or filled."""

    label: int
    x0: int
    y0: int
    width: int
    height: int
    outline: bool = False

    @property
    def box(self) -> list[int]:
        """[x0, y0, x1, y1] pixel bounds."""
        return [self.x0, self.y0, self.x0 + self.width, self.y0 + self.height]

    def cell(self, cell_px: int) -> tuple[int, int]:
        """Heatmap cell (column, row) of the box centre."""
        return (int((self.x0 + self.width / 2) // cell_px), int((self.y0 + self.height / 2) // cell_px))

    def disjoint(self, other: SceneObject) -> bool:
        """True when the boxes are at least one pixel apart."""
        return (self.x0 >= other.x0 + other.width + 1 or other.x0 >= self.x0 + self.width + 1
                or self.y0 >= other.y0 + other.height + 1 or other.y0 >= self.y0 + self.height + 1)


def _odd(x: float, lo: int, hi: int) -> int:
    """Nearest odd integer to x within [lo, hi] (lo, hi odd)."""
    n = round(x)
    n += 1 - n % 2
    return max(lo, min(hi, n))


class SyntheticScenes(Dataset):
    """Synthetic shapes as ``(image, target)`` pairs (contract in :mod:`...data.common`).

    Args:
        config: Scene settings.
        split: ``"train"`` or ``"val"``; the two are independent streams.
        transforms: Callable ``(image, target) -> (image, target)``.

    Attributes:
        class_names: ``"<colour>_<shape>"`` per class.
        num_classes: Number of classes.
        overlap_cell_px: Cell side (pixels) within which nested pairs share their centre.
    """

    def __init__(self, config: SyntheticConfig = SyntheticConfig(), split: str = "train",
                 transforms: Transform | None = None) -> None:
        if split not in ("train", "val"):
            raise ValueError(f"split = {split!r}: must be 'train' or 'val'")
        self.config, self.split, self.transforms = config, split, transforms
        self.class_names = [f"{c}_{s}" for c, s in zip(COLOURS, SHAPES)][: config.num_classes]
        self.num_classes = config.num_classes
        self.overlap_cell_px = config.overlap_cell_px
        self._colours = torch.tensor(list(COLOURS.values()))[:, :, None, None]  # (8, 3, 1, 1)
        self._masks = list(SHAPES.values())
        generator = torch.Generator().manual_seed(config.seed)
        side = 2 * config.image_size
        self._noise = torch.randn(3, side, side, generator=generator) * config.noise_std  # (3, 2S, 2S)

    def __len__(self) -> int:
        return self.config.length

    def has_nested_pair(self, index: int) -> bool:
        """Whether image ``index`` holds a nested pair; exactly floor(n·fraction) of the first n do."""
        f = self.config.overlap_fraction
        return int((index + 1) * f) > int(index * f)

    def _rng(self, index: int) -> random.Random:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} images")
        return random.Random(f"{self.config.seed}:{self.split}:{index}")  # str seeds hash stably

    def _fits(self, obj: SceneObject, placed: list[SceneObject]) -> bool:
        cell = obj.cell(self.overlap_cell_px)
        return all(obj.disjoint(p) and not (p.label == obj.label and p.cell(self.overlap_cell_px) == cell)
                   for p in placed)

    def layout(self, index: int, rng: random.Random | None = None) -> list[SceneObject]:
        """Objects of image ``index`` without rendering (``rng``: the image's own stream).

        Objects are at least a pixel apart (except the nested pair) and no two of a class share a
        heatmap cell unless they are the nested pair; an object that finds no free spot in
        ``PLACEMENT_TRIES`` tries is left out.
        """
        cfg, rng = self.config, rng or self._rng(index)
        size = cfg.image_size
        lo = max(MIN_OBJECT_PX, int(cfg.object_size[0] * size) | 1)
        hi = _odd(cfg.object_size[1] * size, lo, size - (1 - size % 2))
        count = rng.randint(cfg.min_objects, cfg.max_objects)
        placed: list[SceneObject] = []
        if self.has_nested_pair(index):
            label = rng.randrange(cfg.num_classes)
            w = _odd(rng.uniform(max(lo, MIN_NESTED_PX), hi), max(lo, MIN_NESTED_PX), hi)
            h = _odd(w * rng.uniform(0.75, 1.33), max(lo, MIN_NESTED_PX), hi)
            outer = SceneObject(label, rng.randint(0, size - w), rng.randint(0, size - h), w, h, True)
            iw, ih = _odd(w * INNER_SCALE, MIN_OBJECT_PX, w), _odd(h * INNER_SCALE, MIN_OBJECT_PX, h)
            inner = SceneObject(label, outer.x0 + (w - iw) // 2, outer.y0 + (h - ih) // 2, iw, ih)
            placed += [outer, inner]
            count = max(count - 2, 0)
        for _ in range(count):
            for _ in range(PLACEMENT_TRIES):
                w = _odd(rng.uniform(lo, hi), lo, hi)
                h = _odd(w * rng.uniform(0.6, 1.6), lo, hi)
                obj = SceneObject(rng.randrange(cfg.num_classes), rng.randint(0, size - w),
                                  rng.randint(0, size - h), w, h)
                if self._fits(obj, placed):
                    placed.append(obj)
                    break
        return placed

    def annotations(self, index: int) -> Target:
        """Target of image ``index`` in image pixels, without rendering."""
        return self._target(index, self.layout(index))

    def targets(self) -> list[Target]:
        """All targets of the split, without rendering."""
        return [self.annotations(i) for i in range(len(self))]

    def _target(self, index: int, objects: list[SceneObject]) -> Target:
        boxes = torch.tensor([o.box for o in objects], dtype=torch.float32)  # (K, 4) xyxy px
        labels = torch.tensor([o.label for o in objects], dtype=torch.int64)  # (K,)
        return make_target(boxes, labels, index, (self.config.image_size,) * 2)

    def _shape(self, obj: SceneObject) -> torch.Tensor:
        """(h, w) bool mask of ``obj`` inside its box."""
        u = torch.linspace(-1, 1, obj.width)[None, :]  # (1, w)
        v = torch.linspace(-1, 1, obj.height)[:, None]  # (h, 1)
        mask = self._masks[obj.label](u, v)
        if obj.outline:
            mask &= ~self._masks[obj.label](u / HOLE_SCALE, v / HOLE_SCALE)
        return mask

    def render(self, objects: list[SceneObject], rng: random.Random) -> torch.Tensor:
        """Paint ``objects`` (in order) on a random background; returns float32 (3, S, S) in [0, 1]."""
        size = self.config.image_size
        background = torch.tensor([rng.uniform(0, BACKGROUND_MAX) for _ in range(3)])[:, None, None]
        image = background.expand(3, size, size).clone()  # (3, S, S)
        for obj in objects:
            x0, y0, x1, y1 = obj.box
            region = image[:, y0:y1, x0:x1]  # (3, h, w) view
            region.copy_(torch.where(self._shape(obj), self._colours[obj.label], region))
        # A random window of a fixed noise bank: a copy instead of a randn, which took 40 % of the render.
        top, left = rng.randrange(size), rng.randrange(size)
        image += self._noise[:, top:top + size, left:left + size]
        return image.clamp_(0.0, 1.0)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, Target]:
        rng = self._rng(index)
        objects = self.layout(index, rng)
        image, target = self.render(objects, rng), self._target(index, objects)
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target


def main(argv: list[str] | None = None) -> None:
    """Command-line entry: export synthetic scenes as a VOC layout."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--export-voc", type=Path, required=True, metavar="DIR")
    parser.add_argument("--num-images", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    defaults = {f.name: f.default for f in fields(SyntheticConfig)}
    parser.add_argument("--num-classes", type=int, default=defaults["num_classes"])
    parser.add_argument("--image-size", type=int, default=defaults["image_size"])
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    config = SyntheticConfig(num_classes=args.num_classes, image_size=args.image_size,
                             length=args.num_images, seed=args.seed)
    export_voc(SyntheticScenes(config), args.export_voc)


if __name__ == "__main__":
    main()
