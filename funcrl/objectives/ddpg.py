"""Deep Deterministic Policy Gradient (Lillicrap et al. 2015): TorchRL's ``DDPGLoss``.

    params = ddpg.init(0, obs_spec, act_spec)    # {"actor", "value", "target_value"}
    losses = ddpg.loss(params, batch)             # {"loss_actor", "loss_value", ...}

Critic:  L_Q  = d(Q(s, a), y),  y = r + gamma * (1 - terminated) * Q'(s', mu'(s'))
Actor:   L_mu = -Q(s, mu(s))    (the critic is a constant here: only the actor learns from it)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from functools import partial
from typing import Any

import torch

from funcrl import tree
from funcrl.nn import make_generator
from funcrl.objectives.common import (
    check_loss_function,
    check_reduction,
    distance_loss,
    get,
    get_flag,
    init_net,
    mlp,
    reduce_loss,
    spec_size,
    tanh_mlp,
    td0_target,
)
from funcrl.record import Record

__all__ = ["Config", "Nets", "init", "loss", "trainer", "critic_target", "actor_objective"]


@dataclasses.dataclass(frozen=True)
class Config:
    """DDPG hyperparameters (TorchRL's ``DDPGLoss`` arguments and defaults).

    Attributes:
        loss_function: ``"l2"`` (TorchRL's default), ``"l1"`` or ``"smooth_l1"``.
        delay_actor: keep a target actor ``params["target_actor"]``; otherwise the next action
            comes from the gradient-stopped online actor.
        delay_value: keep a target critic ``params["target_value"]``.
        gamma: discount (TorchRL's default TD(0) estimator uses 0.99).
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
    """

    loss_function: str = "l2"
    delay_actor: bool = False
    delay_value: bool = True
    gamma: float = 0.99
    reduction: str = "mean"

    def __post_init__(self) -> None:
        check_loss_function(self.loss_function, "ddpg.Config")
        check_reduction(self.reduction, "ddpg.Config")
        if not 0.0 <= float(self.gamma) <= 1.0:
            raise ValueError(f"ddpg.Config: gamma must be in [0, 1], got {self.gamma}")


@dataclasses.dataclass(frozen=True)
class Nets:
    """``actor(params, observation) -> action [*B, a]``, ``value(params, observation, action)
    -> Q [*B, 1]``.

    Defaults: ``tanh`` of a ReLU :class:`funcrl.nn.MLP` (actions in ``[-1, 1]``) and a ReLU MLP
    on ``cat(observation, action)``, with ``num_cells`` hidden units sized by :func:`init`.
    """

    actor: Callable[..., torch.Tensor] = tanh_mlp
    value: Callable[..., torch.Tensor] = mlp
    num_cells: tuple[int, ...] = (256, 256)


def check_default_actor_bounds(action_spec: Any, actor: Callable, owner: str) -> None:
    """The default ``tanh`` actor only fits a ``[-1, 1]`` action box; say so instead of
    silently training an actor that cannot reach the bounds."""
    if actor is not tanh_mlp or not hasattr(action_spec, "low"):
        return
    low, high = torch.as_tensor(action_spec.low), torch.as_tensor(action_spec.high)
    if not (bool((low == -1).all()) and bool((high == 1).all())):
        raise ValueError(
            f"{owner}: the default actor is tanh(MLP) with actions in [-1, 1], but the action spec "
            f"has low={low.tolist()}, high={high.tolist()}; rescale the env's actions to [-1, 1] "
            "or pass Nets(actor=...) mapping to the bounds"
        )


def init(
    seed: int | torch.Generator,
    observation_spec: Any,
    action_spec: Any,
    config: Config = Config(),
    nets: Nets = Nets(),
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> dict[str, Any]:
    """``{"actor", "value"}`` plus ``"target_actor"``/``"target_value"`` for the delayed nets
    (copies of the online ones). Never touches the global RNG."""
    check_default_actor_bounds(action_spec, nets.actor, "ddpg.init")
    gen = make_generator(seed)
    d_obs = spec_size(observation_spec, "ddpg.init", "observation_spec")
    d_act = spec_size(action_spec, "ddpg.init", "action_spec")
    kw = dict(num_cells=nets.num_cells, seed=gen, device=device, dtype=dtype, owner="ddpg.init")
    params = {
        "actor": init_net(nets.actor, (tanh_mlp, mlp), in_features=d_obs, out_features=d_act, **kw),
        "value": init_net(nets.value, (mlp,), in_features=d_obs + d_act, out_features=1, **kw),
    }
    if config.delay_actor:
        params["target_actor"] = tree.clone(params["actor"])
    if config.delay_value:
        params["target_value"] = tree.clone(params["value"])
    return params


# --- the equations -------------------------------------------------------------------------------


def critic_target(
    reward: torch.Tensor,
    terminated: torch.Tensor,
    next_q: torch.Tensor,
    gamma: float,
) -> torch.Tensor:
    """``y = r + gamma * (1 - terminated) * Q'(s', mu'(s'))``, gradient-stopped: ``[*B, 1]``."""
    return td0_target(reward, terminated, next_q, gamma).detach()


def actor_objective(q_of_policy_action: torch.Tensor) -> torch.Tensor:
    """``-Q(s, mu(s))`` per sample; the caller stops the critic's gradient."""
    return -q_of_policy_action


# --- the loss ------------------------------------------------------------------------------------


def loss(
    params: dict[str, Any],
    batch: Record,
    *,
    config: Config = Config(),
    nets: Nets = Nets(),
) -> dict[str, torch.Tensor]:
    """The DDPG losses with TorchRL's keys.

    Returns:
        ``loss_actor``, ``loss_value`` (reduced), ``pred_value``, ``target_value``, ``td_error``
        (``[*B]``, detached) and ``pred_value_max``, ``target_value_max``.
    """
    owner = "ddpg.loss"
    obs = get(batch, "observation", owner=owner)
    action = get(batch, "action", owner=owner)
    next_obs = get(batch, ("next", "observation"), owner=owner)
    reward = get(batch, ("next", "reward"), owner=owner, shape=(1,))
    terminated = get_flag(batch, ("next", "terminated"), owner=owner, like=reward)

    # Critic: regress Q(s, a) on the TD(0) target of the (target) actor-critic.
    q = nets.value(params["value"], obs, action)
    if q.shape != reward.shape:
        raise ValueError(
            f"{owner}: value net gave {tuple(q.shape)}, expected {tuple(reward.shape)}"
        )
    actor_next = params["target_actor"] if config.delay_actor else params["actor"]
    value_next = params["target_value"] if config.delay_value else params["value"]
    next_action = nets.actor(tree.detach(actor_next), next_obs)
    next_q = nets.value(tree.detach(value_next), next_obs, next_action)
    y = critic_target(reward, terminated, next_q, config.gamma).squeeze(-1)
    pred = q.squeeze(-1)
    loss_value = reduce_loss(distance_loss(pred, y, config.loss_function), config.reduction)

    # Actor: ascend Q(s, mu(s)) through the action only (the critic is gradient-stopped).
    policy_action = nets.actor(params["actor"], obs)
    q_pi = nets.value(tree.detach(params["value"]), obs, policy_action).squeeze(-1)
    loss_actor = reduce_loss(actor_objective(q_pi), config.reduction)

    pred, y = pred.detach(), y.detach()
    return {
        "loss_actor": loss_actor,
        "loss_value": loss_value,
        "pred_value": pred,
        "target_value": y,
        "pred_value_max": pred.max(),
        "target_value_max": y.max(),
        "td_error": (pred - y).pow(2),
    }


def trainer(
    optimizer: Any,
    *,
    config: Config = Config(),
    nets: Nets = Nets(),
    tau: float = 0.005,
):
    """``funcrl.training.update`` for DDPG: both nets every step, Polyak targets with ``tau``.

    ``optimizer`` is one transform or ``{"actor": ..., "value": ...}``.
    """
    from funcrl.training import update

    targets = {}
    if config.delay_actor:
        targets["target_actor"] = "actor"
    if config.delay_value:
        targets["target_value"] = "value"
    return update(
        partial(loss, config=config, nets=nets),
        optimizer,
        trainable=("actor", "value"),
        targets=targets or None,
        tau=tau,
    )
