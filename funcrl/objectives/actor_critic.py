"""Actor-critic plumbing shared by the SAC family (SAC, REDQ, CrossQ, discrete SAC) and TD3/DDPG.

The temperature ``alpha = exp(log_alpha)`` with TorchRL's bounds and straight-through clamp, the
action bounds a ``TanhNormal`` or a bounded actor reads from ``params["action_bounds"]``, and the
critic ensembles (``N`` members stacked on a leading dim, applied with one ``vmap``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from funcrl import tree
from funcrl.nn.ensemble import vmap_members
from funcrl.objectives.common import REDUCTIONS, check_loss_function, init_net, mlp

Params = dict[str, Any]

__all__ = [
    "check_alpha",
    "check_common",
    "log_alpha_bounds",
    "clamp_log_alpha",
    "temperature",
    "auto_entropy",
    "expand_bound",
    "action_bounds",
    "ensemble",
    "ensemble_q",
    "init_ensemble",
]


def check_alpha(owner: str, alpha_init: float, min_alpha, max_alpha) -> None:
    """Validates TorchRL's temperature arguments, with clear errors."""
    if not alpha_init > 0:
        raise ValueError(f"{owner}: alpha_init must be > 0, got {alpha_init}")
    if min_alpha is not None and min_alpha < 0:
        raise ValueError(f"{owner}: min_alpha must be None or >= 0, got {min_alpha}")
    if max_alpha is not None and max_alpha <= 0:
        raise ValueError(f"{owner}: max_alpha must be None or > 0, got {max_alpha}")
    if min_alpha and max_alpha and min_alpha > max_alpha:
        raise ValueError(f"{owner}: min_alpha={min_alpha} > max_alpha={max_alpha}")


def check_common(owner: str, cfg: Any) -> None:
    """Checks shared by the SAC family's configs."""
    if cfg.num_qvalue_nets < 1:
        raise ValueError(f"{owner}: num_qvalue_nets must be >= 1, got {cfg.num_qvalue_nets}")
    check_loss_function(cfg.loss_function, owner)
    if cfg.reduction not in REDUCTIONS:
        raise ValueError(f"{owner}: reduction must be one of {REDUCTIONS}, got {cfg.reduction!r}")
    if not 0.0 <= cfg.gamma <= 1.0:
        raise ValueError(f"{owner}: gamma must be in [0, 1], got {cfg.gamma}")
    if not (cfg.target_entropy == "auto" or isinstance(cfg.target_entropy, (int, float))):
        raise ValueError(
            f"{owner}: target_entropy must be 'auto' or a number, got {cfg.target_entropy!r}"
        )


def log_alpha_bounds(min_alpha: float | None, max_alpha: float | None):
    """TorchRL's bounds on ``log_alpha``: ``None``/``0`` means no bound on that side."""
    lo = math.log(min_alpha) if min_alpha else None
    hi = math.log(max_alpha) if max_alpha else None
    return lo, hi


def clamp_log_alpha(
    log_alpha: torch.Tensor, min_alpha: float | None, max_alpha: float | None
) -> torch.Tensor:
    """``log_alpha`` clamped to ``[log min_alpha, log max_alpha]`` with a straight-through gradient.

    The value is the clamped one and the gradient is the identity: exactly what TorchRL's in-place
    ``log_alpha.data.clamp_`` gives its loss.
    """
    lo, hi = log_alpha_bounds(min_alpha, max_alpha)
    if lo is None and hi is None:
        return log_alpha
    clamped = torch.clamp(log_alpha.detach(), lo, hi)
    return log_alpha + (clamped - log_alpha.detach())


def temperature(log_alpha: torch.Tensor, cfg: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log_alpha for L_alpha, alpha)``: clamped; ``alpha`` detached, ``log_alpha`` frozen if
    ``fixed_alpha``."""
    if cfg.fixed_alpha:
        log_alpha = log_alpha.detach()
    log_alpha = clamp_log_alpha(log_alpha, cfg.min_alpha, cfg.max_alpha)
    return log_alpha, log_alpha.detach().exp()


def auto_entropy(target_entropy: float | str, action: torch.Tensor, batch_ndim: int) -> float:
    """``-prod(action shape)`` for ``"auto"`` (TorchRL), else the given number."""
    if target_entropy == "auto":
        return -float(math.prod(action.shape[batch_ndim:]))
    return float(target_entropy)


def expand_bound(bound: Any, act_dim: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """A spec's bound as a tensor ``[*lead, a]``: a scalar becomes ``[a]``; leading dims (the
    agents of a multi-agent spec ``[n_agents, a]``) are kept."""
    bound = torch.as_tensor(bound, dtype=dtype).to(device)
    lead = bound.shape[:-1] if bound.dim() else ()
    return bound.expand(*lead, act_dim).clone()


def action_bounds(action_spec: Any, act_dim: int, device=None, dtype=torch.float32) -> Params:
    """``{"low", "high"}`` tensors ``[*lead, a]`` from a bounded spec (a multi-agent spec keeps
    its ``[n_agents, a]``), else ``[-1, 1]`` as ``[a]``."""
    low, high = getattr(action_spec, "low", None), getattr(action_spec, "high", None)
    if low is None or high is None:
        low, high = -torch.ones(act_dim), torch.ones(act_dim)
    return {
        "low": expand_bound(low, act_dim, device, dtype),
        "high": expand_bound(high, act_dim, device, dtype),
    }


def ensemble(apply: Callable, params: Params, *inputs: torch.Tensor) -> torch.Tensor:
    """``apply`` for every member of stacked ``params`` (leading dim ``N``), inputs shared:
    :class:`funcrl.nn.Ensemble`'s vmap mode. Returns ``[N, *B, ...]``."""
    return vmap_members(apply, params, *inputs)


def ensemble_q(apply: Callable, qparams: Params, obs: torch.Tensor, action: torch.Tensor):
    """``Q_i(s, a)`` for every member: ``[N, *B]``."""
    return ensemble(apply, qparams, obs, action).squeeze(-1)


def init_ensemble(apply, n, gen, *, owner, **kw) -> Params:
    """``n`` independently initialised members stacked on a leading dim (``Ensemble.init``)."""
    return tree.stack([init_net(apply, (mlp,), seed=gen, owner=owner, **kw) for _ in range(n)])
