import math

import pytest
import torch

from transcenter.model.training.checkpoint import (
    IncompatibleCheckpointError,
    load_checkpoint,
    save_checkpoint,
)
from transcenter.model.training.engine import (
    DEFAULT_THREADS,
    DivergedError,
    TrainingStopped,
    TrialRunner,
    configure_process,
)
from transcenter.model.training.experiment import trial_config
from transcenter.store.metric_names import AP_KEYS, LOSS_KEYS

TINY = {"data.num_train": 16, "data.num_val": 8, "train.batch_size": 8}


def test_loss_falls_and_every_metric_is_reported():
    runner = TrialRunner(trial_config("smoke", {**TINY, "data.num_train": 24, "train.epochs": 4,
                                                "train.eval_every": 2}))
    rows = [runner.run_epoch() for _ in range(4)]
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    for r in rows:
        assert set(LOSS_KEYS) | set(AP_KEYS) | {"lr", "images_per_s", "time_s"} <= set(r)
    assert math.isnan(rows[0]["AP50"]) and not math.isnan(rows[1]["AP50"])  # eval_every=2
    assert rows[-1]["loss"] < rows[0]["loss"]


def test_resume_from_checkpoint_equals_uninterrupted_run(tmp_path):
    cfg = trial_config("smoke", {**TINY, "train.epochs": 3, "train.eval_every": 3})
    straight = TrialRunner(cfg)
    full = [straight.run_epoch() for _ in range(3)]

    first = TrialRunner(cfg)
    first.run_epoch()
    path = save_checkpoint(first.state_dict(), tmp_path / "ckpt.pt")
    resumed = TrialRunner(cfg)
    resumed.load_state_dict(load_checkpoint(path))
    rest = [resumed.run_epoch() for _ in range(2)]
    assert [r["epoch"] for r in rest] == [2, 3]
    for a, b in zip(full[1:], rest):
        for k in LOSS_KEYS + ("AP", "AP50"):
            assert a[k] == b[k] or (math.isnan(a[k]) and math.isnan(b[k])), k
    sa = getattr(straight.model, "module", straight.model).state_dict()
    sb = getattr(resumed.model, "module", resumed.model).state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_checkpoint_from_other_model_config_is_refused(tmp_path):
    runner = TrialRunner(trial_config("smoke", TINY))
    path = save_checkpoint(runner.state_dict(), tmp_path / "ckpt.pt")
    other = TrialRunner(trial_config("smoke", {**TINY, "model.heatmap_size": 32}))
    with pytest.raises(IncompatibleCheckpointError, match="model.heatmap_size: checkpoint 16 vs config 32"):
        other.load_state_dict(load_checkpoint(path))


@pytest.mark.parametrize("stop_at_call", [2, 3])  # 2 training steps, then validation's first
def test_a_requested_stop_ends_the_epoch_at_the_next_step(stop_at_call):
    calls = []

    def stop_requested() -> bool:
        calls.append(1)
        return len(calls) >= stop_at_call

    runner = TrialRunner(trial_config("smoke", TINY), stop_requested=stop_requested)
    with pytest.raises(TrainingStopped, match="epoch 1"):
        runner.run_epoch()
    assert len(calls) == stop_at_call  # asked once before each step, nothing run past the answer
    assert runner.epoch == 0 and runner.last_metrics == {}


def test_divergence_names_epoch_and_component():
    runner = TrialRunner(trial_config("smoke", TINY))
    with torch.no_grad():
        runner.model.class_head.bias.fill_(float("nan"))
    with pytest.raises(DivergedError, match="at epoch 1, step 1: logits"):
        runner.run_epoch()


@pytest.mark.parametrize("option", ["train.channels_last", "train.compile"])
def test_channels_last_and_compile_train_the_same_step_and_checkpoint_the_same_keys(option, monkeypatch):
    """A leaner step changes speed, not results: one training step matches the plain model's
    loss, and checkpoints keep the plain model's keys (a compiled model's would gain _orig_mod.).

    With ``train.compile`` the engine's ``torch.compile`` runs with the ``eager`` backend: what this
    project's code decides is whether TorchDynamo captures the model's forward as written and what
    the runner trains and checkpoints; Inductor's code generation is PyTorch's, and costs a minute
    or more for this model from a cold cache (seconds with the eager backend). The compiled step's
    speed, Inductor included, is measured by ``tests/bench/train_step.py --compile``."""
    cfg = {**TINY, "data.num_train": 8, "train.device": "cpu", "train.channels_last": False,
           "train.compile": False}
    compile_ = torch.compile
    monkeypatch.setattr(torch, "compile", lambda model, **kw: compile_(model, **{**kw, "backend": "eager"}))
    plain, lean = TrialRunner(trial_config("smoke", cfg)), TrialRunner(trial_config("smoke", {**cfg, option: True}))
    a, b = plain.train_one_epoch(1), lean.train_one_epoch(1)
    assert b["loss"] == pytest.approx(a["loss"], rel=1e-4)
    assert lean.state_dict()["model"].keys() == plain.state_dict()["model"].keys()
    assert hasattr(lean.model, "_orig_mod") == (option == "train.compile")  # compiled only when asked
    if option == "train.channels_last":
        assert lean.model_without_ddp.backbone[0].weight.is_contiguous(memory_format=torch.channels_last)


def test_every_epoch_reports_the_models_cost_and_evaluated_epochs_its_measured_speed():
    from transcenter.model.evaluation.complexity import count
    cfg = trial_config("smoke", {**TINY, "train.epochs": 2, "train.eval_every": 2})
    runner = TrialRunner(cfg)
    first, second = runner.run_epoch(), runner.run_epoch()
    expected = count(cfg.detector.model)
    for row in (first, second):
        assert row["gmacs"] == pytest.approx(expected["macs"] / 1e9) and row["params"] == expected["params"]
    assert math.isnan(first["infer_images_per_s"]) and math.isnan(first["latency_ms"])
    assert second["infer_images_per_s"] > 0 and second["latency_ms"] > 0
    assert runner.device_name.startswith("cpu x")


def test_each_trial_of_a_process_gets_its_own_threads_and_seed():
    """A Train worker kept for the next trial (WarmWorkerGroup) trains it with that trial's
    threads, torch's default when it sets none, and that trial's seed."""
    before = torch.get_num_threads()
    try:
        configure_process(trial_config("smoke", {"train.threads": 3, "train.seed": 1}))
        assert torch.get_num_threads() == 3
        first = torch.rand(3)
        configure_process(trial_config("smoke", {"train.threads": 0, "train.seed": 1}))
        assert torch.get_num_threads() == DEFAULT_THREADS
        assert torch.equal(torch.rand(3), first)
    finally:
        torch.set_num_threads(before)
