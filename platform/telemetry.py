"""Per-trial Prometheus gauges of a running study, exported through ``ray.util.metrics``.

Rank 0 of each trial's Train worker group calls `EpochGauges.record` once per epoch with the epoch's
metrics dict (``TrialRunner.run_epoch``'s keys). Ray's metrics agent on every node serves them to
Prometheus next to Ray's own cluster metrics, and ``dashboards/grafana/transcenter.json`` plots them.

Ray exports custom metrics under its ``ray`` namespace: the gauge ``transcenter_ap50`` is scraped as
``ray_transcenter_ap50`` (`prometheus_name`), with the labels ``study`` and ``trial_id`` (plus the ones
Ray adds, such as ``SessionName`` and ``WorkerId``). AP values are in percent, as the evaluator
reports them. `METRIC_NAMES` is the one list of what is exported; the Grafana test reads it.
"""

from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Mapping
from typing import Any

from transcenter.store.metric_names import LOSS_KEYS

logger = logging.getLogger(__name__)

# Epoch metric key (as the trainer reports it) -> exported gauge name (Prometheus adds `ray_`).
METRIC_NAMES: dict[str, str] = {key: f"transcenter_{key.lower()}"
                                for key in ("AP50", "AP", *LOSS_KEYS, "images_per_s", "epoch")}
DESCRIPTIONS: dict[str, str] = {
    "AP50": "AP at IoU 0.5 of the trial's last evaluated epoch, percent",
    "AP": "AP at IoU 0.5:0.95 of the trial's last evaluated epoch, percent",
    "loss": "Total training loss, mean over the last epoch",
    "loss_pos": "Position heatmap loss, mean over the last epoch",
    "loss_size": "Size heatmap loss, mean over the last epoch",
    "loss_cls": "Classification loss, mean over the last epoch",
    "loss_offset": "Offset loss, mean over the last epoch",
    "images_per_s": "Training throughput of the last epoch, images per second over all workers",
    "epoch": "Last completed epoch (1-based)",
}
TAG_KEYS = ("study", "trial_id")
PROMETHEUS_PREFIX = "ray_"  # Ray's metrics agent exports under the `ray` namespace


def prometheus_name(name: str) -> str:
    """Returns the name Prometheus shows for a gauge: ``transcenter_ap50`` -> ``ray_transcenter_ap50``."""
    return PROMETHEUS_PREFIX + name


class EpochGauges:
    """One ``ray.util.metrics.Gauge`` per `METRIC_NAMES` entry, tagged by study and trial.

    The gauges are made on the first `record`, not here, so that constructing this (on the driver, in
    a test, or pickled into a worker) needs no Ray. If Ray cannot make them, a warning is logged once
    and recording does nothing: telemetry never stops a trial.

    Args:
        gauge_factory: Makes a gauge from ``(name, description, tag_keys)``; by default
            ``ray.util.metrics.Gauge``. Tests pass a fake.
    """

    def __init__(self, gauge_factory=None) -> None:
        self._factory = gauge_factory
        self._gauges: dict[str, Any] | None = None

    def __getstate__(self) -> dict:
        return {"_factory": self._factory, "_gauges": None}  # gauges are made again where unpickled

    def record(self, study: str, trial_id: str, metrics: Mapping[str, Any]) -> dict[str, float]:
        """Sets the gauges of one trial from one epoch's metrics.

        Args:
            study: The study's name (the ``study`` label).
            trial_id: The trial (the ``trial_id`` label).
            metrics: Epoch metrics by the trainer's keys; keys not in `METRIC_NAMES` are ignored, and
                so are None, NaN and values that are not real numbers (an AP of an epoch that was
                not evaluated keeps the gauge at the last evaluated value).

        Returns:
            Exported gauge name -> the value set (empty when the gauges could not be made).
        """
        gauges = self._ensure_gauges()
        tags = {"study": str(study), "trial_id": str(trial_id)}
        recorded: dict[str, float] = {}
        for key, name in METRIC_NAMES.items():
            value = _real(metrics.get(key))
            if value is None or name not in gauges:
                continue
            gauges[name].set(value, tags=tags)
            recorded[name] = value
        return recorded

    def _ensure_gauges(self) -> dict[str, Any]:
        if self._gauges is None:
            try:
                factory = self._factory
                if factory is None:
                    from ray.util.metrics import Gauge as factory
                self._gauges = {name: factory(name, DESCRIPTIONS[key], TAG_KEYS)
                                for key, name in METRIC_NAMES.items()}
            except Exception:
                logger.warning("cannot create Ray metrics; per-trial gauges are off", exc_info=True)
                self._gauges = {}
        return self._gauges


def _real(value: Any) -> float | None:
    """Returns a real number as float; None for None, NaN, bools and non-numbers."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    value = float(value)
    return None if math.isnan(value) else value
