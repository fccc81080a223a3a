"""Deep Q-Networks (Mnih et al. 2015) and Double DQN (van Hasselt et al. 2015), TorchRL's ``DQNLoss``.

    params = dqn.init(0, obs_spec, act_spec)            # {"value", "target_value"}
    losses = dqn.loss(params, batch)                     # {"loss", "td_error"}

The Bellman residual of the taken action against the TD(0) target

    y = r + gamma * (1 - terminated) * max_a' Q_target(s', a')                  (DQN)
    y = r + gamma * (1 - terminated) * Q_target(s', argmax_a' Q(s', a'))        (Double DQN)

with the discrete action in one of TorchRL's layouts: ``"one_hot"`` ``[*batch, n]``,
``"categorical"`` ``[*batch]`` or ``[*batch, 1]`` (integers), ``"mult_one_hot"`` (concatenated
one-hots, ``Q(s, a) = sum_k Q_k(s, a_k)``) and ``"binary"`` (``n`` independent bits,
``Q(s, a) = sum_i a_i q_i``). Invalid actions can be masked out with a boolean action mask.
``config.value_estimator`` replaces the TD(0) target by TD(1) or TD(lambda) returns over a batch
with a trailing time dim (TorchRL's ``make_value_estimator``); the bootstrap value is the same
(double) max above. The discrete-action pieces live in :mod:`funcrl.objectives.discrete`.

Intentional differences from TorchRL 0.14: ``td_error`` is ``|Q(s, a) - y|`` ``[*B]`` (TorchRL
writes the squared error ``[*B, 1]`` as the priority); with one-hot actions the greedy next value
is the max even on exact ties (TorchRL's one-hot greedy action sets every tied entry, summing
them); out-of-range or malformed actions raise (eagerly) instead of indexing garbage.
"""

from __future__ import annotations

import dataclasses
from functools import partial
from typing import Any

import torch

from funcrl import tree
from funcrl.objectives import discrete
from funcrl.objectives.common import (
    check_batch,
    check_loss_function,
    check_mode,
    check_observation,
    check_reduction,
    distance_loss,
    priority_weights,
    reduce_loss,
    require,
    spec_size,
)
from funcrl.objectives.discrete import (
    chosen_action_value,
    double_q_value,
    greedy_action,
    mask_action_values,
    max_action_value,
)
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
    "make_train",
    "chosen_action_value",
    "greedy_action",
    "mask_action_values",
    "max_action_value",
    "double_q_value",
]


@dataclasses.dataclass(frozen=True)
class Config:
    """DQN hyperparameters (TorchRL's ``DQNLoss`` arguments and defaults).

    Attributes:
        loss_function: ``"l2"`` (default), ``"l1"`` or ``"smooth_l1"`` on the Bellman residual.
        delay_value: use a target network ``params["target_value"]``; if ``False`` the
            bootstrap uses the (gradient-stopped) online network.
        double_dqn: select the next action with the online net, evaluate it with the target.
        action_space: ``"one_hot"``, ``"categorical"``, ``"mult_one_hot"``, ``"binary"`` (TorchRL's
            aliases such as ``"one-hot"`` too) or a discrete spec; stored as its name.
        gamma: discount (TorchRL's default TD(0) estimator uses 0.99).
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        var_nums: group sizes of a ``"mult_one_hot"`` space (taken from a ``MultiOneHot`` spec).
        action_mask_key: batch key of a boolean ``[*batch, n]`` mask of valid actions (read at
            ``key`` and ``("next", key)``), as TorchRL's ``QValueActor(action_mask_key=...)``.
        use_prioritized_weights: ``"auto"``/``True`` weight the loss by
            ``batch["priority_weight"]`` when present; ``False`` ignores it (TorchRL 0.14).
        value_estimator: ``"td0"`` (default), ``"td1"`` or ``"td_lambda"`` (TorchRL's
            ``make_value_estimator``); the last two read the batch's last batch dim as time.
        lmbda: TD(lambda)'s lambda (TorchRL's default 0.95).
    """

    loss_function: str = "l2"
    delay_value: bool = True
    double_dqn: bool = False
    action_space: Any = "one_hot"
    gamma: float = 0.99
    reduction: str = "mean"
    var_nums: tuple[int, ...] | None = None
    action_mask_key: str | None = None
    use_prioritized_weights: bool | str = "auto"
    value_estimator: str = "td0"
    lmbda: float = 0.95

    def __post_init__(self) -> None:
        owner = "dqn.Config"
        check_loss_function(self.loss_function, owner)
        check_reduction(self.reduction, owner)
        if self.double_dqn and not self.delay_value:
            raise ValueError(f"{owner}: double_dqn=True requires delay_value=True")
        if not 0.0 <= float(self.gamma) <= 1.0:
            raise ValueError(f"{owner}: gamma must be in [0, 1], got {self.gamma}")
        name, var_nums = discrete.check_action_space(owner, self.action_space, self.var_nums)
        object.__setattr__(self, "action_space", name)
        object.__setattr__(self, "var_nums", var_nums)
        if name == "binary" and self.action_mask_key is not None:
            raise ValueError(f"{owner}: action masks are not defined for a 'binary' space")
        discrete.check_prioritized(owner, self.use_prioritized_weights)
        discrete.check_value_estimator(owner, self.value_estimator, self.lmbda)


@dataclasses.dataclass(frozen=True)
class Nets:
    """The Q-network: ``value(params, observation [*B, ...]) -> action values [*B, n]``.

    ``None`` (the default) is a ReLU :class:`funcrl.nn.MLP` with ``num_cells`` hidden units,
    built by :func:`init` from the specs and by ``loss``/``act`` from the observation's feature
    size and the params' output width. Any funcrl net (an MLP with LayerNorm, a
    :class:`funcrl.nn.DuelingMlpDQNet`, a :class:`funcrl.nn.TorchModule`, ...) can replace it.
    """

    value: Any = None
    num_cells: tuple[int, ...] = (256, 256)

    def resolve(self, obs_dim: int, n: int) -> Nets:
        """These nets with the default filled in for ``obs_dim`` features and ``n`` values."""
        return dataclasses.replace(
            self, value=discrete.default_net(self.value, obs_dim, n, self.num_cells)
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
) -> dict[str, Any]:
    """``{"value", "target_value"}`` (no target without ``delay_value``); the target is a copy.

    The number of action values is ``spec.n`` (one-hot, categorical), ``sum(nvec)``
    (multi-one-hot) or the number of bits (binary). ``seed`` is an int, a
    :mod:`funcrl.random` key or a ``torch.Generator``; never touches the global RNG.
    """
    owner = "dqn.init"
    n = discrete.num_action_values(action_spec, config.action_space, config.var_nums, owner)
    obs_dim = spec_size(observation_spec, owner, "observation_spec")
    gen = discrete.generator(seed, owner)
    value = discrete.init_net(nets.resolve(obs_dim, n).value, gen, device, dtype, owner, "value")
    params = {"value": value}
    if config.delay_value:
        params["target_value"] = tree.clone(value)
    return params


# --- the loss ------------------------------------------------------------------------------------


def loss(
    params: dict[str, Any],
    batch: Record,
    *,
    config: Config = Config(),
    nets: Nets = Nets(),
    key: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """The DQN loss: ``{"loss": L, "td_error": |Q(s, a) - y|}``.

    Gradients flow only into ``params["value"]`` through ``Q(s, a)``; the target ``y`` is
    computed from gradient-stopped params. Nothing is sampled: ``key`` is accepted for the
    protocol and unused.

    Args:
        params: ``{"value", "target_value"}`` (``"target_value"`` only with ``delay_value``).
        batch: ``observation [*B, d]``, ``action`` (see :mod:`funcrl.objectives.discrete`),
            ``("next", "observation")``, ``("next", "reward")`` and ``("next", "terminated")``
            ``[*B, 1]`` (and ``("next", "done")`` for TD(1)/TD(lambda)), the action masks when
            ``config.action_mask_key`` is set, and optionally ``priority_weight [*B]``.

    Returns:
        ``loss`` (reduced) and ``td_error [*B]`` (detached, the priority).
    """
    owner = "dqn.loss"
    batch = check_batch(batch, owner)
    require(params, ["value", "target_value"] if config.delay_value else ["value"], owner)
    _, _, q_taken, y = discrete.q_learning(
        params, batch, config, nets, owner=owner, var_nums=config.var_nums,
        double_dqn=config.double_dqn,
    )  # fmt: skip

    weights = priority_weights(batch, config, like=q_taken, owner=owner)
    value_loss = reduce_loss(
        distance_loss(q_taken, y, config.loss_function), config.reduction, weights
    )
    return {"loss": value_loss, "td_error": (q_taken - y).abs().detach()}


# --- acting --------------------------------------------------------------------------------------


def act(
    params: dict[str, Any],
    observation: torch.Tensor,
    *,
    config: Config = Config(),
    nets: Nets = Nets(),
    mode: str = "random",
    key: torch.Tensor | None = None,
    epsilon: float | torch.Tensor = 0.1,
    action_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """The greedy (``mode="deterministic"``) or epsilon-greedy (``"random"``) action.

    Args:
        observation: ``[*B, d]``.
        epsilon: exploration probability in random mode (default 0.1, TorchRL's
            ``EGreedyModule`` ``eps_end``; anneal it yourself, e.g. a tensor in a compiled step).
        action_mask: bool ``[*B, n]`` of allowed actions (required when
            ``config.action_mask_key`` is set): the greedy action and the random draws only
            pick allowed actions.
        key: a :mod:`funcrl.random` key (``None``: the global RNG).

    Returns:
        the action in ``config.action_space``'s layout, int64 (``[*B]`` for categorical).
    """
    owner = "dqn.act"
    check_mode(owner, mode)
    require(params, ["value"], owner)
    dtype = discrete.float_dtype(params["value"], owner, "value")
    obs = check_observation(owner, observation, dtype)
    net = discrete.value_net(params, obs, nets, owner)
    discrete.check_net_params(net, params, ("value",), owner)
    q = net(params["value"], obs)
    return discrete.act_on_values(
        q, config, action_mask, mode=mode, epsilon=epsilon, key=key, owner=owner
    )


# --- training ------------------------------------------------------------------------------------


def trainer(
    optimizer: Any,
    *,
    config: Config = Config(),
    nets: Nets = Nets(),
    hard_target_period: int | None = None,
    tau: float = 0.005,
):
    """``funcrl.training.update`` for DQN: Polyak targets (``tau``), or TorchRL's ``HardUpdate``
    (a copy every ``hard_target_period`` steps) when that is given."""
    from funcrl.training import update

    return update(
        partial(loss, config=config, nets=nets),
        optimizer,
        trainable=("value",),
        targets={"target_value": "value"} if config.delay_value else None,
        tau=tau,
        hard_target_period=hard_target_period,
    )


# --- TorchRL interop -----------------------------------------------------------------------------


def from_torchrl(loss_module: Any) -> tuple[Config, Nets, dict[str, Any]]:
    """``(config, nets, params)`` equivalent to a TorchRL ``DQNLoss`` (its value estimator, action
    space, mask key, and online and target params), via :func:`funcrl.nn.from_torchrl`."""
    from funcrl.nn import from_torchrl as net_from_torchrl

    owner = "dqn.from_torchrl"
    actor = loss_module.value_network
    inner = discrete.inner_module(actor, owner)
    net, _ = net_from_torchrl(inner)
    head = next(m for m in actor.modules() if type(m).__name__ == "QValueModule")
    estimator, gamma, lmbda = discrete.estimator_of(loss_module, owner)
    config = Config(
        loss_function=loss_module.loss_function,
        delay_value=loss_module.delay_value,
        double_dqn=loss_module.double_dqn,
        action_space=loss_module.action_space,
        gamma=gamma,
        reduction=loss_module.reduction,
        var_nums=getattr(head, "var_nums", None),
        action_mask_key=head.action_mask_key,
        use_prioritized_weights=loss_module.use_prioritized_weights,
        value_estimator=estimator,
        lmbda=lmbda,
    )
    params = {"value": discrete.read_params(loss_module.value_network_params, actor, inner, net)}
    if config.delay_value:
        params["target_value"] = discrete.read_params(
            loss_module.target_value_network_params, actor, inner, net
        )
    return config, Nets(value=net), params


def to_torchrl(
    config: Config, nets: Nets, params: dict[str, Any], *, num_actions: int | None = None
) -> Any:
    """A TorchRL ``DQNLoss`` (``QValueActor`` on ``observation``, the config's value estimator)
    holding ``params``; the nets must be convertible by
    :func:`funcrl.objectives.discrete.torch_module`. ``num_actions`` (the action values' width)
    is needed only for a net without an integer ``out_features``."""
    from torchrl.modules import QValueActor
    from torchrl.objectives import DQNLoss

    owner = "dqn.to_torchrl"
    require(params, ["value", "target_value"] if config.delay_value else ["value"], owner)
    value = params["value"]
    if nets.value is None:
        n = discrete.out_features(value, owner, "value")
        nets = nets.resolve(value["layers"][0]["weight"].shape[-1], n)
    net = nets.value
    n = discrete.num_outputs(net, num_actions, owner)
    spec = discrete.torchrl_spec(config.action_space, n, config.var_nums)
    actor = QValueActor(
        discrete.torch_module(net, value, owner),
        in_keys=["observation"],
        spec=spec,
        action_space=config.action_space,
        action_mask_key=config.action_mask_key,
    )
    loss_module = DQNLoss(
        actor,
        loss_function=config.loss_function,
        delay_value=config.delay_value,
        double_dqn=config.double_dqn,
        action_space=spec,
        reduction=config.reduction,
        use_prioritized_weights=config.use_prioritized_weights,
    )
    discrete.make_estimator(loss_module, config)
    if config.delay_value:
        inner = discrete.inner_module(actor, owner)
        td = loss_module.target_value_network_params
        discrete.write_params(params["target_value"], td, actor, inner, net)
    return loss_module


def make_train(config: Any, env: Any) -> Any:
    """A whole DQN run on a pure environment as one compiled, vmappable function of a key
    (PureJaxRL's design): :func:`funcrl.pure_dqn.make_train`, re-exported here."""
    from funcrl.pure_dqn import make_train as _make_train

    return _make_train(config, env)
