"""Datasets: synthetic scenes, VOC and COCO loaders on fixtures written into tmp_path."""

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from transcenter.model.data import (
    VOC_CLASSES,
    COCODetection,
    SyntheticConfig,
    SyntheticScenes,
    VOCDetection,
    collate,
    export_voc,
)
from transcenter.model.data.common import write_image
from transcenter.model.data.synthetic import main as synthetic_main
from transcenter.model.evaluation.evaluate import same_cell_mask

SMALL = SyntheticConfig(length=24, image_size=64, object_size=(0.1, 0.5), seed=3)
VOC07 = [("2007", "trainval")]


def assert_contract(image, target, num_classes):
    assert image.dtype == torch.float32 and image.ndim == 3 and image.shape[0] == 3
    assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0
    k = target["labels"].shape[0]
    assert target["boxes"].dtype == torch.float32 and target["boxes"].shape == (k, 4)
    assert target["labels"].dtype == torch.int64
    assert bool(((target["labels"] >= 0) & (target["labels"] < num_classes)).all())
    assert target["ignore"].dtype == torch.bool and target["ignore"].shape == (k,)
    assert torch.equal(target["iscrowd"], target["ignore"])
    assert isinstance(target["image_id"], int)
    assert target["orig_size"].dtype == torch.int64 and target["orig_size"].shape == (2,)


# --- synthetic scenes -------------------------------------------------------------------------

def test_synthetic_contract_and_annotations_match_rendered_targets():
    ds = SyntheticScenes(SMALL)
    assert ds.num_classes == len(ds.class_names) == 3
    for i in range(len(ds)):
        image, target = ds[i]
        assert_contract(image, target, ds.num_classes)
        assert image.shape == (3, 64, 64) and target["image_id"] == i
        assert torch.equal(ds.annotations(i)["boxes"], target["boxes"])
        assert torch.equal(ds.annotations(i)["labels"], target["labels"])


def test_synthetic_deterministic_per_seed_and_split():
    a, b = SyntheticScenes(SMALL), SyntheticScenes(SMALL)
    val = SyntheticScenes(SMALL, split="val")
    other_seed = SyntheticScenes(dataclasses.replace(SMALL, seed=4))
    for i in (0, 5, 17):
        assert torch.equal(a[i][0], b[i][0]) and torch.equal(a[i][1]["boxes"], b[i][1]["boxes"])
        assert not torch.equal(a[i][0], val[i][0])
        assert not torch.equal(a[i][0], other_seed[i][0])
    assert torch.equal(a[7][0], a[7][0])  # no hidden state advances between calls


def test_synthetic_dataloader_workers_agree_with_direct_indexing():
    ds = SyntheticScenes(SMALL)
    loader = DataLoader(ds, batch_size=8, num_workers=2, collate_fn=collate)
    images, targets = next(iter(loader))
    assert images.shape == (8, 3, 64, 64) and len(targets) == 8
    for i in range(8):
        assert torch.equal(images[i], ds[i][0])
        assert torch.equal(targets[i]["boxes"], ds[i][1]["boxes"])


@pytest.mark.parametrize("fraction", [0.0, 0.3, 1.0])
def test_synthetic_overlap_fraction_is_achieved(fraction):
    cfg = SyntheticConfig(length=200, overlap_fraction=fraction, max_objects=4, seed=1)
    ds = SyntheticScenes(cfg)
    with_pair = sum(bool(same_cell_mask(t["boxes"], t["labels"], ds.overlap_cell_px).any())
                    for t in ds.targets())
    assert with_pair == int(200 * fraction)


def test_synthetic_boxes_are_tight_to_the_painted_shapes():
    cfg = SyntheticConfig(length=30, num_classes=8, max_objects=5, noise_std=0.0, seed=2)
    ds = SyntheticScenes(cfg)
    colours = ds._colours[:, :, 0, 0]  # (8, 3)
    for i in range(len(ds)):
        image, target = ds[i]
        for box, label in zip(target["boxes"].long().tolist(), target["labels"].tolist()):
            x0, y0, x1, y1 = box
            painted = ((image[:, y0:y1, x0:x1] - colours[label][:, None, None]).abs() < 1e-6).all(0)  # (h, w)
            assert painted.any(1)[[0, -1]].all(), f"image {i}: box {box} not tight vertically"
            assert painted.any(0)[[0, -1]].all(), f"image {i}: box {box} not tight horizontally"


@pytest.mark.parametrize("field, value", [("num_classes", 0), ("num_classes", 9), ("image_size", 8),
                                          ("overlap_fraction", 1.5), ("length", 0),
                                          ("object_size", (0.01, 0.5)), ("max_objects", 1)])
def test_synthetic_config_rejects_bad_values_naming_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        SyntheticConfig(**{field: value})


# --- VOC ----------------------------------------------------------------------------------------

def test_export_voc_then_voc_loader_returns_exactly_the_boxes(tmp_path):
    ds = SyntheticScenes(SMALL)
    year_dir = export_voc(ds, tmp_path)
    assert sorted(p.name for p in (year_dir / "ImageSets" / "Main").iterdir()) == [
        "test.txt", "train.txt", "trainval.txt", "val.txt"]
    voc = VOCDetection(tmp_path, splits=VOC07, class_names=ds.class_names)
    test = VOCDetection(tmp_path, splits=[("2007", "test")], class_names=ds.class_names)
    assert len(voc) + len(test) == len(ds) and voc.summary.images == len(voc)
    assert voc.summary.skipped == {} and voc.summary.clipped_boxes == 0
    for i in range(len(voc)):
        image, target = voc[i]
        assert_contract(image, target, ds.num_classes)
        original_image, original = ds[int(voc.ids[i])]
        assert torch.equal(target["boxes"], original["boxes"])
        assert torch.equal(target["labels"], original["labels"])
        assert (image - original_image).abs().mean() < 0.05  # JPEG smooths the 0.03-sigma noise away
        assert torch.equal(voc.annotations(i)["boxes"], target["boxes"])


def test_synthetic_cli_exports_voc(tmp_path):
    synthetic_main(["--export-voc", str(tmp_path), "--num-images", "6", "--seed", "1"])
    voc = VOCDetection(tmp_path / "VOCdevkit", splits=VOC07, class_names=SyntheticScenes().class_names)
    assert len(voc) == 5 and len(voc.ids) == 5


def make_voc(root: Path, objects_by_id: dict, size=(40, 50), split="trainval") -> Path:
    """Hand-written VOC2007 layout: ``objects_by_id`` maps an id to [(name, xmin, ymin, xmax, ymax, difficult)]."""
    year = root / "VOCdevkit" / "VOC2007"
    for sub in ("Annotations", "ImageSets/Main", "JPEGImages"):
        (year / sub).mkdir(parents=True, exist_ok=True)
    for file_id, objects in objects_by_id.items():
        write_image(torch.rand(3, *size), year / "JPEGImages" / f"{file_id}.jpg")
        xml_objects = "".join(
            f"<object><name>{n}</name><difficult>{d}</difficult><bndbox><xmin>{a}</xmin><ymin>{b}</ymin>"
            f"<xmax>{c}</xmax><ymax>{e}</ymax></bndbox></object>" for n, a, b, c, e, d in objects)
        (year / "Annotations" / f"{file_id}.xml").write_text(
            f"<annotation><size><width>{size[1]}</width><height>{size[0]}</height><depth>3</depth></size>"
            f"{xml_objects}</annotation>")
    (year / "ImageSets" / "Main" / f"{split}.txt").write_text("\n".join(objects_by_id) + "\n")
    return year


def test_voc_bad_images_and_boxes_are_counted_skips(tmp_path):
    year = make_voc(tmp_path, {
        "good": [("cat", 1, 1, 10, 20, 0), ("dog", 5, 5, 30, 30, 1)],
        "outside": [("cat", -4, 3, 80, 20, 0)],  # clipped to x in [0, 50]
        "flat": [("cat", 5, 5, 4, 30, 0), ("dog", 2, 2, 12, 12, 0)],  # first has zero width
        "gone": [("cat", 1, 1, 10, 10, 0)],
        "broken": [("cat", 1, 1, 10, 10, 0)],
    })
    (year / "JPEGImages" / "gone.jpg").unlink()
    data = (year / "JPEGImages" / "broken.jpg").read_bytes()
    (year / "JPEGImages" / "broken.jpg").write_bytes(data[: len(data) // 2])  # truncated
    voc = VOCDetection(tmp_path, splits=VOC07)
    assert voc.ids == ["good", "outside", "flat"]
    assert voc.summary.skipped == {"missing_image": 1, "corrupt_image": 1, "zero_area_box": 1, "difficult": 1}
    assert voc.summary.clipped_boxes == 1
    assert voc.summary.images == 3 and voc.summary.objects == 3
    assert voc.summary.per_class == {"cat": 2, "dog": 1}
    assert "skipped" in str(voc.summary) and "missing_image: 1" in str(voc.summary)
    boxes = [voc[i][1]["boxes"].tolist() for i in range(3)]
    assert boxes == [[[0, 0, 10, 20]], [[0, 2, 50, 20]], [[1, 1, 12, 12]]]
    assert voc.class_names == ["cat", "dog"] and voc.class_source == "annotations"
    assert voc[1][1]["labels"].tolist() == [0] and voc[2][1]["labels"].tolist() == [1]


def test_voc_keep_difficult_marks_ignore(tmp_path):
    make_voc(tmp_path, {"a": [("cat", 1, 1, 10, 20, 0), ("dog", 5, 5, 30, 30, 1)]})
    voc = VOCDetection(tmp_path, splits=VOC07, keep_difficult=True)
    target = voc[0][1]
    assert target["ignore"].tolist() == [False, True] and voc.summary.skipped == {}


def test_voc_unknown_class_raises_naming_file_and_value(tmp_path):
    make_voc(tmp_path, {"a": [("unicorn", 1, 1, 10, 20, 0)]})
    with pytest.raises(ValueError, match=r"a\.xml.*unicorn"):
        VOCDetection(tmp_path, splits=VOC07, class_names=VOC_CLASSES)


def test_voc_missing_and_empty_split_files_raise(tmp_path):
    year = make_voc(tmp_path, {"a": [("cat", 1, 1, 10, 20, 0)]})
    with pytest.raises(FileNotFoundError, match="'2007/test'.*splits there are: 2007/trainval$"):
        VOCDetection(tmp_path, splits=[("2007", "test")])
    with pytest.raises(FileNotFoundError, match="'2012/trainval'.*splits there are: 2007/trainval$"):
        VOCDetection(tmp_path)  # default 07+12 trainval; 2012 absent
    (year / "ImageSets" / "Main" / "trainval.txt").write_text("\n")
    with pytest.raises(ValueError, match="trainval.txt"):
        VOCDetection(tmp_path, splits=VOC07)


def test_voc_missing_or_malformed_annotation_raises(tmp_path):
    year = make_voc(tmp_path, {"a": [("cat", 1, 1, 10, 20, 0)], "b": [("cat", 1, 1, 10, 20, 0)]})
    (year / "Annotations" / "b.xml").write_text("<annotation><size><width>5</width></size></annotation>")
    with pytest.raises(ValueError, match=r"b\.xml.*height"):
        VOCDetection(tmp_path, splits=VOC07)
    (year / "Annotations" / "b.xml").write_text(
        "<annotation><size><width>5</width><height>5</height></size><object><name>cat</name>"
        "<bndbox><xmin>one</xmin><ymin>1</ymin><xmax>3</xmax><ymax>3</ymax></bndbox></object></annotation>")
    with pytest.raises(ValueError, match=r"b\.xml.*xmin.*'one'"):
        VOCDetection(tmp_path, splits=VOC07)
    (year / "Annotations" / "b.xml").write_text("<annotation")
    with pytest.raises(ValueError, match=r"b\.xml.*malformed"):
        VOCDetection(tmp_path, splits=VOC07)
    (year / "Annotations" / "b.xml").unlink()
    with pytest.raises(FileNotFoundError, match=r"b\.xml"):
        VOCDetection(tmp_path, splits=VOC07)


def test_voc_undecodable_or_wrong_size_image_is_skipped_at_construction_else_raises_at_load(tmp_path):
    year = make_voc(tmp_path, {"a": [("cat", 1, 1, 10, 20, 0)], "b": [("cat", 1, 1, 10, 20, 0)],
                               "c": [("cat", 1, 1, 10, 20, 0)]})
    (year / "JPEGImages" / "a.jpg").write_bytes(b"\xff\xd8" + b"\x00" * 64 + b"\xff\xd9")
    write_image(torch.rand(3, 41, 50), year / "JPEGImages" / "b.jpg")
    voc = VOCDetection(tmp_path, splits=VOC07)
    assert voc.ids == ["c"]
    assert voc.summary.skipped == {"corrupt_image": 1, "size_mismatch": 1}
    trusting = VOCDetection(tmp_path, splits=VOC07, check_images=False)  # annotations only
    assert trusting.ids == ["a", "b", "c"]
    with pytest.raises(ValueError, match=r"a\.jpg"):
        trusting[0]
    with pytest.raises(ValueError, match=r"b\.jpg.*41"):
        trusting[1]


# --- COCO ---------------------------------------------------------------------------------------

CAT_IDS = [3, 7, 11]  # non-contiguous on purpose


def make_coco(root: Path, ds: SyntheticScenes) -> dict:
    """COCO JSON and JPEGs of a synthetic dataset, with categories listed out of order."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for i in range(len(ds)):
        image, target = ds[i]
        write_image(image, root / "images" / f"{i}.jpg")
        images.append({"id": 100 + i, "file_name": f"{i}.jpg", "height": 64, "width": 64})
        for (x0, y0, x1, y1), label in zip(target["boxes"].tolist(), target["labels"].tolist()):
            annotations.append({"id": len(annotations) + 1, "image_id": 100 + i, "category_id": CAT_IDS[label],
                                "bbox": [x0, y0, x1 - x0, y1 - y0], "iscrowd": 0, "area": 1.0})
    categories = [{"id": c, "name": n} for c, n in reversed(list(zip(CAT_IDS, ds.class_names)))]
    return {"images": images, "annotations": annotations, "categories": categories}


def write_json(path: Path, data: dict) -> Path:
    path.write_text(json.dumps(data))
    return path


def test_coco_loader_returns_exactly_the_boxes_with_contiguous_labels(tmp_path):
    ds = SyntheticScenes(dataclasses.replace(SMALL, length=6))
    ann = write_json(tmp_path / "ann.json", make_coco(tmp_path, ds))
    coco = COCODetection(tmp_path / "images", ann)
    assert coco.cat_ids == CAT_IDS and coco.class_names == ds.class_names and coco.num_classes == 3
    assert len(coco) == 6 and coco.summary.skipped == {}
    for i in range(6):
        image, target = coco[i]
        assert_contract(image, target, 3)
        assert target["image_id"] == 100 + i
        assert torch.equal(target["boxes"], ds[i][1]["boxes"])
        assert torch.equal(target["labels"], ds[i][1]["labels"])


def test_a_box_outside_its_image_is_named_by_its_annotation_file_as_written(tmp_path, caplog):
    from transcenter.dashboards.dataset_tables import splits_table
    from transcenter.model.data.inspect import dataset_report, format_report

    year = make_voc(tmp_path, {
        "away": [("cat", 60, 5, 70, 20, 0), ("dog", 2, 2, 12, 12, 0)],  # the cat: x past the 50 px
        "edge": [("cat", 40, 5, 70, 20, 0)],  # partly outside: clipped
    })
    with caplog.at_level("WARNING"):
        voc = VOCDetection(tmp_path, splits=VOC07)
    assert voc.summary.skipped == {"outside_image": 1}
    xml = year / "Annotations" / "away.xml"
    assert f"{xml}: 1 box(es) outside the (H, W) = (40, 50) image: <bndbox> xmin=60 ymin=5 xmax=70 " \
           f"ymax=20" in caplog.text
    assert "zero_area_box" not in caplog.text
    edge = str(year / "Annotations" / "edge.xml")
    assert voc.summary.clipped_boxes == 1 and voc.summary.clipped_files == [edge]
    assert f"clipped boxes: 1 (in {edge})" in str(voc.summary)
    report = dataset_report({"train": voc}, 64)
    split = report["splits"]["train"]
    assert (split["clipped_boxes"], split["skipped"]) == (1, {"outside_image": 1})
    assert "outside_image: 1" in format_report(report)
    table = splits_table(report)  # the study report's data-set table shows the same counts
    assert table.loc["train", ["clipped boxes", "left out"]].tolist() == [1, "outside_image: 1"]


def test_coco_bad_images_and_boxes_are_counted_skips(tmp_path):
    ds = SyntheticScenes(dataclasses.replace(SMALL, length=4))
    data = make_coco(tmp_path, ds)
    data["annotations"] = [
        {"id": 1, "image_id": 100, "category_id": 7, "bbox": [-5, 10, 20, 20], "iscrowd": 0},  # clipped
        {"id": 2, "image_id": 100, "category_id": 3, "bbox": [5, 5, 0, 9]},  # zero width
        {"id": 3, "image_id": 100, "category_id": 11, "bbox": [1, 2, 3, 4], "iscrowd": 1},  # crowd
        {"id": 4, "image_id": 102, "category_id": 3, "bbox": [1, 2, 3, 4]},
    ]
    (tmp_path / "images" / "2.jpg").unlink()
    (tmp_path / "images" / "3.jpg").write_bytes(b"not an image")
    coco = COCODetection(tmp_path / "images", write_json(tmp_path / "ann.json", data))
    assert [coco.annotations(i)["image_id"] for i in range(len(coco))] == [100, 101]
    assert coco.summary.skipped == {"zero_area_box": 1, "missing_image": 1, "corrupt_image": 1}
    assert coco.summary.clipped_boxes == 1
    target = coco[0][1]
    assert target["boxes"].tolist() == [[0, 10, 15, 30], [1, 2, 4, 6]]
    assert target["labels"].tolist() == [1, 2] and target["ignore"].tolist() == [False, True]
    assert coco[1][1]["boxes"].shape == (0, 4)  # image without annotations kept as a negative


@pytest.mark.parametrize("change, message", [
    (lambda d: d["annotations"][0].update(category_id=99), "category_id.*99"),
    (lambda d: d["annotations"][0].update(image_id=5), "image_id.*5"),
    (lambda d: d["annotations"][0].update(bbox=[1, 2, 3]), "bbox"),
    (lambda d: d.pop("annotations"), "annotations"),
])
def test_coco_bad_annotations_raise_naming_field_and_value(tmp_path, change, message):
    ds = SyntheticScenes(dataclasses.replace(SMALL, length=2))
    data = make_coco(tmp_path, ds)
    change(data)
    with pytest.raises(ValueError, match=message):
        COCODetection(tmp_path / "images", write_json(tmp_path / "ann.json", data))


def test_coco_missing_annotation_file_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.json"):
        COCODetection(tmp_path, tmp_path / "nope.json")
