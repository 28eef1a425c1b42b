"""The paper's central claim measured: two same-class objects whose centres share a heatmap cell
are both detected by TransCenter (each query owns its heatmap channel) but not by a CenterNet-style
per-class heatmap, whose target has one peak for the pair (tests/test_centernet.py), which caps its
overlap recall near 50 %.

Both heads train through ``TrialRunner`` with the same budget: the ``cpu`` preset (same trunk,
optimiser, 192 images, batch 8) at a 64-px input for 192 steps at S = 16, on synthetic scenes that
each hold a nested same-class pair sharing its centre (``data.overlap_fraction = 1.0``), and are
evaluated on 64 fresh scenes (128 objects in shared cells). The claim asserted: TransCenter's
overlap recall exceeds CenterNet's by at least ``MARGIN`` percentage points.

Measured over seeds 0-7 (one thread per head, 192 steps, 64-px input; about 42 s of CPU per
head), overlap recall in percent (the test runs seed 0)::

    seed          0     1     2     3     4     5     6     7   min  median  max
    TransCenter  91.4  85.2  82.0  85.2  85.2  85.2  82.8  84.4  82.0  85.2  91.4
    CenterNet    32.8  39.8  34.4  39.1  33.6  36.7  38.3  39.8  32.8  37.5  39.8
    gap          58.6  45.3  47.7  46.1  51.6  48.4  44.5  44.5  44.5  46.9  58.6

``MARGIN`` sits well under the smallest gap measured, so a small numerical change (another
PyTorch, another CPU) does not flip the test, while a head that no longer separates pairs does:
CenterNet's recall stays under its cap whatever the seed. The budget is in steps because
TransCenter's recall climbs with training (after 120 steps, seeds 3 and 5 had given 52.3 and 45.3
against CenterNet's 35.2 and 32.8).
"""
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor

import pytest

from transcenter.model.training.engine import TrialRunner, configure_process
from transcenter.model.training.experiment import trial_config

EPOCHS = 8  # 192 images (the cpu preset's), batch 8 -> 192 steps
MARGIN = 25.0  # percentage points of overlap recall between the heads


def _final_metrics(head: str, seed: int) -> dict[str, float]:
    """Trains ``head`` with the cpu preset at a 64-px input for ``EPOCHS`` on one thread; returns
    the last epoch's metrics."""
    cfg = trial_config("cpu", {"model.head": head, "model.heatmap_size": 16, "model.input_size": 64,
                               "data.overlap_fraction": 1.0, "data.num_val": 64,
                               "train.epochs": EPOCHS, "train.eval_every": EPOCHS,
                               "train.seed": seed, "data.seed": seed, "train.threads": 1})
    configure_process(cfg)
    runner = TrialRunner(cfg)
    return [runner.run_epoch() for _ in range(EPOCHS)][-1]


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0])
def test_transcenter_recalls_objects_sharing_a_cell_that_centernet_cannot(seed):
    start = time.perf_counter()
    # The two heads train at once, one core each (faster than one after the other on two threads).
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        transcenter, centernet = pool.map(_final_metrics, ("transcenter", "centernet"), (seed, seed))
    numbers = {head: (round(m["overlap_recall"], 1), round(m["AP50"], 1))
               for head, m in (("transcenter", transcenter), ("centernet", centernet))}
    print(f"seed {seed}: (overlap recall, AP50) {numbers}, {time.perf_counter() - start:.0f} s")
    assert transcenter["overlap_recall"] - centernet["overlap_recall"] >= MARGIN, numbers
