"""Pieces shared by the offline objectives (IQL, discrete IQL, CQL, TD3+BC, BC).

* :func:`expectile_loss`: IQL's asymmetric squared loss ``|tau - 1(u < 0)| u^2``.
* :func:`advantage_weights`: IQL's (and AWR's) ``min(exp(beta A), 100)``.
"""

from __future__ import annotations

import torch

__all__ = ["expectile_loss", "advantage_weights", "check_expectile", "MAX_ADVANTAGE_WEIGHT"]

# TorchRL clamps exp(beta A) at 100 so that one large advantage cannot dominate a batch.
MAX_ADVANTAGE_WEIGHT = 100.0


def expectile_loss(diff: torch.Tensor, expectile: float) -> torch.Tensor:
    """``w(u) u^2`` with ``w = expectile`` where ``u > 0`` and ``1 - expectile`` elsewhere.

    Args:
        diff: ``u = Q(s, a) - V(s)``, any shape.
        expectile: ``tau`` in ``(0, 1)``; ``0.5`` is half the squared error, ``tau -> 1``
            approaches the maximum of ``Q`` over the data's actions.

    Returns:
        The per-element loss, shaped like ``diff``.
    """
    weight = torch.where(diff > 0, expectile, 1.0 - expectile)
    return weight * diff.pow(2)


def advantage_weights(advantage: torch.Tensor, temperature: float) -> torch.Tensor:
    """``min(exp(temperature * A), 100)``: the weight of the data's action in an advantage-
    weighted regression. ``advantage`` must already be detached; shape is kept."""
    return torch.exp(advantage * temperature).clamp_max(MAX_ADVANTAGE_WEIGHT)


def check_expectile(owner: str, expectile: float, temperature: float) -> None:
    """IQL's two hyperparameters: ``expectile`` in ``(0, 1)`` and ``temperature >= 0``."""
    if isinstance(expectile, bool) or not 0.0 < float(expectile) < 1.0:
        raise ValueError(f"{owner}: expectile must be in (0, 1), got {expectile!r}")
    if isinstance(temperature, bool) or not float(temperature) >= 0.0:
        raise ValueError(f"{owner}: temperature must be >= 0, got {temperature!r}")
