"""TD3+BC (Fujimoto & Gu 2021, arXiv:2106.06860): TorchRL 0.14's ``TD3BCLoss``.

    params = td3_bc.init(0, obs_spec, act_spec)  # {"actor", "qvalue", "target_actor",
                                                 #  "target_qvalue", "action_bounds"}
    losses = td3_bc.loss(params, batch)          # loss_actor, loss_qvalue, bc_loss, lmbd, ...
    train = td3_bc.trainer(optim.adam(3e-4), policy_delay=2)

TD3's critic (:mod:`funcrl.objectives.td3`: target policy smoothing, clipped double Q) and an
actor regularised towards the data's actions::

    lambda = alpha / mean_B |Q_1(s, mu(s))|                       (gradient-stopped)
    L_mu   = -lambda Q_1(s, mu(s)) + mean_{B, a} (mu(s) - a)^2     (critics gradient-stopped)

The behaviour-cloning term is TorchRL's ``mse_loss`` over the whole batch (a scalar added to
every sample's term before the reduction); ``lambda``'s mean is unweighted.

Intentional differences from TorchRL: as :mod:`funcrl.objectives.td3` (bounds in
``params["action_bounds"]``, ``td_error`` ``[*B]`` absolute and returned, the default actor
``tanh`` of an MLP on ``[-1, 1]``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from functools import partial
from typing import Any, ClassVar

import torch

from funcrl import tree
from funcrl.distributions._utils import standard_normal
from funcrl.nn import make_generator
from funcrl.objectives.actor_critic import (
    act_bounded_actor,
    bounds,
    check_config,
    check_nets,
    check_tanh_actor_bounds,
    clipped_double_q,
    ensemble_q,
    init_ensemble,
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

__all__ = ["Config", "Nets", "init", "loss", "act", "trainer", "from_torchrl", "to_torchrl"]

Params = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Config:
    """TD3+BC hyperparameters (TorchRL's ``TD3BCLoss`` arguments and defaults).

    Attributes:
        alpha: the actor's ``alpha`` (the Q term's scale relative to behaviour cloning; the
            paper's 2.5).
        policy_noise, noise_clip, loss_function, delay_actor, delay_qvalue, num_qvalue_nets,
        gamma, reduction, use_prioritized_weights, value_estimator, lmbda: as
            :class:`funcrl.td3.Config`.
    """

    alpha: float = 2.5
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
        check_config("td3_bc.Config", self)
        if isinstance(self.alpha, bool) or not float(self.alpha) >= 0:
            raise ValueError(f"td3_bc.Config: alpha must be >= 0, got {self.alpha!r}")
        if self.policy_noise < 0 or self.noise_clip < 0:
            raise ValueError(
                f"td3_bc.Config: policy_noise and noise_clip must be >= 0, got "
                f"{self.policy_noise} and {self.noise_clip}"
            )
        if isinstance(self.num_qvalue_nets, bool) or int(self.num_qvalue_nets) < 1:
            raise ValueError(
                f"td3_bc.Config: num_qvalue_nets must be >= 1, got {self.num_qvalue_nets!r}"
            )


@dataclasses.dataclass(frozen=True)
class Nets:
    """As :class:`funcrl.td3.Nets`: ``actor(params, obs) -> action [*B, a]`` (default
    ``TanhBounded(MLP)`` on ``[-1, 1]``) and one critic ``qvalue(params, obs, action) -> [*B, 1]``
    (default ``Concat(MLP)``), ReLU with ``num_cells`` hidden units."""

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
) -> Params:
    """TD3's params: the actor, ``num_qvalue_nets`` critics stacked on a leading dim, their
    targets and ``action_bounds`` from the bounded spec."""
    owner = "td3_bc.init"
    check_nets(nets, owner)
    d_obs = spec_size(observation_spec, owner, "observation_spec")
    d_act = spec_size(action_spec, owner, "action_spec")
    box = spec_bounds(action_spec, d_act, device=device, dtype=dtype, owner=owner)
    check_tanh_actor_bounds(nets, box, owner)
    nets = resolve(nets, d_obs, d_act)
    gen = make_generator(seed)
    kw = {"device": device, "dtype": dtype}
    params = {
        "actor": nets.actor.init(gen, **kw),
        "qvalue": init_ensemble(nets.qvalue, int(config.num_qvalue_nets), gen, **kw),
        "action_bounds": box,
    }
    if config.delay_actor:
        params["target_actor"] = tree.clone(params["actor"])
    if config.delay_qvalue:
        params["target_qvalue"] = tree.clone(params["qvalue"])
    return params


def loss(
    params: Params,
    batch: Record,
    *,
    config: Config = Config(),
    nets: Nets = Nets(),
    key: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """The TD3+BC losses with TorchRL's keys.

    The target policy noise is ``noise`` when given (standard normal, shaped like the action),
    else drawn with ``key`` (:mod:`funcrl.random`), else from the global torch RNG (TorchRL's
    ``randn_like(action)``).

    Returns:
        ``loss_actor``, ``loss_qvalue`` (reduced); detached ``bc_loss`` and ``lmbd`` (0-d),
        ``state_action_value_actor`` (``Q_1(s, mu(s))`` ``[*B]``), ``pred_value``
        ``[num_qvalue_nets, *B]``, ``next_state_value``, ``target_value`` and ``td_error``
        ``[*B]`` (the largest absolute TD error of the critics).
    """
    owner = "td3_bc.loss"
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
    elif noise.shape != action.shape or noise.dtype != action.dtype:
        raise ValueError(
            f"{owner}: noise has shape {tuple(noise.shape)} and dtype {noise.dtype}, expected "
            f"{tuple(action.shape)} and {action.dtype} (the action's)"
        )

    # Actor: -lambda Q_1(s, mu(s)) + MSE(mu(s), a); lambda normalises the Q scale.
    pi = nets.actor(params["actor"], obs)
    q_pi = ensemble_q(nets.qvalue, tree.detach(params["qvalue"]), obs, pi)[0]
    bc_loss = torch.nn.functional.mse_loss(pi, action)
    lmbd = config.alpha / q_pi.abs().mean().detach()
    loss_actor = reduce_loss(-lmbd * q_pi + bc_loss, config.reduction, weights)

    # Critics: TD3's clipped double-Q target at the smoothed target action.
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
    qs = ensemble_q(nets.qvalue, params["qvalue"], obs, action)
    per_sample = distance_loss(qs, y.expand_as(qs), config.loss_function).sum(0)

    return {
        "loss_actor": loss_actor,
        "loss_qvalue": reduce_loss(per_sample, config.reduction, weights),
        "bc_loss": bc_loss.detach(),
        "lmbd": lmbd.detach(),
        "state_action_value_actor": q_pi.detach(),
        "pred_value": qs.detach(),
        "next_state_value": next_value.detach(),
        "target_value": y,
        "td_error": (qs.detach() - y).abs().max(0).values,
    }


def act(
    params: Params,
    observation: torch.Tensor,
    *,
    config: Config = Config(),
    nets: Nets = Nets(),
    mode: str = "random",
    key: torch.Tensor | None = None,
    noise_scale: float = 0.1,
) -> torch.Tensor:
    """``mu(s)`` (``"deterministic"``, the one to evaluate with) or ``clip(mu(s) + noise_scale
    * (high - low) / 2 * eps, low, high)`` (``"random"``; ``key`` or the global RNG). Detached."""
    return act_bounded_actor("td3_bc.act", params, observation, nets, mode, key, noise_scale)


def trainer(
    optimizer: Any,
    *,
    config: Config = Config(),
    nets: Nets = Nets(),
    policy_delay: int = 2,
    tau: float = 0.005,
):
    """TD3's schedule (:func:`funcrl.td3.trainer`): critics every step, the actor and the Polyak
    targets every ``policy_delay`` steps. ``optimizer``: one transform or ``{"actor", "qvalue"}``."""
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


def from_torchrl(loss_module: Any) -> tuple[Config, Nets, Params]:
    """``(config, nets, params)`` equal to a TorchRL ``TD3BCLoss`` (as
    :func:`funcrl.td3.from_torchrl`, plus ``alpha``; both read by ``actor_critic.td3_from_torchrl``)."""
    from funcrl.objectives.actor_critic import td3_from_torchrl

    fields, actor, qnet, params = td3_from_torchrl(loss_module)
    return Config(alpha=float(loss_module.alpha), **fields), Nets(actor=actor, qvalue=qnet), params


def to_torchrl(config: Config, nets: Nets, params: Params, observation_dim: int | None = None):
    """A TorchRL ``TD3BCLoss`` equal to ``loss(params, ., config=config, nets=nets)`` under the
    same ``torch.manual_seed``: the actor (``TanhBounded(MLP)`` on ``[-1, 1]`` becomes
    ``Sequential(MLP, Tanh)``) and ``ValueOperator`` critics with ``params`` copied in, the targets,
    the action bounds and the value estimator from ``config``. ``observation_dim`` sizes default
    nets (read from the actor params when ``None``)."""
    from torchrl.objectives import TD3BCLoss

    from funcrl.objectives.actor_critic import td3_to_torchrl

    return td3_to_torchrl(
        TD3BCLoss, config, nets, params, observation_dim=observation_dim,
        owner="td3_bc.to_torchrl", alpha=config.alpha,
    )  # fmt: skip
