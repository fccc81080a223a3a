"""Pieces shared by the offline objectives (IQL, discrete IQL, CQL, TD3+BC, BC).

* :func:`expectile_loss`: IQL's asymmetric squared loss ``|tau - 1(u < 0)| u^2``.
* :func:`advantage_weights`: IQL's (and AWR's) ``min(exp(beta A), 100)``.
* :func:`iql_losses`: IQL's three losses from its five quantities (continuous and discrete IQL).
* :func:`read_sequences`, :func:`check_context`: the Decision Transformers' ``[*B, T]`` batches and
  contexts.
"""

from __future__ import annotations

from typing import Any

import torch

from funcrl.objectives.common import distance_loss, reduce_loss

__all__ = [
    "expectile_loss",
    "advantage_weights",
    "iql_losses",
    "check_expectile",
    "read_sequences",
    "check_context",
    "check_priority_flag",
    "MAX_ADVANTAGE_WEIGHT",
]

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


def iql_losses(
    min_q: torch.Tensor,
    v: torch.Tensor,
    qs: torch.Tensor,
    y: torch.Tensor,
    log_prob: torch.Tensor,
    config: Any,
    weights: torch.Tensor | None,
) -> dict[str, torch.Tensor]:
    """IQL's losses, the same for continuous and discrete actions.

    Args:
        min_q: ``min_i Q'_i(s, a) [*B]`` of the target critics at the data's action (no grad).
        v: ``V(s) [*B]`` (with grad).
        qs: ``Q_i(s, a) [N, *B]`` of the online critics (with grad).
        y: ``r + gamma V(s') [*B]`` (or a TD(lambda) target), ``V`` gradient-stopped.
        log_prob: ``log pi(a|s) [*B]`` of the data's action (with grad).
        config: reads ``expectile``, ``temperature``, ``loss_function`` and ``reduction``.
        weights: per-sample priority weights ``[*B]`` or ``None``.

    Returns:
        ``loss_actor`` (``-w log pi``, ``w`` the gradient-stopped advantage weights),
        ``loss_qvalue``, ``loss_value`` (expectile of ``min_q - v``), reduced; ``entropy``
        (``-mean log pi`` detached) and ``td_error [*B]`` (detached).
    """
    red = config.reduction
    loss_value = expectile_loss(min_q - v, config.expectile)
    loss_q = distance_loss(qs, y.expand_as(qs), config.loss_function).sum(0)
    w = advantage_weights((min_q - v).detach(), config.temperature)
    return {
        "loss_actor": reduce_loss(-(w * log_prob), red, weights),
        "loss_qvalue": reduce_loss(loss_q, red, weights),
        "loss_value": reduce_loss(loss_value, red, weights),
        "entropy": -log_prob.detach().mean(),
        "td_error": (qs.detach() - y).abs().max(0).values,
    }


def check_expectile(owner: str, expectile: float, temperature: float) -> None:
    """IQL's two hyperparameters: ``expectile`` in ``(0, 1)`` and ``temperature >= 0``."""
    if isinstance(expectile, bool) or not 0.0 < float(expectile) < 1.0:
        raise ValueError(f"{owner}: expectile must be in (0, 1), got {expectile!r}")
    if isinstance(temperature, bool) or not float(temperature) >= 0.0:
        raise ValueError(f"{owner}: temperature must be >= 0, got {temperature!r}")


def read_sequences(
    batch, *, owner: str, act_dim: int, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(observation [*B, T, o], action [*B, T, a], return_to_go [*B, T, 1])`` of a Decision
    Transformer batch (the last batch dim is time), checked: float entries of ``dtype``, the
    action's size ``act_dim``, the three sharing their batch dims.

    Raises:
        ValueError / TypeError / KeyError: naming ``owner``, the key and expected against actual.
    """
    from funcrl.objectives.common import get

    obs = get(batch, "observation", owner=owner, shape=(None,), dtype=dtype)
    action = get(batch, "action", owner=owner, shape=(act_dim,), dtype=dtype)
    rtg = get(batch, "return_to_go", owner=owner, shape=(1,), dtype=dtype)
    lead = obs.shape[:-1]
    for name, x in (("action", action), ("return_to_go", rtg)):
        if x.shape[:-1] != lead:
            raise ValueError(
                f"{owner}: batch[{name!r}] has shape {tuple(x.shape)}, expected "
                f"{(*lead, x.shape[-1])} (the observation's batch dims [*B, T])"
            )
    return obs, action, rtg


def check_context(
    owner: str, observation: torch.Tensor, action: Any, return_to_go: Any, act_dim: int
) -> None:
    """A Decision Transformer's context for ``act``: ``observation [*B, T, o]``, ``action
    [*B, T, a]`` and ``return_to_go [*B, T, 1]`` of one dtype."""
    lead = tuple(observation.shape[:-1])
    if observation.dim() < 2:
        raise ValueError(
            f"{owner}: observation must be a context [*B, T, o], got {tuple(observation.shape)}"
        )
    for name, x, last in (("action", action, act_dim), ("return_to_go", return_to_go, 1)):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{owner}: {name} must be a tensor [*B, T, {last}], got {x!r}")
        if tuple(x.shape) != (*lead, last):
            raise ValueError(
                f"{owner}: {name} has shape {tuple(x.shape)}, expected {(*lead, last)}"
            )
        if x.dtype != observation.dtype:
            raise TypeError(
                f"{owner}: {name} is {x.dtype}, expected {observation.dtype} (the observation's)"
            )


def check_priority_flag(owner: str, flag: Any) -> None:
    """``use_prioritized_weights`` is ``True``, ``False`` or ``"auto"`` (for the configs that do
    not go through :func:`funcrl.objectives.actor_critic.check_config`)."""
    if not (flag is True or flag is False or flag == "auto"):
        raise ValueError(
            f"{owner}: use_prioritized_weights must be True, False or 'auto', got {flag!r}"
        )
