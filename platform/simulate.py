"""Simulated trials: the real study (Tune, the Optuna searcher, ASHA, the result store, the
callbacks) with the training replaced by a learning curve played on a sped-up clock.

A simulated trial is a light Tune trial: no Ray Train worker group, no torch. For each epoch it
sleeps the epoch's simulated duration divided by the time scale, then reports the same metrics a
real trial reports (same names; the stored ``device`` says ``simulated (<source>)``, so a row says
what ran). The study lets Tune reuse a finished trial's actor for the next trial
(``reuse_actors``), and no more trial actors exist than trials run at once
(:func:`simulated_trainable`).

Three learning-curve sources: :class:`Surrogate`, built in and needing no data (a parametric
curve family over any search space, with a known optimum), :class:`CrossingSurrogate`, its variant
with the paper's crossing curves (small heatmaps lead early, S = 64 ends highest), and
:class:`StudyCurves`, a finished study's own per-epoch rows (a configuration it trained replays its
curve; another is predicted from the nearest ones it trained). This module is what a simulated
trial's actor imports, so it stays light (``tests/test_import_contract.py``).
"""
from __future__ import annotations

import copy
import functools
import hashlib
import heapq
import json
import math
import random
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from ray import tune

from transcenter.platform.trial_files import DEVICE_KEY, NODE_KEY, split_config
from transcenter.store.metric_names import (
    AP_KEYS,
    COCO_AP_KEYS,
    COST_KEYS,
    EXTRA_KEYS,
    LOSS_KEYS,
    OVERLAP_RECALL,
)
from transcenter.store.results import ResultStore

SURROGATE = "surrogate"
CROSSING = "crossing"
HEATMAP_SIZE = "model.heatmap_size"
SURROGATES = (SURROGATE, CROSSING)  # built-in learning-curve families, by ``--simulate`` name
RESOURCE_UNITS = 10_000  # Ray counts a resource in units of 1/10,000


def _unit_hash(*parts: Any) -> float:
    """Returns a number in [0, 1) fixed by ``parts`` (stable across processes and runs)."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _position(value: Any, spec: dict[str, Any]) -> float | None:
    """Returns where ``value`` lies in its parameter's range as a number in [0, 1] (log scale for a
    log-uniform float), or None for a categorical value that is not a number."""
    if spec["type"] == "float":
        low, high, v = spec["low"], spec["high"], float(value)
        if spec.get("log"):
            low, high, v = math.log(low), math.log(high), math.log(v)
        return 0.0 if high == low else (v - low) / (high - low)
    values = spec["values"]
    numeric = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in values)
    if not numeric:
        return None
    ordered = sorted(values)
    return 0.0 if len(ordered) == 1 else ordered.index(value) / (len(ordered) - 1)


@dataclass(frozen=True)
class Surrogate:
    """A learning-curve family over a search space, with a known optimum.

    Each searched parameter has an optimum fixed by its name (a stable hash): a position ``u*`` in
    [0.2, 0.8] of its range (log scale for log-uniform floats, sorted order for numeric
    categoricals), or one preferred value for a categorical of names. A configuration's quality
    ``q = exp(-4 · mean_p d_p)`` is 1 at the optimum, where ``d_p = (u_p − u*_p)²`` (0 or 0.25 for a
    categorical of names). Its AP50 after epoch ``e`` is ``(20 + 60 q) · (1 − exp(−e / τ))`` with
    ``τ = 2 + 10 (1 − q)`` epochs (better configurations also learn faster, so an early rung ranks
    them imperfectly), plus Gaussian noise of ``noise`` AP points fixed by the configuration, the
    seed and the epoch. The other AP metrics and the losses follow AP50 by fixed ratios. An epoch
    takes ``epoch_s`` simulated seconds, times ``1 + (S / 128)²`` when the space searches the
    heatmap size ``S`` (``model.heatmap_size``), which also sets ``gmacs``.

    Attributes:
        space: The study's search space as :meth:`SearchSpace.describe` gives it.
        seed: Seeds the noise.
        noise: Standard deviation of the per-epoch noise, AP points.
        epoch_s: Simulated seconds of one epoch at the base cost.
    """

    space: dict[str, dict[str, Any]]
    seed: int = 0
    noise: float = 1.0
    epoch_s: float = 60.0

    def __post_init__(self) -> None:
        if self.noise < 0 or self.epoch_s <= 0:
            raise ValueError(f"Surrogate(noise={self.noise}, epoch_s={self.epoch_s}): need "
                             f"noise >= 0 and epoch_s > 0")

    def optimum(self) -> dict[str, Any]:
        """Returns the configuration of quality 1 (the nearest value of each categorical)."""
        best = {}
        for name, spec in self.space.items():
            target = 0.2 + 0.6 * _unit_hash(name)
            if spec["type"] == "float":
                low, high = spec["low"], spec["high"]
                if spec.get("log"):
                    best[name] = math.exp(math.log(low) + target * (math.log(high) - math.log(low)))
                else:
                    best[name] = low + target * (high - low)
            else:
                values = spec["values"]
                best[name] = min(values, key=lambda v: self._distance(name, spec, v))
        return best

    def _distance(self, name: str, spec: dict[str, Any], value: Any) -> float:
        position = _position(value, spec)
        if position is None:  # a categorical of names: one preferred value
            preferred = spec["values"][int(_unit_hash(name) * len(spec["values"]))]
            return 0.0 if value == preferred else 0.25
        return (position - (0.2 + 0.6 * _unit_hash(name))) ** 2

    def quality(self, params: dict[str, Any]) -> float:
        """Returns the configuration's quality in (0, 1]: 1 at :meth:`optimum`."""
        searched = [n for n in self.space if n in params]
        if not searched:
            return 1.0
        mean = sum(self._distance(n, self.space[n], params[n]) for n in searched) / len(searched)
        return math.exp(-4.0 * mean)

    def _epoch_seconds(self, params: dict[str, Any]) -> float:
        size = params.get("model.heatmap_size")
        if size is None:
            return self.epoch_s
        return self.epoch_s * (1.0 + (float(size) / 128) ** 2)

    def plateau_and_tau(self, params: dict[str, Any]) -> tuple[float, float]:
        """Returns the AP50 the configuration approaches (percent) and its time constant (epochs):
        ``20 + 60 q`` and ``2 + 10 (1 − q)``."""
        q = self.quality(params)
        return 20.0 + 60.0 * q, 2.0 + 10.0 * (1.0 - q)

    def metrics(self, params: dict[str, Any], epoch: int) -> dict[str, float]:
        """Returns the metrics a trial of ``params`` reports after ``epoch`` (1-based): every AP
        metric (0-100), the losses, the costs, ``epoch`` and ``time_s`` (simulated seconds of this
        epoch)."""
        q = self.quality(params)
        plateau, tau = self.plateau_and_tau(params)
        progress = 1.0 - math.exp(-epoch / tau)
        noise = random.Random(_unit_hash(self.seed, sorted(params.items()), epoch)).gauss(0, 1)
        ap50 = min(100.0, max(0.0, plateau * progress + self.noise * noise))
        ratios = {"AP": 0.5, "AP50": 1.0, "AP75": 0.45, "APs": 0.3, "APm": 0.55, "APl": 0.65}
        loss = 1.0 + 3.0 * math.exp(-epoch / tau) * (1.2 - q)
        size = float(params.get("model.heatmap_size", 64))
        seconds = self._epoch_seconds(params)
        return {"epoch": epoch, "time_s": seconds, **{k: ap50 * ratios[k] for k in COCO_AP_KEYS},
                OVERLAP_RECALL: min(100.0, 1.2 * ap50),
                "loss": loss, "loss_cls": 0.2 * loss, "loss_pos": 0.35 * loss,
                "loss_size": 0.3 * loss, "loss_offset": 0.15 * loss,
                "lr": float(params.get("optim.lr", 1e-4)), "images_per_s": 1000.0 / seconds,
                "train_time_s": 0.9 * seconds, "params": 2.88e6,
                "gmacs": 1.0 + 0.004 * size ** 2, "infer_images_per_s": 4000.0 / seconds,
                "latency_ms": 0.25 * seconds}


# Table 4 of the paper: AP50 (percent) of the fully trained model per heatmap size S.
PAPER_PLATEAU = {16: 73.5, 32: 75.1, 64: 77.6, 128: 75.8}


@dataclass(frozen=True)
class CrossingSurrogate(Surrogate):
    """The surrogate with the paper's crossing learning curves: small heatmaps learn fastest and
    plateau lowest, S = 64 ends highest (Fig. 6 and Table 4).

    A configuration's AP50 plateau is the paper's Table 4 AP50 of its heatmap size ``S`` (linear in
    ``log2 S`` between the table's sizes, the nearest size's value outside them; S = 64 when the
    space does not search it) minus ``6 (1 − q)`` points, so the other parameters move the plateau
    by a few points. Its time constant depends on ``S`` alone: ``τ = 1.5 · 1.5^log2(S/16)``
    epochs (1.5 at S = 16, 5.1 at S = 128). The S = 64 curve passes the S = 16 curve near epoch 12
    and leads from there; at epoch 1 the order is 16 > 32 > 64 > 128. Noise, the other metrics and
    the epoch time are as in :class:`Surrogate`.
    """

    def plateau_and_tau(self, params: dict[str, Any]) -> tuple[float, float]:
        """Returns the AP50 plateau (percent) and the time constant (epochs) described above."""
        octaves = math.log2(float(params.get(HEATMAP_SIZE, 64)) / 16)
        known = sorted((math.log2(s / 16), ap50) for s, ap50 in PAPER_PLATEAU.items())
        plateau = float(np.interp(octaves, *zip(*known)))  # the ends held outside the table
        others = {name: value for name, value in params.items() if name != HEATMAP_SIZE}
        return plateau - 12.0 * (1.0 - self.quality(others)), 1.5 * 1.5 ** octaves


CURVE_METRICS = LOSS_KEYS + AP_KEYS + EXTRA_KEYS + COST_KEYS + ("time_s",)
SEED_FIELDS = ("train.seed", "data.seed")  # searched only to replicate a configuration


class StudyCurves:
    """A finished study's learning curves, from its epoch rows (``<study>/epochs``).

    A configuration the study trained (every searched parameter equal) replays the mean of its
    trials' rows, epoch by epoch, including each epoch's measured ``time_s``. Any other
    configuration, or an epoch its trials never reached (ASHA stopped them), is predicted from the
    ``neighbours`` nearest trials that reached that epoch, weighted by inverse distance: the
    distance is the root mean square over the searched parameters of the difference in position
    within each range (log scale for log-uniform floats, sorted order for numeric categoricals;
    0 or 1 for a categorical of names). A predicted value gets Gaussian noise of the study's
    seed-to-seed spread: the pooled standard deviation, per metric, between trials that differ
    only in their training seed (``train.seed``/``data.seed`` searched, e.g. ``--seeds 3``), or
    none when the study has no such replicates.

    Args:
        directory: The study's folder (local path or URI).
        space: Its search space's description (``study.json``'s ``search_space``).
        seed: Seeds the noise.
        neighbours: Trials a prediction averages.
    """

    def __init__(self, directory: str, space: dict[str, dict[str, Any]], seed: int = 0,
                 neighbours: int = 3) -> None:
        rows = ResultStore.open(directory).read_epochs()
        if rows.empty:
            raise ValueError(f"--simulate {directory}: the study has no epoch rows to replay")
        missing = [name for name in space if name not in rows]
        if missing:
            raise ValueError(f"--simulate {directory}: epoch rows lack the searched parameters "
                             f"{missing}")
        self.space, self.seed, self.neighbours = space, seed, neighbours
        self.names = list(space)
        metrics = [m for m in CURVE_METRICS if m in rows]
        self.curves: dict[tuple, dict[int, dict[str, float]]] = {}
        for _, group in rows.groupby(self.names, dropna=False, sort=False):
            key = self._key(dict(zip(self.names, group.iloc[0][self.names])))
            self.curves[key] = {int(e): g[metrics].mean().to_dict()
                                for e, g in group.groupby("epoch")}
        self.spread = self._seed_spread(rows, metrics)

    def reseeded(self, seed: int) -> StudyCurves:
        """Returns the same curves with their noise seeded by ``seed`` (shares the parsed rows)."""
        other = copy.copy(self)
        other.seed = seed
        return other

    def _key(self, params: dict[str, Any]) -> tuple:
        return tuple(_plain(params.get(n)) for n in self.names)

    def _seed_spread(self, rows, metrics: list[str]) -> dict[str, float]:
        """Pooled standard deviation per metric between trials differing only in their seed."""
        fixed = [n for n in self.names if n not in SEED_FIELDS]
        if len(fixed) == len(self.names):
            return {}
        last = rows.sort_values("epoch").groupby("trial_id").tail(1)
        groups = [g for _, g in last.groupby(fixed, dropna=False) if len(g) > 1] if fixed else [last]
        if not groups:
            return {}
        return {m: math.sqrt(sum(float(g[m].var()) for g in groups) / len(groups))
                for m in metrics if all(g[m].notna().sum() > 1 for g in groups)}

    def _distance(self, a: tuple, b: tuple) -> float:
        total = 0.0
        for name, x, y in zip(self.names, a, b):
            pa, pb = _position(x, self.space[name]), _position(y, self.space[name])
            total += (float(x != y) if pa is None or pb is None else (pa - pb) ** 2)
        return math.sqrt(total / max(1, len(self.names)))

    def metrics(self, params: dict[str, Any], epoch: int) -> dict[str, float]:
        """Returns the metrics of ``params`` after ``epoch`` (1-based), replayed or predicted (see
        the class docstring); ``time_s`` is the epoch's measured (or predicted) seconds."""
        key = self._key(params)
        trained = self.curves.get(key, {})
        if epoch in trained:
            return {**trained[epoch], "epoch": epoch}
        reached = [(k, c[epoch]) for k, c in self.curves.items() if epoch in c]
        if not reached:  # beyond every trial: hold each trial's last epoch
            reached = [(k, c[max(c)]) for k, c in self.curves.items()]
        nearest = heapq.nsmallest(self.neighbours, ((self._distance(key, k), c) for k, c in reached),
                                  key=lambda dc: dc[0])  # [(distance, metrics)]
        weights = [1.0 / (d + 1e-9) for d, _ in nearest]
        names = set.intersection(*(set(m) for _, m in nearest))
        predicted = {m: sum(w * v[m] for w, (_, v) in zip(weights, nearest)) / sum(weights)
                     for m in names}
        rng = random.Random(_unit_hash(self.seed, key, epoch))
        for m, sigma in self.spread.items():
            if m in predicted and m != "time_s":
                predicted[m] += sigma * rng.gauss(0, 1)
        return {**predicted, "epoch": epoch}


def _plain(value: Any) -> Any:
    """Returns ``value`` as a plain Python scalar (numpy scalars from parquet compare and hash as
    their Python values, but print differently)."""
    return value.item() if hasattr(value, "item") else value


@dataclass(frozen=True)
class SimulationSpec:
    """How a study's trials are simulated.

    Attributes:
        source: The learning-curve source: ``"surrogate"`` (:class:`Surrogate`), ``"crossing"``
            (:class:`CrossingSurrogate`), or a finished study's folder (:class:`StudyCurves`).
        space: The search space's description (:meth:`SearchSpace.describe`).
        epochs: Epochs of a trial that is never stopped.
        time_scale: Simulated seconds per real second (1000: a 60 s epoch sleeps 60 ms).
        seed: Seeds the learning curves' noise.
    """

    source: str
    space: dict[str, dict[str, Any]]
    epochs: int
    time_scale: float = 1000.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.source:
            raise ValueError(f"--simulate {self.source!r}: give {SURROGATE!r}, {CROSSING!r} or a finished "
                             f"study's folder")
        if not self.time_scale > 0:
            raise ValueError(f"--time-scale {self.time_scale!r}: must be > 0")
        if self.epochs < 1:
            raise ValueError(f"epochs={self.epochs!r}: must be >= 1")

    def curves(self) -> Surrogate | StudyCurves:
        """Returns the learning-curve source.

        Raises:
            ValueError: A study folder without epoch rows, or without the searched parameters.
        """
        if self.source == SURROGATE:
            return Surrogate(self.space, seed=self.seed)
        if self.source == CROSSING:
            return CrossingSurrogate(self.space, seed=self.seed)
        return _study_curves(self.source, json.dumps(self.space, sort_keys=True)).reseeded(self.seed)


@functools.lru_cache(maxsize=8)
def _study_curves(directory: str, space_json: str) -> StudyCurves:
    """Returns a finished study's curves, read once per process (a replay's seeds and settings, and
    a reused trial actor's trials, share them)."""
    return StudyCurves(directory, json.loads(space_json))


def simulated_trial(config: dict[str, Any], sim: SimulationSpec) -> None:
    """Tune trainable of one simulated trial: reports each epoch's metrics from the learning curve
    after sleeping its simulated duration on the scaled clock."""
    _, params = split_config(config)
    curves = sim.curves()
    device = f"simulated ({sim.source if sim.source in SURROGATES else 'study curves'})"
    for epoch in range(1, sim.epochs + 1):
        metrics = curves.metrics(params, epoch)
        time.sleep(metrics["time_s"] / sim.time_scale)
        tune.report({**metrics, NODE_KEY: "simulated", DEVICE_KEY: device})


def simulated_trainable(sim: SimulationSpec, slots: int, slot_resource: str):
    """Returns the Tune trainable of a simulated study. A trial reserves no CPU, a token of memory
    and ``1/slots`` of ``slot_resource`` (a resource of capacity 1 on one node: the head's), rounded
    down to Ray's unit of 1/10,000, so at most ``slots`` trial actors exist at once, idle ones
    included. A trial that starts when another has just ended therefore waits for that trial's idle
    actor instead of starting a process of its own, which Tune would discard on handing it the idle
    one; simulated trials end faster than a process starts, so that would be nearly every trial.

    Raises:
        ValueError: ``slots`` above 10,000 (no share of the resource is left per trial).
    """
    share = math.floor(RESOURCE_UNITS / slots) / RESOURCE_UNITS
    if share <= 0:
        raise ValueError(f"max_concurrent_trials={slots}: a simulated study runs at most "
                         f"{RESOURCE_UNITS} trials at once")
    return tune.with_resources(tune.with_parameters(simulated_trial, sim=sim),
                               {"cpu": 0, "memory": 32 * 2**20, slot_resource: share})
