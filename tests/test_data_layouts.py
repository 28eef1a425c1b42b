"""Bring-your-own data: every VOC layout, COCO with 80 non-contiguous categories, splits, classes
from the data, the class count tied to the model, and bad input."""
import json
import logging

import pytest
import torch
from data_fixtures import COCO_IDS, coco_80, flat_png_export, scenes, single_year_voc, voc_07_12

from transcenter.model.data import DataConfig, VOCDetection, open_datasets
from transcenter.model.data.common import write_image
from transcenter.model.training.engine import TrialRunner
from transcenter.model.training.experiment import trial_config


def voc(root, **fields):
    return DataConfig(name="voc", root=str(root), **fields)


def ids(dataset):
    return [r.path.stem for r in dataset.records]


def test_single_year_voc_folder_without_devkit_opens_with_the_default_splits(tmp_path):
    single_year_voc(tmp_path, length=10)  # trainval = 000000..000007, test = 000008..000009
    train, val = open_datasets(voc(tmp_path), 64)
    assert ids(train) == [f"{i:06d}" for i in range(8)] and ids(val) == ["000008", "000009"]
    assert train.class_names == val.class_names == sorted(scenes(1).class_names)
    source = scenes(10)
    for dataset in (train, val):
        for _i, record in enumerate(dataset.records):
            original = source.annotations(int(record.path.stem))
            names = [source.class_names[k] for k in original["labels"].tolist()]
            assert torch.equal(record.boxes, original["boxes"])
            assert [dataset.class_names[k] for k in record.labels.tolist()] == names


def test_flat_png_export_opens_and_reads_pixels(tmp_path):
    flat_png_export(tmp_path)
    train, val = open_datasets(voc(tmp_path), 64)
    assert len(train) == 8 and len(val) == 2 and train.records[0].path.suffix == ".png"
    image, target = val[0]
    assert image.shape == (3, 64, 64) and target["boxes"].shape[1] == 4
    explicit = VOCDetection(tmp_path, "train,val")
    assert len(explicit) == 8  # train (6) + val (2)


def test_flat_export_with_one_split_needs_val_fraction_which_is_seeded(tmp_path):
    flat_png_export(tmp_path, length=20, splits=("default",))
    (tmp_path / "ImageSets" / "Main" / "default.txt").write_text(
        "\n".join(f"{i:06d}" for i in range(20)) + "\n")
    with pytest.raises(FileNotFoundError, match="no validation split.*default.*data.val_fraction"):
        open_datasets(voc(tmp_path), 64)
    train, val = open_datasets(voc(tmp_path, val_fraction=0.25, seed=3), 64)
    again = open_datasets(voc(tmp_path, val_fraction=0.25, seed=3), 64)[1]
    other = open_datasets(voc(tmp_path, val_fraction=0.25, seed=4), 64)[1]
    assert len(val) == 5 and len(train) == 15 and not set(ids(train)) & set(ids(val))
    assert ids(again) == ids(val) and ids(other) != ids(val)
    assert val.transforms is not train.transforms


def test_voc_07_12_devkit_keeps_the_paper_splits_and_lists_splits_when_one_is_missing(tmp_path):
    voc_07_12(tmp_path)
    train, val = open_datasets(voc(tmp_path), 64)
    assert len(train) == 8 + 7 and ids(val) == ["000008", "000009"]
    assert any(i.startswith("2012_") for i in ids(train))
    explicit = open_datasets(voc(tmp_path, train_splits="2007/trainval,2012/trainval",
                                 val_splits="2007/test"), 64)
    assert [ids(d) for d in explicit] == [ids(train), ids(val)]
    assert len(open_datasets(voc(tmp_path, train_splits="trainval"), 64)[0]) == 15  # both years
    with pytest.raises(FileNotFoundError) as err:
        open_datasets(voc(tmp_path, val_splits="2012/test"), 64)
    message = str(err.value)
    assert "data.val_splits='2012/test'" in message
    for split in ("2007/test", "2007/trainval", "2012/train", "2012/trainval", "2012/val"):
        assert split in message


def test_classes_from_file_given_list_or_annotations_and_unknown_class_error_or_skip(tmp_path):
    single_year_voc(tmp_path)
    names = scenes(1).class_names  # red_square, green_circle, blue_triangle
    (tmp_path / "VOC2007" / "labels.txt").write_text("\n".join(names) + "\n")
    train, val = open_datasets(voc(tmp_path), 64)
    assert train.class_names == val.class_names == names and train.class_source.endswith("labels.txt")
    given = open_datasets(voc(tmp_path, class_names=",".join(reversed(names))), 64)[0]
    assert given.class_names == list(reversed(names))
    with pytest.raises(ValueError, match=r"\.xml.*unknown class '.*'.*unknown_classes=skip"):
        open_datasets(voc(tmp_path, class_names=names[:2]), 64)
    skipped = open_datasets(voc(tmp_path, class_names=names[:2], unknown_classes="skip"), 64)[0]
    assert skipped.summary.skipped["unknown_class"] == train.summary.per_class[names[2]]
    assert skipped.summary.objects == train.summary.objects - train.summary.per_class[names[2]]


def test_model_class_count_comes_from_the_data(tmp_path):
    assert trial_config("smoke").detector.model.num_classes == 3  # not VOC's 20 on 3 synthetic classes
    assert trial_config("smoke", {"data.num_classes": 5}).detector.model.num_classes == 5
    with pytest.raises(ValueError, match=r"model.num_classes=20.*3 classes"):
        trial_config("smoke", {"model.num_classes": 20})
    cfg = trial_config("smoke", {"data.name": "voc", "data.root": str(tmp_path)})
    assert cfg.num_classes is None
    assert cfg.with_class_names(["a", "b"]).detector.model.num_classes == 2
    with pytest.raises(ValueError, match=r"model.num_classes=7.*2 classes"):
        trial_config("smoke", {"data.name": "voc", "data.root": "x", "model.num_classes": 7,
                               "data.class_names": "a,b"})
    with pytest.raises(ValueError, match="data.root"):
        trial_config("smoke", {"data.name": "coco"})
    with pytest.raises(ValueError, match="model.num_classes is unset"):
        from transcenter.model.detector.registry import build_model
        build_model(cfg.detector.model)


def test_coco_80_non_contiguous_categories_train_one_step(tmp_path):
    coco_80(tmp_path, images=12, seed=0, ann_name="instances_train.json")
    coco_80(tmp_path, images=6, seed=1, ann_name="instances_val.json")
    cfg = trial_config("smoke", {"data.name": "coco", "data.root": str(tmp_path), "train.epochs": 1,
                                 "train.batch_size": 6, "train.device": "cpu"})
    runner = TrialRunner(cfg)
    assert runner.train_set.cat_ids == COCO_IDS and runner.val_set.cat_ids == COCO_IDS
    assert runner.train_set.class_names[:2] == ["category 1", "category 2"]
    assert runner.config.num_classes == 80
    assert runner.model.class_head.out_features == 81
    assert len(runner.val_set.records[-1].labels) == 0  # an image without annotations is kept
    row = runner.run_epoch()
    assert row["epoch"] == 1 and torch.isfinite(torch.tensor(row["loss"]))
    assert {f"AP50_class{k}" for k in range(80)} <= set(row)


def test_coco_single_json_with_seeded_val_fraction_and_coco_folder_names(tmp_path):
    coco_80(tmp_path, images=20, image_dir="train2017", ann_name="instances_train2017.json")
    with pytest.raises(FileNotFoundError, match="data.val_ann is unset.*instances_train2017.json"):
        open_datasets(DataConfig(name="coco", root=str(tmp_path)), 64)
    cfg = DataConfig(name="coco", root=str(tmp_path), val_fraction=0.2, seed=7)
    train, val = open_datasets(cfg, 64)
    assert train.image_dir == tmp_path / "train2017" and len(train) == 16 and len(val) == 4
    assert ids(open_datasets(cfg, 64)[1]) == ids(val)
    assert not {r.image_id for r in train.records} & {r.image_id for r in val.records}


def test_coco_bad_input_names_file_field_and_value_or_counts_a_skip(tmp_path):
    path, data = coco_80(tmp_path, images=4, ann_name="instances_train.json")
    data["images"].append(dict(data["images"][0]))
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"instances_train.json images: field 'id' has the duplicate value 1000"):
        open_datasets(DataConfig(name="coco", root=str(tmp_path), val_fraction=0.25), 64)
    data["images"].pop()
    data["annotations"][0]["category_id"] = 12  # a gap in COCO's ids
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"annotation 1: field 'category_id' has unknown category 12"):
        open_datasets(DataConfig(name="coco", root=str(tmp_path), val_fraction=0.25), 64)
    train, _ = open_datasets(DataConfig(name="coco", root=str(tmp_path), val_fraction=0.25,
                                        unknown_classes="skip"), 64)
    assert train.summary.skipped == {"unknown_class": 1}
    del data["images"][1]["height"]  # the image's own size is taken
    path.write_text(json.dumps(data))
    train, val = open_datasets(DataConfig(name="coco", root=str(tmp_path), val_fraction=0.25,
                                          unknown_classes="skip"), 64)
    assert train.summary.sizes_from_image == 1
    assert all(r.size == (60, 80) for r in train.records + val.records)


def test_voc_bad_input(tmp_path, caplog):
    single_year_voc(tmp_path, length=10)
    year = tmp_path / "VOC2007"
    xml = (year / "Annotations" / "000001.xml").read_text()
    sizeless = xml.replace("<size>", "<sizeless>").replace("</size>", "</sizeless>")
    (year / "Annotations" / "000001.xml").write_text(sizeless)
    write_image(torch.rand(3, 50, 64), year / "JPEGImages" / "000002.jpg")  # annotation says 64 x 64
    (year / "ImageSets" / "Main" / "trainval.txt").write_text(
        "\n".join(f"{i:06d}" for i in [0, 1, 2, 3, 3, 4]) + "\n")  # 000003 twice
    with caplog.at_level(logging.WARNING):
        train, _ = open_datasets(voc(tmp_path), 64)
    assert ids(train) == ["000000", "000001", "000003", "000004"]
    assert train.summary.sizes_from_image == 1 and train.records[1].size == (64, 64)
    assert train.summary.skipped == {"size_mismatch": 1, "duplicate_image": 1}
    assert "000002.jpg: the annotation says (H, W) = (64, 64), the image file (50, 64)" in caplog.text
    (year / "ImageSets" / "Main" / "test.txt").write_text("\n")
    with pytest.raises(ValueError, match="VOC split file is empty: .*test.txt"):
        open_datasets(voc(tmp_path), 64)
    (year / "ImageSets" / "Main" / "test.txt").write_text("000002\n")  # its only image is skipped
    with pytest.raises(ValueError, match="the val split has no usable image.*size_mismatch: 1"):
        open_datasets(voc(tmp_path), 64)


def test_missing_root_or_not_a_voc_layout_is_one_clear_line(tmp_path):
    with pytest.raises(FileNotFoundError, match="data.root '.*nowhere': no such folder"):
        open_datasets(voc(tmp_path / "nowhere"), 64)
    (tmp_path / "photos").mkdir()
    with pytest.raises(FileNotFoundError, match=r"not a VOC-layout folder.*found \['photos'\]"):
        open_datasets(voc(tmp_path), 64)
