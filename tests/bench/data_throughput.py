"""Data pipeline throughput: prints one JSON object of images/s.

Measures the synthetic and the VOC pipeline with 512×512 training transforms through a torch
DataLoader with 2 workers (VOC read from synthetic scenes exported to a temp dir), the time to open
that VOC split (parse every annotation, probe every image file), plus the bare rendering rate of
128 px synthetic scenes in the main process.
"""

import json
import tempfile
import time

import torch
from torch.utils.data import DataLoader

from transcenter.model.data import (
    SyntheticConfig,
    SyntheticScenes,
    VOCDetection,
    collate,
    export_voc,
    train_transforms,
)

IMAGES = 384
BATCH = 16
WORKERS = 2


def loader_rate(dataset) -> float:
    """Images/s through a 2-worker DataLoader, after the first batch (worker start-up) is drawn."""
    loader = DataLoader(dataset, batch_size=BATCH, num_workers=WORKERS, collate_fn=collate,
                        shuffle=True, persistent_workers=False)
    batches = iter(loader)
    next(batches)
    start, count = time.perf_counter(), 0
    for images, _ in batches:
        count += images.shape[0]
    return count / (time.perf_counter() - start)


def render_rate(dataset, n: int = 2000) -> float:
    """Images/s of bare synthetic rendering (no transforms) in this process, one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    start = time.perf_counter()
    for i in range(n):
        dataset[i % len(dataset)]
    torch.set_num_threads(threads)
    return n / (time.perf_counter() - start)


def main() -> None:
    config = SyntheticConfig(length=IMAGES)
    transforms = train_transforms(size=512)
    result = {"size": 512, "workers": WORKERS, "batch": BATCH, "images": IMAGES - BATCH,
              "synthetic_img_per_s": loader_rate(SyntheticScenes(config, transforms=transforms))}
    with tempfile.TemporaryDirectory() as root:
        # trainval is 80 % of an export; export enough for IMAGES of it.
        export_voc(SyntheticScenes(SyntheticConfig(length=IMAGES * 5 // 4 + 1, seed=1)), root)
        start = time.perf_counter()
        voc = VOCDetection(root, splits=[("2007", "trainval")], transforms=transforms,
                           class_names=SyntheticScenes(config).class_names)
        result["voc_open_ms_per_image"] = (time.perf_counter() - start) * 1000 / len(voc)
        result["voc_img_per_s"] = loader_rate(voc)
    result["synthetic_128px_render_img_per_s"] = render_rate(SyntheticScenes(config))
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in result.items()}))


if __name__ == "__main__":
    main()
