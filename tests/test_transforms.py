"""Transforms keep boxes on the pixels they describe and record how to map predictions back."""

import pytest
import torch

from transcenter.model.data import SyntheticConfig, SyntheticScenes, collate, make_target
from transcenter.model.data.transforms import eval_transforms, to_original, train_transforms


def patch_scene(box, size=(96, 160)):
    """Dark image with one bright grey patch exactly covering ``box`` (xyxy integer px)."""
    image = torch.full((3, *size), 0.1)
    x0, y0, x1, y1 = box
    image[:, y0:y1, x0:x1] = 0.9
    return image, make_target(torch.tensor([box], dtype=torch.float32), torch.tensor([2]), 7, size)


def bright_bbox(image):
    """(4,) xyxy pixel bounds of pixels brighter than midway, or None."""
    grey = image.mean(0)  # (H, W)
    bright = grey > (grey.max() + grey.min()) / 2
    if not bright.any():
        return None
    ys, xs = torch.nonzero(bright, as_tuple=True)
    return torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=torch.float32)


@pytest.mark.parametrize("box", [[30, 20, 70, 60], [0, 50, 40, 96], [120, 0, 160, 30]])
def test_train_transform_keeps_box_tight_around_its_patch(box):
    flips = set()
    for seed in range(12):
        torch.manual_seed(seed)
        image, target = train_transforms(size=128)(*patch_scene(box))
        assert image.shape == (3, 128, 128) and image.dtype == torch.float32
        flips.add(bool(target["scale"][0] < 0))
        found = bright_bbox(image)
        if target["boxes"].shape[0] == 0:  # cropped away: at most a sliver may remain
            assert found is None or ((found[2:] - found[:2]).min() <= 1), f"seed {seed}"
            continue
        assert found is not None, f"seed {seed}: box kept but its patch is gone"
        assert (target["boxes"][0] - found).abs().max() <= 2.0, f"seed {seed}: {target['boxes'][0]} vs {found}"
        assert target["labels"].tolist() == [2] and target["ignore"].tolist() == [False]
    assert flips == {True, False}


@pytest.mark.parametrize("make", [lambda: eval_transforms(128),
                                  lambda: train_transforms(128, scale=(0.5, 0.9), photometric=False)])
def test_to_original_inverts_the_transform(make):
    box = [30, 20, 70, 60]
    for seed in range(6):
        torch.manual_seed(seed)
        _image, target = make()(*patch_scene(box))
        assert target["boxes"].shape == (1, 4)  # scale < 1 letterboxes: nothing is cropped
        back = to_original(target["boxes"], target)
        assert (back - torch.tensor([box], dtype=torch.float32)).abs().max() < 1e-3, f"seed {seed}"


def test_to_original_clips_to_the_original_image():
    _, target = eval_transforms(128)(*patch_scene([30, 20, 70, 60]))
    back = to_original(torch.tensor([[-50.0, -50.0, 500.0, 500.0]]), target)
    assert back.tolist() == [[0.0, 0.0, 160.0, 96.0]]


def test_eval_transform_is_a_deterministic_centred_letterbox():
    image, target = patch_scene([30, 20, 70, 60])
    a_img, a = eval_transforms(128)(image, target)
    b_img, b = eval_transforms(128)(image, target)
    assert torch.equal(a_img, b_img) and torch.equal(a["boxes"], b["boxes"])
    assert a["scale"].tolist() == pytest.approx([128 / 160, 77 / 96])  # 96 * 0.8 rounds to 77 rows
    assert a["offset"].tolist() == [0.0, 25.0]
    assert a_img[:, :25].abs().max() == 0 and a_img[:, 25 + 77:].abs().max() == 0  # padding rows
    assert a["orig_size"].tolist() == [96, 160] and a["image_id"] == 7


def test_sanitize_drops_degenerate_boxes_with_their_labels_and_flags():
    image = torch.rand(3, 96, 160)
    target = make_target(torch.tensor([[10.0, 10.0, 60.0, 50.0], [100.0, 40.0, 100.5, 41.0]]),
                         torch.tensor([1, 4]), 0, (96, 160), ignore=torch.tensor([True, False]))
    _, out = eval_transforms(128)(image, target)
    assert out["boxes"].shape == (1, 4) and type(out["boxes"]) is torch.Tensor
    assert out["labels"].tolist() == [1] and out["ignore"].tolist() == [True]
    assert torch.equal(out["iscrowd"], out["ignore"])


def test_dataset_applies_transforms_and_collate_stacks():
    ds = SyntheticScenes(SyntheticConfig(length=4), transforms=train_transforms(size=192))
    images, targets = collate([ds[i] for i in range(4)])
    assert images.shape == (4, 3, 192, 192)
    assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0
    for t in targets:
        assert t["boxes"].dtype == torch.float32 and t["labels"].dtype == torch.int64
        assert bool((t["boxes"][:, 2:] > t["boxes"][:, :2]).all())
        assert bool((t["boxes"] >= 0).all() and (t["boxes"] <= 192).all())


def test_transform_settings_are_validated():
    with pytest.raises(ValueError, match="hflip"):
        train_transforms(hflip=1.5)
    with pytest.raises(ValueError, match="scale"):
        train_transforms(scale=(1.2, 0.8))
