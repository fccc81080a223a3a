"""Conservative Q-Learning for discrete actions (Kumar et al. 2020, arXiv:2006.04779): TorchRL
0.14's ``DiscreteCQLLoss`` (CQL(H) on a DQN).

    params = discrete_cql.init(0, obs_spec, specs.OneHot(n))   # {"value", "target_value"}
    losses = discrete_cql.loss(params, batch)                  # loss_qvalue, loss_cql, ...
    train = discrete_cql.trainer(optim.adam(3e-4))             # minimises loss_qvalue + loss_cql

With ``Q(s, .)`` the ``[*B, n]`` action values and ``Q'`` the target network, on the dataset's
action ``a``::

    y      = r + gamma (1 - terminated) max_a' Q'(s', a')                    (gradient-stopped)
    L_Q    = 1/2 l(Q(s, a), y)
    L_CQL  = log sum_a' exp Q(s, a') - Q(s, a)

``L_CQL`` pushes down every action's value (the soft maximum) and up the dataset's, so actions
absent from the data are not overestimated. TorchRL returns the two terms separately and leaves
their weighting to the user; :func:`trainer` minimises the sum ``L_Q + L_CQL`` (TorchRL's
examples' ``loss_qvalue + loss_cql``; scale ``L_CQL`` in your own step to weight it). With ``config.action_mask_key`` the masked
actions are left out of the ``max`` and of the ``log-sum-exp`` (TorchRL's ``QValueActor(
action_mask_key=...)``). ``config.value_estimator`` replaces the TD(0) target by TD(1) or
TD(lambda) returns over a batch with a trailing time dim, bootstrapping from the same max.

Intentional differences from TorchRL:

* ``y`` bootstraps from ``params["target_value"]`` (``delay_value=True``, the default). TorchRL
  0.14's ``DiscreteCQLLoss`` passes its target weights to the value estimator as ``params=``,
  which the estimator ignores, and bootstraps from the gradient-stopped *online* network whatever
  ``delay_value`` says; the two agree when the target equals the online network (as after
  ``init`` or a hard update) and always with ``delay_value=False``.
* ``td_error`` is ``|Q(s, a) - y|`` ``[*B]`` (TorchRL writes the squared error ``[*B, 1]`` into
  the batch and returns its mean); ``pred_value`` is the mean of the unmasked action values
  (TorchRL averages the masked ones, ``finfo.min`` included).
* With one-hot actions the greedy next value is the max even on exact ties (TorchRL's one-hot
  greedy action sums every tied entry); ``batch["priority_weight"]`` weights the reductions
  (``use_prioritized_weights``); malformed or out-of-range actions raise (eagerly).
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
    check_observation,
    check_reduction,
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
    "from_torchrl",
    "to_torchrl",
    "conservative_penalty",
]

Params = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Config:
    """``DiscreteCQLLoss``'s hyperparameters, TorchRL's names and defaults.

    Attributes:
        loss_function: ``"l2"`` (default), ``"l1"`` or ``"smooth_l1"`` on the Bellman residual
            (halved, as TorchRL does).
        delay_value: bootstrap from ``params["target_value"]``; if ``False`` from the
            gradient-stopped online network.
        action_space: ``"one_hot"`` (TorchRL's aliases such as ``"one-hot"`` too),
            ``"categorical"`` or a ``OneHot``/``Categorical`` spec; stored as its name.
        gamma: discount.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        action_mask_key: batch key of a bool ``[*B, n]`` mask of valid actions (read at ``key``
            and ``("next", key)``), as TorchRL's ``QValueActor(action_mask_key=...)``.
        use_prioritized_weights: ``"auto"``/``True`` weight the losses by
            ``batch["priority_weight"]`` when present; ``False`` ignores it.
        value_estimator: ``"td0"`` (default), ``"td1"`` or ``"td_lambda"`` (with ``lmbda``).
    """

    loss_function: str = "l2"
    delay_value: bool = True
    action_space: Any = "one_hot"
    gamma: float = 0.99
    reduction: str = "mean"
    action_mask_key: str | None = None
    use_prioritized_weights: bool | str = "auto"
    value_estimator: str = "td0"
    lmbda: float = 0.95

    def __post_init__(self) -> None:
        owner = "discrete_cql.Config"
        check_loss_function(self.loss_function, owner)
        check_reduction(self.reduction, owner)
        if isinstance(self.gamma, bool) or not 0.0 <= float(self.gamma) <= 1.0:
            raise ValueError(f"{owner}: gamma must be in [0, 1], got {self.gamma}")
        object.__setattr__(
            self, "action_space", discrete.check_policy_space(owner, self.action_space)
        )
        discrete.check_prioritized(owner, self.use_prioritized_weights)
        discrete.check_value_estimator(owner, self.value_estimator, self.lmbda)


@dataclasses.dataclass(frozen=True)
class Nets:
    """The Q-network: ``value(params, observation [*B, o]) -> action values [*B, n]``.

    ``None`` (the default) is a ReLU :class:`funcrl.nn.MLP` with ``num_cells`` hidden units, built
    by :func:`init` from the specs and by ``loss``/``act`` from the observation's feature size and
    the params' output width. Any funcrl net can replace it.
    """

    value: Any = None
    num_cells: tuple[int, ...] = (256, 256)

    def resolve(self, obs_dim: int, n: int) -> Nets:
        """These nets with the default filled in for ``obs_dim`` features and ``n`` values."""
        return dataclasses.replace(
            self, value=discrete.default_net(self.value, obs_dim, n, self.num_cells)
        )


def conservative_penalty(q: torch.Tensor, q_taken: torch.Tensor) -> torch.Tensor:
    """CQL(H)'s ``log sum_a exp Q(s, a) - Q(s, a_data)``: ``q [*B, n]``, ``q_taken [*B] -> [*B]``
    (``>= 0``; masked entries at ``finfo.min`` add nothing)."""
    return torch.logsumexp(q, dim=-1) - q_taken


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
    """``{"value", "target_value"}`` (no target without ``delay_value``); the target is a copy.
    ``action_spec`` is a ``OneHot``/``Categorical`` spec or the number of actions."""
    owner = "discrete_cql.init"
    n = discrete.num_action_values(action_spec, config.action_space, None, owner)
    obs_dim = spec_size(observation_spec, owner, "observation_spec")
    gen = discrete.generator(seed, owner)
    value = discrete.init_net(nets.resolve(obs_dim, n).value, gen, device, dtype, owner, "value")
    params: Params = {"value": value}
    if config.delay_value:
        params["target_value"] = tree.clone(value)
    return params


def loss(
    params: Params,
    batch: Record,
    *,
    config: Config = Config(),
    nets: Nets = Nets(),
    key: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Discrete CQL's two losses on a batch of dataset transitions.

    Args:
        params: ``{"value", "target_value"}`` (``"target_value"`` only with ``delay_value``).
        batch: ``observation [*B, o]``, ``action`` (one-hot ``[*B, n]`` or indices ``[*B]``/
            ``[*B, 1]``), ``("next", "observation")``, ``("next", "reward") [*B, 1]``, ``("next",
            "terminated") [*B, 1]`` (and ``("next", "done")`` for TD(1)/TD(lambda)), the action
            masks when ``config.action_mask_key`` is set, optionally ``priority_weight [*B]``.
        key: unused (nothing is drawn); accepted for the protocol.

    Returns:
        ``loss_qvalue``, ``loss_cql`` (reduced), ``pred_value`` (mean action value),
        ``target_value`` (mean ``y``) and ``td_error [*B]``, all but the losses detached.
    """
    del key  # nothing to draw
    owner = "discrete_cql.loss"
    batch = check_batch(batch, owner)
    require(params, ["value", "target_value"] if config.delay_value else ["value"], owner)
    raw_q, q, q_taken, y = discrete.q_learning(params, batch, config, nets, owner=owner)

    weights = priority_weights(batch, config, like=q_taken, owner=owner)
    loss_q = 0.5 * distance_loss(q_taken, y, config.loss_function)
    return {
        "loss_qvalue": reduce_loss(loss_q, config.reduction, weights),
        "loss_cql": reduce_loss(conservative_penalty(q, q_taken), config.reduction, weights),
        "pred_value": raw_q.detach().mean(),
        "target_value": y.mean(),
        "td_error": (q_taken - y).abs().detach(),
    }


def act(
    params: Params,
    observation: torch.Tensor,
    *,
    config: Config = Config(),
    nets: Nets = Nets(),
    mode: str = "random",
    key: torch.Tensor | None = None,
    epsilon: float | torch.Tensor = 0.1,
    action_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """The greedy (``mode="deterministic"``, the one to evaluate with) or epsilon-greedy
    (``"random"``) action, as :func:`funcrl.dqn.act`.

    Args:
        observation: ``[*B, o]``.
        epsilon: exploration probability in random mode.
        action_mask: bool ``[*B, n]`` (required when ``config.action_mask_key`` is set).
        key: a :mod:`funcrl.random` key (``None``: the global RNG).

    Returns:
        one-hot ``[*B, n]`` or index ``[*B]`` int64 actions (``config.action_space``).
    """
    owner = "discrete_cql.act"
    require(params, ["value"], owner)
    dtype = discrete.float_dtype(params["value"], owner, "value")
    obs = check_observation(owner, observation, dtype)
    net = discrete.value_net(params, obs, nets, owner)
    discrete.check_net_params(net, params, ("value",), owner)
    q = discrete.action_values(
        net, tree.detach(params["value"]), obs, tuple(obs.shape[:-1]), owner, "value"
    )
    return discrete.act_on_values(
        q, config, action_mask, mode=mode, epsilon=epsilon, key=key, owner=owner
    )


def trainer(
    optimizer: Any,
    *,
    config: Config = Config(),
    nets: Nets = Nets(),
    tau: float = 0.005,
    hard_target_period: int | None = None,
):
    """:func:`funcrl.training.update` for discrete CQL on ``loss_qvalue + loss_cql``: Polyak
    targets (``tau``), or a copy every ``hard_target_period`` steps (TorchRL's ``HardUpdate``)."""
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


def from_torchrl(loss_module: Any) -> tuple[Config, Nets, Params]:
    """``(config, nets, params)`` equal to a TorchRL ``DiscreteCQLLoss`` (its value estimator,
    action space, mask key, online and target params), via :func:`funcrl.nn.from_torchrl`."""
    from funcrl.nn import from_torchrl as net_from_torchrl

    owner = "discrete_cql.from_torchrl"
    m = loss_module
    actor = m.value_network
    inner = discrete.inner_module(actor, owner)
    net, _ = net_from_torchrl(inner)
    head = next(x for x in actor.modules() if type(x).__name__ == "QValueModule")
    estimator, gamma, lmbda = discrete.estimator_of(m, owner)
    config = Config(
        loss_function=m.loss_function,
        delay_value=m.delay_value,
        action_space=m.action_space,
        gamma=gamma,
        reduction=m.reduction,
        action_mask_key=head.action_mask_key,
        value_estimator=estimator,
        lmbda=lmbda,
    )
    params: Params = {"value": discrete.read_params(m.value_network_params, actor, inner, net)}
    if config.delay_value:
        params["target_value"] = discrete.read_params(
            m.target_value_network_params, actor, inner, net
        )
    return config, Nets(value=net), params


def to_torchrl(
    config: Config, nets: Nets, params: Params, *, num_actions: int | None = None
) -> Any:
    """A TorchRL ``DiscreteCQLLoss`` (``QValueActor`` on ``observation``, the config's value
    estimator) holding ``params`` (``target_value`` in its target weights); the net must be
    convertible by :func:`funcrl.objectives.discrete.torch_module`. ``num_actions`` is needed only
    for a net without an integer ``out_features``. Its loss equals :func:`loss` when
    ``params["target_value"]`` equals ``params["value"]`` or ``delay_value`` is off: TorchRL 0.14
    bootstraps from the online weights (see the module docstring)."""
    from torchrl.modules import QValueActor
    from torchrl.objectives import DiscreteCQLLoss

    owner = "discrete_cql.to_torchrl"
    require(params, ["value", "target_value"] if config.delay_value else ["value"], owner)
    value = params["value"]
    if nets.value is None:
        n = discrete.out_features(value, owner, "value")
        nets = nets.resolve(value["layers"][0]["weight"].shape[-1], n)
    n = discrete.num_outputs(nets.value, num_actions, owner)
    spec = discrete.torchrl_spec(config.action_space, n)
    actor = QValueActor(
        discrete.torch_module(nets.value, value, owner),
        in_keys=["observation"],
        spec=spec,
        action_space=config.action_space,
        action_mask_key=config.action_mask_key,
    )
    m = DiscreteCQLLoss(
        actor,
        loss_function=config.loss_function,
        delay_value=config.delay_value,
        action_space=spec,
        reduction=config.reduction,
    )
    discrete.make_estimator(m, config)
    if config.delay_value:
        inner = discrete.inner_module(actor, owner)
        discrete.write_params(
            params["target_value"], m.target_value_network_params, actor, inner, nets.value
        )
    return m
