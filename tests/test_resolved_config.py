"""A result row says what ran: settings that would not take effect on the trial's device are
resolved once (``experiment.resolve``), and the trainer, its checkpoint and the study's stored rows
all carry the resolved configuration."""
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from transcenter.model.training.checkpoint import load_checkpoint, save_checkpoint
from transcenter.model.training.engine import TrialRunner
from transcenter.model.training.experiment import PRESETS, resolve, substitutions, trial_config
from transcenter.platform.callbacks import ResultStoreCallback
from transcenter.platform.columns import TrialColumns
from transcenter.platform.trainer import Resources
from transcenter.platform.trial_files import TRIAL_NUMBER_KEY
from transcenter.store.results import ResultStore

TINY = {"data.num_train": 8, "data.num_val": 4, "train.epochs": 1}
PAPER_BACKBONE = {k: PRESETS["paper"][k] for k in ("model.backbone_norm", "model.backbone_trainable")}
STAGE_OF_CHILD = ("stem",) * 4 + ("layer1", "layer2", "layer3", "layer4")  # the backbone Sequential


def _built(runner: TrialRunner) -> dict[str, object]:
    """Returns the backbone settings the runner's modules show: its BatchNorm class, the first
    stage whose parameters train, and whether autocast is on."""
    backbone = runner.model_without_ddp.backbone
    norms = [m for m in backbone.modules() if isinstance(m, (nn.BatchNorm2d, FrozenBatchNorm2d))]
    first = next(i for i, child in enumerate(backbone)
                 if any(p.requires_grad for p in child.parameters()))
    with runner._autocast():
        amp = torch.is_autocast_enabled(runner.device.type)
    return {"model.backbone_norm": "frozen" if all(isinstance(m, FrozenBatchNorm2d) for m in norms)
            else "batch",
            "model.backbone_trainable": "all" if STAGE_OF_CHILD[first] == "stem" else STAGE_OF_CHILD[first],
            "train.amp": amp}


def test_the_paper_backbone_without_weights_is_stored_and_checkpointed_as_trained(tmp_path):
    assert PAPER_BACKBONE == {"model.backbone_norm": "frozen", "model.backbone_trainable": "layer2"}
    asked = {**TINY, **PAPER_BACKBONE, "train.amp": True, "train.device": "cpu"}
    with pytest.warns(UserWarning, match="model.backbone_norm: 'frozen' -> 'batch'"):
        runner = TrialRunner(trial_config("smoke", asked))
    runner.run_epoch()
    built = _built(runner)
    assert built == {"model.backbone_norm": "batch", "model.backbone_trainable": "all", "train.amp": False}
    assert all(p.requires_grad for p in runner.model_without_ddp.backbone.parameters())
    checkpoint = load_checkpoint(save_checkpoint(runner.state_dict(), tmp_path / "ckpt.pt"))

    # What the study driver stores for such a trial on one CPU worker, in its epoch and trial rows.
    store = ResultStore(str(tmp_path), "s")
    columns = TrialColumns.of("smoke", {**TINY, "train.amp": True}, Resources())
    callback = ResultStoreCallback(store, total_epochs=1, params_of=columns)
    trial = SimpleNamespace(config={TRIAL_NUMBER_KEY: 0, **PAPER_BACKBONE},  # searched, say
                            last_result={"epoch": 1, "AP50": 1.0})
    callback.on_trial_result(0, [], trial, trial.last_result)
    callback.on_trial_complete(0, [], trial)
    for flat in (checkpoint["config"], runner.config.to_flat_dict(),
                 store.read_epochs().iloc[0].to_dict(), store.read_trials().iloc[0].to_dict()):
        assert {k: flat[k] for k in built} == built
        assert flat["train.device"] == "cpu"


def test_with_weights_the_paper_backbone_is_kept_as_asked():
    cfg = trial_config("smoke", {**PAPER_BACKBONE, "model.backbone_weights": "/weights/resnet18.pt"})
    assert resolve(cfg, "cuda").model == cfg.model
    assert resolve(cfg, "cpu").model == cfg.model


@pytest.mark.parametrize(("device", "world", "norm"), [("cpu", 1, "batch"), ("cpu", 2, "batch"),
                                                       ("cuda", 1, "batch"), ("cuda", 2, "sync")])
def test_sync_batchnorm_is_kept_only_on_several_gpus(device, world, norm):
    cfg = trial_config("smoke", {"model.backbone_norm": "sync"})
    assert resolve(cfg, device, world).model.backbone_norm == norm


def test_amp_and_the_device_are_stored_as_they_run():
    cfg = trial_config("smoke", {"train.amp": True, "train.device": "auto", "train.compile": True})
    on_cpu, on_gpu = resolve(cfg, "cpu"), resolve(cfg, "cuda")
    assert (on_cpu.train.amp, on_cpu.train.device) == (False, "cpu")
    assert (on_gpu.train.amp, on_gpu.train.device) == (True, "cuda")
    assert on_cpu.train.compile and on_gpu.train.compile  # compiled on either device
    assert substitutions(cfg, on_cpu) == "train.amp: True -> False; train.device: 'auto' -> 'cpu'"
    assert substitutions(on_cpu, resolve(on_cpu, "cpu")) == ""  # resolving twice changes nothing


def test_the_driver_resolves_for_the_trials_resources_and_threads():
    gpus = TrialColumns.of("smoke", {"model.backbone_norm": "sync"},
                           Resources(workers=2, cpus_per_worker=4, gpus_per_worker=1))
    row = gpus({"model.heatmap_size": 32})
    assert (row["model.backbone_norm"], row["train.device"], row["train.threads"]) == ("sync", "cuda", 4)
    assert row["model.heatmap_size"] == 32
    one = TrialColumns.of("smoke", {"model.backbone_norm": "sync"}, Resources(gpus_per_worker=1))
    assert one({})["model.backbone_norm"] == "batch"
    simulated = TrialColumns.of("smoke", {"model.backbone_norm": "sync"}, Resources(), trains=False)
    assert simulated({})["model.backbone_norm"] == "sync"  # nothing trains: stored as asked
