"""Twin Delayed DDPG (Fujimoto et al. 2018): TorchRL's ``TD3Loss``.

    params = td3.init(0, obs_spec, act_spec)
    # {"actor", "qvalue", "target_actor", "target_qvalue", "action_bounds"}
    losses = td3.loss(params, batch)             # {"loss_actor", "loss_qvalue", ...}
    train = td3.trainer({"actor": optim.adam(3e-4), "qvalue": optim.adam(3e-4)}, policy_delay=2)

Target smoothing:  a' = clip(mu'(s') + clip(sigma * eps, -c, c), low, high),  eps ~ N(0, I)
Clipped double Q:  y  = r + gamma * (1 - terminated) * min_i Q'_i(s', a')
Critic:            L_Q  = sum_i d(Q_i(s, a), y)
Actor:             L_mu = -Q_1(s, mu(s))    (critics gradient-stopped)
The actor and the targets move every ``policy_delay`` steps (:func:`trainer`).

``y`` is TD(0) by default; ``Config(value_estimator="td1" | "td_lambda")`` runs
:mod:`funcrl.values`' recursion over a batch of trajectories ``[*B, T]``. The target noise ``eps``
comes from ``key`` (:mod:`funcrl.random`) or, with ``key=None``, the global RNG (TorchRL's draw).

Intentional differences from TorchRL: the bounds live in ``params["action_bounds"]`` (TorchRL's
``min_action``/``max_action`` buffers); ``td_error`` (``[*B]``, the largest absolute TD error of
the critics) is returned rather than written into the batch; the default actor is ``tanh`` of an
MLP on ``[-1, 1]`` and :func:`init` refuses another action box for it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from functools import partial
from typing import Any, ClassVar

import torch

from funcrl import tree
from funcrl.distributions._utils import standard_normal
from funcrl.nn import Ensemble, make_generator
from funcrl.objectives.actor_critic import (
    act_bounded_actor,
    bounds,
    check_config,
    check_nets,
    check_tanh_actor_bounds,
    clipped_double_q,
    ensemble_q,
    param_dtype,
    read_transitions,
    resolve,
    target_policy_smoothing,
    value_target,
)
from funcrl.objectives.actor_critic import action_bounds as spec_bounds
from funcrl.objectives.common import (
    check_batch,
    distance_loss,
    priority_weights,
    reduce_loss,
    require,
    spec_size,
)
from funcrl.record import Record

__all__ = [
    "Config",
    "Nets",
    "init",
    "loss",
    "act",
    "trainer",
    "target_policy_smoothing",
    "clipped_double_q",
    "from_torchrl",
    "to_torchrl",
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
        gamma: discount of the value target.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        use_prioritized_weights: ``"auto"``/``True``: weight the reductions by
            ``batch["priority_weight"]`` when present; ``False``: ignore it.
        value_estimator: ``"td0"``, ``"td1"`` or ``"td_lambda"`` (with ``lmbda``).

    The action bounds come from the action spec (``params["action_bounds"]``), set by
    :func:`init`.
    """

    policy_noise: float = 0.2
    noise_clip: float = 0.5
    loss_function: str = "smooth_l1"
    delay_actor: bool = True
    delay_qvalue: bool = True
    num_qvalue_nets: int = 2
    gamma: float = 0.99
    reduction: str = "mean"
    use_prioritized_weights: bool | str = "auto"
    value_estimator: str = "td0"
    lmbda: float = 0.95

    def __post_init__(self) -> None:
        check_config("td3.Config", self)
        if self.policy_noise < 0 or self.noise_clip < 0:
            raise ValueError(
                f"td3.Config: policy_noise and noise_clip must be >= 0, got {self.policy_noise} "
                f"and {self.noise_clip}"
            )
        if int(self.num_qvalue_nets) < 1:
            raise ValueError(
                f"td3.Config: num_qvalue_nets must be >= 1, got {self.num_qvalue_nets}"
            )


@dataclasses.dataclass(frozen=True)
class Nets:
    """``actor(params, observation) -> action [*B, a]``; ``qvalue(params, observation, action)
    -> Q [*B, 1]`` for *one* critic (the loss vmaps it over the ensemble's leading dim).

    funcrl nets, or ``None`` for the defaults: ``TanhBounded(MLP(o, a))`` (actions in ``[-1, 1]``;
    pass your own ``TanhBounded(MLP(...), low, high)`` for another box) and
    ``Concat(MLP(o + a, 1))``, ReLU with ``num_cells`` hidden units.
    """

    ROLES: ClassVar[dict[str, str]] = {"actor": "tanh_actor", "qvalue": "qvalue"}

    actor: Any = None
    qvalue: Any = None
    num_cells: tuple[int, ...] = (256, 256)


def init(
    seed: int | torch.Tensor | torch.Generator,
    observation_spec: Any,
    action_spec: Any,
    config: Config = Config(),
    nets: Nets = Nets(),
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> dict[str, Any]:
    """Actor, ``num_qvalue_nets`` independently initialised critics stacked on a leading dim,
    their target copies, and ``action_bounds`` from the (bounded) ``action_spec``."""
    owner = "td3.init"
    check_nets(nets, owner)
    d_obs = spec_size(observation_spec, owner, "observation_spec")
    d_act = spec_size(action_spec, owner, "action_spec")
    box = spec_bounds(action_spec, d_act, device=device, dtype=dtype, owner=owner)
    check_tanh_actor_bounds(nets, box, owner)
    nets = resolve(nets, d_obs, d_act)
    gen = make_generator(seed)
    params = {
        "actor": nets.actor.init(gen, device=device, dtype=dtype),
        "qvalue": Ensemble(nets.qvalue, int(config.num_qvalue_nets)).init(
            gen, device=device, dtype=dtype
        ),
        "action_bounds": box,  # [a], or [n_agents, a] for a multi-agent spec
    }
    if config.delay_actor:
        params["target_actor"] = tree.clone(params["actor"])
    if config.delay_qvalue:
        params["target_qvalue"] = tree.clone(params["qvalue"])
    return params


# --- the equations -------------------------------------------------------------------------------


# --- loss, act, trainer --------------------------------------------------------------------------


def loss(
    params: dict[str, Any],
    batch: Record,
    *,
    config: Config = Config(),
    nets: Nets = Nets(),
    key: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """The TD3 losses with TorchRL's keys.

    The target policy noise is ``noise`` when given (standard normal, shaped like the action),
    else drawn with ``key`` (:mod:`funcrl.random`), else from the global torch RNG
    (``randn_like(action)``, as TorchRL does).

    Returns:
        ``loss_actor``, ``loss_qvalue`` (reduced); detached logs ``pred_value`` and
        ``state_action_value_actor`` ``[num_qvalue_nets, *B]``, ``next_state_value``,
        ``target_value`` and ``td_error`` ``[*B]`` (the largest absolute TD error of the critics:
        the priority TorchRL writes into the input tensordict).
    """
    owner = "td3.loss"
    check_batch(batch, owner)
    need = ["actor", "qvalue", "action_bounds"]
    need += ["target_actor"] if config.delay_actor else []
    need += ["target_qvalue"] if config.delay_qvalue else []
    require(params, need, owner)
    low, high = bounds(params, owner)
    t = read_transitions(
        batch, owner=owner, act_dim=low.shape[-1], dtype=param_dtype(params, "actor")
    )
    obs, action, next_obs = t.observation, t.action, t.next_observation
    nets = resolve(nets, obs.shape[-1], action.shape[-1])
    weights = priority_weights(batch, config, like=t.reward.squeeze(-1), owner=owner)
    if noise is None:
        noise = standard_normal(action.shape, action, key)
    elif noise.shape != action.shape:
        raise ValueError(
            f"{owner}: noise has shape {tuple(noise.shape)}, expected {tuple(action.shape)}"
        )

    # Critics: clipped double-Q target at the smoothed target action.
    actor_next = params["target_actor"] if config.delay_actor else params["actor"]
    q_next = params["target_qvalue"] if config.delay_qvalue else params["qvalue"]
    next_action = target_policy_smoothing(
        nets.actor(tree.detach(actor_next), next_obs),
        noise,
        config.policy_noise,
        config.noise_clip,
        low,
        high,
    )
    next_value = clipped_double_q(
        ensemble_q(nets.qvalue, tree.detach(q_next), next_obs, next_action)
    )
    y = value_target(config, batch, t, next_value, owner=owner)
    qs = ensemble_q(nets.qvalue, params["qvalue"], obs, action)  # [n, *B]
    per_sample = distance_loss(qs, y.expand_as(qs), config.loss_function).sum(0)
    loss_qvalue = reduce_loss(per_sample, config.reduction, weights)

    # Actor: ascend the first critic at the actor's action (critics are constants here).
    qs_pi = ensemble_q(
        nets.qvalue, tree.detach(params["qvalue"]), obs, nets.actor(params["actor"], obs)
    )
    loss_actor = reduce_loss(-qs_pi[0], config.reduction, weights)

    return {
        "loss_actor": loss_actor,
        "loss_qvalue": loss_qvalue,
        "pred_value": qs.detach(),
        "state_action_value_actor": qs_pi.detach(),
        "next_state_value": next_value.detach(),
        "target_value": y,
        "td_error": (qs.detach() - y).abs().max(0).values,
    }


def act(
    params: dict[str, Any],
    observation: torch.Tensor,
    *,
    config: Config = Config(),
    nets: Nets = Nets(),
    mode: str = "random",
    key: torch.Tensor | None = None,
    noise_scale: float = 0.1,
) -> torch.Tensor:
    """``mu(s)`` (``"deterministic"``) or ``clip(mu(s) + noise_scale * (high - low) / 2 * eps,
    low, high)`` with ``eps ~ N(0, I)`` (``"random"``; ``key`` or the global RNG). Detached."""
    return act_bounded_actor("td3.act", params, observation, nets, mode, key, noise_scale)


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

    ``optimizer`` is one transform (used for both nets) or ``{"actor": ..., "qvalue": ...}``; the
    step is ``step(params, state, batch, key=None)``.
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


# --- TorchRL interop -----------------------------------------------------------------------------


def from_torchrl(loss_module: Any) -> tuple[Config, Nets, dict[str, Any]]:
    """``(config, nets, params)`` equal to a TorchRL ``TD3Loss``: hyperparameters and value
    estimator, the actor (``Sequential(MLP, Tanh)`` becomes ``TanhBounded(MLP)``) and critics as
    funcrl nets, online and target weights, and ``action_bounds`` from its ``min_action`` /
    ``max_action``. ``loss(params, batch, ...)`` then equals ``loss_module(batch)`` under the same
    ``torch.manual_seed``."""
    from funcrl.objectives.actor_critic import td3_from_torchrl

    fields, actor, qnet, params = td3_from_torchrl(loss_module)
    return Config(**fields), Nets(actor=actor, qvalue=qnet), params


def to_torchrl(
    config: Config, nets: Nets, params: dict[str, Any], observation_dim: int | None = None
):
    """A TorchRL ``TD3Loss`` equal to ``loss(params, ., config=config, nets=nets)`` (weights,
    targets, bounds and value estimator copied). ``observation_dim`` sizes default nets."""
    from torchrl.objectives import TD3Loss

    from funcrl.objectives.actor_critic import td3_to_torchrl

    return td3_to_torchrl(
        TD3Loss, config, nets, params, observation_dim=observation_dim, owner="td3.to_torchrl"
    )
