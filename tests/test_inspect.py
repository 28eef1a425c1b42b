"""Data-set report (model/data/inspect.py): counts and same-cell shares against brute force."""

import json
import math
import statistics

import pytest
import torch

from transcenter.model.data.common import make_target
from transcenter.model.data.inspect import dataset_report, format_report, main, split_stats
from transcenter.model.data.synthetic import SyntheticConfig, SyntheticScenes

HEATMAP_SIZES = (16, 32, 64, 128)
CLASSES = ["cat", "dog", "bird"]


class Fixture:
    """A dataset as the report reads it: ``class_names`` and ``targets()`` in original pixels."""

    def __init__(self, targets, class_names=CLASSES):
        self.class_names, self._targets = list(class_names), targets

    def targets(self):
        return self._targets


def centred(cx, cy, w, h):
    return [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]


def hand_targets():
    """Hand-made images, (H, W) non-square so the letterbox scale and offset matter."""
    wide = make_target(  # (H, W) = (300, 500)
        [centred(120, 80, 40, 30), centred(120, 80, 12, 10),  # same class, same centre
         centred(300, 200, 50, 50), centred(300, 200, 20, 20),  # different classes, same centre
         centred(400, 150, 30, 30), centred(400, 150, 10, 10),  # a cat beside an ignored cat
         centred(60, 250, 8, 6)],
        [0, 0, 0, 1, 0, 0, 2], 0, (300, 500), [False, False, False, False, False, True, False])
    tall = make_target(  # (H, W) = (480, 200)
        [centred(50, 100, 30, 60), centred(53, 104, 20, 20), centred(150, 400, 100, 150),
         centred(150, 402, 60, 90), centred(100, 240, 4, 4)],
        [1, 1, 2, 2, 0], 1, (480, 200))
    # (512, 512) maps to the 512 input unchanged and to the 128 input by exactly 1/4: centres on
    # cell borders stay exactly on them. x = 32 starts cell 1 at S = 16, x = 31.5 ends cell 0.
    square = make_target(
        [centred(32, 100, 10, 10), centred(63.5, 100, 6, 6), centred(31.5, 100, 4, 4),
         centred(256, 256, 400, 400), centred(256, 256, 300, 300)],
        [0, 0, 0, 1, 1], 2, (512, 512))
    empty = make_target(torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64), 3, (200, 350))
    only_ignored = make_target([centred(90, 90, 20, 20), centred(90, 90, 10, 10)], [0, 0], 4, (180, 180),
                               [True, True])
    return [wide, tall, square, empty, only_ignored]


def random_targets(n=40, seed=0):
    """Random images and boxes; centres on a coarse grid so that objects often share cells."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        h, w = (int(v) for v in torch.randint(120, 700, (2,), generator=g))
        k = int(torch.randint(0, 17, (), generator=g))
        grid = torch.tensor([w, h]) / 3
        # jitter of 0, ~1 px or ~grid/3: centres coincide, or meet in coarse or fine cells, or not
        spread = torch.tensor([0.0, 0.005, 0.3])[torch.randint(0, 3, (k, 1), generator=g)]  # (k, 1)
        centre = (torch.randint(0, 3, (k, 2), generator=g) + torch.rand(k, 2, generator=g) * spread) * grid
        size = torch.rand(k, 2, generator=g) * torch.tensor([w, h]) / 2 + 2
        boxes = torch.cat([centre - size / 2, centre + size / 2], dim=1)
        labels = torch.randint(0, 3, (k,), generator=g)
        out.append(make_target(boxes, labels, i, (h, w), torch.rand(k, generator=g) < 0.2))
    return out


def letterbox(orig, input_size):
    """Validation's centred letterbox, written out: (sx, sy) and (ox, oy) of input = orig * s + o."""
    height, width = orig
    factor = input_size / max(height, width)
    rh, rw = max(1, round(height * factor)), max(1, round(width * factor))
    return (rw / width, rh / height), ((input_size - rw) // 2, (input_size - rh) // 2)


def brute_force(targets, input_size, heatmap_size):
    """Objects counted by a double loop over pairs; returns (same-cell share, kept input boxes)."""
    cell = input_size / heatmap_size  # a power of two for these sizes: the divisions are exact
    hits, kept = 0, []
    for t in targets:
        (sx, sy), (ox, oy) = letterbox(tuple(t["orig_size"].tolist()), input_size)
        objs = []
        rows = zip(t["boxes"].tolist(), t["labels"].tolist(), t["ignore"].tolist())
        for (x0, y0, x1, y1), label, ignore in rows:
            if not ignore:
                box = (x0 * sx + ox, y0 * sy + oy, x1 * sx + ox, y1 * sy + oy)
                cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
                objs.append((label, math.floor(cx / cell), math.floor(cy / cell), box))
        for i, a in enumerate(objs):
            hits += any(j != i and b[:3] == a[:3] for j, b in enumerate(objs))
        kept.append(objs)
    total = sum(len(objs) for objs in kept)
    return (hits / total if total else None), kept


def test_letterbox_reference_matches_hand_values():
    assert letterbox((300, 500), 512) == ((512 / 500, 307 / 300), (0, 102))
    assert letterbox((480, 200), 128) == ((53 / 200, 128 / 480), (37, 0))


@pytest.mark.parametrize("input_size", [512, 128])
@pytest.mark.parametrize("targets", [hand_targets(), random_targets()], ids=["hand", "random"])
def test_report_equals_brute_force(targets, input_size):
    stats = split_stats(Fixture(targets), input_size, HEATMAP_SIZES)
    for s in HEATMAP_SIZES:
        expected, kept = brute_force(targets, input_size, s)
        assert stats["same_cell"][str(s)] == pytest.approx(expected, abs=1e-12), s
    objs = [o for image in kept for o in image]
    counts = [len(image) for image in kept]
    assert stats["images"] == len(targets)
    assert stats["objects"] == len(objs)
    assert stats["ignored"] == sum(int(t["ignore"].sum()) for t in targets)
    assert stats["per_class"] == {name: sum(o[0] == c for o in objs) for c, name in enumerate(CLASSES)}
    areas = [(b[2] - b[0]) * (b[3] - b[1]) for *_, b in objs]
    assert stats["sizes"] == {"small": sum(a < 32 ** 2 for a in areas),
                              "medium": sum(32 ** 2 <= a < 96 ** 2 for a in areas),
                              "large": sum(a >= 96 ** 2 for a in areas)}
    assert stats["objects_per_image"] == {"mean": pytest.approx(sum(counts) / len(counts)),
                                          "median": statistics.median(counts), "max": max(counts),
                                          "empty": counts.count(0)}


def test_hand_counted_shares_at_input_512():
    """Counted by hand on the images above (kept objects: 6 + 5 + 5 = 16)."""
    stats = split_stats(Fixture(hand_targets()), 512, HEATMAP_SIZES)
    assert stats["objects"] == 16 and stats["ignored"] == 3
    assert stats["per_class"] == {"cat": 8, "dog": 5, "bird": 3}
    assert stats["objects_per_image"] == {"mean": 16 / 5, "median": 5.0, "max": 6, "empty": 2}
    # wide: the two same-centre cats at every S; not the cat and dog sharing a centre, nor the cat
    # beside an ignored cat. tall (x = 1.065 x + 149, y = 1.0667 y): the dogs 3 and 4 px apart
    # (input x 202.25 | 205.45) and the birds 2 px apart (input y 426.67 | 428.8) part only in
    # 4 px cells (S = 128). square: the cats at x = 32 and 63.5 share a 32 px cell only (x = 31.5
    # is in cell 0); the dogs share a centre.
    assert stats["same_cell"] == {"16": 10 / 16, "32": 8 / 16, "64": 8 / 16, "128": 4 / 16}


def test_synthetic_nested_pairs_share_a_cell_at_every_size():
    config = SyntheticConfig(length=40, overlap_fraction=1.0, seed=5)
    ds = SyntheticScenes(config)
    s_made = config.image_size // config.overlap_cell_px  # 16: the S the pairs were made for
    stats = split_stats(ds, config.image_size, (s_made, 32, 64, 128))
    assert stats["images"] == 40 and stats["ignored"] == 0
    assert sum(stats["per_class"].values()) == stats["objects"] == sum(stats["sizes"].values())
    # Every image holds a nested pair, both centred on one point: they share a cell at every S.
    for share in stats["same_cell"].values():
        assert round(share * stats["objects"]) >= 2 * stats["images"]


def test_format_report_and_json():
    splits = {"train": Fixture(random_targets(seed=1)), "val": Fixture(hand_targets()),
              "none": Fixture([])}
    report = dataset_report(splits, 512)
    assert report["heatmap_sizes"] == list(HEATMAP_SIZES) and report["class_names"] == CLASSES
    assert report["splits"]["none"]["same_cell"] == {str(s): None for s in HEATMAP_SIZES}
    assert json.loads(json.dumps(report)) == report
    text = format_report(report)
    for word in [*splits, *CLASSES, *(str(s) for s in HEATMAP_SIZES), "CenterNet", "TransCenter"]:
        assert word in text
    assert "62.50% (10)" in text  # the val split's share at S = 16 (test_hand_counted_shares...)


def test_label_outside_classes_is_an_error():
    bad = [make_target([[0, 0, 10, 10]], [3], 0, (20, 20))]
    with pytest.raises(ValueError, match="label 3"):
        split_stats(Fixture(bad), 512)


def test_cli_json_on_synthetic_data(capsys):
    pytest.importorskip("transcenter.model.data.build")
    code = main(["--input-size", "128", "--heatmap-sizes", "16", "32", "--set", "data.num_train=8",
                 "--set", "data.num_val=4", "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report["splits"]) == {"train", "val"} and report["input_size"] == 128
    assert report["splits"]["val"]["images"] == 4
    assert set(report["splits"]["val"]["same_cell"]) == {"16", "32"}


@pytest.mark.parametrize("argv, words", [
    (["--set", "data.nope=1"], "nope"),
    (["--set", "no_equals_sign"], "no_equals_sign"),
    (["--data", "voc"], "data.root"),
    (["--set", "model.heatmap_size=32"], "model.heatmap_size"),
])
def test_cli_bad_config_exits_2_with_one_error_line(capsys, argv, words):
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("error: ") and words in captured.err
    assert "Traceback" not in captured.err


@pytest.mark.parametrize("chunk", [1, 7, 100_000])
def test_shares_do_not_depend_on_how_images_are_batched(monkeypatch, chunk):
    from transcenter.model.data import inspect

    targets = Fixture(random_targets(seed=2))
    expected = split_stats(targets, 512)
    monkeypatch.setattr(inspect, "_CHUNK_OBJECTS", chunk)
    assert split_stats(targets, 512) == expected
