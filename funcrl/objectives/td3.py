"""Twin Delayed DDPG (Fujimoto et al. 2018): TorchRL's ``TD3Loss``.

    params = td3.init(0, obs_spec, act_spec)
    # {"actor", "qvalue", "target_actor", "target_qvalue", "min_action", "max_action"}
    losses = td3.loss(params, batch)             # {"loss_actor", "loss_qvalue", ...}
    train = td3.trainer({"actor": optim.adam(3e-4), "qvalue": optim.adam(3e-4)}, policy_delay=2)

Target smoothing:  a' = clip(mu'(s') + clip(sigma * eps, -c, c), low, high),  eps ~ N(0, I)
Clipped double Q:  y  = r + gamma * (1 - terminated) * min_i Q'_i(s', a')
Critic:            L_Q  = sum_i d(Q_i(s, a), y)
Actor:             L_mu = -Q_1(s, mu(s))    (critics gradient-stopped)
The actor and the targets move every ``policy_delay`` steps (:func:`trainer`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import torch

from funcrl import tree
from funcrl.nn import MLP, Ensemble, make_generator
from funcrl.nn.ensemble import vmap_members
from funcrl.objectives.actor_critic import expand_bound
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
from funcrl.objectives.ddpg import check_default_actor_bounds
from funcrl.record import Record

__all__ = [
    "Config",
    "Nets",
    "init",
    "loss",
    "trainer",
    "target_policy_smoothing",
    "clipped_double_q",
]


@dataclasses.dataclass(frozen=True)
class Config:
    """TD3 hyperparameters (TorchRL's ``TD3Loss`` arguments and defaults).

    Attributes:
        policy_noise: std ``sigma`` of the target policy noise.
        noise_clip: the noise is clipped to ``[-noise_clip, noise_clip]``.
        loss_function: ``"smooth_l1"`` (TorchRL's default), ``"l2"`` or ``"l1"``.
        delay_actor: keep a target actor (TorchRL's default ``True``).
        delay_qvalue: keep target critics (default ``True``).
        num_qvalue_nets: size of the critic ensemble.
        gamma: discount (TorchRL's default TD(0) estimator uses 0.99).
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    The action bounds come from the action spec (``params["min_action"]``/``["max_action"]``,
    TorchRL's buffer names), set by :func:`init`.
    """

    policy_noise: float = 0.2
    noise_clip: float = 0.5
    loss_function: str = "smooth_l1"
    delay_actor: bool = True
    delay_qvalue: bool = True
    num_qvalue_nets: int = 2
    gamma: float = 0.99
    reduction: str = "mean"

    def __post_init__(self) -> None:
        check_loss_function(self.loss_function, "td3.Config")
        check_reduction(self.reduction, "td3.Config")
        if self.policy_noise < 0 or self.noise_clip < 0:
            raise ValueError(
                f"td3.Config: policy_noise and noise_clip must be >= 0, got {self.policy_noise} "
                f"and {self.noise_clip}"
            )
        if int(self.num_qvalue_nets) < 1:
            raise ValueError(
                f"td3.Config: num_qvalue_nets must be >= 1, got {self.num_qvalue_nets}"
            )
        if not 0.0 <= float(self.gamma) <= 1.0:
            raise ValueError(f"td3.Config: gamma must be in [0, 1], got {self.gamma}")


@dataclasses.dataclass(frozen=True)
class Nets:
    """``actor(params, observation) -> action [*B, a]``; ``qvalue(params, observation, action)
    -> Q [*B, 1]`` for *one* critic (the loss vmaps it over the ensemble's leading dim).

    Defaults: ``tanh`` of a ReLU :class:`funcrl.nn.MLP` (actions in ``[-1, 1]``) and a ReLU MLP
    on ``cat(observation, action)``, with ``num_cells`` hidden units sized by :func:`init`.
    """

    actor: Callable[..., torch.Tensor] = tanh_mlp
    qvalue: Callable[..., torch.Tensor] = mlp
    num_cells: tuple[int, ...] = (256, 256)


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
    """Actor, ``num_qvalue_nets`` independently initialised critics stacked on a leading dim,
    their target copies, and the action bounds of the (bounded) ``action_spec``."""
    if not (hasattr(action_spec, "low") and hasattr(action_spec, "high")):
        raise TypeError(
            f"td3.init: action_spec must be bounded (.low/.high), got {type(action_spec).__name__}"
        )
    check_default_actor_bounds(action_spec, nets.actor, "td3.init")
    gen = make_generator(seed)
    d_obs = spec_size(observation_spec, "td3.init", "observation_spec")
    d_act = spec_size(action_spec, "td3.init", "action_spec")
    actor = init_net(
        nets.actor,
        (tanh_mlp, mlp),
        in_features=d_obs,
        out_features=d_act,
        num_cells=nets.num_cells,
        seed=gen,
        device=device,
        dtype=dtype,
        owner="td3.init",
    )
    if nets.qvalue is mlp:
        critic = MLP(d_obs + d_act, 1, num_cells=tuple(nets.num_cells), activation="relu")
    else:
        critic = nets.qvalue
    if not hasattr(critic, "init"):
        raise TypeError(
            f"td3.init: cannot initialise params for the plain function {critic!r}; pass a "
            "funcrl.nn network (with .init) as Nets(qvalue=...), or build the params yourself"
        )
    qvalue = Ensemble(critic, int(config.num_qvalue_nets)).init(gen, device=device, dtype=dtype)
    bound = dict(device=device, dtype=dtype)
    params = {
        "actor": actor,
        "qvalue": qvalue,
        # [a], or [n_agents, a] for a multi-agent spec (leading dims kept).
        "min_action": expand_bound(action_spec.low, d_act, **bound),
        "max_action": expand_bound(action_spec.high, d_act, **bound),
    }
    if config.delay_actor:
        params["target_actor"] = tree.clone(actor)
    if config.delay_qvalue:
        params["target_qvalue"] = tree.clone(qvalue)
    return params


# --- the equations -------------------------------------------------------------------------------


def target_policy_smoothing(
    action: torch.Tensor,
    noise: torch.Tensor,
    policy_noise: float,
    noise_clip: float,
    low: torch.Tensor,
    high: torch.Tensor,
) -> torch.Tensor:
    """``clip(a + clip(sigma * eps, -c, c), low, high)`` with ``eps`` a standard normal draw."""
    smoothing = (noise * policy_noise).clamp(-noise_clip, noise_clip)
    return torch.clamp(action + smoothing, low, high)


def clipped_double_q(next_qs: torch.Tensor) -> torch.Tensor:
    """``min_i Q'_i``: ``[num_qvalue_nets, *B, 1] -> [*B, 1]``."""
    return next_qs.min(0).values


def _ensemble(nets: Nets, qparams: Any, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
    # One call for all critics: vmap the single-critic apply over the params' leading dim.
    return vmap_members(nets.qvalue, qparams, obs, action, randomness="different")


# --- the loss ------------------------------------------------------------------------------------


def loss(
    params: dict[str, Any],
    batch: Record,
    *,
    config: Config = Config(),
    nets: Nets = Nets(),
    noise: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """The TD3 losses with TorchRL's keys.

    Samples the target policy noise from the global torch RNG (``randn_like(action)``, as
    TorchRL does) unless a standard-normal ``noise`` shaped like the action is given.

    Returns:
        ``loss_actor``, ``loss_qvalue`` (reduced); detached logs ``pred_value`` and
        ``state_action_value_actor`` ``[num_qvalue_nets, *B]``, ``next_state_value``,
        ``target_value`` and ``td_error`` ``[*B]`` (the max over critics of the squared TD error:
        the priority TorchRL writes into the input tensordict).
    """
    owner = "td3.loss"
    obs = get(batch, "observation", owner=owner)
    action = get(batch, "action", owner=owner)
    next_obs = get(batch, ("next", "observation"), owner=owner)
    reward = get(batch, ("next", "reward"), owner=owner, shape=(1,))
    terminated = get_flag(batch, ("next", "terminated"), owner=owner, like=reward)
    if reward.shape[:-1] != action.shape[:-1]:
        raise ValueError(
            f"{owner}: batch[('next', 'reward')] has shape {tuple(reward.shape)}, expected "
            f"{(*action.shape[:-1], 1)}"
        )
    if noise is None:
        noise = torch.randn_like(action)
    elif noise.shape != action.shape:
        raise ValueError(
            f"{owner}: noise has shape {tuple(noise.shape)}, expected {tuple(action.shape)}"
        )

    # Critics: clipped double-Q target at the smoothed target action.
    actor_next = params["target_actor"] if config.delay_actor else params["actor"]
    q_next = params["target_qvalue"] if config.delay_qvalue else params["qvalue"]
    low, high = params["min_action"], params["max_action"]
    next_action = target_policy_smoothing(
        nets.actor(tree.detach(actor_next), next_obs),
        noise,
        config.policy_noise,
        config.noise_clip,
        low.detach(),
        high.detach(),
    )
    next_value = clipped_double_q(_ensemble(nets, tree.detach(q_next), next_obs, next_action))
    y = td0_target(reward, terminated, next_value, config.gamma).squeeze(-1).detach()
    qs = _ensemble(nets, params["qvalue"], obs, action).squeeze(-1)  # [n, *B]
    per_sample = distance_loss(qs, y.expand_as(qs), config.loss_function).sum(0)
    loss_qvalue = reduce_loss(per_sample, config.reduction)

    # Actor: ascend the first critic at the actor's action (critics are constants here).
    qs_pi = _ensemble(nets, tree.detach(params["qvalue"]), obs, nets.actor(params["actor"], obs))
    qs_pi = qs_pi.squeeze(-1)
    loss_actor = reduce_loss(-qs_pi[0], config.reduction)

    return {
        "loss_actor": loss_actor,
        "loss_qvalue": loss_qvalue,
        "pred_value": qs.detach(),
        "state_action_value_actor": qs_pi.detach(),
        "next_state_value": next_value.squeeze(-1).detach(),
        "target_value": y,
        # The priority TorchRL writes into the input: the largest squared error of the critics.
        "td_error": (qs.detach() - y).pow(2).max(0).values,
    }


def trainer(
    optimizer: Any,
    *,
    config: Config = Config(),
    nets: Nets = Nets(),
    policy_delay: int = 2,
    tau: float = 0.005,
):
    """``funcrl.training.update`` for TD3: critics every step; the actor and the Polyak targets
    every ``policy_delay`` steps (a pure function of the step counter, no Python branch).

    ``optimizer`` is one transform (used for both nets) or ``{"actor": ..., "qvalue": ...}``.
    """
    from funcrl.training import update

    if not isinstance(optimizer, Mapping):
        optimizer = {"actor": optimizer, "qvalue": optimizer}
    targets = {}
    if config.delay_actor:
        targets["target_actor"] = "actor"
    if config.delay_qvalue:
        targets["target_qvalue"] = "qvalue"
    return update(
        partial(loss, config=config, nets=nets),
        optimizer,
        trainable=("actor", "qvalue"),
        targets=targets or None,
        tau=tau,
        every={"actor": policy_delay},
        target_every=policy_delay,
    )
