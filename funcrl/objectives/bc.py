"""Behaviour cloning: TorchRL 0.14's ``BCLoss`` on continuous actions.

    params = bc.init(0, obs_spec, act_spec)                  # {"actor", "action_bounds"}
    losses = bc.loss(params, batch)                          # {"loss_bc", "td_error"}
    params = bc.init(0, obs_spec, act_spec, bc.Config(loss_function="l2"))   # a deterministic actor

Two variants, as TorchRL picks them from the actor:

* ``loss_function=None`` (default): the negative log-likelihood ``-log pi(a|s)`` of a
  ``TanhNormal`` policy on ``params["action_bounds"]`` (SAC's actor layout).
* ``loss_function="l2"`` (``"mse"``), ``"l1"`` or ``"smooth_l1"``: a deterministic actor
  ``mu(s)`` regressed element-wise onto the data's actions (``[*B, a]`` before the reduction,
  which averages over every element as TorchRL's does).

``td_error`` (``[*B]``) is the mean absolute error of the policy's deterministic action against the
data's action: there is no TD error, and this is the sample's "how badly it is imitated" priority.

Intentional differences from TorchRL: ``batch["priority_weight"]`` weights the reduction (spread
over the action dims for the element-wise losses); TorchRL's ``BCLoss`` ignores it. Discrete
actions (cross-entropy) and callables as ``loss_function`` are not covered here.
"""

from __future__ import annotations

import dataclasses
from functools import partial
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from funcrl import tree
from funcrl.nn import make_generator
from funcrl.objectives.actor_critic import (
    act_deterministic,
    act_stochastic,
    bounds,
    check_nets,
    check_tanh_actor_bounds,
    param_dtype,
    resolve,
    tanh_normal,
)
from funcrl.objectives.actor_critic import action_bounds as spec_bounds
from funcrl.objectives.common import (
    check_batch,
    check_mode,
    check_observation,
    check_reduction,
    get,
    priority_weights,
    reduce_loss,
    require,
    spec_size,
)
from funcrl.objectives.offline import check_priority_flag
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
    "LOSS_FUNCTIONS",
]

Params = dict[str, Any]

LOSS_FUNCTIONS = (None, "l1", "l2", "mse", "smooth_l1")


@dataclasses.dataclass(frozen=True)
class Config:
    """``BCLoss``'s arguments.

    Args:
        loss_function: ``None`` (negative log-likelihood of a ``TanhNormal`` policy) or
            ``"l1"``, ``"l2"``/``"mse"``, ``"smooth_l1"`` (a deterministic actor).
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        use_prioritized_weights: ``"auto"``/``True``: weight the reduction by
            ``batch["priority_weight"]`` when present; ``False``: ignore it.
    """

    loss_function: str | None = None
    reduction: str = "mean"
    use_prioritized_weights: bool | str = "auto"

    def __post_init__(self) -> None:
        if self.loss_function not in LOSS_FUNCTIONS:
            raise ValueError(
                f"bc.Config: loss_function must be one of {LOSS_FUNCTIONS}, got "
                f"{self.loss_function!r}"
            )
        check_reduction(self.reduction, "bc.Config")
        check_priority_flag("bc.Config", self.use_prioritized_weights)

    @property
    def stochastic(self) -> bool:
        return self.loss_function is None


@dataclasses.dataclass(frozen=True)
class Nets:
    """The actor: a funcrl net, ``None`` for TorchRL's default ReLU MLP with ``num_cells``: ``o ->
    2 a`` split into a ``TanhNormal`` (``loss_function=None``) or ``tanh(MLP(o -> a))`` on
    ``[-1, 1]`` (the element-wise losses). ``scale_mapping``, ``scale_lb``, ``tanh_loc``: as
    :class:`funcrl.sac.Nets`."""

    ROLES: ClassVar[dict[str, str]] = {"actor": "gaussian_actor"}

    actor: Any = None
    num_cells: tuple[int, ...] = (256, 256)
    scale_mapping: str = "biased_softplus_1.0"
    scale_lb: float = 1e-4
    tanh_loc: bool = False


@dataclasses.dataclass(frozen=True)
class _DeterministicNets:
    ROLES: ClassVar[dict[str, str]] = {"actor": "tanh_actor"}

    actor: Any = None
    num_cells: tuple[int, ...] = (256, 256)


def _resolve(nets: Nets, config: Config, obs_dim: int, act_dim: int) -> Nets:
    if config.stochastic or nets.actor is not None:
        return resolve(nets, obs_dim, act_dim)
    actor = resolve(_DeterministicNets(None, nets.num_cells), obs_dim, act_dim).actor
    return dataclasses.replace(nets, actor=actor)


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
    """Fresh params: ``actor`` and ``action_bounds`` (from the bounded spec)."""
    owner = "bc.init"
    check_nets(nets, owner)
    obs_dim = spec_size(observation_spec, owner, "observation_spec")
    act_dim = spec_size(action_spec, owner, "action_spec")
    box = spec_bounds(action_spec, act_dim, device=device, dtype=dtype, owner=owner)
    if not config.stochastic:
        check_tanh_actor_bounds(nets, box, owner)
    nets = _resolve(nets, config, obs_dim, act_dim)
    gen = make_generator(seed)
    return {"actor": nets.actor.init(gen, device=device, dtype=dtype), "action_bounds": box}


def _elementwise(pred: torch.Tensor, target: torch.Tensor, name: str) -> torch.Tensor:
    if name == "l1":
        return F.l1_loss(pred, target, reduction="none")
    if name == "smooth_l1":
        return F.smooth_l1_loss(pred, target, reduction="none")
    return F.mse_loss(pred, target, reduction="none")


def loss(
    params: Params,
    batch: Record,
    *,
    config: Config = Config(),
    nets: Nets = Nets(),
    key: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """The behaviour-cloning loss on ``batch["observation"] [*B, o]`` and ``batch["action"]
    [*B, a]`` (the params' dtype); optional ``priority_weight [*B]``. ``key`` is unused.

    Returns:
        ``loss_bc`` (reduced: 0-d, or ``[*B]`` (NLL) / ``[*B, a]`` (element-wise) with
        ``reduction="none"``) and ``td_error`` ``[*B]`` (detached).
    """
    del key  # nothing is drawn
    owner = "bc.loss"
    check_batch(batch, owner)
    require(params, ["actor", "action_bounds"], owner)
    low, high = bounds(params, owner)
    dtype = param_dtype(params, "actor")
    obs = get(batch, "observation", owner=owner, shape=(None,), dtype=dtype)
    action = get(batch, "action", owner=owner, shape=(low.shape[-1],), dtype=dtype)
    if action.shape[:-1] != obs.shape[:-1]:
        raise ValueError(
            f"{owner}: batch['action'] has shape {tuple(action.shape)}, expected "
            f"{(*obs.shape[:-1], low.shape[-1])} (the observation's batch dims)"
        )
    nets = _resolve(nets, config, obs.shape[-1], action.shape[-1])
    weights = priority_weights(batch, config, like=action[..., 0], owner=owner)
    out = nets.actor(params["actor"], obs)
    if config.stochastic:
        dist = tanh_normal(out, low, high, nets)
        loss_bc = reduce_loss(-dist.log_prob(action), config.reduction, weights)
        pred = dist.deterministic_sample
    else:
        per_element = _elementwise(out, action, config.loss_function)
        w = None if weights is None else weights.unsqueeze(-1).expand_as(per_element)
        loss_bc = reduce_loss(per_element, config.reduction, w)
        pred = out
    return {"loss_bc": loss_bc, "td_error": (pred.detach() - action).abs().mean(-1)}


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
    """The cloned policy's action ``[*B, a]``: ``"deterministic"`` its mode (``mu(s)``), or
    ``"random"`` a ``TanhNormal`` draw (NLL) / ``mu(s)`` plus clipped Gaussian noise of
    ``noise_scale`` of the half-range (element-wise). Detached."""
    owner = "bc.act"
    check_mode(owner, mode)
    require(params, ["actor", "action_bounds"], owner)
    low, high = bounds(params, owner)
    obs = check_observation(owner, observation, param_dtype(params, "actor"))
    nets = _resolve(nets, config, obs.shape[-1], low.shape[-1])
    out = nets.actor(tree.detach(params["actor"]), obs).detach()
    if config.stochastic:
        return act_stochastic(tanh_normal(out, low, high, nets), mode, key)
    return act_deterministic(out, low, high, mode, key, noise_scale)


def trainer(optimizer: Any, *, config: Config = Config(), nets: Nets = Nets()):
    """:func:`funcrl.training.update` for BC: the ``actor`` on ``loss_bc`` every step."""
    from funcrl.training import update

    return update(partial(loss, config=config, nets=nets), optimizer, trainable=("actor",))


def from_torchrl(loss_module: Any) -> tuple[Config, Nets, Params]:
    """``(config, nets, params)`` equal to a TorchRL ``BCLoss`` over a ``TanhNormal``
    ``ProbabilisticActor`` (SAC's layout; NLL) or a deterministic actor ``TensorDictModule``
    with a string ``loss_function``."""
    from funcrl.objectives.actor_critic import (
        deterministic_actor_from_torchrl,
        expand_bound,
        from_torchrl_tanh_normal_actor,
        torchrl_action_dim,
    )

    m = loss_module
    name = m.loss_function
    if name is not None and not isinstance(name, str):
        raise TypeError(f"bc.from_torchrl: loss_function {name!r} is a callable; use a name")
    if name is None:
        actor, actor_params, info = from_torchrl_tanh_normal_actor(m)
        act_dim = torchrl_action_dim(info["low"], actor, "bc.from_torchrl")
        dtype = tree.leaves(actor_params)[0].dtype
        nets = Nets(
            actor=actor,
            scale_mapping=info["scale_mapping"],
            scale_lb=info["scale_lb"],
            tanh_loc=info["tanh_loc"],
        )
        box = {
            "low": expand_bound(info["low"], act_dim, dtype=dtype),
            "high": expand_bound(info["high"], act_dim, dtype=dtype),
        }
    else:
        actor, actor_params = deterministic_actor_from_torchrl(
            m.actor_network, m.actor_network_params
        )
        act_dim = getattr(getattr(actor, "net", actor), "out_features", None)
        if not isinstance(act_dim, int):
            raise TypeError(f"bc.from_torchrl: cannot read the action size of {actor!r}")
        # A deterministic actor has no bounds in TorchRL: the tanh box is [-1, 1].
        dtype = tree.leaves(actor_params)[0].dtype
        box = {"low": -torch.ones(act_dim, dtype=dtype), "high": torch.ones(act_dim, dtype=dtype)}
        nets = Nets(actor=actor)
    config = Config(loss_function=name, reduction=m.reduction)
    return config, nets, {"actor": actor_params, "action_bounds": box}


def to_torchrl(config: Config, nets: Nets, params: Params, observation_dim: int | None = None):
    """A TorchRL ``BCLoss`` equal to ``loss(params, ., config=config, nets=nets)``: with
    ``loss_function=None`` (NLL) TorchRL's SAC actor layout on the ``TanhNormal``'s bounds, else a
    deterministic ``TensorDictModule`` actor (``TanhBounded(MLP)`` on ``[-1, 1]`` becomes
    ``Sequential(MLP, Tanh)``), ``params["actor"]`` copied in. ``observation_dim`` sizes a default
    actor (read from its params when ``None``)."""
    from torchrl.objectives import BCLoss

    from funcrl.objectives.actor_critic import (
        deterministic_actor_to_torchrl,
        torchrl_tanh_normal_actor,
    )
    from funcrl.objectives.common import in_features

    owner = "bc.to_torchrl"
    require(params, ["actor", "action_bounds"], owner)
    low, high = bounds(params, owner)
    if observation_dim is None:
        observation_dim = in_features(params["actor"], owner, "actor")
    nets = _resolve(nets, config, observation_dim, low.shape[-1])
    if config.stochastic:
        actor = torchrl_tanh_normal_actor(nets.actor, params["actor"], low, high, nets)
    else:
        actor, _ = deterministic_actor_to_torchrl(nets.actor, params["actor"])
    return BCLoss(actor, loss_function=config.loss_function, reduction=config.reduction)
