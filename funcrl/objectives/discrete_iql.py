"""Implicit Q-Learning for discrete actions (Kostrikov et al. 2021): TorchRL 0.14's
``DiscreteIQLLoss``.

    params = discrete_iql.init(0, obs_spec, specs.OneHot(n))   # {"actor", "qvalue",
                                                               #  "target_qvalue", "value"}
    losses = discrete_iql.loss(params, batch)                  # loss_actor, loss_qvalue,
                                                               # loss_value, entropy, td_error
    train = discrete_iql.trainer(optim.adam(3e-4))

With ``Q_i(s, .)`` an ``[*B, n]`` head per critic, ``Q'`` the target critics, ``tau`` the expectile
and ``beta`` the temperature, on the dataset's action ``a``::

    L_V  = L_2^tau(min_i Q'_i(s, a) - V(s)),        L_2^tau(u) = |tau - 1(u < 0)| u^2
    y    = r + gamma (1 - terminated) V(s')          (V gradient-stopped)
    L_Q  = sum_i l(Q_i(s, a), y)
    L_pi = -min(exp(beta (min_i Q'_i(s, a) - V(s))), 100) log pi(a|s)    (weights gradient-stopped)

``pi(.|s) = softmax(actor(s))``. Every action is the dataset's, so the loss draws nothing. ``y`` is
TD(0) by default; ``Config(value_estimator="td1" | "td_lambda")`` reads the batch's last batch dim
as time. The action is one-hot ``[*B, n]`` or an index ``[*B]``/``[*B, 1]`` (TorchRL's
``action_space``). The pieces shared with the continuous IQL live in
:mod:`funcrl.objectives.offline`, the discrete-action ones in :mod:`funcrl.objectives.discrete`.

Intentional differences from TorchRL:

* ``batch["priority_weight"]`` weights every reduction (``use_prioritized_weights``).
* ``td_error`` (``[*B]``, ``max_i |Q_i(s, a) - y|``) is returned, not written into the batch;
  TorchRL writes the squared error.
* Malformed or out-of-range actions raise (eagerly) instead of indexing garbage; ``act`` honours
  an ``action_mask``.
"""

from __future__ import annotations

import dataclasses
from functools import partial
from typing import Any

import torch

from funcrl import tree
from funcrl.objectives import discrete
from funcrl.objectives.actor_critic import check_config, ensemble, init_ensemble
from funcrl.objectives.common import (
    check_batch,
    check_observation,
    get,
    priority_weights,
    require,
    spec_size,
)
from funcrl.objectives.offline import check_expectile, iql_losses
from funcrl.record import Record

__all__ = ["Config", "Nets", "init", "loss", "act", "trainer", "from_torchrl", "to_torchrl"]

Params = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Config:
    """``DiscreteIQLLoss``'s hyperparameters, TorchRL's names and defaults.

    Args:
        action_space: ``"one-hot"`` (TorchRL's fallback; stored as ``"one_hot"``), ``"categorical"``
            or a ``OneHot``/``Categorical`` spec: how ``batch["action"]`` is encoded.
        num_qvalue_nets: size of the critic ensemble.
        loss_function: ``"smooth_l1"`` (default), ``"l2"`` or ``"l1"`` for the critics.
        temperature: ``beta`` of the advantage weights ``exp(beta A)``.
        expectile: ``tau`` in ``(0, 1)`` of the value loss.
        gamma: discount of the value target.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        use_prioritized_weights: ``"auto"``/``True``: weight the reductions by
            ``batch["priority_weight"]`` when present; ``False``: ignore it.
        value_estimator: ``"td0"``, ``"td1"`` or ``"td_lambda"`` (with ``lmbda``).
    """

    action_space: Any = "one-hot"
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
        owner = "discrete_iql.Config"
        object.__setattr__(
            self, "action_space", discrete.check_policy_space(owner, self.action_space)
        )
        check_config(owner, self)
        check_expectile(owner, self.expectile, self.temperature)
        if isinstance(self.num_qvalue_nets, bool) or int(self.num_qvalue_nets) < 1:
            raise ValueError(f"{owner}: num_qvalue_nets must be >= 1, got {self.num_qvalue_nets!r}")


@dataclasses.dataclass(frozen=True)
class Nets:
    """Discrete IQL's nets; ``None`` fields are ReLU :class:`funcrl.nn.MLP` s with ``num_cells``.

    Args:
        actor: ``(params, obs [*B, o]) -> logits [*B, n]`` of the categorical policy.
        qvalue: ``(params, obs) -> Q(s, .) [*B, n]`` for one critic (vmapped over the ensemble).
        value: ``(params, obs) -> V(s) [*B, 1]``.
    """

    actor: Any = None
    qvalue: Any = None
    value: Any = None
    num_cells: tuple[int, ...] = (256, 256)

    def resolve(self, obs_dim: int, n: int) -> Nets:
        """These nets with the defaults filled in for ``obs_dim`` features and ``n`` actions."""
        return dataclasses.replace(
            self,
            actor=discrete.default_net(self.actor, obs_dim, n, self.num_cells),
            qvalue=discrete.default_net(self.qvalue, obs_dim, n, self.num_cells),
            value=discrete.default_net(self.value, obs_dim, 1, self.num_cells),
        )


def init(
    seed: Any,
    observation_spec: Any,
    action_spec: Any,
    config: Config = Config(),
    nets: Nets = Nets(),
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Params:
    """Fresh params: ``actor``, ``qvalue`` (``num_qvalue_nets`` stacked members), ``target_qvalue``
    (a copy) and ``value`` (no target: TorchRL bootstraps from the online ``V``, gradient-stopped).

    ``action_spec`` is a ``OneHot``/``Categorical`` spec (with ``.n``) or the number of actions.
    """
    owner = "discrete_iql.init"
    n = discrete.num_action_values(action_spec, config.action_space, None, owner)
    obs_dim = spec_size(observation_spec, owner, "observation_spec")
    resolved = nets.resolve(obs_dim, n)
    gen = discrete.generator(seed, owner)
    params: Params = {
        "actor": discrete.init_net(resolved.actor, gen, device, dtype, owner, "actor"),
        "qvalue": init_ensemble(
            discrete.checked_net(resolved.qvalue, owner, "qvalue"),
            int(config.num_qvalue_nets),
            gen,
            device=device,
            dtype=dtype,
        ),
        "value": discrete.init_net(resolved.value, gen, device, dtype, owner, "value"),
    }
    params["target_qvalue"] = tree.clone(params["qvalue"])
    return params


def _resolve(params: Params, obs: torch.Tensor, nets: Nets, owner: str) -> Nets:
    # The default nets' width n comes from the params (static shapes).
    if nets.actor is None:
        return nets.resolve(obs.shape[-1], discrete.out_features(params["actor"], owner, "actor"))
    if nets.qvalue is None:
        n = discrete.out_features(params["qvalue"], owner, "qvalue")
        return nets.resolve(obs.shape[-1], n)
    return nets.resolve(obs.shape[-1], 0)  # only the value net can still be a default


def loss(
    params: Params,
    batch: Record,
    *,
    config: Config = Config(),
    nets: Nets = Nets(),
    key: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Discrete IQL's three losses on a batch of dataset transitions.

    Args:
        params: from :func:`init`.
        batch: ``observation [*B, o]``, ``action`` (one-hot ``[*B, n]`` or indices ``[*B]``/
            ``[*B, 1]``), ``("next", "observation")``, ``("next", "reward") [*B, 1]``, ``("next",
            "terminated") [*B, 1]`` (and ``("next", "done")`` for TD(1)/TD(lambda)); optional
            ``priority_weight [*B]``.
        key: unused (every action is the dataset's); accepted for the protocol.

    Returns:
        ``loss_actor``, ``loss_qvalue``, ``loss_value`` (reduced), ``entropy`` (``-mean log
        pi(a|s)`` of the data's actions, detached) and ``td_error [*B]`` (detached).
    """
    del key  # nothing to draw
    owner = "discrete_iql.loss"
    batch = check_batch(batch, owner)
    require(params, ["actor", "qvalue", "target_qvalue", "value"], owner)
    dtype = discrete.float_dtype(params["actor"], owner, "actor")
    lead = tuple(batch.batch_size)
    obs = get(batch, "observation", owner=owner, dtype=dtype)
    next_obs = get(batch, ("next", "observation"), owner=owner, dtype=dtype)
    discrete.check_same_shape(owner, obs, next_obs, "observation", ("next", "observation"))
    net = _resolve(params, obs, nets, owner)
    discrete.check_net_params(net.actor, params, ("actor",), owner)
    discrete.check_net_params(net.value, params, ("value",), owner)
    logits = discrete.action_values(net.actor, params["actor"], obs, lead, owner, "actor")
    action = get(batch, "action", owner=owner)
    space = config.action_space
    discrete.check_action(
        action, logits.shape[-1], space, None, batch_shape=lead, owner=owner, key="action"
    )
    weights = priority_weights(batch, config, like=logits[..., 0], owner=owner)

    # min_i Q'_i(s, a) at the data's action: the value's target and the actor's advantage.
    q_target = ensemble(net.qvalue, tree.detach(params["target_qvalue"]), obs)
    min_q = discrete.ensemble_chosen_value(q_target, action, space).min(0).values
    v = net.value(params["value"], obs).squeeze(-1)
    # Critics: TD towards r + gamma V(s'), V gradient-stopped.
    next_v = net.value(tree.detach(params["value"]), next_obs).squeeze(-1)
    y = discrete.bootstrap_target(config, batch, next_v, owner=owner)
    qs = discrete.ensemble_chosen_value(ensemble(net.qvalue, params["qvalue"], obs), action, space)
    # Actor: advantage-weighted log-likelihood of the data's action.
    log_prob = discrete.action_log_prob(logits, action, space)
    return iql_losses(min_q, v, qs, y, log_prob, config, weights)


def act(
    params: Params,
    observation: torch.Tensor,
    *,
    config: Config = Config(),
    nets: Nets = Nets(),
    mode: str = "random",
    key: torch.Tensor | None = None,
    action_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """A draw from ``pi(.|s)`` (``mode="random"``; ``key`` or the global RNG) or its mode
    (``"deterministic"``, the action to evaluate with).

    Args:
        observation: ``[*B, o]``.
        action_mask: optional bool ``[*B, n]``: masked actions are never chosen.

    Returns:
        one-hot ``[*B, n]`` or index ``[*B]`` int64 actions (``config.action_space``).
    """
    owner = "discrete_iql.act"
    require(params, ["actor"], owner)
    dtype = discrete.float_dtype(params["actor"], owner, "actor")
    obs = check_observation(owner, observation, dtype)
    actor = _resolve(params, obs, nets, owner).actor
    discrete.check_net_params(actor, params, ("actor",), owner)
    logits = discrete.action_values(
        actor, tree.detach(params["actor"]), obs, tuple(obs.shape[:-1]), owner, "actor"
    )
    return discrete.act_categorical(
        logits, config.action_space, mode=mode, key=key, action_mask=action_mask, owner=owner
    )


def trainer(
    optimizer: Any,
    *,
    config: Config = Config(),
    nets: Nets = Nets(),
    tau: float = 0.005,
):
    """:func:`funcrl.training.update` for discrete IQL: ``actor``, ``qvalue`` and ``value`` every
    step, ``target_qvalue`` by Polyak averaging with ``tau`` (TorchRL's ``SoftUpdate(eps=1 -
    tau)``). ``optimizer`` is one transform or a dict per key."""
    from funcrl.training import update

    return update(
        partial(loss, config=config, nets=nets),
        optimizer,
        trainable=("actor", "qvalue", "value"),
        targets={"target_qvalue": "qvalue"},
        tau=tau,
    )


# --- TorchRL interop -----------------------------------------------------------------------------


def from_torchrl(loss_module: Any) -> tuple[Config, Nets, Params]:
    """``(config, nets, params)`` equal to a TorchRL ``DiscreteIQLLoss``: its hyperparameters and
    value estimator, the actor's logits net, the critic ensemble (online and target) and the value
    net as funcrl nets (:func:`funcrl.nn.from_torchrl`) with their weights."""
    from funcrl.nn import from_torchrl as net_from_torchrl

    owner = "discrete_iql.from_torchrl"
    m = loss_module
    modules = {}
    for name in ("actor", "qvalue", "value"):
        wrapper = getattr(m, f"{name}_network")
        if list(wrapper.in_keys) != ["observation"]:
            raise TypeError(
                f"{owner}: the {name} network's in_keys are {wrapper.in_keys}, expected "
                "['observation']"
            )
        inner = discrete.inner_module(wrapper, owner)
        modules[name] = (wrapper, inner, net_from_torchrl(inner)[0])
    estimator, gamma, lmbda = discrete.estimator_of(m, owner)
    config = Config(
        action_space=m.action_space,
        num_qvalue_nets=int(m.num_qvalue_nets),
        loss_function=m.loss_function,
        temperature=float(m.temperature),
        expectile=float(m.expectile),
        gamma=gamma,
        reduction=m.reduction,
        value_estimator=estimator,
        lmbda=lmbda,
    )

    def read(name: str, td: Any) -> Any:
        return discrete.read_params(td, *modules[name])

    params: Params = {
        "actor": read("actor", m.actor_network_params),
        "qvalue": read("qvalue", m.qvalue_network_params),
        "target_qvalue": read("qvalue", m.target_qvalue_network_params),
        "value": read("value", m.value_network_params),
    }
    if not m.qvalue_network_params.batch_dims:  # one critic: TorchRL drops the ensemble dim
        params["qvalue"], params["target_qvalue"] = (
            tree.stack([params["qvalue"]]),
            tree.stack([params["target_qvalue"]]),
        )
    nets = Nets(actor=modules["actor"][2], qvalue=modules["qvalue"][2], value=modules["value"][2])
    return config, nets, params


def to_torchrl(config: Config, nets: Nets, params: Params) -> Any:
    """A TorchRL ``DiscreteIQLLoss`` equal to ``loss(params, ., config=config, nets=nets)``: a
    ``ProbabilisticActor`` over the logits (``OneHotCategorical`` or ``Categorical``), one critic
    module for the ensemble, a ``ValueOperator``, ``params`` copied in and the config's value
    estimator. The nets must be convertible by :func:`funcrl.objectives.discrete.torch_module`."""
    from tensordict.nn import TensorDictModule
    from torch.distributions import Categorical
    from torchrl.modules import OneHotCategorical, ProbabilisticActor, ValueOperator
    from torchrl.objectives import DiscreteIQLLoss

    owner = "discrete_iql.to_torchrl"
    require(params, ["actor", "qvalue", "target_qvalue", "value"], owner)
    defaults = [k for k in ("actor", "qvalue", "value") if getattr(nets, k) is None]
    n = None
    if defaults:
        # The default MLPs' sizes: the first layer's columns and the logits' rows.
        discrete.out_features(params[defaults[0]], owner, defaults[0])  # default-MLP params?
        obs_dim = int(params[defaults[0]]["layers"][0]["weight"].shape[-1])
        head = next((k for k in ("actor", "qvalue") if k in defaults), None)
        if head is not None:
            n = discrete.out_features(params[head], owner, head)
        nets = nets.resolve(obs_dim, n or 0)
    n = discrete.num_outputs(nets.actor, n, owner)
    spec = discrete.torchrl_spec(config.action_space, n)
    actor = ProbabilisticActor(
        TensorDictModule(
            discrete.torch_module(nets.actor, params["actor"], owner),
            in_keys=["observation"],
            out_keys=["logits"],
        ),
        in_keys=["logits"],
        spec=spec,
        distribution_class=OneHotCategorical if config.action_space == "one_hot" else Categorical,
    )
    member = tree.map(lambda x: x[0], params["qvalue"])
    critic = TensorDictModule(
        discrete.torch_module(nets.qvalue, member, owner),
        in_keys=["observation"],
        out_keys=["state_action_value"],
    )
    value = ValueOperator(
        discrete.torch_module(nets.value, params["value"], owner), in_keys=["observation"]
    )
    m = DiscreteIQLLoss(
        actor,
        critic,
        value,
        action_space=spec,
        num_qvalue_nets=config.num_qvalue_nets,
        loss_function=config.loss_function,
        temperature=config.temperature,
        expectile=config.expectile,
        reduction=config.reduction,
        scalar_output_mode="non_tensor" if config.reduction == "none" else None,
    )
    discrete.make_estimator(m, config)
    inner = discrete.inner_module(critic, owner)
    for name, td in (
        ("qvalue", m.qvalue_network_params),
        ("target_qvalue", m.target_qvalue_network_params),
    ):
        p = params[name] if td.batch_dims else tree.map(lambda x: x[0], params[name])
        discrete.write_params(p, td, critic, inner, nets.qvalue)
    return m
