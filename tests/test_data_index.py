"""The data index (model/data/index.py): index-backed datasets equal parsed ones, a stale
index is refused, bad images are counted skips, no per-image Python objects, the node cache."""
import dataclasses
import json
import logging
import shutil

import numpy as np
import pyarrow.fs as pafs
import pytest
import torch
from data_fixtures import coco_80, flat_png_export, voc_07_12
from torch.utils.data import DataLoader

from transcenter.model.data import DataConfig, collate, open_datasets
from transcenter.model.data import index as index_module
from transcenter.model.data.build import data_fingerprint
from transcenter.model.data.common import write_image
from transcenter.model.data.index import (
    IndexedDetection,
    MissingIndexError,
    StaleIndexError,
    cached_index,
    open_index,
    write_index,
)
from transcenter.model.data.inspect import main as inspect_main
from transcenter.model.training.engine import TrialRunner
from transcenter.model.training.experiment import trial_config
from transcenter.platform.data_check import check_data


@pytest.fixture(autouse=True)
def node_cache(tmp_path, monkeypatch):
    """Each test's own temporary folder, so the index cache starts empty; returns the cache."""
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "tmp"))
    return tmp_path / "tmp" / "transcenter-index"


def build(data: DataConfig, uri) -> DataConfig:
    """Parses ``data`` as the study driver does, writes its index to ``uri`` and returns the
    configuration a trial gets (the class list fixed, ``data.index`` set)."""
    train, val = open_datasets(data, 64, check_images=False)
    write_index(train, val, data_fingerprint(data), str(uri))
    return dataclasses.replace(data, index=str(uri), class_names=tuple(train.class_names))


def assert_same(parsed, indexed):
    assert len(indexed) == len(parsed) and indexed.class_names == parsed.class_names
    assert indexed.num_classes == parsed.num_classes and indexed.summary == parsed.summary
    for i in range(len(parsed)):
        assert indexed.image_file(i) == parsed.image_file(i)
        a, b = parsed.annotations(i), indexed.annotations(i)
        assert a.keys() == b.keys() and a["image_id"] == b["image_id"]
        for key in ("boxes", "labels", "ignore", "iscrowd", "orig_size"):
            assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), (i, key)


def voc_with_skips(root):
    """VOC 07+12 with an image without its size in the XML, a box outside its image, a difficult
    object and an image listed twice: a size from the image file, a clipped box and two skips."""
    voc_07_12(root)
    year = root / "VOCdevkit" / "VOC2007"

    def edit(file_id, old, new):
        xml = year / "Annotations" / f"{file_id}.xml"
        xml.write_text(xml.read_text().replace(old, new, 1))

    edit("000001", "<size>", "<sizeless>")
    edit("000001", "</size>", "</sizeless>")
    edit("000002", "<xmax>", "<xmax>99")  # xmax 99<x>, beyond the 64 px image
    edit("000004", "<difficult>0</difficult>", "<difficult>1</difficult>")
    listing = year / "ImageSets" / "Main" / "trainval.txt"
    listing.write_text(listing.read_text() + "000003\n")
    return root


@pytest.mark.parametrize("make, fields, skipped, clipped, sized", [
    (voc_with_skips, {}, {"duplicate_image": 1, "difficult": 1}, 1, 1),
    (lambda root: flat_png_export(root, length=20, splits=("trainval",)),
     {"val_fraction": 0.25, "seed": 3}, {}, 0, 0),
])
def test_voc_index_gives_the_parsed_datasets(tmp_path, make, fields, skipped, clipped, sized):
    data = DataConfig(name="voc", root=str(make(tmp_path / "data")), **fields)
    parsed = open_datasets(data, 64, check_images=False)
    indexed = open_datasets(build(data, tmp_path / "index.arrow"), 64)
    summary = parsed[0].summary
    assert (summary.skipped, summary.clipped_boxes, summary.sizes_from_image) == (skipped, clipped, sized)
    for a, b in zip(parsed, indexed):
        assert_same(a, b)
        image_a, target_a = a[len(a) - 1]  # validation's letterbox is deterministic
        image_b, target_b = b[len(b) - 1]
        assert torch.equal(image_a, image_b) and torch.equal(target_a["boxes"], target_b["boxes"])
    assert type(indexed[0].transforms) is type(parsed[0].transforms)
    assert indexed[1].transforms is not indexed[0].transforms


def test_coco_index_gives_the_parsed_datasets_with_their_skip_counts(tmp_path):
    root = tmp_path / "data"
    path, content = coco_80(root, images=12, ann_name="instances_train.json")
    content["annotations"][0]["category_id"] = 12  # not a category: skipped
    content["annotations"][1]["bbox"] = [5, 5, 0, 9]  # zero width: skipped
    content["annotations"][2]["bbox"] = [-5, 5, 30, 9]  # clipped
    del content["images"][3]["height"]  # sized from the image file
    path.write_text(json.dumps(content))
    coco_80(root, images=5, seed=1, ann_name="instances_val.json")
    for fields in ({}, {"val_fraction": 0.3, "seed": 5, "val_ann": None}):
        data = DataConfig(name="coco", root=str(root), unknown_classes="skip",
                          **{"train_ann": "annotations/instances_train.json", **fields})
        parsed = open_datasets(data, 64, check_images=False)
        assert parsed[0].summary.skipped == {"unknown_class": 1, "zero_area_box": 1}
        assert parsed[0].summary.clipped_boxes == 1 and parsed[0].summary.sizes_from_image == 1
        indexed = open_datasets(build(data, tmp_path / f"index-{len(fields)}.arrow"), 64)
        for a, b in zip(parsed, indexed):
            assert_same(a, b)


def test_an_edited_annotation_file_or_option_is_refused_naming_the_index_and_file(tmp_path):
    root = voc_07_12(tmp_path / "data")
    index = tmp_path / "index.arrow"
    trial = build(DataConfig(name="voc", root=str(root)), index)
    xml = root / "VOCdevkit" / "VOC2012" / "Annotations" / "2012_000003.xml"
    text = xml.read_text()
    edited = text.replace("<difficult>0</difficult>", "<difficult>1</difficult>", 1)
    assert edited != text and len(edited) == len(text)  # same size, other content
    xml.write_text(edited)
    with pytest.raises(StaleIndexError) as err:
        open_datasets(trial, 64)
    message = str(err.value)
    assert "\n" not in message and str(index) in message
    assert "1 annotation file(s) differ" in message and "VOC2012/Annotations/2012_000003.xml" in message
    xml.write_text(text)
    assert len(open_datasets(trial, 64)[0]) == 15  # the same files again: it matches
    with pytest.raises(StaleIndexError, match=r"data.unknown_classes: index 'error', here 'skip'"):
        open_datasets(dataclasses.replace(trial, unknown_classes="skip"), 64)
    with pytest.raises(StaleIndexError, match=r"data.class_names: index None, here \['a', 'b'\]"):
        open_datasets(dataclasses.replace(trial, class_names=("a", "b")), 64)
    # The index was built without a class list: the same "None" opens it, as does its own list.
    assert open_datasets(dataclasses.replace(trial, class_names=None), 64)[0].class_names == \
        list(trial.class_names)


def test_an_edited_coco_json_of_the_same_size_is_refused(tmp_path):
    root = tmp_path / "data"
    path, _ = coco_80(root, images=8, ann_name="instances_train.json")
    coco_80(root, images=4, seed=1, ann_name="instances_val.json")
    trial = build(DataConfig(name="coco", root=str(root)), tmp_path / "index.arrow")
    text = path.read_text()
    path.write_text(text.replace('"iscrowd": 1', '"iscrowd": 0'))
    with pytest.raises(StaleIndexError, match=r"annotation file\(s\) differ.*annotations/instances_train.json"):
        open_datasets(trial, 64)


def test_a_missing_or_foreign_index_is_refused_in_one_line(tmp_path):
    root = voc_07_12(tmp_path / "data")
    data = DataConfig(name="voc", root=str(root), index=str(tmp_path / "nowhere.arrow"))
    with pytest.raises(MissingIndexError, match=r"data.index .*nowhere.arrow: no index there"):
        open_datasets(data, 64)
    (tmp_path / "not-an-index.arrow").write_bytes(b"garbage")
    with pytest.raises(StaleIndexError, match=r"not-an-index.arrow: not a data index"):
        open_datasets(dataclasses.replace(data, index=str(tmp_path / "not-an-index.arrow")), 64)
    with pytest.raises(ValueError, match="data.index.*synthetic scenes have no annotation files"):
        DataConfig(index="x.arrow")


def test_an_unreadable_image_at_load_time_is_a_counted_skip(tmp_path, caplog):
    root = voc_07_12(tmp_path / "data")
    train, val = open_datasets(build(DataConfig(name="voc", root=str(root)), tmp_path / "i.arrow"), 64)
    images = root / "VOCdevkit" / "VOC2007" / "JPEGImages"
    (images / "000001.jpg").unlink()  # missing
    data = (images / "000002.jpg").read_bytes()
    (images / "000002.jpg").write_bytes(data[: len(data) // 2])  # truncated
    write_image(torch.rand(3, 50, 64), images / "000004.jpg")  # the annotation says 64 x 64
    with caplog.at_level(logging.WARNING):
        for _ in range(2):  # counted once per image
            ids = [train[i][1]["image_id"] for i in range(len(train))]
    assert train.summary.skipped == {"missing_image": 1, "corrupt_image": 1, "size_mismatch": 1}
    assert ids[:6] == [0, 3, 3, 3, 5, 5]  # each bad image replaced by the next readable one
    assert "000001.jpg" in caplog.text and "the next readable image is used" in caplog.text
    for name in ("000008", "000009"):  # the whole val split (2007 test)
        (images / f"{name}.jpg").unlink()
    with pytest.raises(ValueError, match="no image of the val split is readable"):
        val[0]
    assert val.summary.skipped == {"missing_image": 2}


def test_an_indexed_split_holds_columns_not_per_image_objects(tmp_path):
    data = DataConfig(name="voc", root=str(flat_png_export(tmp_path / "data", length=40)))
    train, _ = open_datasets(build(data, tmp_path / "index.arrow"), 64)
    n = len(train)
    assert n == 32
    arrays = {k: v for k, v in vars(train).items() if isinstance(v, np.ndarray)}
    assert {"_path_offsets", "_path_bytes", "_sizes", "_image_ids", "_offsets", "_boxes", "_labels",
            "_ignore"} <= set(arrays)
    for name, array in arrays.items():
        assert not array.flags.owndata and not array.flags.writeable, f"{name} is a copy"
    containers = {k: len(v) for k, v in vars(train).items() if isinstance(v, (list, tuple, dict, set))}
    assert all(size < n for size in containers.values()), containers  # class_names, ...


def test_forked_loader_workers_give_the_parsed_batches(tmp_path):
    data = DataConfig(name="voc", root=str(voc_07_12(tmp_path / "data")))
    parsed = open_datasets(data, 64, check_images=False)[0]
    indexed = open_datasets(build(data, tmp_path / "index.arrow"), 64)[0]
    batches = [list(DataLoader(ds, batch_size=4, num_workers=2, collate_fn=collate)) for ds in (parsed, indexed)]
    assert len(batches[1]) == 4
    for (images_a, targets_a), (images_b, targets_b) in zip(*batches):
        assert torch.equal(images_a, images_b)
        assert [t["image_id"] for t in targets_a] == [t["image_id"] for t in targets_b]


@pytest.mark.parametrize("scheme", ["", "file://"])
def test_a_local_index_is_read_where_it_is(tmp_path, scheme, node_cache):
    """Nothing is copied into the system's temporary folder, where it would outlive the study."""
    data = DataConfig(name="voc", root=str(voc_07_12(tmp_path / "data")))
    trial = build(data, tmp_path / "study" / "index.arrow")
    trial = dataclasses.replace(trial, index=f"{scheme}{tmp_path / 'study' / 'index.arrow'}")
    assert open_datasets(trial, 64)[0].file == tmp_path / "study" / "index.arrow"
    assert not node_cache.exists()
    (tmp_path / "study" / "index.arrow").write_bytes(b"no index")
    with pytest.raises(StaleIndexError, match="not a data index"):  # checked as a copy is
        open_datasets(trial, 64)


@pytest.fixture
def remote(tmp_path, monkeypatch):
    """Indexes at ``remote://<path under tmp_path>`` open through a non-local pyarrow filesystem
    (as ``s3://`` ones do); returns the URI of ``tmp_path / "study" / "index.arrow"``."""
    real = index_module._filesystem

    def opened(uri: str):
        if uri.startswith("remote://"):
            return pafs.SubTreeFileSystem(str(tmp_path), pafs.LocalFileSystem()), uri.removeprefix("remote://")
        return real(uri)

    monkeypatch.setattr(index_module, "_filesystem", opened)
    return "remote://study/index.arrow"


def test_a_remote_index_is_copied_to_the_node_cache_once_and_reused(tmp_path, remote, node_cache,
                                                                     monkeypatch):
    data = DataConfig(name="voc", root=str(voc_07_12(tmp_path / "data")))
    trial = dataclasses.replace(build(data, tmp_path / "study" / "index.arrow"), index=remote)
    first = open_datasets(trial, 64)[0]
    cached = list(node_cache.glob("*.arrow"))
    assert [first.file] == cached and not list(node_cache.glob("*.tmp"))
    copies = []
    monkeypatch.setattr(shutil, "copyfileobj", lambda *a, **k: copies.append(a))
    assert open_datasets(trial, 64)[0].file == first.file and copies == []  # reused
    build(data, tmp_path / "study" / "index.arrow")  # rebuilt: copied again
    with pytest.raises(StaleIndexError, match="not a data index"):  # the stubbed copy wrote nothing
        open_datasets(trial, 64)
    assert len(copies) == 1 and list(node_cache.glob("*.arrow")) == cached


def test_open_index_takes_a_cache_folder(tmp_path, remote):
    data = DataConfig(name="voc", root=str(voc_07_12(tmp_path / "data")))
    build(data, tmp_path / "study" / "index.arrow")
    train, val = open_index(remote, data_fingerprint(data), cache_dir=tmp_path / "c")
    assert train.file.parent == tmp_path / "c" and val.file == train.file
    assert cached_index(remote, data_fingerprint(data), tmp_path / "c") == train.file


def test_the_study_driver_writes_the_index_and_a_resumed_study_reuses_it(tmp_path, caplog):
    root = voc_07_12(tmp_path / "data")
    config = trial_config("smoke", {"data.name": "voc", "data.root": str(root)})
    index = tmp_path / "study" / "data" / "index.arrow"
    check = check_data(config, str(index))
    assert check.trial_overrides == {"data.class_names": check.class_names, "data.index": str(index)}
    written = index.stat().st_mtime_ns
    with caplog.at_level(logging.INFO):
        again = check_data(config, str(index))  # --resume
    assert index.stat().st_mtime_ns == written and "matches the annotation files: reused" in caplog.text
    assert again.report == check.report and again.class_names == check.class_names
    trial = trial_config("smoke", {"data.name": "voc", "data.root": str(root), **check.trial_overrides})
    train, val = open_datasets(trial.data, trial.model.input_size)
    assert isinstance(train, IndexedDetection) and (len(train), len(val)) == (15, 2)
    listing = root / "VOCdevkit" / "VOC2012" / "ImageSets" / "Main" / "trainval.txt"
    listing.write_text("\n".join(listing.read_text().split()[:4]) + "\n")
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        rebuilt = check_data(config, str(index))
    assert "rebuilding the data index" in caplog.text and "trainval.txt" in caplog.text
    assert rebuilt.report["splits"]["train"]["images"] == 12  # 8 of 2007, 4 of 2012
    assert len(open_datasets(trial.data, trial.model.input_size)[0]) == 12
    synthetic = check_data(trial_config("smoke"), str(tmp_path / "synthetic" / "index.arrow"))
    assert synthetic.trial_overrides == {} and synthetic.index is None
    assert not (tmp_path / "synthetic").exists()


def test_inspect_reads_a_matching_index_else_parses_with_a_note(tmp_path, capsys, node_cache):
    root = voc_07_12(tmp_path / "data")
    build(DataConfig(name="voc", root=str(root)), tmp_path / "index.arrow")
    argv = ["--data", "voc", "--data-root", str(root), "--input-size", "64", "--json"]
    assert inspect_main(argv) == 0
    parsed = capsys.readouterr().out
    assert inspect_main(argv + ["--index", str(tmp_path / "index.arrow")]) == 0
    out = capsys.readouterr()
    assert out.out == parsed and out.err == "" and not node_cache.exists()
    assert inspect_main(argv + ["--index", str(tmp_path / "index.arrow"), "--set", "data.seed=1"]) == 0
    assert capsys.readouterr().err == ""  # the seed shapes nothing without data.val_fraction
    assert inspect_main(argv + ["--index", str(tmp_path / "index.arrow"), "--set", "data.seed=1",
                                "--set", "data.unknown_classes=skip"]) == 0
    out = capsys.readouterr()
    assert out.out == parsed
    assert out.err.startswith("note: data.index") and "parsing the annotation files instead" in out.err


def test_a_trial_trains_and_evaluates_from_the_index(tmp_path):
    root = voc_07_12(tmp_path / "data")
    base = {"data.name": "voc", "data.root": str(root), "train.epochs": 1, "train.batch_size": 4,
            "train.device": "cpu"}
    check = check_data(trial_config("smoke", base), str(tmp_path / "index.arrow"))
    runner = TrialRunner(trial_config("smoke", {**base, **check.trial_overrides}))
    assert isinstance(runner.val_set, IndexedDetection) and runner.config.num_classes == 3
    row = runner.run_epoch()
    assert row["epoch"] == 1 and torch.isfinite(torch.tensor(row["loss"]))
    assert {f"AP50_class{k}" for k in range(3)} <= set(row)
