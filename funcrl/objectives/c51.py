"""Distributional DQN, C51 (Bellemare et al. 2017): TorchRL's ``DistributionalDQNLoss``.

    params = c51.init(0, obs_spec, act_spec)            # {"value", "target_value"}
    losses = c51.loss(params, batch)                     # {"loss", "td_error"}

The network gives, for each action, logits over ``num_atoms`` returns ``z_j`` evenly spaced on
``[v_min, v_max]``. The target distribution is the next state's distribution under the target
network, at the action the online network finds best (TorchRL's double-Q choice), shifted by the
Bellman operator ``Tz_j = r + gamma^n (1 - terminated) z_j``, clamped to the support and projected
back onto it; the loss is the cross-entropy ``-sum_j m_j log p_j(s, a)``. ``td_error`` is that
per-sample cross-entropy ``[*B]`` (non-negative: TorchRL's priority). Only TD(0) exists (TorchRL's
``DistributionalDQNLoss`` supports no other estimator).

Intentional differences from TorchRL 0.14: any number of batch dims (TorchRL needs exactly one);
the projection keeps the mass of an atom landing exactly on ``z_j`` without TorchRL's
``low -= 1``/``up += 1`` fix-up (same result); ``td_error`` is ``[*B]``, not ``[*B, 1]``.
"""

from __future__ import annotations

import dataclasses
from functools import partial
from typing import Any

import torch

from funcrl import tree
from funcrl._constants import filled
from funcrl.objectives import discrete
from funcrl.objectives.common import (
    check_batch,
    check_mode,
    check_observation,
    check_reduction,
    get,
    get_flag,
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
    "support",
    "log_probs",
    "expected_value",
    "bellman_atoms",
    "project",
]


@dataclasses.dataclass(frozen=True)
class Config:
    """C51 hyperparameters.

    Attributes:
        gamma: discount (required by TorchRL; 0.99 here so that ``loss(params, batch)`` works).
        delay_value: use ``params["target_value"]``; otherwise the gradient-stopped online net.
        v_min, v_max, num_atoms: the fixed support ``linspace(v_min, v_max, num_atoms)`` (TorchRL
            keeps it in the ``DistributionalQValueActor``; the paper's values are the defaults).
        action_space: ``"one_hot"`` (``[*batch, n]``) or ``"categorical"`` (``[*batch]`` or
            ``[*batch, 1]``), or a ``OneHot``/``Categorical`` spec.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        use_prioritized_weights: ``"auto"``/``True`` weight the loss by
            ``batch["priority_weight"]`` when present; ``False`` ignores it (TorchRL 0.14).
        value_estimator: ``"td0"``, the only one TorchRL's ``DistributionalDQNLoss`` supports.
    """

    gamma: float = 0.99
    delay_value: bool = True
    v_min: float = -10.0
    v_max: float = 10.0
    num_atoms: int = 51
    action_space: Any = "one_hot"
    reduction: str = "mean"
    use_prioritized_weights: bool | str = "auto"
    value_estimator: str = "td0"

    def __post_init__(self) -> None:
        check_reduction(self.reduction, "c51.Config")
        discrete.check_prioritized("c51.Config", self.use_prioritized_weights)
        if self.value_estimator != "td0":
            raise ValueError(
                "c51.Config: value_estimator must be 'td0' (TorchRL's DistributionalDQNLoss "
                f"supports only TD(0)), got {self.value_estimator!r}"
            )
        if not 0.0 <= float(self.gamma) <= 1.0:
            raise ValueError(f"c51.Config: gamma must be in [0, 1], got {self.gamma}")
        if int(self.num_atoms) < 2:
            raise ValueError(f"c51.Config: num_atoms must be >= 2, got {self.num_atoms}")
        if not float(self.v_min) < float(self.v_max):
            raise ValueError(
                f"c51.Config: v_min must be < v_max, got v_min={self.v_min}, v_max={self.v_max}"
            )
        name = discrete.action_space_of(self.action_space, owner="c51.Config")
        if name not in ("one_hot", "categorical"):
            raise ValueError(
                f"c51.Config: action_space must be 'one_hot' or 'categorical', got {name!r}"
            )
        object.__setattr__(self, "action_space", name)

    @property
    def delta_z(self) -> float:
        return (self.v_max - self.v_min) / (self.num_atoms - 1)


@dataclasses.dataclass(frozen=True)
class Nets:
    """``value(params, observation [*batch, d]) -> logits [*batch, num_atoms, n]``.

    A flat ``[*batch, num_atoms * n]`` output is read atom-major (TorchRL's
    ``MLP(out_features=(num_atoms, n))`` layout). ``None`` (the default) is a ReLU
    :class:`funcrl.nn.MLP` with ``num_cells`` hidden units and ``num_atoms * n`` outputs, built by
    :func:`init` from the specs and by ``loss``/``act`` from the observation's feature size and
    the params' output width. Any funcrl net can replace it.
    """

    value: Any = None
    num_cells: tuple[int, ...] = (256, 256)

    def resolve(self, obs_dim: int, n_out: int) -> Nets:
        """These nets with the default filled in for ``obs_dim`` features, ``n_out`` outputs."""
        return dataclasses.replace(
            self, value=discrete.default_net(self.value, obs_dim, n_out, self.num_cells)
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
    """``{"value", "target_value"}`` (no target without ``delay_value``); the target is a copy."""
    owner = "c51.init"
    n = discrete.num_action_values(action_spec, config.action_space, None, owner)
    obs_dim = spec_size(observation_spec, owner, "observation_spec")
    net = nets.resolve(obs_dim, config.num_atoms * n).value
    value = discrete.init_net(net, discrete.generator(seed, owner), device, dtype, owner, "value")
    params = {"value": value}
    if config.delay_value:
        params["target_value"] = tree.clone(value)
    return params


# --- the equations -------------------------------------------------------------------------------


def support(config: Config, *, like: torch.Tensor) -> torch.Tensor:
    """The atoms ``z_j = v_min + j * delta_z``: ``[num_atoms]``."""
    return torch.linspace(
        config.v_min, config.v_max, config.num_atoms, dtype=like.dtype, device=like.device
    )


def log_probs(logits: torch.Tensor) -> torch.Tensor:
    """``log p_j(s, a)``: a log-softmax over the atom dim of ``[*batch, num_atoms, n]`` logits."""
    return torch.log_softmax(logits, dim=-2)


def _value_net(params: dict[str, Any], obs: torch.Tensor, nets: Nets, owner: str) -> Any:
    n_out = discrete.out_features(params["value"], owner, "value") if nets.value is None else 0
    return nets.resolve(obs.shape[-1], n_out).value


def _logits(net: Any, params: Any, obs: torch.Tensor, lead: tuple, num_atoms: int, owner: str):
    # [*B, num_atoms, n]; a flat [*B, num_atoms * n] output is read atom-major.
    out = net(params, obs)
    if out.dim() == len(lead) + 1 and out.shape[-1] % num_atoms == 0:
        out = out.unflatten(-1, (num_atoms, -1))
    if (
        out.dim() != len(lead) + 2
        or tuple(out.shape[:-2]) != tuple(lead)
        or (out.shape[-2] != num_atoms)
    ):
        raise ValueError(
            f"{owner}: nets.value returned shape {tuple(out.shape)}, expected "
            f"{(*lead, num_atoms, 'n')} (or {(*lead, f'{num_atoms} * n')}) for observation "
            f"{tuple(obs.shape)}"
        )
    return out


def expected_value(log_p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """``Q(s, a) = sum_j z_j p_j(s, a)``: ``[*batch, num_atoms, n] -> [*batch, n]``."""
    return (log_p.exp() * z.unsqueeze(-1)).sum(-2)


def bellman_atoms(
    reward: torch.Tensor, terminated: torch.Tensor, discount: torch.Tensor | float, z: torch.Tensor
) -> torch.Tensor:
    """``Tz_j = r + discount * (1 - terminated) * z_j``: ``[*batch, 1] -> [*batch, num_atoms]``."""
    return reward + discount * (1.0 - terminated.to(reward.dtype)) * z


def project(
    atoms: torch.Tensor, probs: torch.Tensor, v_min: float, v_max: float, num_atoms: int
) -> torch.Tensor:
    """Projects the distribution ``sum_i probs_i delta(atoms_i)`` onto the fixed support.

    Each atom, clamped to ``[v_min, v_max]``, sits at fractional index ``b = (Tz - v_min) /
    delta_z`` and splits its mass between the two neighbouring atoms in proportion to closeness:
    ``m_j = sum_i probs_i * max(0, 1 - |b_i - j|)``. This is the paper's floor/ceil rule written
    so that an atom landing exactly on ``z_j`` (``floor(b) == ceil(b)``) keeps all its mass
    (the classic bug gives it none); the total mass is preserved.

    Shapes:
        ``atoms, probs: [*batch, k] -> m: [*batch, num_atoms]``.
    """
    if atoms.shape != probs.shape:
        raise ValueError(f"project: atoms {tuple(atoms.shape)} != probs {tuple(probs.shape)}")
    delta_z = (v_max - v_min) / (num_atoms - 1)
    b = (atoms.clamp(v_min, v_max) - v_min) / delta_z
    j = torch.arange(num_atoms, dtype=b.dtype, device=b.device)
    weight = (1.0 - (b.unsqueeze(-1) - j).abs()).clamp_min(0.0)  # [*batch, k, num_atoms]
    return (probs.unsqueeze(-1) * weight).sum(-2)


def _select(x: torch.Tensor, action: torch.Tensor, action_space: str) -> torch.Tensor:
    # x: [*batch, num_atoms, n] -> the column of `action`: [*batch, num_atoms].
    if action_space == "categorical":
        if action.dim() == x.dim() - 1:  # [*batch, 1]
            action = action.squeeze(-1)
        index = action.long()[..., None, None].expand(*x.shape[:-1], 1)
        return x.gather(-1, index).squeeze(-1)
    return (x * action.to(x.dtype).unsqueeze(-2)).sum(-1)


# --- the loss ------------------------------------------------------------------------------------


def loss(
    params: dict[str, Any],
    batch: Record,
    *,
    config: Config = Config(),
    nets: Nets = Nets(),
    key: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """The C51 loss: ``{"loss": cross-entropy, "td_error": per-sample cross-entropy [*B]}``.

    The projected target ``m`` is computed without gradients; gradients flow into
    ``params["value"]`` through ``log p(s, a)``. An optional ``steps_to_next_obs`` ``[*B, 1]``
    entry gives n-step discounts ``gamma ** n``; ``priority_weight [*B]`` weights the reduction.
    Nothing is sampled: ``key`` is accepted for the protocol and unused.
    """
    owner = "c51.loss"
    batch = check_batch(batch, owner)
    require(params, ["value", "target_value"] if config.delay_value else ["value"], owner)
    dtype = discrete.float_dtype(params["value"], owner, "value")
    lead = tuple(batch.batch_size)
    obs = get(batch, "observation", owner=owner, dtype=dtype)
    next_obs = get(batch, ("next", "observation"), owner=owner, dtype=dtype)
    discrete.check_same_shape(owner, obs, next_obs, "observation", ("next", "observation"))
    reward = get(batch, ("next", "reward"), owner=owner, shape=(1,), dtype=dtype)
    if tuple(reward.shape) != (*lead, 1):
        raise ValueError(
            f"{owner}: batch[('next', 'reward')] has shape {tuple(reward.shape)}, expected "
            f"{(*lead, 1)}"
        )
    terminated = get_flag(batch, ("next", "terminated"), owner=owner, like=reward)
    discount = filled(config.gamma, reward.dtype, reward.device)
    if "steps_to_next_obs" in batch:
        steps = get_flag(batch, "steps_to_next_obs", owner=owner, like=reward)
        discount = discount**steps

    net = _value_net(params, obs, nets, owner)
    discrete.check_net_params(net, params, ("value", "target_value"), owner)
    log_p = log_probs(_logits(net, params["value"], obs, lead, config.num_atoms, owner))
    n = log_p.shape[-1]
    action = get(batch, "action", owner=owner)
    discrete.check_action(
        action, n, config.action_space, None, batch_shape=lead, owner=owner, key="action"
    )
    log_p_a = _select(log_p, action, config.action_space)  # [*B, num_atoms]

    z = support(config, like=log_p)
    online = tree.detach(params["value"])
    target = tree.detach(params["target_value"]) if config.delay_value else online
    # Double-Q: the online network picks a*, the target network gives its distribution.
    next_logits = _logits(net, online, next_obs, lead, config.num_atoms, owner)
    next_action = expected_value(log_probs(next_logits), z).argmax(-1)
    next_log_p = log_probs(_logits(net, target, next_obs, lead, config.num_atoms, owner))
    p_next = _select(next_log_p.exp(), next_action, "categorical")  # [*B, num_atoms]
    tz = bellman_atoms(reward, terminated, discount, z)
    m = project(tz, p_next, config.v_min, config.v_max, config.num_atoms).detach()

    cross_entropy = -(m * log_p_a).sum(-1)
    weights = priority_weights(batch, config, like=cross_entropy, owner=owner)
    return {
        "loss": reduce_loss(cross_entropy, config.reduction, weights),
        "td_error": cross_entropy.detach(),
    }


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
    """The greedy action on the expected values ``Q(s, a) = sum_j z_j p_j(s, a)``
    (``mode="deterministic"``), or epsilon-greedy on them (``"random"``).

    Args:
        observation: ``[*B, d]``.
        epsilon: exploration probability in random mode (default 0.1, TorchRL's
            ``EGreedyModule`` ``eps_end``).
        action_mask: optional bool ``[*B, n]`` of allowed actions: the greedy action and the
            random draws only pick allowed ones (funcrl masks the expected values, so a masked
            action is never chosen).
        key: a :mod:`funcrl.random` key (``None``: the global RNG).

    Returns:
        one-hot ``[*B, n]`` or categorical ``[*B]`` int64 actions.
    """
    owner = "c51.act"
    check_mode(owner, mode)
    require(params, ["value"], owner)
    dtype = discrete.float_dtype(params["value"], owner, "value")
    obs = check_observation(owner, observation, dtype)
    net = _value_net(params, obs, nets, owner)
    discrete.check_net_params(net, params, ("value",), owner)
    logits = _logits(net, params["value"], obs, tuple(obs.shape[:-1]), config.num_atoms, owner)
    q = expected_value(log_probs(logits), support(config, like=logits))
    return discrete.act_on_values(
        q, config, action_mask, mode=mode, epsilon=epsilon, key=key, owner=owner
    )


def trainer(
    optimizer: Any,
    *,
    config: Config = Config(),
    nets: Nets = Nets(),
    hard_target_period: int | None = None,
    tau: float = 0.005,
):
    """``funcrl.training.update`` for C51 (Polyak targets, or hard copies every
    ``hard_target_period`` steps)."""
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
    """``(config, nets, params)`` equivalent to a TorchRL ``DistributionalDQNLoss`` (the support,
    gamma, online and target params), via :func:`funcrl.nn.from_torchrl`."""
    from funcrl.nn import from_torchrl as net_from_torchrl

    owner = "c51.from_torchrl"
    actor = loss_module.value_network
    inner = discrete.inner_module(actor, owner)
    net, _ = net_from_torchrl(inner)
    z = loss_module.value_network_params["support"]
    num_atoms = z.numel()
    v_min, v_max = discrete.from_float32(z.min()), discrete.from_float32(z.max())
    if not torch.allclose(z, torch.linspace(v_min, v_max, num_atoms, dtype=z.dtype)):
        raise ValueError(f"{owner}: the support is not evenly spaced; C51 needs a linspace")
    config = Config(
        gamma=discrete.from_float32(loss_module.gamma),
        delay_value=loss_module.delay_value,
        v_min=v_min,
        v_max=v_max,
        num_atoms=num_atoms,
        action_space=loss_module.action_space,
        reduction=loss_module.reduction,
        use_prioritized_weights=loss_module.use_prioritized_weights,
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
    """A TorchRL ``DistributionalDQNLoss`` (``DistributionalQValueActor`` on ``observation``)
    holding ``params``. A flat-output MLP is given TorchRL's ``out_features=(num_atoms, n)``
    (the same weights); ``num_actions`` is needed only for a net without ``out_features``."""
    from torchrl.modules import DistributionalQValueActor
    from torchrl.objectives import DistributionalDQNLoss

    owner = "c51.to_torchrl"
    require(params, ["value", "target_value"] if config.delay_value else ["value"], owner)
    value = params["value"]
    if nets.value is None:
        width = discrete.out_features(value, owner, "value")
        nets = nets.resolve(value["layers"][0]["weight"].shape[-1], width)
    net = nets.value
    out = getattr(net, "out_features", None)
    if num_actions is None and isinstance(out, int):
        num_actions = out // config.num_atoms
    elif num_actions is None and isinstance(out, tuple) and len(out) == 2:
        num_actions = out[1]
    n = discrete.num_outputs(net, num_actions, owner)
    if isinstance(out, int):
        net = dataclasses.replace(net, out_features=(config.num_atoms, n))
    dtype = discrete.float_dtype(value, owner, "value")
    actor = DistributionalQValueActor(
        discrete.torch_module(net, value, owner),
        support=torch.linspace(config.v_min, config.v_max, config.num_atoms, dtype=dtype),
        in_keys=["observation"],
        spec=discrete.torchrl_spec(config.action_space, n),
        action_space=config.action_space,
    )
    loss_module = DistributionalDQNLoss(
        actor,
        gamma=config.gamma,
        delay_value=config.delay_value,
        reduction=config.reduction,
        use_prioritized_weights=config.use_prioritized_weights,
    )
    if config.delay_value:
        inner = discrete.inner_module(actor, owner)
        td = loss_module.target_value_network_params
        discrete.write_params(params["target_value"], td, actor, inner, net)
    return loss_module
