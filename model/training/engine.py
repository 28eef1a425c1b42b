"""The training loop of one trial, in plain PyTorch (no Ray).

:class:`TrialRunner` owns model, criterion, optimiser, scheduler and loaders; ``run_epoch()``
trains one epoch, evaluates, and returns the epoch's metrics dict. Ray Train's worker function
and the command-line trainer both drive it; distribution enters only through the ``wrap_model`` /
``wrap_loader`` hooks and ``torch.distributed`` reductions, which are no-ops in one process.
A process that trains calls :func:`configure_process` before each runner it builds.
"""
from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, RandomSampler, SequentialSampler
from tqdm.auto import tqdm

from transcenter.model.data import collate, to_original
from transcenter.model.data.build import open_datasets
from transcenter.model.detector.registry import build_criterion, build_model, postprocess
from transcenter.model.evaluation.complexity import count
from transcenter.model.evaluation.evaluate import evaluate, overlap_recall
from transcenter.model.training.checkpoint import check_compatible
from transcenter.model.training.experiment import OptimConfig, TrialConfig, resolve, substitutions
from transcenter.store.metric_names import AP_KEYS, MEASURED_COST_KEYS, per_class_ap50_key

DEFAULT_THREADS = torch.get_num_threads()  # torch's CPU threads in this process before any trial


class TrainingStopped(Exception):
    """Raised at a step boundary when the runner's ``stop_requested`` says the run is to end."""


class DivergedError(FloatingPointError):
    """A loss became NaN/inf; the message names the epoch, step and component."""


def _check_finite(values: dict, keys: tuple[str, ...], what: str, epoch: int, step: int) -> None:
    """Raises :class:`DivergedError` naming the epoch, step and every non-finite component.

    Under data parallelism every rank raises when any rank sees a non-finite value, so no rank is
    left waiting in a collective for one that stopped.
    """
    bad = [k for k in keys if not torch.isfinite(values[k]).all()]
    if dist.is_available() and dist.is_initialized():
        flag = torch.tensor(float(bool(bad)), device=values[keys[0]].device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        if flag.item() and not bad:
            bad = ["on another rank"]
    if bad:
        raise DivergedError(f"{what} diverged (NaN/inf) at epoch {epoch}, step {step + 1}: "
                            + ", ".join(bad))


def resolve_device(name: str) -> torch.device:
    """Returns the torch device for ``train.device`` (``auto`` = CUDA when available)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def configure_process(config: TrialConfig) -> None:
    """Sets what is global to a training process: torch's CPU threads (``train.threads``; 0:
    torch's default for this process) and torch's global seed (``train.seed``). Call before each
    :class:`TrialRunner`: a process may train several trials one after the other."""
    torch.set_num_threads(config.train.threads or DEFAULT_THREADS)
    torch.manual_seed(config.train.seed)


def epoch_seed(seed: int, epoch: int) -> int:
    """Seed of everything random in ``epoch`` (shuffling, augmentation, dropout): resumable."""
    return seed * 100_003 + epoch


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.AdamW:
    """AdamW with two groups: backbone at ``backbone_lr``, everything else at ``lr``."""
    backbone, rest = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (backbone if ".backbone." in f".{name}" else rest).append(p)
    return torch.optim.AdamW([{"params": rest, "lr": cfg.lr},
                              {"params": backbone, "lr": cfg.backbone_lr}],
                             weight_decay=cfg.weight_decay)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig, steps_per_epoch: int,
                    epochs: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step multiplier: linear warm-up, then ×0.1 at ``lr_drop_epoch`` or cosine to 0."""
    total = max(1, steps_per_epoch * epochs)

    def factor(step: int) -> float:
        warm = min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps else 1.0
        if cfg.schedule == "cosine":
            return warm * 0.5 * (1 + math.cos(math.pi * min(step, total) / total))
        return warm * (0.1 if step >= cfg.lr_drop_epoch * steps_per_epoch else 1.0)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _world_size() -> int:
    """Returns the number of processes training together (1 without a process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _distributed() -> bool:
    return _world_size() > 1


def _all_reduce_mean(values: dict[str, float], device: torch.device) -> dict[str, float]:
    if not _distributed():
        return values
    t = torch.tensor(list(values.values()), dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return dict(zip(values, (t / dist.get_world_size()).tolist()))


def _on_rank0(objs: list, compute: Callable[[list], dict]) -> dict:
    """Returns ``compute`` of the per-rank lists ``objs`` concatenated over ranks, computed on rank 0
    only and broadcast to the others (in one process: ``compute(objs)``)."""
    if not _distributed():
        return compute(objs)
    parts: list[Any] = [None] * dist.get_world_size() if dist.get_rank() == 0 else None
    dist.gather_object(objs, parts, dst=0)
    result = [compute([o for part in parts for o in part]) if dist.get_rank() == 0 else None]
    dist.broadcast_object_list(result, src=0)
    return result[0]


def _sync_batchnorm(model: nn.Module) -> nn.Module:
    """Returns ``model`` with its BatchNorms synchronised over the DDP ranks (``SyncBatchNorm``;
    :func:`~transcenter.model.training.experiment.resolve` keeps ``sync`` only on several GPUs)."""
    return nn.SyncBatchNorm.convert_sync_batchnorm(model)


class TrialRunner:
    """Runs one trial epoch by epoch.

    ``config`` is the configuration resolved for this device and world size
    (:func:`~transcenter.model.training.experiment.resolve`, warning when it changed the model):
    what the modules are built from and what checkpoints hold. ``model`` is the module that runs
    forward in training (wrapped by ``wrap_model``, compiled with ``train.compile``);
    ``model_without_ddp`` is the bare one, whose state checkpoints hold. Building a runner sets
    nothing global (:func:`configure_process` does); its initial weights come from ``train.seed``.

    Args:
        config: the trial's configuration, as asked.
        wrap_model: applied to the model after it is on its device (e.g. DDP preparation).
        wrap_loader: applied to each DataLoader (e.g. a distributed sampler).
        device: overrides ``config.train.device``.
        progress: show a progress bar over each epoch's steps.
        count_cost: returns ``{"params", "macs"}`` of a model configuration (one image, counted
            on the meta device): :func:`~transcenter.model.evaluation.complexity.count`, or a
            cache of it.
        stop_requested: asked before every training and validation step and at the end of each
            epoch; when it returns True (under DDP: on any rank, all-reduced so that every rank
            stops at the same step) the epoch raises :class:`TrainingStopped`, unreported. None:
            never asked, no collective.
    """

    def __init__(self, config: TrialConfig,
                 wrap_model: Callable[[nn.Module], nn.Module] = lambda m: m,
                 wrap_loader: Callable[[DataLoader], DataLoader] = lambda dl: dl,
                 device: torch.device | None = None, progress: bool = False,
                 count_cost: Callable[[Any], dict] = count,
                 stop_requested: Callable[[], bool] | None = None):
        self.progress = progress
        self.stop_requested = stop_requested
        self.device = device or resolve_device(config.train.device)
        self.config = c = resolve(config, self.device.type, _world_size())
        changed = substitutions(config, c, ("model",))  # amp and an "auto" device: as documented
        if changed:
            warnings.warn(f"this device trains another model than asked: {changed} (frozen "
                          f"BatchNorm and frozen stages need model.backbone_weights, SyncBatchNorm "
                          f"several GPUs)", UserWarning, stacklevel=2)
        self.train_set, self.val_set = open_datasets(c.data, c.model.input_size)
        self.config = c = c.with_class_names(self.train_set.class_names)
        self._generator = torch.Generator()
        self.train_loader = wrap_loader(self._loader(self.train_set, train=True))
        self.val_loader = wrap_loader(self._loader(self.val_set, train=False))
        self.memory_format = torch.channels_last if c.train.channels_last else torch.contiguous_format
        with torch.random.fork_rng(devices=[]):  # the initial weights depend on the seed alone
            torch.manual_seed(c.train.seed)
            model = build_model(c.detector.model)
        model = model.to(self.device, memory_format=self.memory_format)
        if c.model.backbone_norm == "sync":
            model = _sync_batchnorm(model)
        self.optimizer = build_optimizer(model, c.optim)
        self.criterion = build_criterion(c.detector, model)  # shares the unwrapped model's heads
        self.model_without_ddp = model  # unwrapped and uncompiled: what checkpoints hold
        self.model = wrap_model(torch.compile(model) if c.train.compile else model)
        self.scheduler = build_scheduler(self.optimizer, c.optim, len(self.train_loader),
                                         c.train.epochs)
        macs = count_cost(c.detector.model)  # the configuration's cost, not the device's
        self.cost = {"params": float(macs["params"]), "gmacs": macs["macs"] / 1e9}
        self.infer_images_per_s = math.nan  # of the last predict()
        self.epoch = 0  # epochs completed
        self.last_metrics: dict[str, float] = {}  # of the last completed epoch

    def _loader(self, dataset: Dataset, train: bool) -> DataLoader:
        c = self.config
        sampler = (RandomSampler(dataset, generator=self._generator) if train
                   else SequentialSampler(dataset))
        return DataLoader(dataset, batch_size=c.train.batch_size, sampler=sampler,
                          collate_fn=collate, num_workers=c.data.num_workers,
                          generator=self._generator, drop_last=train and len(dataset) > c.train.batch_size,
                          persistent_workers=False)

    @property
    def image_size(self) -> tuple[int, int]:
        s = self.config.model.input_size
        return (s, s)

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.config.train.amp)

    def _seed_epoch(self, epoch: int) -> None:
        seed = epoch_seed(self.config.train.seed, epoch)
        torch.manual_seed(seed)
        self._generator.manual_seed(seed)
        sampler = getattr(self.train_loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):  # DistributedSampler under DDP
            sampler.set_epoch(epoch)

    def _stop_if_requested(self) -> None:
        if self.stop_requested is None:
            return
        asked = self.stop_requested()
        if _distributed():
            flag = torch.tensor([float(asked)], device=self.device)  # (1,)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            asked = bool(flag.item())
        if asked:
            raise TrainingStopped(f"stopped at a step of epoch {self.epoch + 1}")

    def train_one_epoch(self, epoch: int) -> dict[str, float]:
        """Trains one epoch; returns mean losses (the criterion's keys), ``lr``, ``images_per_s``
        and ``train_time_s``."""
        self.model.train()
        self._seed_epoch(epoch)
        sums: dict[str, float] = {}
        steps = images = 0
        start = time.perf_counter()
        bar = tqdm(self.train_loader, desc=f"epoch {epoch}", leave=False, disable=not self.progress)
        for step, (batch, targets) in enumerate(bar):
            self._stop_if_requested()
            batch = batch.to(self.device, non_blocking=True, memory_format=self.memory_format)
            targets = [{k: v.to(self.device) if torch.is_tensor(v) else v for k, v in t.items()}
                       for t in targets]
            with self._autocast():
                outputs = self.model(batch)
            _check_finite(outputs, tuple(outputs), "model output", epoch, step)
            losses = self.criterion(outputs, targets, self.image_size)
            _check_finite(losses, tuple(losses), "loss", epoch, step)
            self.optimizer.zero_grad(set_to_none=True)
            losses["loss"].backward()
            if self.config.optim.grad_clip > 0:
                nn.utils.clip_grad_norm_(self.model.parameters(), self.config.optim.grad_clip)
            self.optimizer.step()
            self.scheduler.step()
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + v.item()
            steps += 1
            images += len(batch)
            bar.set_postfix(loss=f"{losses['loss'].item():.3f}")
        elapsed = time.perf_counter() - start
        means = _all_reduce_mean({k: v / max(steps, 1) for k, v in sums.items()}, self.device)
        world = dist.get_world_size() if _distributed() else 1
        return {**means, "lr": self.optimizer.param_groups[0]["lr"],
                "images_per_s": images * world / max(elapsed, 1e-9), "train_time_s": elapsed}

    @property
    def device_name(self) -> str:
        """The trial's device in words: the GPU's name, or ``cpu x<threads>``."""
        if self.device.type == "cuda":
            return torch.cuda.get_device_name(self.device)
        return f"cpu x{torch.get_num_threads()}"

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @torch.no_grad()
    def predict(self) -> list[dict]:
        """Returns this rank's val predictions, boxes xyxy in original image pixels, each with its
        image's ``scale`` and ``offset`` (``input_px = orig_px · scale + offset``, x then y).
        Sets ``self.infer_images_per_s``: images through model + postprocess per second."""
        self.model.eval()
        preds = []
        seconds = 0.0
        for batch, targets in self.val_loader:
            self._stop_if_requested()
            start = time.perf_counter()
            with self._autocast():
                outputs = self.model(batch.to(self.device, memory_format=self.memory_format))
            dets = postprocess(outputs, self.image_size, self.config.detector.model)
            self._sync()
            seconds += time.perf_counter() - start
            for det, t in zip(dets, targets):
                preds.append({"image_id": int(t["image_id"]),
                              "boxes": to_original(det["boxes"].float().cpu(), t),
                              "scores": det["scores"].float().cpu(),
                              "labels": det["labels"].cpu(),
                              "scale": t["scale"], "offset": t["offset"]})
        self.infer_images_per_s = len(preds) / max(seconds, 1e-9)
        return preds

    @torch.no_grad()
    def latency_ms(self, repeats: int = 3) -> float:
        """Milliseconds of model + postprocess for one image on this device (median of
        ``repeats`` after one warm-up run)."""
        self.model.eval()
        image = self.val_set[0][0][None].to(self.device, memory_format=self.memory_format)  # (1, 3, H, W)
        times = []
        for _ in range(repeats + 1):
            start = time.perf_counter()
            with self._autocast():
                postprocess(self.model(image), self.image_size, self.config.detector.model)
            self._sync()
            times.append(time.perf_counter() - start)
        return 1000.0 * sorted(times[1:])[repeats // 2]

    def evaluate(self) -> dict[str, float]:
        """Returns the `AP_KEYS` metrics (0-100) on the whole val split, and each class's AP50 as
        ``AP50_class<label>`` (NaN for a class without ground truth). Under DDP the predictions
        are gathered to rank 0, which alone computes COCO AP; every rank returns its result."""
        return _on_rank0(self.predict(), self._metrics)

    def _metrics(self, preds: list[dict]) -> dict[str, float]:
        # A distributed sampler pads ranks to equal length with repeated images: keep one each.
        preds = list({p["image_id"]: p for p in preds}.values())
        targets = self.val_set.targets()
        metrics = evaluate(preds, targets, self.val_set.class_names)
        m = self.config.model
        metrics["overlap_recall"] = overlap_recall(preds, targets, m.input_size / m.heatmap_size)
        per_class = metrics["per_class_AP50"]
        return {**{k: float(metrics[k]) for k in AP_KEYS},
                **{per_class_ap50_key(k): float(per_class[name])
                   for k, name in enumerate(self.val_set.class_names)}}

    def run_epoch(self) -> dict[str, float]:
        """Trains and (every ``eval_every`` epochs, and at the last) evaluates the next epoch.

        Returns:
            ``epoch`` (1-based), the criterion's losses (`LOSS_KEYS`; CenterNet has no
            ``loss_cls``), ``lr``, ``images_per_s``, ``train_time_s``, the `COST_KEYS` (``params``,
            ``gmacs`` every epoch; ``infer_images_per_s``, ``latency_ms`` measured at evaluation),
            the `AP_KEYS` metrics and ``AP50_class<k>`` (NaN when not evaluated this epoch) and
            ``time_s`` (wall time).
        """
        start = time.perf_counter()
        epoch = self.epoch + 1
        metrics: dict[str, float] = {"epoch": epoch, **self.train_one_epoch(epoch)}
        c = self.config.train
        metrics.update(self.cost)
        if epoch % c.eval_every == 0 or epoch == c.epochs:
            metrics.update(self.evaluate())
            metrics.update(infer_images_per_s=self.infer_images_per_s, latency_ms=self.latency_ms())
        else:
            metrics.update(dict.fromkeys(AP_KEYS + MEASURED_COST_KEYS, float("nan")))
        self._stop_if_requested()  # asked after the epoch's last step: the epoch is not reported
        self.epoch = epoch
        metrics["time_s"] = time.perf_counter() - start
        self.last_metrics = metrics
        return metrics

    def state_dict(self) -> dict[str, Any]:
        """Checkpoint content: plain tensors and builtins only (``weights_only=True`` loads it)."""
        return {"model": self.model_without_ddp.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "epoch": self.epoch,
                "metrics": self.last_metrics, "config": self.config.to_flat_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restores a checkpoint; refuses one from a different model configuration."""
        check_compatible(state["config"], self.config)
        self.model_without_ddp.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.epoch = int(state["epoch"])
        self.last_metrics = dict(state.get("metrics", {}))
