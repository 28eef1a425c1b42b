"""DETR's backbone practice as options: frozen BatchNorm, frozen stages that cost nothing, its
refusal without pretrained weights, SyncBatchNorm, and rank-0-only evaluation."""
import json
import warnings
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torchvision
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from transcenter.model.detector.backbone import build_backbone, freeze_batchnorm
from transcenter.model.training import engine
from transcenter.model.training.engine import TrialRunner
from transcenter.model.training.experiment import PRESETS, trial_config

TINY = {"data.num_train": 8, "data.num_val": 4, "train.epochs": 1, "train.device": "cpu"}


@pytest.fixture(scope="module")
def resnet18_weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "resnet18.pt"
    torch.manual_seed(0)
    net = torchvision.models.resnet18()
    for m in net.modules():  # non-trivial statistics, as ImageNet weights have
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    torch.save(net.state_dict(), path)
    return str(path)


def test_frozen_batchnorm_computes_what_batchnorm_does_in_eval_mode():
    bn = nn.BatchNorm2d(8)
    bn.running_mean.uniform_(-1, 1), bn.running_var.uniform_(0.5, 2), bn.weight.data.uniform_(0.5, 2)
    x = torch.randn(2, 8, 5, 5)
    expected = bn.eval()(x)
    frozen = freeze_batchnorm(nn.Sequential(bn))[0]
    assert isinstance(frozen, FrozenBatchNorm2d)
    torch.testing.assert_close(frozen(x), expected)


def test_frozen_stages_get_no_gradient_no_optimizer_state_and_do_not_change(resnet18_weights):
    cfg = trial_config("smoke", {**TINY, "model.backbone_weights": resnet18_weights,
                                 "model.backbone_norm": "frozen", "model.backbone_trainable": "layer2"})
    runner = TrialRunner(cfg)
    assert runner.config.model == cfg.model  # with weights, kept as asked
    backbone = runner.model_without_ddp.backbone  # stem (0-3), layer1 (4), layer2 (5), layer3 (6)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in backbone.modules())
    frozen = [p for m in list(backbone)[:5] for p in m.parameters()]
    trained = list(backbone[5].parameters())
    assert frozen and all(not p.requires_grad for p in frozen) and all(p.requires_grad for p in trained)
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    runner.train_one_epoch(1)
    assert all(p.grad is None for p in frozen)
    assert all(p not in runner.optimizer.state for p in frozen)
    assert all(p in runner.optimizer.state for p in trained)
    after = backbone.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if k.split(".")[0] in "01234")
    assert not all(torch.equal(before[k], after[k]) for k in before if k.startswith("5."))


def test_without_pretrained_weights_the_backbone_refuses_the_paper_practice():
    """The trainer resolves it first (tests/test_resolved_config.py); built directly, it is refused."""
    assert (PRESETS["paper"]["model.backbone_norm"], PRESETS["paper"]["model.backbone_trainable"]) \
        == ("frozen", "layer2")
    with pytest.raises(ValueError, match="model.backbone_weights is unset"):
        build_backbone("resnet18", 16, None, "frozen", "layer2")
    with pytest.raises(ValueError, match="model.backbone_trainable='layer3'"):
        build_backbone("resnet18", 16, None, "batch", "layer3")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        build_backbone("resnet18", 16, None, "batch", "all")  # the small presets: no warning


def test_batch_norm_with_frozen_stages_freezes_their_statistics(resnet18_weights):
    backbone, _ = build_backbone("resnet18", 32, resnet18_weights, "batch", "layer4")
    assert all(isinstance(m, FrozenBatchNorm2d) for s in list(backbone)[:7] for m in s.modules()
               if "BatchNorm" in type(m).__name__)
    assert any(isinstance(m, nn.BatchNorm2d) for m in backbone[7].modules())
    assert [p.requires_grad for p in backbone[7].parameters()] == [True] * len(list(backbone[7].parameters()))


def test_sync_batchnorm_is_converted_and_on_cpu_resolved_to_batch():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    converted = engine._sync_batchnorm(model)  # a module swap: no GPU needed
    assert isinstance(converted[1], nn.SyncBatchNorm)
    cfg = trial_config("smoke", {**TINY, "model.backbone_norm": "sync"})
    with pytest.warns(UserWarning, match="model.backbone_norm: 'sync' -> 'batch'"):
        runner = TrialRunner(cfg)
    assert runner.config.model.backbone_norm == "batch"
    assert not any(isinstance(m, nn.SyncBatchNorm) for m in runner.model_without_ddp.modules())


def _rank(rank: int, init: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    calls = []

    def compute(objs):
        calls.append(rank)
        return {"sum": sum(objs), "n": len(objs)}

    result = engine._on_rank0([rank * 10 + 1, rank * 10 + 2], compute)
    with open(f"{out}.{rank}", "w") as f:
        json.dump({"result": result, "calls": calls}, f)
    dist.destroy_process_group()


def test_under_ddp_only_rank0_computes_the_metrics_and_every_rank_gets_them(tmp_path):
    out = str(tmp_path / "rank")
    mp.spawn(_rank, args=(f"file://{tmp_path / 'init'}", out), nprocs=2, join=True)
    ranks = [json.loads(Path(f"{out}.{r}").read_text()) for r in (0, 1)]
    assert ranks[0]["calls"] == [0] and ranks[1]["calls"] == []
    assert ranks[0]["result"] == ranks[1]["result"] == {"sum": 1 + 2 + 11 + 12, "n": 4}
