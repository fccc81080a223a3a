"""Discrete Soft Actor-Critic (Christodoulou 2019, arXiv:1910.07207) as pure functions.

TorchRL 0.14's ``DiscreteSACLoss``. With ``n`` actions the expectations over the policy are exact
sums, so nothing is sampled::

    y       = r + gamma (1 - terminated) sum_a pi(a|s') [min_i Q'_i(s', a) - alpha log pi(a|s')]
    L_Q     = sum_i l(Q_i(s, a_t), y)
    L_pi    = sum_a pi(a|s) [alpha log pi(a|s) - min_i Q_i(s, a)]          (Q frozen)
    L_alpha = -log_alpha (sum_a pi(a|s) log pi(a|s) + H),   H = "auto": -w log(1/n), w = 0.98

Only ``("next", "terminated")`` stops bootstrapping. Gradients never reach target params, the
critic through ``L_pi``, or ``log_alpha`` through anything but ``L_alpha``.

Intentional differences from TorchRL: ``log_alpha`` is clamped straight-through (see
:mod:`funcrl.sac`; :func:`funcrl.sac.project` clamps the parameter); ``skip_done_states`` masks with
``torch.where`` (same values); the dict also holds ``td_error``; ``num_actions`` is read from the
actor's output width (the ``"auto"`` target entropy needs no argument); ``separate_losses`` does not
exist (params are never shared).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Callable
from typing import Any

import torch

from funcrl import tree
from funcrl.nn import make_generator
from funcrl.objectives.actor_critic import (
    check_alpha,
    check_common,
    ensemble,
    init_ensemble,
    temperature,
)
from funcrl.objectives.common import (
    distance_loss,
    get,
    get_flag,
    init_net,
    mlp,
    priority_weights,
    require,
    spec_size,
    td0_target,
)
from funcrl.objectives.sac import reduce, temperature_loss
from funcrl.record import Record

__all__ = ["Config", "Nets", "init", "loss", "soft_target_value", "expected_actor_loss"]

Params = dict[str, Any]
ACTION_SPACES = ("one-hot", "categorical")


@dataclasses.dataclass(frozen=True)
class Config:
    """``DiscreteSACLoss``'s hyperparameters, TorchRL's names and defaults.

    Args:
        action_space: how ``batch["action"]`` is encoded: ``"one-hot"`` ``[*B, n]`` (TorchRL's
            fallback) or ``"categorical"`` indices ``[*B]`` or ``[*B, 1]``.
        num_qvalue_nets, loss_function, alpha_init, min_alpha, max_alpha, fixed_alpha, gamma,
            reduction, use_prioritized_weights: as :class:`funcrl.sac.Config`.
        target_entropy_weight: ``w`` in the ``"auto"`` target entropy ``-w log(1 / n)``.
        target_entropy: ``"auto"`` or a number.
        delay_qvalue: bootstrap from ``params["target_qvalue"]`` (else the frozen online nets).
        skip_done_states: the next-state value of done rows is 0, and the others use the raw
            log-probabilities (TorchRL's masked branch).
    """

    action_space: str = "one-hot"
    num_qvalue_nets: int = 2
    loss_function: str = "smooth_l1"
    alpha_init: float = 1.0
    min_alpha: float | None = None
    max_alpha: float | None = None
    fixed_alpha: bool = False
    target_entropy_weight: float = 0.98
    target_entropy: float | str = "auto"
    delay_qvalue: bool = True
    gamma: float = 0.99
    reduction: str = "mean"
    skip_done_states: bool = False
    use_prioritized_weights: bool | str = "auto"

    def __post_init__(self) -> None:
        owner = "discrete_sac.Config"
        if self.action_space not in ACTION_SPACES:
            raise ValueError(
                f"{owner}: action_space must be one of {ACTION_SPACES}, got {self.action_space!r}"
            )
        check_common(owner, self)
        check_alpha(owner, self.alpha_init, self.min_alpha, self.max_alpha)


@dataclasses.dataclass(frozen=True)
class Nets:
    """``actor(params, obs [*B, o]) -> logits [*B, n]``; ``qvalue(params, obs) -> Q(s, .) [*B, n]``
    for *one* critic (vmapped over the ensemble's leading dim).

    Defaults: ``funcrl._common.mlp`` (a ReLU :class:`funcrl.nn.MLP` sized from its params), with
    ``num_cells`` hidden units at :func:`init`.
    """

    actor: Callable[..., torch.Tensor] = mlp
    qvalue: Callable[..., torch.Tensor] = mlp
    num_cells: tuple[int, ...] = (256, 256)


# -- the equations ---------------------------------------------------------------------------------


def soft_target_value(
    probs: torch.Tensor, log_probs: torch.Tensor, q_min: torch.Tensor, alpha: torch.Tensor
) -> torch.Tensor:
    """``sum_a pi(a) [Q(a) - alpha log pi(a)]``: ``[*B, n] -> [*B]``."""
    return (probs * (q_min - alpha * log_probs)).sum(-1)


def expected_actor_loss(
    probs: torch.Tensor, log_probs: torch.Tensor, q_min: torch.Tensor, alpha: torch.Tensor
) -> torch.Tensor:
    """``sum_a pi(a) [alpha log pi(a) - Q(a)]``: ``[*B, n] -> [*B]``."""
    return (probs * (alpha * log_probs - q_min)).sum(-1)


def chosen_q(q: torch.Tensor, action: torch.Tensor, action_space: str) -> torch.Tensor:
    """``Q(s, a_t)`` from ``q [N, *B, n]``: a one-hot dot product or an index gather -> ``[N, *B]``."""
    if action_space == "categorical":
        idx = (
            action
            if action.shape[-1:] == (1,) and action.dim() == q.dim() - 1
            else action[..., None]
        )
        idx = idx.long().expand(*q.shape[:-1], 1)
        return torch.gather(q, -1, idx).squeeze(-1)
    return (q * action.to(q.dtype)).sum(-1)


# -- init and loss ---------------------------------------------------------------------------------


def _num_actions(action_spec: Any) -> int:
    # Categorical / OneHot specs (funcrl's or gymnasium's Discrete, whose n is a NumPy int).
    n = getattr(action_spec, "n", None)
    if isinstance(n, numbers.Integral) and not isinstance(n, bool):
        return int(n)
    return spec_size(action_spec, "discrete_sac.init", "action_spec")


def init(
    seed: int | torch.Generator,
    observation_spec: Any,
    action_spec: Any,
    config: Config = Config(),
    nets: Nets = Nets(),
    *,
    device=None,
    dtype=torch.float32,
) -> Params:
    """``{"actor", "qvalue", "log_alpha"}`` (+ ``"target_qvalue"``, a copy, with ``delay_qvalue``).

    ``action_spec`` is a categorical/one-hot spec with ``.n``, or the number of actions.
    """
    obs_dim = spec_size(observation_spec, "discrete_sac.init", "observation_spec")
    n = _num_actions(action_spec)
    gen = make_generator(seed)
    kw = {"device": device, "dtype": dtype}
    cells = {"in_features": obs_dim, "out_features": n, "num_cells": nets.num_cells, **kw}
    owner = "discrete_sac.init"
    params: Params = {
        "actor": init_net(nets.actor, (mlp,), seed=gen, owner=owner, **cells),
        "qvalue": init_ensemble(nets.qvalue, config.num_qvalue_nets, gen, owner=owner, **cells),
        "log_alpha": torch.tensor(math.log(config.alpha_init), **kw),
    }
    if config.delay_qvalue:
        params["target_qvalue"] = tree.clone(params["qvalue"])
    return params


def loss(
    params: Params, batch: Record, *, config: Config = Config(), nets: Nets = Nets()
) -> dict[str, torch.Tensor]:
    """Discrete SAC's losses. Deterministic (exact expectations, no sampling).

    Args:
        params: from :func:`init`.
        batch: ``observation [*B, o]``, ``action`` (one-hot ``[*B, n]`` or indices ``[*B]``/
            ``[*B, 1]``), ``("next", "observation")``, ``("next", "reward") [*B, 1]``,
            ``("next", "terminated") [*B, 1]`` (and ``("next", "done")`` with
            ``skip_done_states``).

    Returns:
        ``loss_actor``, ``loss_qvalue``, ``loss_alpha``, ``alpha``, ``entropy``, ``td_error``.
    """
    owner = "discrete_sac.loss"
    require(params, ["actor", "qvalue", "log_alpha"], owner)
    if config.delay_qvalue:
        require(params, ["target_qvalue"], owner)
    obs = get(batch, "observation", owner=owner)
    next_obs = get(batch, ("next", "observation"), owner=owner, shape=(obs.shape[-1],))
    action = get(batch, "action", owner=owner)
    lead = obs.shape[:-1]
    reward = get_flag(batch, ("next", "reward"), owner=owner, like=obs[..., :1])
    terminated = get_flag(batch, ("next", "terminated"), owner=owner, like=reward).bool()
    qp = params["qvalue"]
    logits = nets.actor(params["actor"], obs)
    n = logits.shape[-1]
    if config.action_space == "one-hot" and action.shape != (*lead, n):
        raise ValueError(
            f"{owner}: one-hot batch['action'] has shape {tuple(action.shape)}, expected "
            f"{(*lead, n)}"
        )
    if config.action_space == "categorical" and action.shape not in (lead, (*lead, 1)):
        raise ValueError(
            f"{owner}: categorical batch['action'] has shape {tuple(action.shape)}, expected "
            f"{tuple(lead)} or {(*lead, 1)}"
        )
    h = (
        -math.log(1.0 / n) * config.target_entropy_weight
        if config.target_entropy == "auto"
        else float(config.target_entropy)
    )
    log_alpha, alpha = temperature(params["log_alpha"], config)
    r, term = reward.squeeze(-1), terminated.squeeze(-1)
    weights = priority_weights(batch, config, like=r)

    # Target: exact expectation under pi(.|s') of min_i Q'_i - alpha log pi, all frozen.
    next_logits = nets.actor(tree.detach(params["actor"]), next_obs).detach()
    next_probs = torch.softmax(next_logits, -1)
    tq = tree.detach(params["target_qvalue"] if config.delay_qvalue else qp)
    q_next = ensemble(nets.qvalue, tq, next_obs).min(0).values
    if config.skip_done_states:
        done = get_flag(batch, ("next", "done"), owner=owner, like=reward).bool().squeeze(-1)
        v_next = soft_target_value(next_probs, torch.log_softmax(next_logits, -1), q_next, alpha)
        v_next = torch.where(done, torch.zeros_like(v_next), v_next)
    else:
        # TorchRL: log(p) with p == 0 replaced by 1e-8.
        safe = torch.log(torch.where(next_probs == 0, 1e-8, next_probs))
        v_next = soft_target_value(next_probs, safe, q_next, alpha)
    y = td0_target(r, term, v_next, config.gamma).detach()
    q = chosen_q(ensemble(nets.qvalue, qp, obs), action, config.action_space)
    loss_q = distance_loss(q, y.expand_as(q), config.loss_function).sum(0)

    # Actor: exact expectation under pi(.|s); the critic is frozen.
    log_probs = torch.log_softmax(logits, -1)
    probs = log_probs.exp()
    q_pi = ensemble(nets.qvalue, tree.detach(qp), obs).min(0).values
    loss_actor = expected_actor_loss(probs, log_probs, q_pi, alpha)
    neg_entropy = (probs * log_probs).sum(-1).detach()
    loss_alpha = temperature_loss(log_alpha, neg_entropy, h)
    red = config.reduction
    return {
        "loss_actor": reduce(loss_actor, red, weights),
        "loss_qvalue": reduce(loss_q, red, weights),
        "loss_alpha": reduce(loss_alpha, red, weights),
        "alpha": alpha,
        "entropy": -neg_entropy.mean(),
        "td_error": (q - y).abs().detach().max(0).values,
    }
