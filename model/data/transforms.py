"""Training and evaluation transforms on ``(image, target)`` pairs, built on ``torchvision.transforms.v2``.

Geometry is one affine map per image, ``input_px = orig_px * scale + offset`` (per axis; a
horizontal flip makes ``scale[0]`` negative). It is applied to the image and to the boxes together
through ``tv_tensors.BoundingBoxes`` and recorded in the target as ``scale`` and ``offset``
(float32 (2,), x then y), so :func:`to_original` can map predictions back. Randomness comes from
torch's global generator, so ``torch.manual_seed`` and DataLoader worker seeding control it.

torchvision is imported when a transform first runs, not with this module: the study driver builds
the data sets (and their transforms) to check them without loading torchvision, whose import
takes about 2 s of CPU (it imports ``torch._dynamo``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import torch

from transcenter.model.data.common import Target


@dataclass(frozen=True)
class Placement:
    """Where the resized original lands on the ``size``×``size`` canvas.

    Attributes:
        resized: (h, w) of the resized original in pixels.
        offset: (x, y) canvas position of its top-left corner; negative means cropped.
        flip: Mirror the canvas horizontally afterwards.
    """

    resized: tuple[int, int]
    offset: tuple[int, int]
    flip: bool


def letterbox_size(orig: tuple[int, int], size: int, zoom: float = 1.0) -> tuple[int, int]:
    """(h, w) after scaling the longer side of ``orig`` (H, W) to ``size * zoom`` pixels."""
    factor = size * zoom / max(orig)
    return max(1, round(orig[0] * factor)), max(1, round(orig[1] * factor))


def _uniform_int(low: int, high: int) -> int:
    return int(torch.randint(min(low, high), max(low, high) + 1, ()).item())


def place(image: torch.Tensor, target: Target, size: int, where: Placement) -> tuple[torch.Tensor, Target]:
    """Resize, crop/pad to ``size``×``size`` and optionally flip image and boxes together.

    Args:
        image: (3, H, W) float in [0, 1].
        target: Contract target with boxes (K, 4) xyxy in original pixels.
        size: Output side in pixels.
        where: The placement.

    Returns:
        Image (3, size, size) and a target whose boxes (K, 4) are xyxy canvas pixels (clipped, possibly
        degenerate) and which carries ``scale`` and ``offset`` (float32 (2,), x then y).
    """
    from torchvision import tv_tensors
    from torchvision.transforms.v2 import functional as F

    height, width = image.shape[-2:]
    # Resampled as uint8: torch's uint8 bilinear kernel is ~3x faster; quantising costs <= 1/255.
    img = tv_tensors.Image(F.to_dtype(image, torch.uint8, scale=True))
    boxes = tv_tensors.BoundingBoxes(target["boxes"], format="XYXY", canvas_size=(height, width))
    img, boxes = (F.resize(t, list(where.resized), antialias=True) for t in (img, boxes))
    # crop with a negative top/left pads: one call covers both the crop and the letterbox case.
    img, boxes = (F.crop(t, -where.offset[1], -where.offset[0], size, size) for t in (img, boxes))
    scale = [where.resized[1] / width, where.resized[0] / height]
    offset = [float(where.offset[0]), float(where.offset[1])]
    if where.flip:
        img, boxes = F.horizontal_flip(img), F.horizontal_flip(boxes)
        scale[0], offset[0] = -scale[0], size - offset[0]
    out = dict(target, boxes=boxes, scale=torch.tensor(scale), offset=torch.tensor(offset))
    return F.to_dtype(img, torch.float32, scale=True), out


def to_original(boxes: torch.Tensor, target: Target) -> torch.Tensor:
    """Map boxes from transformed input pixels back to original image pixels.

    Args:
        boxes: (M, 4) xyxy in the transformed image's pixels.
        target: The transformed target carrying ``scale``, ``offset`` and ``orig_size``.

    Returns:
        (M, 4) float xyxy in original pixels, clipped to the original image.
    """
    scale = target["scale"].to(boxes).repeat(2)  # (4,) sx, sy, sx, sy
    offset = target["offset"].to(boxes).repeat(2)  # (4,)
    mapped = (boxes - offset) / scale  # (M, 4), x0 > x1 after a flip
    xs, ys = mapped[:, 0::2].sort(dim=1).values, mapped[:, 1::2].sort(dim=1).values
    out = torch.stack([xs[:, 0], ys[:, 0], xs[:, 1], ys[:, 1]], dim=1)  # (M, 4) xyxy orig px
    height, width = target["orig_size"].tolist()
    return torch.minimum(out.clamp(min=0), out.new_tensor([width, height, width, height]))


class DetectionTransform:
    """Optional photometric jitter, placement, then box sanitising; returns plain tensors.

    Args:
        size: Output side in pixels.
        train: Random placement (scale jitter, crop/letterbox, flip) instead of a centred letterbox.
        hflip: Probability of a horizontal flip (train only).
        scale: (low, high) zoom range relative to the letterbox size (train only).
        photometric: Colour jitter on the image (train only).
    """

    def __init__(self, size: int, train: bool, hflip: float = 0.5, scale: tuple[float, float] = (0.6, 1.4),
                 photometric: bool = True) -> None:
        if size < 1 or not 0.0 <= hflip <= 1.0 or not 0.0 < scale[0] <= scale[1]:
            raise ValueError(f"invalid transform settings: size={size}, hflip={hflip}, scale={scale}")
        self.size, self.train, self.hflip, self.scale = size, train, hflip, scale
        self.photometric = photometric

    @cached_property
    def _colour(self) -> Any:
        """torchvision's colour jitter, or None without photometric jitter."""
        from torchvision.transforms import v2

        return v2.ColorJitter(0.3, 0.3, 0.3) if self.train and self.photometric else None

    @cached_property
    def _sanitize(self) -> Any:
        """torchvision's box sanitiser: drops boxes under 1 px with their labels and flags."""
        from torchvision.transforms import v2

        return v2.SanitizeBoundingBoxes(
            min_size=1.0, labels_getter=lambda inputs: (inputs[1]["labels"], inputs[1]["ignore"]))

    def placement(self, orig: tuple[int, int]) -> Placement:
        """Sample (train) or compute (eval) where the original of size ``orig`` (H, W) goes."""
        if not self.train:
            resized = letterbox_size(orig, self.size)
            return Placement(resized, ((self.size - resized[1]) // 2, (self.size - resized[0]) // 2), False)
        zoom = float(torch.empty(()).uniform_(*self.scale))
        resized = letterbox_size(orig, self.size, zoom)
        offset = (_uniform_int(0, self.size - resized[1]), _uniform_int(0, self.size - resized[0]))
        return Placement(resized, offset, bool(torch.rand(()) < self.hflip))

    def __call__(self, image: torch.Tensor, target: Target) -> tuple[torch.Tensor, Target]:
        """Transform one pair; the output target keeps the contract plus ``scale``/``offset``."""
        if self._colour is not None:  # on the original: fewer pixels, and the padding stays black
            image = self._colour(image)
        image, target = place(image, target, self.size, self.placement(tuple(image.shape[-2:])))
        image, target = self._sanitize(image, target)
        target["boxes"] = target["boxes"].as_subclass(torch.Tensor)  # (K', 4) xyxy input px
        target["iscrowd"] = target["ignore"]
        return image.as_subclass(torch.Tensor), target


def train_transforms(size: int = 512, hflip: float = 0.5, scale: tuple[float, float] = (0.6, 1.4),
                     photometric: bool = True) -> DetectionTransform:
    """Colour jitter, scale jitter, random crop/letterbox to ``size``×``size``, flip, sanitise."""
    return DetectionTransform(size, train=True, hflip=hflip, scale=scale, photometric=photometric)


def eval_transforms(size: int = 512) -> DetectionTransform:
    """Deterministic centred letterbox to ``size``×``size`` (longer side scaled to ``size``)."""
    return DetectionTransform(size, train=False)
