"""Loss functions of the paper (§3.5) as pure functions on logits; sums, normalised by the caller.

All are computed in fp32 log-sigmoid form even under bf16 autocast, where ``log(1 − σ(x))`` is −inf
for x ≥ 8: ``log σ(x)`` and ``log(1 − σ(x)) = log σ(−x)`` stay finite for logits of any magnitude.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F


def global_count(value: float, device: torch.device) -> float:
    """Returns a loss normaliser ``value`` averaged over data-parallel workers (DETR's num_boxes),
    at least 1."""
    t = torch.tensor(float(value), device=device)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t)
        t = t / dist.get_world_size()
    return max(t.item(), 1.0)


def classification_loss(logits: torch.Tensor, target_classes: torch.Tensor, bg_weight: float,
                        mode: str = "paper") -> torch.Tensor:
    """Eq. 3 without its ``1/(pos+neg)`` normaliser: sigmoid BCE over C+1 classes.

    Positive queries: ``−Σ_c [y log ŷ + (1−y) log(1−ŷ)]``. Background queries (target index C):
    ``mode="paper"``: ``−w_bg·Σ_c [y log ŷ + w_bg·(1−y) log(1−ŷ)]`` (w_bg applied twice, as written);
    ``mode="single"``: ``−w_bg·Σ_c [y log ŷ + (1−y) log(1−ŷ)]``.

    Args:
        logits: ``(B, N, C+1)`` class logits.
        target_classes: ``(B, N)`` long, object class or C for background.

    Returns:
        Scalar fp32 sum over queries and classes.
    """
    x = logits.float()
    num_cls = x.shape[-1]
    y = F.one_hot(target_classes, num_cls).float()  # (B, N, C+1)
    pos_term = y * F.logsigmoid(x)  # y log ŷ
    neg_term = (1 - y) * F.logsigmoid(-x)  # (1−y) log(1−ŷ)
    is_bg = (target_classes == num_cls - 1).float()[..., None]  # (B, N, 1)
    inner_neg = bg_weight if mode == "paper" else 1.0
    fg = (pos_term + neg_term) * (1 - is_bg)
    bg = bg_weight * (pos_term + inner_neg * neg_term) * is_bg
    return -(fg + bg).sum()


def gaussian_focal_loss(logits: torch.Tensor, target: torch.Tensor, alpha: float,
                        beta: float) -> torch.Tensor:
    """Eq. 4 without its normaliser: ``−Σ (1−p)^α log p`` where ``g = 1``,
    ``−Σ (1−g)^β p^α log(1−p)`` elsewhere.

    Args:
        logits: ``(B, N, S, S)`` heatmap logits (every channel, negatives included).
        target: ``(B, N, S, S)`` Gaussian targets in [0, 1]; all-zero for unmatched queries.

    Returns:
        Scalar fp32 sum.
    """
    x = logits.float()
    g = target.float()
    p = torch.sigmoid(x)
    is_peak = g.eq(1)
    pos = (1 - p).pow(alpha) * F.logsigmoid(x)
    neg = (1 - g).pow(beta) * p.pow(alpha) * F.logsigmoid(-x)
    return -torch.where(is_peak, pos, neg).sum()


def offset_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """SmoothL1 (β = 1) summed over the 4 offsets and the positive queries.

    Args:
        pred, target: ``(M, 4)`` offsets of the M matched queries.

    Returns:
        Scalar fp32 sum (0 when ``M = 0``).
    """
    return F.smooth_l1_loss(pred.float(), target.float(), reduction="sum")


def weighted_total(losses: dict[str, torch.Tensor], weights: dict[str, float]) -> torch.Tensor:
    """Returns the scalar ``Σ_k weights[k] · losses[k]`` over the keys of ``weights`` (a criterion's
    DETR-style ``weight_dict``); terms are added in ``weights``' order."""
    return sum(w * losses[k] for k, w in weights.items())
