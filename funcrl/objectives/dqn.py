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
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch

from funcrl import tree
from funcrl.objectives.common import (
    check_loss_function,
    check_reduction,
    distance_loss,
    get,
    get_flag,
    init_net,
    mlp,
    reduce_loss,
    spec_size,
    td0_target,
)
from funcrl.record import Record

__all__ = [
    "Config",
    "Nets",
    "init",
    "loss",
    "trainer",
    "action_space_of",
    "mask_action_values",
    "chosen_action_value",
    "greedy_action",
    "max_action_value",
    "double_q_value",
]

# TorchRL's names for the discrete action spaces (torchrl.data.utils.ACTION_SPACE_MAP).
_SPACE_NAMES = {
    "one_hot": "one_hot",
    "one-hot": "one_hot",
    "categorical": "categorical",
    "mult_one_hot": "mult_one_hot",
    "mult-one-hot": "mult_one_hot",
    "multi_one_hot": "mult_one_hot",
    "multi-one-hot": "mult_one_hot",
    "binary": "binary",
}
_SPEC_CLASSES = {
    "OneHot": "one_hot",
    "Categorical": "categorical",
    "MultiOneHot": "mult_one_hot",
    "Binary": "binary",
}


def action_space_of(space: Any) -> tuple[str, tuple[int, ...] | None]:
    """``(name, var_nums)`` of an action space given by name or as a spec (funcrl or TorchRL).

    ``var_nums`` is the per-group sizes of a ``MultiOneHot`` spec, else ``None``.
    """
    if isinstance(space, str):
        if space not in _SPACE_NAMES:
            raise ValueError(
                f"dqn: action_space must be one of {sorted(_SPACE_NAMES)} or a discrete spec, "
                f"got {space!r}"
            )
        return _SPACE_NAMES[space], None
    name = _SPEC_CLASSES.get(type(space).__name__)
    if name is None:
        raise ValueError(
            "dqn: action_space spec must be a OneHot, Categorical, MultiOneHot or Binary spec, "
            f"got {type(space).__name__}"
        )
    var_nums = None
    if name == "mult_one_hot":
        var_nums = tuple(int(n) for n in torch.as_tensor(space.nvec).reshape(-1).tolist())
    return name, var_nums


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
    """

    loss_function: str = "l2"
    delay_value: bool = True
    double_dqn: bool = False
    action_space: Any = "one_hot"
    gamma: float = 0.99
    reduction: str = "mean"
    var_nums: tuple[int, ...] | None = None
    action_mask_key: str | None = None

    def __post_init__(self) -> None:
        check_loss_function(self.loss_function, "dqn.Config")
        check_reduction(self.reduction, "dqn.Config")
        if self.double_dqn and not self.delay_value:
            raise ValueError("dqn.Config: double_dqn=True requires delay_value=True")
        if not 0.0 <= float(self.gamma) <= 1.0:
            raise ValueError(f"dqn.Config: gamma must be in [0, 1], got {self.gamma}")
        name, var_nums = action_space_of(self.action_space)
        object.__setattr__(self, "action_space", name)
        if self.var_nums is not None:
            object.__setattr__(self, "var_nums", tuple(int(n) for n in self.var_nums))
        elif var_nums is not None:
            object.__setattr__(self, "var_nums", var_nums)
        if name == "mult_one_hot" and not self.var_nums:
            raise ValueError(
                "dqn.Config: action_space='mult_one_hot' needs var_nums (the group sizes), or "
                "pass the MultiOneHot spec as action_space"
            )
        if name == "binary" and self.action_mask_key is not None:
            raise ValueError("dqn.Config: action masks are not defined for a 'binary' space")


@dataclasses.dataclass(frozen=True)
class Nets:
    """The Q-network: ``value(params, observation [*batch, d]) -> action values [*batch, n]``.

    The default is a ReLU :class:`funcrl.nn.MLP` with ``num_cells`` hidden units, sized by
    :func:`init` from the specs; any pure function of ``(params, observation)`` can replace it.
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
    """``{"value", "target_value"}`` (no target without ``delay_value``); the target is a copy.

    The number of action values is ``spec.n`` (one-hot, categorical), ``sum(nvec)``
    (multi-one-hot) or the number of bits (binary). Never touches the global RNG.
    """
    spec_space = _SPEC_CLASSES.get(type(action_spec).__name__)
    if spec_space is not None and spec_space != config.action_space:
        raise ValueError(
            f"dqn.init: action_spec is a {type(action_spec).__name__} ({spec_space!r}) but "
            f"config.action_space is {config.action_space!r}"
        )
    if config.action_space == "mult_one_hot":
        n_out = sum(config.var_nums)
    elif hasattr(action_spec, "n"):
        n_out = int(action_spec.n)
    else:
        n_out = spec_size(action_spec, "dqn.init", "action_spec")
    value = init_net(
        nets.value,
        (mlp,),
        in_features=spec_size(observation_spec, "dqn.init", "observation_spec"),
        out_features=n_out,
        num_cells=nets.num_cells,
        seed=seed,
        device=device,
        dtype=dtype,
        owner="dqn.init",
    )
    params = {"value": value}
    if config.delay_value:
        params["target_value"] = tree.clone(value)
    return params


# --- the equations -------------------------------------------------------------------------------


def mask_action_values(q: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Invalid actions get the lowest finite value, so the greedy action never picks them."""
    if mask is None:
        return q
    if mask.shape != q.shape:
        raise ValueError(f"dqn: action mask shape {tuple(mask.shape)} != {tuple(q.shape)}")
    return torch.where(mask.bool(), q, torch.finfo(q.dtype).min)


def chosen_action_value(q: torch.Tensor, action: torch.Tensor, action_space: str) -> torch.Tensor:
    """``Q(s, a)`` of action ``a`` given in ``action_space``'s layout: ``[*batch, n] -> [*batch]``.

    Multi-one-hot and binary actions select several entries; their values add up.
    """
    if action_space == "categorical":
        if action.dim() == q.dim() - 1:
            action = action.unsqueeze(-1)
        return q.gather(-1, action.long()).squeeze(-1)
    return (q * action.to(q.dtype)).sum(-1)


def greedy_action(
    q: torch.Tensor, action_space: str, var_nums: tuple[int, ...] | None = None
) -> torch.Tensor:
    """``argmax_a Q(s, a)`` in ``action_space``'s layout (per group for multi-one-hot; a bit is
    set where its value is positive for binary). Ties go to the first maximum."""
    if action_space == "categorical":
        return q.argmax(-1)
    if action_space == "binary":
        return (q > 0).to(q.dtype)
    groups = q.split(list(var_nums), dim=-1) if action_space == "mult_one_hot" else (q,)
    return torch.cat([_one_hot(g.argmax(-1), g.shape[-1], q) for g in groups], -1)


def _one_hot(index: torch.Tensor, n: int, like: torch.Tensor) -> torch.Tensor:
    # F.one_hot checks index bounds on the host: a comparison stays traceable under vmap/compile.
    arange = torch.arange(n, device=index.device)
    return (index.unsqueeze(-1) == arange).to(like.dtype)


def max_action_value(
    q: torch.Tensor, action_space: str, var_nums: tuple[int, ...] | None = None
) -> torch.Tensor:
    """``max_a Q(s, a)``: ``[*batch, n] -> [*batch]``."""
    if action_space in ("one_hot", "categorical"):
        # The greedy action's value is the max itself: one reduction instead of argmax + gather.
        return q.max(-1).values
    return chosen_action_value(q, greedy_action(q, action_space, var_nums), action_space)


def double_q_value(
    q_online: torch.Tensor,
    q_target: torch.Tensor,
    action_space: str,
    var_nums: tuple[int, ...] | None = None,
) -> torch.Tensor:
    """``Q_target(s', argmax_a' Q_online(s', a'))`` (van Hasselt et al. 2015): ``[*batch]``."""
    return chosen_action_value(
        q_target, greedy_action(q_online, action_space, var_nums), action_space
    )


# --- the loss ------------------------------------------------------------------------------------


def check_action(
    action: torch.Tensor, q: torch.Tensor, action_space: str, *, owner: str, key: str = "action"
) -> None:
    """Raises unless ``action`` fits ``q [*batch, n]`` in ``action_space``'s layout."""
    if action_space == "categorical":
        ok = action.shape == q.shape[:-1] or action.shape == (*q.shape[:-1], 1)
        want = f"{tuple(q.shape[:-1])} or {(*q.shape[:-1], 1)} (integer indices)"
    else:
        ok = action.shape == q.shape
        want = f"{tuple(q.shape)} ({action_space})"
    if not ok:
        raise ValueError(
            f"{owner}: batch[{key!r}] has shape {tuple(action.shape)}, expected {want}"
        )


def loss(
    params: dict[str, Any],
    batch: Record,
    *,
    config: Config = Config(),
    nets: Nets = Nets(),
) -> dict[str, torch.Tensor]:
    """The DQN loss: ``{"loss": L, "td_error": (Q(s, a) - y)^2}``.

    Gradients flow only into ``params["value"]`` through ``Q(s, a)``; the target ``y`` is
    computed from gradient-stopped params. ``td_error`` (``[*batch, 1]``, detached) is the
    priority TorchRL writes into the input tensordict; here it is returned.

    Args:
        params: ``{"value", "target_value"}`` (``"target_value"`` only with ``delay_value``).
        batch: ``observation [*B, d]``, ``action``, ``("next", "observation")``,
            ``("next", "reward")`` and ``("next", "terminated")`` ``[*B, 1]``, and the action
            masks when ``config.action_mask_key`` is set.
    """
    owner = "dqn.loss"
    space, var_nums = config.action_space, config.var_nums
    obs = get(batch, "observation", owner=owner)
    next_obs = get(batch, ("next", "observation"), owner=owner)
    mask = next_mask = None
    if config.action_mask_key is not None:
        mask = get(batch, config.action_mask_key, owner=owner)
        next_mask = get(batch, ("next", config.action_mask_key), owner=owner)

    q = mask_action_values(nets.value(params["value"], obs), mask)
    action = get(batch, "action", owner=owner)
    check_action(action, q, config.action_space, owner="dqn.loss")
    q_taken = chosen_action_value(q, action, space)

    online = tree.detach(params["value"])
    target = tree.detach(params["target_value"]) if config.delay_value else online
    q_next = mask_action_values(nets.value(target, next_obs), next_mask)
    if config.double_dqn:
        q_next_online = mask_action_values(nets.value(online, next_obs), next_mask)
        next_value = double_q_value(q_next_online, q_next, space, var_nums)
    else:
        next_value = max_action_value(q_next, space, var_nums)

    reward = get(batch, ("next", "reward"), owner=owner, shape=(1,))
    if reward.shape[:-1] != q_taken.shape:
        raise ValueError(
            f"{owner}: batch[('next', 'reward')] has shape {tuple(reward.shape)}, expected "
            f"{(*q_taken.shape, 1)}"
        )
    terminated = get_flag(batch, ("next", "terminated"), owner=owner, like=reward)
    y = td0_target(reward, terminated, next_value.unsqueeze(-1), config.gamma).squeeze(-1)
    y = y.detach()

    td_error = (q_taken - y).pow(2).detach().unsqueeze(-1)
    value_loss = reduce_loss(distance_loss(q_taken, y, config.loss_function), config.reduction)
    return {"loss": value_loss, "td_error": td_error}


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
