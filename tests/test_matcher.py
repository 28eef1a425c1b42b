import itertools

import pytest
import torch
from torchvision.ops import box_convert, generalized_box_iou

from transcenter.model.detector.config import MatcherConfig
from transcenter.model.detector.matcher import HungarianMatcher


def _random_boxes(n, size=256.0):
    cxcy = torch.rand(n, 2) * size
    wh = torch.rand(n, 2) * size / 2 + 4
    return box_convert(torch.cat([cxcy, wh], 1), "cxcywh", "xyxy").clamp(0, size)


def _cost(cfg, prob, boxes, tgt_boxes, tgt_labels, size):
    norm = torch.tensor([size, size, size, size])
    l1 = torch.cdist(box_convert(boxes, "xyxy", "cxcywh") / norm,
                     box_convert(tgt_boxes, "xyxy", "cxcywh") / norm, p=1)
    return (-cfg.cost_class * prob[:, tgt_labels] + cfg.cost_l1 * l1
            - cfg.cost_giou * generalized_box_iou(boxes, tgt_boxes))


@pytest.mark.parametrize("seed", range(12))
def test_matcher_equals_brute_force(seed):
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    cfg = MatcherConfig(*(torch.rand(3, generator=g) * 3 + 0.1).tolist())
    n, c = 5, 3
    sizes = [int(torch.randint(0, 5, (1,), generator=g)) for _ in range(2)]
    prob = torch.rand(2, n, c + 1, generator=g)
    boxes = torch.stack([_random_boxes(n) for _ in range(2)])
    targets = [{"boxes": _random_boxes(k), "labels": torch.randint(0, c, (k,), generator=g)}
               for k in sizes]
    out = HungarianMatcher(cfg)(prob, boxes, targets, (256, 256))
    for b, (q, t) in enumerate(out):
        k = sizes[b]
        assert len(q) == len(t) == k
        cost = _cost(cfg, prob[b], boxes[b], targets[b]["boxes"], targets[b]["labels"], 256.0)
        got = cost[q, t].sum().item() if k else 0.0
        best = min((sum(cost[perm[j], j].item() for j in range(k))
                    for perm in itertools.permutations(range(n), k)), default=0.0)
        assert got == pytest.approx(best, abs=1e-5)
        assert len(set(q.tolist())) == k  # one query per object


def test_matcher_handles_images_without_objects():
    prob = torch.rand(2, 4, 3)
    boxes = torch.stack([_random_boxes(4) for _ in range(2)])
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}
    one = {"boxes": _random_boxes(1), "labels": torch.tensor([1])}
    m = HungarianMatcher(MatcherConfig())
    assert [len(q) for q, _ in m(prob, boxes, [empty, empty], (256, 256))] == [0, 0]
    assert [len(q) for q, _ in m(prob, boxes, [empty, one], (256, 256))] == [0, 1]


def test_matcher_raises_on_nan_cost():
    prob = torch.full((1, 3, 3), float("nan"))
    boxes = torch.stack([_random_boxes(3)])
    tgt = [{"boxes": _random_boxes(1), "labels": torch.tensor([0])}]
    with pytest.raises(FloatingPointError):
        HungarianMatcher(MatcherConfig())(prob, boxes, tgt, (256, 256))
