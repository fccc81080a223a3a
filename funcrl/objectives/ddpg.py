"""Deep Deterministic Policy Gradient (Lillicrap et al. 2015): TorchRL's ``DDPGLoss``.

    params = ddpg.init(0, obs_spec, act_spec)    # {"actor", "value", "target_value", "action_bounds"}
    losses = ddpg.loss(params, batch)             # {"loss_actor", "loss_value", ...}
    action = ddpg.act(params, obs, key=key)       # mu(s) + clipped Gaussian exploration noise

Critic:  L_Q  = d(Q(s, a), y),  y = r + gamma * (1 - terminated) * Q'(s', mu'(s'))
Actor:   L_mu = -Q(s, mu(s))    (the critic is a constant here: only the actor learns from it)

``y`` is TD(0) by default; ``Config(value_estimator="td1" | "td_lambda")`` runs
:mod:`funcrl.values`' recursion over a batch of trajectories ``[*B, T]``.

Intentional differences from TorchRL: ``td_error`` (``[*B]``, the absolute TD error) is returned
rather than written into the batch; the default actor is ``tanh`` of an MLP on ``[-1, 1]`` and
:func:`init` refuses another action box for it (TorchRL leaves the actor to the user).
"""

from __future__ import annotations

import dataclasses
from functools import partial
from typing import Any, ClassVar

import torch

from funcrl import tree, values
from funcrl.nn import make_generator
from funcrl.objectives.actor_critic import (
    act_bounded_actor,
    bounds,
    check_config,
    check_nets,
    check_tanh_actor_bounds,
    init_nets,
    param_dtype,
    read_transitions,
    resolve,
    value_target,
)
from funcrl.objectives.actor_critic import action_bounds as spec_bounds
from funcrl.objectives.common import (
    check_batch,
    distance_loss,
    in_features,
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
    "critic_target",
    "actor_objective",
    "from_torchrl",
    "to_torchrl",
]


@dataclasses.dataclass(frozen=True)
class Config:
    """DDPG hyperparameters (TorchRL's ``DDPGLoss`` arguments and defaults).

    Attributes:
        loss_function: ``"l2"`` (TorchRL's default), ``"l1"`` or ``"smooth_l1"``.
        delay_actor: keep a target actor ``params["target_actor"]``; otherwise the next action
            comes from the gradient-stopped online actor.
        delay_value: keep a target critic ``params["target_value"]``.
        gamma: discount of the value target.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        use_prioritized_weights: ``"auto"``/``True``: weight the reductions by
            ``batch["priority_weight"]`` when present; ``False``: ignore it.
        value_estimator: ``"td0"``, ``"td1"`` or ``"td_lambda"`` (with ``lmbda``).
    """

    loss_function: str = "l2"
    delay_actor: bool = False
    delay_value: bool = True
    gamma: float = 0.99
    reduction: str = "mean"
    use_prioritized_weights: bool | str = "auto"
    value_estimator: str = "td0"
    lmbda: float = 0.95

    def __post_init__(self) -> None:
        check_config("ddpg.Config", self)


@dataclasses.dataclass(frozen=True)
class Nets:
    """``actor(params, observation) -> action [*B, a]``, ``value(params, observation, action)
    -> Q [*B, 1]``: funcrl nets, or ``None`` for the defaults, ``TanhBounded(MLP(o, a))`` (actions
    in ``[-1, 1]``; pass your own ``TanhBounded(MLP(...), low, high)`` for another box) and
    ``Concat(MLP(o + a, 1))``, ReLU with ``num_cells`` hidden units.
    """

    ROLES: ClassVar[dict[str, str]] = {"actor": "tanh_actor", "value": "qvalue"}

    actor: Any = None
    value: Any = None
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
    """``{"actor", "value", "action_bounds"}`` plus ``"target_actor"``/``"target_value"`` for the
    delayed nets (copies of the online ones). Never touches the global RNG."""
    owner = "ddpg.init"
    check_nets(nets, owner)
    d_obs = spec_size(observation_spec, owner, "observation_spec")
    d_act = spec_size(action_spec, owner, "action_spec")
    box = spec_bounds(action_spec, d_act, device=device, dtype=dtype, owner=owner)
    check_tanh_actor_bounds(nets, box, owner)
    nets = resolve(nets, d_obs, d_act)
    params = init_nets(nets, make_generator(seed), device, dtype)
    params["action_bounds"] = box
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
    """``y = r + gamma * (1 - terminated) * Q'(s', mu'(s'))``, gradient-stopped (TD(0))."""
    return values.td0_return_estimate(gamma, next_q, reward, terminated).detach()


def actor_objective(q_of_policy_action: torch.Tensor) -> torch.Tensor:
    """``-Q(s, mu(s))`` per sample; the caller stops the critic's gradient."""
    return -q_of_policy_action


# --- loss, act, trainer --------------------------------------------------------------------------


def loss(
    params: dict[str, Any],
    batch: Record,
    *,
    config: Config = Config(),
    nets: Nets = Nets(),
    key: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """The DDPG losses with TorchRL's keys. Draws nothing (``key`` is accepted and unused).

    Returns:
        ``loss_actor``, ``loss_value`` (reduced), ``pred_value``, ``target_value``, ``td_error``
        (``[*B]``, the absolute TD error, detached) and ``pred_value_max``, ``target_value_max``.
    """
    del key  # deterministic actor and critic: nothing to draw
    owner = "ddpg.loss"
    check_batch(batch, owner)
    need = ["actor", "value", "action_bounds"]
    need += ["target_actor"] if config.delay_actor else []
    need += ["target_value"] if config.delay_value else []
    require(params, need, owner)
    low, _ = bounds(params, owner)
    t = read_transitions(
        batch, owner=owner, act_dim=low.shape[-1], dtype=param_dtype(params, "actor")
    )
    obs, action, next_obs = t.observation, t.action, t.next_observation
    nets = resolve(nets, obs.shape[-1], action.shape[-1])
    weights = priority_weights(batch, config, like=t.reward.squeeze(-1), owner=owner)

    # Critic: regress Q(s, a) on the value target of the (target) actor-critic.
    q = nets.value(params["value"], obs, action)
    if q.shape != t.reward.shape:
        raise ValueError(
            f"{owner}: value net gave {tuple(q.shape)}, expected {tuple(t.reward.shape)}"
        )
    actor_next = params["target_actor"] if config.delay_actor else params["actor"]
    value_next = params["target_value"] if config.delay_value else params["value"]
    next_action = nets.actor(tree.detach(actor_next), next_obs)
    next_q = nets.value(tree.detach(value_next), next_obs, next_action).squeeze(-1)
    y = value_target(config, batch, t, next_q, owner=owner)
    pred = q.squeeze(-1)
    loss_value = reduce_loss(
        distance_loss(pred, y, config.loss_function), config.reduction, weights
    )

    # Actor: ascend Q(s, mu(s)) through the action only (the critic is gradient-stopped).
    policy_action = nets.actor(params["actor"], obs)
    q_pi = nets.value(tree.detach(params["value"]), obs, policy_action).squeeze(-1)
    loss_actor = reduce_loss(actor_objective(q_pi), config.reduction, weights)

    pred, y = pred.detach(), y.detach()
    return {
        "loss_actor": loss_actor,
        "loss_value": loss_value,
        "pred_value": pred,
        "target_value": y,
        "pred_value_max": pred.max(),
        "target_value_max": y.max(),
        "td_error": (pred - y).abs(),
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
    return act_bounded_actor("ddpg.act", params, observation, nets, mode, key, noise_scale)


def trainer(
    optimizer: Any,
    *,
    config: Config = Config(),
    nets: Nets = Nets(),
    tau: float = 0.005,
):
    """``funcrl.training.update`` for DDPG: both nets every step, Polyak targets with ``tau``.

    ``optimizer`` is one transform or ``{"actor": ..., "value": ...}``; the step is
    ``step(params, state, batch, key=None)``.
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


# --- TorchRL interop -----------------------------------------------------------------------------


def from_torchrl(
    loss_module: Any, action_bounds: dict[str, torch.Tensor] | None = None
) -> tuple[Config, Nets, dict[str, Any]]:
    """``(config, nets, params)`` equal to a TorchRL ``DDPGLoss`` (hyperparameters, value
    estimator, nets, online and target weights). ``DDPGLoss`` has no action bounds (its losses do
    not use them): ``action_bounds`` (``{"low", "high"}``, ``[a]``) defaults to ``[-1, 1]``, the
    box of a ``Sequential(MLP, Tanh)`` actor (which becomes ``TanhBounded(MLP)``)."""
    from funcrl.objectives.actor_critic import (
        critic_from_torchrl,
        deterministic_actor_from_torchrl,
        torchrl_estimator,
    )

    m = loss_module
    actor, actor_params = deterministic_actor_from_torchrl(m.actor_network, m.actor_network_params)
    vnet, vparams = critic_from_torchrl(m.value_network, m.value_network_params)
    config = Config(
        loss_function=m.loss_function,
        delay_actor=bool(m.delay_actor),
        delay_value=bool(m.delay_value),
        reduction=m.reduction,
        use_prioritized_weights=m.use_prioritized_weights,
        **torchrl_estimator(m),
    )
    if action_bounds is None:
        out = getattr(getattr(actor, "net", actor), "out_features", None)
        if not isinstance(out, int):
            raise TypeError("ddpg.from_torchrl: pass action_bounds (the actor has no sizes)")
        dtype = tree.leaves(actor_params)[0].dtype
        action_bounds = {"low": -torch.ones(out, dtype=dtype), "high": torch.ones(out, dtype=dtype)}
    params: dict[str, Any] = {
        "actor": actor_params,
        "value": vparams,
        "action_bounds": action_bounds,
    }
    if config.delay_actor:
        params["target_actor"] = deterministic_actor_from_torchrl(
            m.actor_network, m.target_actor_network_params
        )[1]
    if config.delay_value:
        params["target_value"] = critic_from_torchrl(
            m.value_network, m.target_value_network_params
        )[1]
    return config, Nets(actor=actor, value=vnet), params


def to_torchrl(
    config: Config, nets: Nets, params: dict[str, Any], observation_dim: int | None = None
):
    """A TorchRL ``DDPGLoss`` equal to ``loss(params, ., config=config, nets=nets)`` (weights,
    targets and value estimator copied). ``observation_dim`` sizes default nets."""
    from torchrl.objectives import DDPGLoss

    from funcrl.objectives.actor_critic import (
        deterministic_actor_to_torchrl,
        make_torchrl_estimator,
        torchrl_qvalue,
        write_torchrl,
    )

    low, _ = bounds(params, "ddpg.to_torchrl")
    if observation_dim is None:
        observation_dim = in_features(params["actor"], "ddpg.to_torchrl", "actor")
    nets = resolve(nets, observation_dim, low.shape[-1])
    actor, inner = deterministic_actor_to_torchrl(nets.actor, params["actor"])
    m = DDPGLoss(
        actor,
        torchrl_qvalue(nets.value, params["value"]),
        loss_function=config.loss_function,
        delay_actor=config.delay_actor,
        delay_value=config.delay_value,
        reduction=config.reduction,
        use_prioritized_weights=config.use_prioritized_weights,
    )
    make_torchrl_estimator(m, config)
    vmod = m.value_network
    if config.delay_value:
        write_torchrl(m.target_value_network_params, vmod, vmod.module, params["target_value"])
    if config.delay_actor:
        write_torchrl(m.target_actor_network_params, m.actor_network, inner, params["target_actor"])
    return m
