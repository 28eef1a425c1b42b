"""How far an early ranking of trials agrees with their final one: the rung audit's arithmetic.

The study's audited early stopping (``transcenter.platform.audited_asha``) decides with it while a
study runs, and the dashboards show it from the stored rows afterwards, so both say the same thing.
A pair of trials counts only when their final values differ by more than the noise of such a
difference: pairs the last epoch itself cannot order are no evidence either way.
"""
from __future__ import annotations

import math

import numpy as np

# 0.6745: the median absolute deviation of a standard normal; 6: the variance of a second
# difference x[t] - 2 x[t-1] + x[t-2] of independent noise, in units of the noise's variance.
_MAD_TO_SIGMA = 0.6745 * math.sqrt(6)


def epoch_noise(second_differences: np.ndarray) -> np.ndarray:
    """Returns each objective's per-epoch noise (a standard deviation, in the metric's units).

    Args:
        second_differences: ``(n, k)``: per finished trial and objective, ``x[E] - 2 x[E-1] +
            x[E-2]`` of its last three epochs (a linear trend cancels out).

    Returns:
        ``(k,)``: the median absolute second difference / (0.6745 √6); zeros for ``n == 0``.
    """
    if len(second_differences) == 0:
        return np.zeros(second_differences.shape[1] if second_differences.ndim == 2 else 0)
    return np.median(np.abs(second_differences), axis=0) / _MAD_TO_SIGMA


def clear_margin(noise: np.ndarray) -> np.ndarray:
    """Returns the smallest difference of two final values that counts as an ordering: twice the
    standard deviation of a difference of two noisy values (2 √2 σ), per objective."""
    return 2 * math.sqrt(2) * noise


def concordance(early: np.ndarray, late: np.ndarray, margin: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Counts the pairs that the early values order as the late ones do, and those they reverse.

    Args:
        early: ``(n, k)`` values of ``n`` trials at a rung, per objective (any direction: only
            orders are compared).
        late: ``(n, k)`` their final values.
        margin: ``(k,)``: a pair counts for an objective when its final values differ by more.

    Returns:
        ``(concordant, discordant)``, each ``(k,)`` integer counts; a pair tied at the rung counts
        as neither.
    """
    n = len(late)
    upper = np.triu(np.ones((n, n), dtype=bool), 1)  # (n, n): each pair once
    d_late = late[:, None, :] - late[None, :, :]  # (n, n, k)
    agree = np.sign(early[:, None, :] - early[None, :, :]) * np.sign(d_late)  # (n, n, k)
    clear = upper[:, :, None] & (np.abs(d_late) > margin)  # (n, n, k)
    return (clear & (agree > 0)).sum(axis=(0, 1)), (clear & (agree < 0)).sum(axis=(0, 1))


def kendall_tau(concordant: np.ndarray, discordant: np.ndarray,
                min_pairs: int = 1) -> tuple[float | None, int]:
    """Returns Kendall's τ over the counted pairs and how many pairs it rests on: the lowest τ over
    the objectives with at least ``min_pairs`` pairs, else over those with any; ``(None, 0)``
    without pairs."""
    counted = [((c - d) / (c + d), int(c + d)) for c, d in zip(concordant, discordant) if c + d]
    enough = [(tau, pairs) for tau, pairs in counted if pairs >= min_pairs]
    if enough or counted:
        tau, pairs = min(enough or counted)
        return float(tau), pairs
    return None, 0
