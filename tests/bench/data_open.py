"""Opening a data set at COCO-2017's and VOC 07+12's shape, parsed and from the data index:
prints one JSON object.

Generates (into a temporary folder, or ``--root DIR`` to keep and reuse it) a COCO data set of
COCO-2017's shape (118,287 train images with 860,001 annotations with polygon segmentations, a
~340 MB JSON; 4,928 val images with 36,781) and a VOC one of 07+12's (VOC2007 trainval 5,011 and
test 4,952, VOC2012 trainval 11,540 XML files), every image the same tiny 64×48 JPEG; ``--scale``
shrinks both. Then measures, each in a fresh interpreter (peak RSS: the child's ``ru_maxrss``;
GB are GiB):

* ``driver_*``: the study driver's ``check_data`` with the index location (parse with the
  annotations only, sampled probe, data-set report, index written); ``driver_before_*``: the
  same without an index, as before the index.
* ``worker_*``: one Ray Train worker opening its data set from the index as ``TrialRunner`` does
  (``open_datasets`` with ``data.index``; the annotation files hashed, the index copied to an
  empty node cache: ``cold``, or found there: ``warm``). ``worker_import_*`` is torch's and the
  data package's import, part of ``worker_peak_rss_gb``; ``worker_open_rss_gb`` is what the open
  adds to the resident set. ``worker_before_*``: the parse every worker made before (every image
  probed).
* ``loader_*``: a DataLoader with 4 workers draws 2,000 random training images at 128 px; the
  workers' summed VmRSS and private dirty memory (allocated, or copied on write from the
  parent), index-backed and parsed; ``*_after_gc_*`` again with workers that start with a full
  garbage collection, which every worker meets sooner or later in an epoch and which copies the
  pages of every Python object it inherited (pytorch#13246: the parsed records).

The children run torch with ``--threads`` intra-op threads (default 1): on a machine busy with
other work, OpenMP's waiting threads made the driver's data-set report 30× slower, which would
hide what the index changes.
"""
from __future__ import annotations

import argparse
import gc
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

COCO = {"train": (118_287, 860_001), "val": (4_928, 36_781)}  # images, annotations
VOC = {"VOC2007": {"trainval": 5_011, "test": 4_952}, "VOC2012": {"trainval": 11_540}}
COCO_IDS = [i for i in range(1, 91) if i not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)]
VOC_NAMES = ["aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
             "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
             "train", "tvmonitor"]
WIDTH, HEIGHT = 64, 48  # every image
POLYGON_POINTS = 20  # per segmentation: ~360 bytes an annotation, as COCO's
LOADER_IMAGES, LOADER_WORKERS, LOADER_SIZE, BATCH = 2000, 4, 128, 16
GIB = 2 ** 30


def tiny_jpeg() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (WIDTH, HEIGHT), (120, 80, 40)).save(buffer, "JPEG")
    return buffer.getvalue()


def write_images(folder: Path, names: list[str], jpeg: bytes) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(jpeg)


def make_coco(root: Path, scale: float, rng: np.random.Generator, jpeg: bytes) -> None:
    """``root/{train2017,val2017}/*.jpg`` and ``root/annotations/instances_{train,val}2017.json``."""
    polygons = [",".join(f"{v:.2f}" for v in rng.uniform(0, HEIGHT, 2 * POLYGON_POINTS))
                for _ in range(997)]
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    first_image, first_ann = 1, 1
    for split, (images, objects) in COCO.items():
        images, objects = max(2, round(images * scale)), max(2, round(objects * scale))
        ids = list(range(first_image, first_image + images))
        write_images(root / f"{split}2017", [f"{i:012d}.jpg" for i in ids], jpeg)
        owners = rng.choice(ids, objects).tolist()
        boxes = np.concatenate([rng.uniform(0, [WIDTH - 8, HEIGHT - 8], (objects, 2)),
                                rng.uniform(1, 8, (objects, 2))], axis=1).tolist()  # xywh px
        categories = rng.choice(COCO_IDS, objects).tolist()
        crowd = (rng.random(objects) < 0.01).tolist()
        with (root / "annotations" / f"instances_{split}2017.json").open("w") as f:
            f.write('{"info":{"description":"COCO 2017 shape","version":"1.0","year":2017},'
                    '"licenses":[{"url":"http://creativecommons.org/licenses/by-nc-sa/2.0/","id":1,'
                    '"name":"Attribution-NonCommercial-ShareAlike License"}],"images":[')
            f.write(",".join(
                f'{{"license":1,"file_name":"{i:012d}.jpg","coco_url":"http://images.cocodataset.org/'
                f'{split}2017/{i:012d}.jpg","height":{HEIGHT},"width":{WIDTH},"date_captured":'
                f'"2013-11-14 17:02:52","flickr_url":"http://farm7.staticflickr.com/6116/{i}_z.jpg",'
                f'"id":{i}}}' for i in ids))
            f.write('],"annotations":[')
            for start in range(0, objects, 50_000):
                f.write(("," if start else "") + ",".join(
                    f'{{"segmentation":[[{polygons[k % 997]}]],"area":{w * h:.3f},"iscrowd":{int(c)},'
                    f'"image_id":{o},"bbox":[{x:.2f},{y:.2f},{w:.2f},{h:.2f}],"category_id":{cat},'
                    f'"id":{first_ann + k}}}'
                    for k, o, (x, y, w, h), cat, c in zip(
                        range(start, start + 50_000), owners[start:start + 50_000],
                        boxes[start:start + 50_000], categories[start:start + 50_000],
                        crowd[start:start + 50_000])))
            f.write('],"categories":[' + ",".join(
                f'{{"supercategory":"thing","id":{c},"name":"category {c}"}}' for c in COCO_IDS) + "]}")
        first_image, first_ann = first_image + images, first_ann + objects


def make_voc(root: Path, scale: float, rng: np.random.Generator, jpeg: bytes) -> None:
    """``root/VOCdevkit/VOC<year>/{Annotations,ImageSets/Main,JPEGImages}``, VOC-like XML files."""
    for year, splits in VOC.items():
        folder = root / "VOCdevkit" / year
        (folder / "Annotations").mkdir(parents=True, exist_ok=True)
        (folder / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
        start = 0
        for split, count in splits.items():
            ids = [f"{i:06d}" if year == "VOC2007" else f"2012_{i:06d}"
                   for i in range(start, start + max(2, round(count * scale)))]
            start += len(ids)
            (folder / "ImageSets" / "Main" / f"{split}.txt").write_text("\n".join(ids) + "\n")
            write_images(folder / "JPEGImages", [f"{i}.jpg" for i in ids], jpeg)
            for file_id in ids:
                objects = "".join(
                    f"\t<object>\n\t\t<name>{VOC_NAMES[rng.integers(20)]}</name>\n\t\t<pose>Left"
                    f"</pose>\n\t\t<truncated>0</truncated>\n\t\t<difficult>{int(rng.random() < 0.08)}"
                    f"</difficult>\n\t\t<bndbox>\n\t\t\t<xmin>{x}</xmin>\n\t\t\t<ymin>{y}</ymin>\n"
                    f"\t\t\t<xmax>{x + rng.integers(2, 16)}</xmax>\n\t\t\t<ymax>{y + rng.integers(2, 16)}"
                    f"</ymax>\n\t\t</bndbox>\n\t</object>\n"
                    for x, y in rng.integers(1, [WIDTH - 16, HEIGHT - 16], (1 + rng.poisson(1.5), 2)))
                (folder / "Annotations" / f"{file_id}.xml").write_text(
                    f"<annotation>\n\t<folder>{year}</folder>\n\t<filename>{file_id}.jpg</filename>\n"
                    f"\t<source>\n\t\t<database>The {year} Database</database>\n\t</source>\n"
                    f"\t<size>\n\t\t<width>{WIDTH}</width>\n\t\t<height>{HEIGHT}</height>\n"
                    f"\t\t<depth>3</depth>\n\t</size>\n\t<segmented>0</segmented>\n{objects}</annotation>\n")


# --- the children: each prints one JSON line -------------------------------------------------

def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB  # ru_maxrss: KiB


def status_gb(pid: int | str, field: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024 / GIB
    return 0.0


def private_dirty_gb(pid: int) -> float:
    """Private_Dirty of ``pid``: pages it wrote that no other process maps (its allocations and
    its copies of pages it shared with its parent). Private_Clean is left out: pages of the
    memory-mapped index only this process has read so far are page cache, not copies."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Private_Dirty:"):
            return int(line.split()[1]) * 1024 / GIB
    return 0.0


def children(parent: int) -> list[int]:
    """Pids of the live processes whose parent is ``parent``."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # after "pid (comm)"
        except OSError:  # ended meanwhile
            continue
        if int(fields[1]) == parent:
            pids.append(int(stat.parent.name))
    return pids


def data_config(task: dict):
    from transcenter.model.data.config import DataConfig

    names = task.get("class_names")
    return DataConfig(name=task["data"], root=task["root"], index=task.get("index"),
                      class_names=tuple(names) if names else None)


def child_driver(task: dict) -> dict:
    from transcenter.model.training.experiment import trial_config
    from transcenter.platform.data_check import check_data

    config = trial_config(None, {"data.name": task["data"], "data.root": task["root"]})  # 512 px
    start = time.perf_counter()
    check = check_data(config, task.get("index"))
    return {"s": time.perf_counter() - start, "peak_rss_gb": peak_rss_gb(),
            "class_names": check.class_names,
            "images": {s: v["images"] for s, v in check.report["splits"].items()}}


def child_worker(task: dict) -> dict:
    start = time.perf_counter()
    import torch  # noqa: F401  (the trainer's first import)

    from transcenter.model.data.build import data_fingerprint, open_datasets
    imported, import_peak, import_rss = time.perf_counter(), peak_rss_gb(), status_gb("self")
    data = data_config(task)
    train, val = open_datasets(data, 512, check_images=True)
    opened = time.perf_counter()
    out = {"import_s": imported - start, "import_peak_rss_gb": import_peak, "s": opened - imported,
           "peak_rss_gb": peak_rss_gb(), "open_rss_gb": status_gb("self") - import_rss,
           "images": {"train": len(train), "val": len(val)}}
    if data.index:
        start = time.perf_counter()
        data_fingerprint(data)
        out["fingerprint_s"] = time.perf_counter() - start
    return out


def child_loader(task: dict) -> dict:
    import torch
    from torch.utils.data import DataLoader, RandomSampler

    from transcenter.model.data.build import open_datasets
    from transcenter.model.data.common import collate

    train, _ = open_datasets(data_config(task), LOADER_SIZE, check_images=False)
    out = {"main_rss_gb": status_gb("self")}
    for suffix, init in (("", None), ("_gc", collect)):
        # More than drawn, so that the workers are still alive when they are measured.
        sampler = RandomSampler(train, num_samples=LOADER_IMAGES + 4 * LOADER_WORKERS * BATCH,
                                generator=torch.Generator().manual_seed(0))
        loader = DataLoader(train, batch_size=BATCH, sampler=sampler, num_workers=LOADER_WORKERS,
                            collate_fn=collate, worker_init_fn=init, persistent_workers=False)
        batches, seen, start = iter(loader), 0, time.perf_counter()
        while seen < LOADER_IMAGES:
            seen += next(batches)[0].shape[0]
        pids = children(os.getpid())
        out.update({f"s{suffix}": time.perf_counter() - start, f"workers{suffix}": len(pids),
                    f"workers_rss_gb{suffix}": sum(status_gb(p) for p in pids),
                    f"workers_private_dirty_gb{suffix}": sum(private_dirty_gb(p) for p in pids)})
        del batches
    return out


def collect(worker_id: int) -> None:
    """A full garbage collection, as a worker meets one sooner or later in an epoch: it writes
    the header of every tracked object it inherited, copying the pages that hold them."""
    gc.collect()


def run_child(kind: str, task: dict, env: dict) -> dict:
    done = subprocess.run([sys.executable, __file__, "--child", kind, json.dumps(task)],
                          capture_output=True, text=True, env={**os.environ, **env})
    if done.returncode:
        raise RuntimeError(f"{kind} {task}: exit {done.returncode}\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(data: str, root: Path, work: Path, threads: int) -> dict:
    base = {"data": data, "root": str(root)}
    index = str(work / data / "study" / "data" / "index.arrow")
    node = {"TMPDIR": str(work / data / "node-tmp"), "OMP_NUM_THREADS": str(threads)}
    Path(node["TMPDIR"]).mkdir(parents=True, exist_ok=True)
    before = run_child("driver", base, node)
    driver = run_child("driver", {**base, "index": index}, node)
    trial = {**base, "class_names": driver["class_names"], "index": index}
    cold, warm = run_child("worker", trial, node), run_child("worker", trial, node)
    parsed = run_child("worker", {**trial, "index": None}, node)
    loaders = {mode: run_child("loader", trial if mode == "index" else {**trial, "index": None}, node)
               for mode in ("index", "parsed")}
    result = {
        "images": driver["images"],
        "annotation_mb": sum(f.stat().st_size for f in root.rglob("*") if f.suffix in (".json", ".xml")) / 1e6,
        "index_mb": Path(index).stat().st_size / 1e6,
        "driver_s": driver["s"], "driver_peak_rss_gb": driver["peak_rss_gb"],
        "driver_before_s": before["s"], "driver_before_peak_rss_gb": before["peak_rss_gb"],
        "worker_open_s": cold["s"], "worker_peak_rss_gb": cold["peak_rss_gb"],
        "worker_open_rss_gb": cold["open_rss_gb"], "worker_open_warm_s": warm["s"],
        "worker_fingerprint_s": warm["fingerprint_s"],
        "worker_import_s": cold["import_s"], "worker_import_peak_rss_gb": cold["import_peak_rss_gb"],
        "worker_before_open_s": parsed["s"], "worker_before_peak_rss_gb": parsed["peak_rss_gb"],
        "worker_before_open_rss_gb": parsed["open_rss_gb"],
    }
    for mode, loader in loaders.items():
        suffix = "" if mode == "index" else "_before"
        result.update({f"loader_workers_rss_gb{suffix}": loader["workers_rss_gb"],
                       f"loader_workers_private_dirty_gb{suffix}": loader["workers_private_dirty_gb"],
                       f"loader_workers_private_dirty_after_gc_gb{suffix}": loader["workers_private_dirty_gb_gc"],
                       f"loader_main_rss_gb{suffix}": loader["main_rss_gb"],
                       f"loader_images_per_s{suffix}": LOADER_IMAGES / loader["s"]})
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="share of the full shapes (0.05: a quick run)")
    parser.add_argument("--root", type=Path, help="generate into (or reuse) this folder instead of a temporary one")
    parser.add_argument("--data", choices=("coco", "voc"), nargs="+", default=["coco", "voc"])
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads of the children")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, task = args.child
        print(json.dumps(globals()[f"child_{kind}"](json.loads(task))))
        return
    with tempfile.TemporaryDirectory() as scratch:
        root = args.root or Path(scratch) / "data"
        result = {"scale": args.scale, "cpus": os.cpu_count(), "threads": args.threads}
        for data in args.data:
            folder = root / f"{data}-{args.scale:g}"
            if not folder.is_dir():
                start = time.perf_counter()
                maker = make_coco if data == "coco" else make_voc
                maker(folder, args.scale, np.random.default_rng(0), tiny_jpeg())
                result[f"{data}_generate_s"] = time.perf_counter() - start
            result[data] = measure(data, folder, Path(scratch) / "work", args.threads)
    print(json.dumps({k: {n: round(v, 3) if isinstance(v, float) else v for n, v in r.items()}
                      if isinstance(r, dict) else round(r, 3) if isinstance(r, float) else r
                      for k, r in result.items()}))


if __name__ == "__main__":
    main()
