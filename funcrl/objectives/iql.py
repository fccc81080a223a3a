"""Implicit Q-Learning (Kostrikov et al. 2021, arXiv:2110.06169): TorchRL 0.14's ``IQLLoss``.

    params = iql.init(0, obs_spec, act_spec)     # {"actor", "qvalue", "target_qvalue", "value",
                                                 #  "action_bounds"}
    losses = iql.loss(params, batch)             # loss_actor, loss_qvalue, loss_value, entropy
    train = iql.trainer(optim.adam(3e-4))

The equations (``Q'`` the target critics, ``tau`` the expectile, ``beta`` the temperature)::

    L_V  = L_2^tau(min_i Q'_i(s, a) - V(s)),        L_2^tau(u) = |tau - 1(u < 0)| u^2
    y    = r + gamma (1 - terminated) V(s')          (V gradient-stopped)
    L_Q  = sum_i l(Q_i(s, a), y)
    L_pi = -min(exp(beta (min_i Q'_i(s, a) - V(s))), 100) log pi(a|s)    (weights gradient-stopped)

Every action is the dataset's: IQL never queries the critics at actions outside the data, so the
loss draws nothing (``key`` is accepted and unused). ``y`` is TD(0) by default;
``Config(value_estimator="td1" | "td_lambda")`` runs :mod:`funcrl.values`' recursion over a
batch of trajectories ``[*B, T]``.

Intentional differences from TorchRL:

* ``batch["priority_weight"]`` weights every reduction (``use_prioritized_weights``); TorchRL's
  ``IQLLoss`` ignores it.
* ``td_error`` (``[*B]``, the largest absolute TD error of the critics) is returned, not written
  into the batch; TorchRL writes the squared error.
* The ``TanhNormal``'s bounds live in ``params["action_bounds"]`` from the action spec.
"""

from __future__ import annotations

import dataclasses
from functools import partial
from typing import Any, ClassVar

import torch

from funcrl import tree
from funcrl.nn import make_generator
from funcrl.objectives.actor_critic import (
    act_stochastic,
    bounds,
    check_config,
    check_nets,
    ensemble_q,
    init_ensemble,
    param_dtype,
    read_transitions,
    resolve,
    tanh_normal,
    value_target,
)
from funcrl.objectives.actor_critic import action_bounds as spec_bounds
from funcrl.objectives.common import (
    check_batch,
    check_mode,
    check_observation,
    priority_weights,
    require,
    spec_size,
)
from funcrl.objectives.offline import check_expectile, expectile_loss, iql_losses
from funcrl.record import Record

__all__ = [
    "Config",
    "Nets",
    "init",
    "loss",
    "act",
    "trainer",
    "from_torchrl",
    "to_torchrl",
    "expectile_loss",
]

Params = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Config:
    """``IQLLoss``'s hyperparameters, TorchRL's names and defaults.

    Args:
        num_qvalue_nets: size of the critic ensemble.
        loss_function: ``"smooth_l1"`` (default), ``"l2"`` or ``"l1"`` for the critics.
        temperature: ``beta`` of the advantage weights ``exp(beta A)``.
        expectile: ``tau`` in ``(0, 1)`` of the value loss (TorchRL's default 0.5; the paper
            uses 0.7 on locomotion).
        gamma: discount of the value target.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        use_prioritized_weights: ``"auto"``/``True``: weight the reductions by
            ``batch["priority_weight"]`` when present; ``False``: ignore it.
        value_estimator: ``"td0"``, ``"td1"`` or ``"td_lambda"`` (with ``lmbda``).
    """

    num_qvalue_nets: int = 2
    loss_function: str = "smooth_l1"
    temperature: float = 1.0
    expectile: float = 0.5
    gamma: float = 0.99
    reduction: str = "mean"
    use_prioritized_weights: bool | str = "auto"
    value_estimator: str = "td0"
    lmbda: float = 0.95

    def __post_init__(self) -> None:
        check_config("iql.Config", self)
        check_expectile("iql.Config", self.expectile, self.temperature)
        if isinstance(self.num_qvalue_nets, bool) or int(self.num_qvalue_nets) < 1:
            raise ValueError(
                f"iql.Config: num_qvalue_nets must be >= 1, got {self.num_qvalue_nets!r}"
            )


@dataclasses.dataclass(frozen=True)
class Nets:
    """IQL's nets: funcrl nets, ``None`` for TorchRL's default ReLU MLP with ``num_cells``.

    Args:
        actor: ``(params, obs [*B, o]) -> [*B, 2 a]``, split by ``NormalParamExtractor`` into a
            ``TanhNormal`` on ``params["action_bounds"]``.
        qvalue: ``(params, obs, action) -> [*B, 1]`` for one critic (vmapped over the ensemble).
        value: ``(params, obs) -> [*B, 1]``.
        num_cells, scale_mapping, scale_lb, tanh_loc: as :class:`funcrl.sac.Nets`.
    """

    ROLES: ClassVar[dict[str, str]] = {
        "actor": "gaussian_actor",
        "qvalue": "qvalue",
        "value": "value",
    }

    actor: Any = None
    qvalue: Any = None
    value: Any = None
    num_cells: tuple[int, ...] = (256, 256)
    scale_mapping: str = "biased_softplus_1.0"
    scale_lb: float = 1e-4
    tanh_loc: bool = False


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
    """Fresh params: ``actor``, ``qvalue`` (``num_qvalue_nets`` stacked members),
    ``target_qvalue`` (a copy), ``value`` and ``action_bounds`` (from the bounded spec). The value
    net has no target (TorchRL bootstraps from the online ``V``, gradient-stopped)."""
    owner = "iql.init"
    check_nets(nets, owner)
    obs_dim = spec_size(observation_spec, owner, "observation_spec")
    act_dim = spec_size(action_spec, owner, "action_spec")
    box = spec_bounds(action_spec, act_dim, device=device, dtype=dtype, owner=owner)
    nets = resolve(nets, obs_dim, act_dim)
    gen = make_generator(seed)
    kw = {"device": device, "dtype": dtype}
    params: Params = {
        "actor": nets.actor.init(gen, **kw),
        "qvalue": init_ensemble(nets.qvalue, int(config.num_qvalue_nets), gen, **kw),
        "value": nets.value.init(gen, **kw),
        "action_bounds": box,
    }
    params["target_qvalue"] = tree.clone(params["qvalue"])
    return params


def loss(
    params: Params,
    batch: Record,
    *,
    config: Config = Config(),
    nets: Nets = Nets(),
    key: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """IQL's three losses on a batch of dataset transitions.

    Args:
        params: from :func:`init`.
        batch: ``observation [*B, o]``, ``action [*B, a]``, ``("next", "observation")``,
            ``("next", "reward") [*B, 1]``, ``("next", "terminated") [*B, 1]`` (and ``("next",
            "done")`` for TD(1)/TD(lambda)), float entries in the params' dtype; optional
            ``priority_weight [*B]``.
        key: unused (IQL draws nothing); accepted for the protocol.

    Returns:
        ``loss_actor``, ``loss_qvalue``, ``loss_value`` (reduced), ``entropy`` (``-mean log
        pi(a|s)`` of the data's actions, detached), ``td_error`` ``[*B]`` (detached).
    """
    del key  # every action is the dataset's: nothing to draw
    owner = "iql.loss"
    check_batch(batch, owner)
    require(params, ["actor", "qvalue", "target_qvalue", "value", "action_bounds"], owner)
    low, high = bounds(params, owner)
    t = read_transitions(
        batch, owner=owner, act_dim=low.shape[-1], dtype=param_dtype(params, "actor")
    )
    obs, action = t.observation, t.action
    nets = resolve(nets, obs.shape[-1], action.shape[-1])
    weights = priority_weights(batch, config, like=t.reward.squeeze(-1), owner=owner)

    # min_i Q'_i(s, a) at the data's action: the target of V and the actor's advantage.
    q_target = ensemble_q(nets.qvalue, tree.detach(params["target_qvalue"]), obs, action)
    min_q = q_target.min(0).values
    v = nets.value(params["value"], obs).squeeze(-1)
    # Critics: TD towards r + gamma V(s'), V gradient-stopped.
    next_v = nets.value(tree.detach(params["value"]), t.next_observation).squeeze(-1)
    y = value_target(config, batch, t, next_v, owner=owner)
    qs = ensemble_q(nets.qvalue, params["qvalue"], obs, action)
    # Actor: advantage-weighted log-likelihood of the data's action.
    log_prob = tanh_normal(nets.actor(params["actor"], obs), low, high, nets).log_prob(action)
    return iql_losses(min_q, v, qs, y, log_prob, config, weights)


def act(
    params: Params,
    observation: torch.Tensor,
    *,
    config: Config = Config(),
    nets: Nets = Nets(),
    mode: str = "random",
    key: torch.Tensor | None = None,
) -> torch.Tensor:
    """The action ``[*B, a]``: a ``TanhNormal`` draw (``"random"``; ``key`` or the global RNG) or
    its deterministic action (``"deterministic"``, the one to evaluate with). Detached."""
    owner = "iql.act"
    check_mode(owner, mode)
    require(params, ["actor", "action_bounds"], owner)
    low, high = bounds(params, owner)
    obs = check_observation(owner, observation, param_dtype(params, "actor"))
    nets = resolve(nets, obs.shape[-1], low.shape[-1])
    dist = tanh_normal(nets.actor(tree.detach(params["actor"]), obs), low, high, nets)
    return act_stochastic(dist, mode, key)


def trainer(
    optimizer: Any,
    *,
    config: Config = Config(),
    nets: Nets = Nets(),
    tau: float = 0.005,
):
    """:func:`funcrl.training.update` for IQL: ``actor``, ``qvalue`` and ``value`` every step,
    ``target_qvalue`` by Polyak averaging with ``tau``. ``optimizer`` is one transform or a dict
    per key; the step is ``step(params, state, batch, key=None)``."""
    from funcrl.training import update

    return update(
        partial(loss, config=config, nets=nets),
        optimizer,
        trainable=("actor", "qvalue", "value"),
        targets={"target_qvalue": "qvalue"},
        tau=tau,
    )


# -- TorchRL interop -------------------------------------------------------------------------------


def from_torchrl(loss_module: Any) -> tuple[Config, Nets, Params]:
    """``(config, nets, params)`` equal to a TorchRL ``IQLLoss``: hyperparameters and value
    estimator, the nets as funcrl nets, the online and target weights and the ``TanhNormal``'s
    bounds. The actor must be TorchRL's SAC layout (``Sequential(net, NormalParamExtractor())``
    under a ``TanhNormal``), the critics ``ValueOperator`` s over ``observation, action`` and the
    value net one over ``observation``."""
    from funcrl.objectives.actor_critic import (
        critic_from_torchrl,
        expand_bound,
        from_torchrl_tanh_normal_actor,
        read_torchrl,
        torchrl_action_dim,
        torchrl_estimator,
    )

    m = loss_module
    actor_net, actor_params, info = from_torchrl_tanh_normal_actor(m)
    qnet, qparams = critic_from_torchrl(m.qvalue_network, m.qvalue_network_params)
    _, target_q = critic_from_torchrl(m.qvalue_network, m.target_qvalue_network_params)
    if m.num_qvalue_nets == 1 and not m.qvalue_network_params.batch_size:
        qparams, target_q = tree.stack([qparams]), tree.stack([target_q])
    if list(m.value_network.in_keys) != ["observation"]:
        raise TypeError(
            f"iql.from_torchrl: the value net's in_keys are {m.value_network.in_keys}, "
            "expected ['observation']"
        )
    vnet, vparams = read_torchrl(m.value_network, m.value_network_params, m.value_network.module)
    act_dim = torchrl_action_dim(info["low"], actor_net, "iql.from_torchrl")
    dtype = tree.leaves(actor_params)[0].dtype
    config = Config(
        num_qvalue_nets=int(m.num_qvalue_nets),
        loss_function=m.loss_function,
        temperature=float(m.temperature),
        expectile=float(m.expectile),
        reduction=m.reduction,
        **torchrl_estimator(m),
    )
    nets = Nets(
        actor=actor_net,
        qvalue=qnet,
        value=vnet,
        scale_mapping=info["scale_mapping"],
        scale_lb=info["scale_lb"],
        tanh_loc=info["tanh_loc"],
    )
    params = {
        "actor": actor_params,
        "qvalue": qparams,
        "target_qvalue": target_q,
        "value": vparams,
        "action_bounds": {
            "low": expand_bound(info["low"], act_dim, dtype=dtype),
            "high": expand_bound(info["high"], act_dim, dtype=dtype),
        },
    }
    return config, nets, params


def to_torchrl(config: Config, nets: Nets, params: Params, observation_dim: int | None = None):
    """A TorchRL ``IQLLoss`` equal to ``loss(params, ., config=config, nets=nets)``: TorchRL
    modules built from the (resolved) nets with ``params`` copied in (the SAC actor layout on the
    ``TanhNormal``'s bounds, ``ValueOperator`` critics and value net), the target critics and the
    value estimator from ``config``. ``observation_dim`` sizes default nets (read from the value
    params when ``None``)."""
    from torchrl.modules import ValueOperator
    from torchrl.objectives import IQLLoss

    from funcrl.objectives.actor_critic import (
        make_torchrl_estimator,
        torch_module,
        torchrl_qvalue,
        torchrl_tanh_normal_actor,
        write_torchrl,
    )
    from funcrl.objectives.common import in_features

    owner = "iql.to_torchrl"
    require(params, ["actor", "qvalue", "target_qvalue", "value", "action_bounds"], owner)
    low, high = bounds(params, owner)
    if observation_dim is None:
        observation_dim = in_features(params["value"], owner, "value")
    nets = resolve(nets, observation_dim, low.shape[-1])
    m = IQLLoss(
        torchrl_tanh_normal_actor(nets.actor, params["actor"], low, high, nets),
        torchrl_qvalue(nets.qvalue, tree.map(lambda x: x[0], params["qvalue"])),
        ValueOperator(torch_module(nets.value, params["value"], owner)[0], ["observation"]),
        num_qvalue_nets=config.num_qvalue_nets,
        loss_function=config.loss_function,
        temperature=config.temperature,
        expectile=config.expectile,
        reduction=config.reduction,
        scalar_output_mode="non_tensor" if config.reduction == "none" else None,
    )
    make_torchrl_estimator(m, config)
    qmod = m.qvalue_network
    for name, td in (
        ("qvalue", m.qvalue_network_params),
        ("target_qvalue", m.target_qvalue_network_params),
    ):
        # One critic: TorchRL keeps it without the ensemble dim.
        p = params[name] if td.batch_size else tree.map(lambda x: x[0], params[name])
        write_torchrl(td, qmod, qmod.module, p)
    return m
