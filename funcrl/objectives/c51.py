"""Distributional DQN, C51 (Bellemare et al. 2017): TorchRL's ``DistributionalDQNLoss``.

    params = c51.init(0, obs_spec, act_spec)            # {"value", "target_value"}
    losses = c51.loss(params, batch)                     # {"loss", "td_error"}

The network gives, for each action, logits over ``num_atoms`` returns ``z_j`` evenly spaced on
``[v_min, v_max]``. The target distribution is the next state's distribution under the target
network, at the action the online network finds best (TorchRL's double-Q choice), shifted by the
Bellman operator ``Tz_j = r + gamma^n (1 - terminated) z_j``, clamped to the support and projected
back onto it; the loss is the cross-entropy ``-sum_j m_j log p_j(s, a)``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch

from funcrl import tree
from funcrl.objectives.common import (
    check_reduction,
    get,
    get_flag,
    init_net,
    mlp,
    reduce_loss,
    spec_size,
)
from funcrl.objectives.dqn import action_space_of
from funcrl.record import Record

__all__ = [
    "Config",
    "Nets",
    "init",
    "loss",
    "trainer",
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
    """

    gamma: float = 0.99
    delay_value: bool = True
    v_min: float = -10.0
    v_max: float = 10.0
    num_atoms: int = 51
    action_space: Any = "one_hot"
    reduction: str = "mean"

    def __post_init__(self) -> None:
        check_reduction(self.reduction, "c51.Config")
        if not 0.0 <= float(self.gamma) <= 1.0:
            raise ValueError(f"c51.Config: gamma must be in [0, 1], got {self.gamma}")
        if int(self.num_atoms) < 2:
            raise ValueError(f"c51.Config: num_atoms must be >= 2, got {self.num_atoms}")
        if not float(self.v_min) < float(self.v_max):
            raise ValueError(
                f"c51.Config: v_min must be < v_max, got v_min={self.v_min}, v_max={self.v_max}"
            )
        name, _ = action_space_of(self.action_space)
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
    ``MLP(out_features=(num_atoms, n))`` layout). The default is a ReLU :class:`funcrl.nn.MLP`.
    """

    value: Callable[..., torch.Tensor] = mlp
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
    """``{"value", "target_value"}`` (no target without ``delay_value``); the target is a copy."""
    if not hasattr(action_spec, "n"):
        raise TypeError(
            f"c51.init: action_spec must be a discrete spec with .n, got {type(action_spec).__name__}"
        )
    n = int(action_spec.n)
    value = init_net(
        nets.value,
        (mlp,),
        in_features=spec_size(observation_spec, "c51.init", "observation_spec"),
        out_features=config.num_atoms * n,
        num_cells=nets.num_cells,
        seed=seed,
        device=device,
        dtype=dtype,
        owner="c51.init",
    )
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


def _logits(nets: Nets, params: Any, obs: torch.Tensor, num_atoms: int) -> torch.Tensor:
    out = nets.value(params, obs)
    if out.dim() == obs.dim() and out.shape[-1] % num_atoms == 0:
        out = out.unflatten(-1, (num_atoms, -1))  # a flat [*batch, num_atoms * n], atom-major
    if out.dim() != obs.dim() + 1 or out.shape[-2] != num_atoms:
        raise ValueError(
            f"c51: nets.value returned shape {tuple(out.shape)}, expected "
            f"{(*obs.shape[:-1], num_atoms, 'n')} for observation {tuple(obs.shape)}"
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
) -> dict[str, torch.Tensor]:
    """The C51 loss: ``{"loss": cross-entropy, "td_error": per-sample cross-entropy [*B, 1]}``.

    The projected target ``m`` is computed without gradients; gradients flow into
    ``params["value"]`` through ``log p(s, a)``. An optional ``steps_to_next_obs`` ``[*B, 1]``
    entry gives n-step discounts ``gamma ** n``.
    """
    owner = "c51.loss"
    obs = get(batch, "observation", owner=owner)
    next_obs = get(batch, ("next", "observation"), owner=owner)
    action = get(batch, "action", owner=owner)
    reward = get(batch, ("next", "reward"), owner=owner, shape=(1,))
    terminated = get_flag(batch, ("next", "terminated"), owner=owner, like=reward)
    discount = torch.as_tensor(config.gamma, dtype=reward.dtype, device=reward.device)
    if "steps_to_next_obs" in batch:
        steps = get_flag(batch, "steps_to_next_obs", owner=owner, like=reward)
        discount = discount**steps

    log_p = log_probs(_logits(nets, params["value"], obs, config.num_atoms))
    n = log_p.shape[-1]
    if config.action_space == "one_hot" and action.shape != (*log_p.shape[:-2], n):
        raise ValueError(
            f"{owner}: batch['action'] has shape {tuple(action.shape)}, expected "
            f"{(*log_p.shape[:-2], n)} (one-hot)"
        )
    if reward.shape[:-1] != log_p.shape[:-2]:
        raise ValueError(
            f"{owner}: batch[('next', 'reward')] has shape {tuple(reward.shape)}, expected "
            f"{(*log_p.shape[:-2], 1)}"
        )
    log_p_a = _select(log_p, action, config.action_space)  # [*B, num_atoms]

    z = support(config, like=log_p)
    online = tree.detach(params["value"])
    target = tree.detach(params["target_value"]) if config.delay_value else online
    # Double-Q: the online network picks a*, the target network gives its distribution.
    next_q = expected_value(log_probs(_logits(nets, online, next_obs, config.num_atoms)), z)
    next_action = next_q.argmax(-1)
    next_log_p = log_probs(_logits(nets, target, next_obs, config.num_atoms))
    p_next = _select(next_log_p.exp(), next_action, "categorical")  # [*B, num_atoms]
    tz = bellman_atoms(reward, terminated, discount, z)
    m = project(tz, p_next, config.v_min, config.v_max, config.num_atoms).detach()

    cross_entropy = -(m * log_p_a).sum(-1)
    return {
        "loss": reduce_loss(cross_entropy, config.reduction),
        "td_error": cross_entropy.detach().unsqueeze(-1),
    }


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
    from functools import partial

    from funcrl.training import update

    return update(
        partial(loss, config=config, nets=nets),
        optimizer,
        trainable=("value",),
        targets={"target_value": "value"} if config.delay_value else None,
        tau=tau,
        hard_target_period=hard_target_period,
    )
