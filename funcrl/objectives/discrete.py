"""Discrete actions, shared by DQN, C51, discrete SAC, QMIX/VDN and :mod:`funcrl.modules.qvalue`.

The action spaces are TorchRL's (``torchrl.data.utils.ACTION_SPACE_MAP``); for action values
``q [*B, n]``:

* ``"one_hot"``: an action is ``[*B, n]`` with a single 1;
* ``"categorical"``: an integer index ``[*B]`` (or ``[*B, 1]`` in a batch);
* ``"mult_one_hot"``: concatenated one-hots, one per group of ``var_nums``,
  ``Q(s, a) = sum_k Q_k(s, a_k)``;
* ``"binary"``: ``n`` independent bits, ``Q(s, a) = sum_i a_i q_i`` (TorchRL's ``QValueModule``
  raises for binary; this is the factorisation its ``DQNLoss`` implies).

The greedy action follows TorchRL's tie-breaking: ``argmax`` (the first maximum) for categorical
actions, ``q == q.max()`` for one-hot ones (a tie sets several ones), ``q > 0`` for bits, all as
int64. Masked actions (``mask`` False) get the lowest finite value before the ``max``.

Action validation: shapes and dtypes are checked always (static, free under ``torch.compile``
and ``vmap``); the values (indices in ``[0, n)``, one-hots of 0/1 with one 1 per group, bits of
0/1) need a host read, so they are checked only where it is free
(:func:`funcrl.jit.can_read_values`): eagerly on the CPU, not under ``torch.compile``/
``funcrl.jit`` tracing, not on ``vmap``-ed actions, and not on an accelerator (where the read
would be a host sync inside the step).
Categorical actions must have an integer dtype (a float index is rejected whatever its value, so
the rule is the same eager and compiled); one-hot and binary actions may be integer, bool or
float.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import torch

from funcrl import tree
from funcrl import values as _values
from funcrl.jit import can_read_values
from funcrl.objectives.common import (
    VALUE_ESTIMATORS,
    check_mode,
    default_net,
    get,
    n_step_discount,
    out_features,
)
from funcrl.record import NestedKey, Record

__all__ = [
    "ACTION_SPACES",
    "action_space_of",
    "var_nums_of",
    "num_action_values",
    "check_action_space",
    "mask_action_values",
    "greedy_action",
    "chosen_action_value",
    "max_action_value",
    "double_q_value",
    "check_action",
    "random_action",
    "sample_categorical",
    "one_hot",
    "epsilon_greedy",
    "default_net",
    "float_dtype",
    "generator",
    "checked_net",
    "init_net",
    "check_net_params",
    "check_same_shape",
    "action_values",
    "check_prioritized",
    "act_on_values",
    "out_features",
    "check_value_estimator",
    "bootstrap_target",
    "QLearning",
    "value_net",
    "q_learning",
    "torch_module",
    "read_params",
    "write_params",
    "inner_module",
    "estimator_of",
    "from_float32",
    "make_estimator",
    "torchrl_spec",
    "num_outputs",
    "POLICY_SPACES",
    "check_policy_space",
    "ensemble_chosen_value",
    "action_log_prob",
    "act_categorical",
]

ACTION_SPACES = ("one_hot", "categorical", "mult_one_hot", "binary")
_ALIASES = {
    "one_hot": "one_hot",
    "one-hot": "one_hot",
    "onehot": "one_hot",
    "categorical": "categorical",
    "mult_one_hot": "mult_one_hot",
    "mult-one-hot": "mult_one_hot",
    "multi_one_hot": "mult_one_hot",
    "multi-one-hot": "mult_one_hot",
    "binary": "binary",
}
_SPEC_SPACES = {
    "OneHot": "one_hot",
    "Categorical": "categorical",
    "MultiOneHot": "mult_one_hot",
    "Binary": "binary",
}

# TorchRL's ValueEstimators for the DQN family: TD(0), TD(1) and TD(lambda).


# --- action spaces -------------------------------------------------------------------------------


def action_space_of(action_space: Any, spec: Any = None, owner: str = "action_space_of") -> str:
    """The canonical name of an action space given by name, by spec, or both (they must agree).

    ``action_space`` may be a name (TorchRL's spellings, e.g. ``"one-hot"``), a discrete spec
    (funcrl's or TorchRL's ``OneHot``/``Categorical``/``MultiOneHot``/``Binary``) or ``None``
    (then ``spec`` decides).

    Raises:
        ValueError: naming ``owner`` for an unknown name or spec, or a name/spec mismatch.
    """
    if action_space is not None and not isinstance(action_space, str):
        spec, action_space = action_space, None
    from_spec = None
    if spec is not None:
        from_spec = _SPEC_SPACES.get(type(spec).__name__)
        if from_spec is None:
            raise ValueError(
                f"{owner}: cannot infer an action space from a {type(spec).__name__} spec; "
                f"expected one of {sorted(_SPEC_SPACES)}"
            )
    if action_space is None:
        if from_spec is None:
            raise ValueError(f"{owner}: pass action_space (one of {ACTION_SPACES}) or a spec")
        return from_spec
    name = _ALIASES.get(action_space)
    if name is None:
        raise ValueError(
            f"{owner}: action_space must be one of {ACTION_SPACES} (or TorchRL's aliases "
            f"{sorted(set(_ALIASES) - set(ACTION_SPACES))}), got {action_space!r}"
        )
    if from_spec is not None and from_spec != name:
        raise ValueError(
            f"{owner}: action_space={action_space!r} does not match the {type(spec).__name__} spec"
        )
    return name


def var_nums_of(var_nums: Any, spec: Any = None) -> tuple[int, ...] | None:
    """Group sizes of a multi-one-hot space: ``var_nums`` itself, else the spec's ``nvec``."""
    if var_nums is not None:
        return (int(var_nums),) if isinstance(var_nums, int) else tuple(int(v) for v in var_nums)
    nvec = getattr(spec, "nvec", None) if spec is not None else None
    if nvec is None:
        return None
    return tuple(int(v) for v in torch.as_tensor(nvec).reshape(-1).tolist())


def check_action_space(owner: str, action_space: Any, var_nums: Any) -> tuple[str, Any]:
    """``(name, var_nums)`` for a Config's ``action_space``/``var_nums`` fields, validated."""
    name = action_space_of(action_space, owner=owner)
    nums = var_nums_of(var_nums, None if isinstance(action_space, str) else action_space)
    if name == "mult_one_hot" and not nums:
        raise ValueError(
            f"{owner}: action_space='mult_one_hot' needs var_nums (the group sizes), or pass the "
            "MultiOneHot spec as action_space"
        )
    if nums is not None and any(n < 1 for n in nums):
        raise ValueError(f"{owner}: var_nums must be positive, got {nums}")
    return name, nums


def num_action_values(action_spec: Any, action_space: str, var_nums: Any, owner: str) -> int:
    """How many action values a Q-network outputs for ``action_spec``: ``n`` (one-hot,
    categorical; a spec's ``.n`` or an int), ``sum(var_nums)`` (multi-one-hot), the number of
    bits (binary: the spec's last dim or an int)."""
    spec_space = _SPEC_SPACES.get(type(action_spec).__name__)
    if spec_space is not None and spec_space != action_space:
        raise ValueError(
            f"{owner}: action_spec is a {type(action_spec).__name__} ({spec_space!r}) but "
            f"config.action_space is {action_space!r}"
        )
    if action_space == "mult_one_hot":
        return int(sum(var_nums))
    if isinstance(action_spec, int) and not isinstance(action_spec, bool):
        return int(action_spec)
    n = getattr(action_spec, "n", None)
    if n is not None and action_space != "binary":
        return int(n)
    shape = getattr(action_spec, "shape", None)
    if action_space == "binary" and shape is not None and len(tuple(shape)):
        return int(tuple(shape)[-1])
    raise TypeError(
        f"{owner}: action_spec must be a discrete spec (with .n) or an int number of actions, "
        f"got {type(action_spec).__name__}"
    )


# --- action values -------------------------------------------------------------------------------


def mask_action_values(
    q: torch.Tensor, mask: torch.Tensor | None, *, owner: str = "mask_action_values"
) -> torch.Tensor:
    """``where(mask, q, finfo.min)``: masked actions are never the greedy action.

    Shapes: ``q [*B, n]``, ``mask [*B, n]`` bool (or a mask broadcast over leading dims, e.g.
    ``[n]``). ``mask=None`` returns ``q``.
    """
    if mask is None:
        return q
    if mask.dtype != torch.bool:
        raise TypeError(f"{owner}: the action mask must be bool, got {mask.dtype}")
    if mask.dim() > q.dim() or mask.shape != q.shape[q.dim() - mask.dim() :]:
        raise ValueError(
            f"{owner}: the action mask has shape {tuple(mask.shape)}, expected the action "
            f"values' shape {tuple(q.shape)}"
        )
    return torch.where(mask, q, torch.finfo(q.dtype).min)


def _one_hot_max(q: torch.Tensor) -> torch.Tensor:
    # TorchRL's QValueModule: every maximum is set (ties give several ones).
    return (q == q.max(dim=-1, keepdim=True).values).to(torch.long)


def _groups(x: torch.Tensor, action_space: str, var_nums) -> list[torch.Tensor]:
    return list(x.split(tuple(var_nums), dim=-1)) if action_space == "mult_one_hot" else [x]


def greedy_action(
    q: torch.Tensor, action_space: str, var_nums: tuple[int, ...] | None = None
) -> torch.Tensor:
    """``argmax_a Q(s, a)`` in ``action_space``'s layout, int64 (TorchRL's tie-breaking).

    Shapes: ``q [*B, n] -> [*B]`` (categorical) or ``[*B, n]`` (the others).
    """
    space = action_space_of(action_space, owner="greedy_action")
    if space == "categorical":
        return q.argmax(-1)
    if space == "binary":
        return (q > 0).to(torch.long)
    if space == "mult_one_hot":
        if var_nums is None or sum(var_nums) != q.shape[-1]:
            raise ValueError(
                f"greedy_action: 'mult_one_hot' needs var_nums summing to the {q.shape[-1]} "
                f"action values, got {var_nums}"
            )
    return torch.cat([_one_hot_max(g) for g in _groups(q, space, var_nums)], -1)


def chosen_action_value(q: torch.Tensor, action: torch.Tensor, action_space: str) -> torch.Tensor:
    """``Q(s, a)`` of ``action`` in ``action_space``'s layout: ``[*B, n] -> [*B]``.

    A categorical action is ``[*B]`` or ``[*B, 1]``; multi-one-hot and binary actions select
    several entries, whose values add up.
    """
    if action_space == "categorical":
        if action.dim() == q.dim() - 1:
            action = action.unsqueeze(-1)
        return q.gather(-1, action.long()).squeeze(-1)
    return (q * action.to(q.dtype)).sum(-1)


def max_action_value(
    q: torch.Tensor, action_space: str, var_nums: tuple[int, ...] | None = None
) -> torch.Tensor:
    """``max_a Q(s, a)``: ``[*B, n] -> [*B]`` (the value of one greedy action, also on ties)."""
    if action_space in ("one_hot", "categorical"):
        return q.max(-1).values
    if action_space == "binary":
        return q.clamp_min(0).sum(-1)
    return torch.stack([g.max(-1).values for g in _groups(q, action_space, var_nums)]).sum(0)


def double_q_value(
    q_online: torch.Tensor,
    q_target: torch.Tensor,
    action_space: str,
    var_nums: tuple[int, ...] | None = None,
) -> torch.Tensor:
    """``Q_target(s', argmax_a' Q_online(s', a'))`` (van Hasselt et al. 2015): ``[*B]``."""
    if action_space in ("one_hot", "mult_one_hot"):
        # First maximum per group: one action even on ties, as the categorical argmax.
        groups = zip(
            _groups(q_online, action_space, var_nums), _groups(q_target, action_space, var_nums)
        )
        return torch.stack(
            [t.gather(-1, o.argmax(-1, keepdim=True)).squeeze(-1) for o, t in groups]
        ).sum(0)
    return chosen_action_value(
        q_target, greedy_action(q_online, action_space, var_nums), action_space
    )


# --- validation ----------------------------------------------------------------------------------


def check_action(
    action: torch.Tensor,
    n: int,
    action_space: str,
    var_nums: tuple[int, ...] | None,
    *,
    batch_shape: tuple[int, ...],
    owner: str,
    key: NestedKey = "action",
) -> torch.Tensor:
    """``action`` after checking it is a valid ``action_space`` action for ``n`` action values.

    Shapes/dtypes always: categorical ``[*B]`` or ``[*B, 1]`` integers, the others ``[*B, n]``.
    Values eagerly only (see the module docstring): indices in ``[0, n)``; one-hot entries 0/1
    with exactly one 1 (per group for multi-one-hot); bits 0/1.

    Raises:
        ValueError/TypeError naming ``owner`` and ``batch[key]``.
    """
    where = f"{owner}: batch[{key!r}]"
    batch_shape = tuple(batch_shape)
    if action_space == "categorical":
        if tuple(action.shape) not in (batch_shape, (*batch_shape, 1)):
            raise ValueError(
                f"{where} has shape {tuple(action.shape)}, expected {batch_shape} or "
                f"{(*batch_shape, 1)} (categorical indices)"
            )
        if action.dtype == torch.bool or action.is_floating_point() or action.is_complex():
            raise TypeError(
                f"{where} is {action.dtype}; categorical actions must be integer indices "
                "(cast with .long())"
            )
        if can_read_values(action) and action.numel():
            lo, hi = int(action.min()), int(action.max())
            if lo < 0 or hi >= n:
                raise ValueError(
                    f"{where} has indices in [{lo}, {hi}], expected [0, {n - 1}] ({n} actions)"
                )
        return action
    if tuple(action.shape) != (*batch_shape, n):
        raise ValueError(
            f"{where} has shape {tuple(action.shape)}, expected {(*batch_shape, n)} "
            f"({action_space})"
        )
    if action.is_complex():
        raise TypeError(f"{where} is {action.dtype}, expected a real or bool dtype")
    if can_read_values(action) and action.numel():
        if not bool(((action == 0) | (action == 1)).all()):
            raise ValueError(f"{where} has entries other than 0 and 1 ({action_space} action)")
        if action_space in ("one_hot", "mult_one_hot"):
            for i, g in enumerate(_groups(action, action_space, var_nums)):
                ones = g.to(torch.int64).sum(-1)
                if not bool((ones == 1).all()):
                    group = f" in group {i}" if action_space == "mult_one_hot" else ""
                    raise ValueError(
                        f"{where} has rows with {int(ones.min())}..{int(ones.max())} ones"
                        f"{group}, expected exactly one ({action_space} action)"
                    )
    return action


# --- exploration ---------------------------------------------------------------------------------


def sample_categorical(logits: torch.Tensor, key: torch.Tensor | None) -> torch.Tensor:
    """An index drawn with probabilities ``softmax(logits)`` (``-inf`` never drawn): ``[*B, n] ->
    [*B]``, from ``key`` (:func:`funcrl.random.categorical`) or the global RNG (as
    ``torch.distributions.Categorical(logits=...).sample()``, TorchRL's draw)."""
    if key is None:
        # The global RNG in TorchRL's draw (a Categorical distribution's multinomial sample).
        return torch.distributions.Categorical(logits=logits).sample()
    from funcrl import random

    return random.categorical(key, logits)


def random_action(
    like: torch.Tensor,
    action_space: str,
    var_nums: tuple[int, ...] | None = None,
    mask: torch.Tensor | None = None,
    *,
    key: torch.Tensor | None = None,
) -> torch.Tensor:
    """A uniformly random action among the allowed ones, in the layout of ``greedy_action``.

    Args:
        like: the action values ``[*B, n]`` (only shape, dtype and device are read).
        mask: bool ``[*B, n]`` (broadcastable); masked actions are never drawn (a row with no
            allowed action draws uniformly, as there is nothing better).
        key: a :mod:`funcrl.random` key, or ``None`` for the global RNG.
    """
    if action_space == "binary":
        if key is None:
            return (torch.rand_like(like) < 0.5).to(torch.long)
        from funcrl import random

        return random.bernoulli(key, 0.5, like.shape).to(torch.long)
    logits = torch.zeros_like(like)
    if mask is not None:
        logits = torch.where(mask, logits, -torch.inf)
    # A group with no allowed action draws uniformly over it: there is nothing better to do.
    groups = [
        torch.where(torch.isfinite(g).any(-1, keepdim=True), g, 0.0)
        for g in _groups(logits, action_space, var_nums)
    ]
    if action_space == "mult_one_hot":
        from funcrl import random

        keys = random.split_optional(key, len(groups))
        return torch.cat(
            [one_hot(sample_categorical(g, k), g.shape[-1]) for g, k in zip(groups, keys)],
            -1,
        )
    index = sample_categorical(groups[0], key)
    if action_space == "categorical":
        return index
    return one_hot(index, like.shape[-1])


def one_hot(index: torch.Tensor, n: int) -> torch.Tensor:
    """``[*B]`` int indices -> ``[*B, n]`` int64 one-hots."""
    # F.one_hot reads the indices on the host; a comparison stays traceable under vmap/compile.
    return (index.unsqueeze(-1) == torch.arange(n, device=index.device)).to(torch.long)


def epsilon_greedy(
    q: torch.Tensor,
    action_space: str,
    var_nums: tuple[int, ...] | None = None,
    mask: torch.Tensor | None = None,
    *,
    epsilon: float | torch.Tensor,
    key: torch.Tensor | None = None,
) -> torch.Tensor:
    """TorchRL's ``EGreedyModule`` on the greedy action: with probability ``epsilon`` per row a
    uniformly random allowed action, else the (masked) greedy action.

    Two draws in a fixed order: the coin (``[*B]`` uniforms), then the random action. With ``key``
    the key is split once per draw; with ``None`` the global RNG is used.

    Shapes: ``q [*B, n] -> action`` in ``greedy_action``'s layout.
    """
    greedy = greedy_action(
        mask_action_values(q, mask, owner="epsilon_greedy"), action_space, var_nums
    )
    if key is None:
        coin = torch.rand(q.shape[:-1], dtype=q.dtype, device=q.device)
        explore = random_action(q, action_space, var_nums, mask)
    else:
        from funcrl import random

        k_coin, k_action = random.split(key, 2)
        coin = random.uniform(k_coin, q.shape[:-1], q.dtype).to(q.device)
        explore = random_action(q, action_space, var_nums, mask, key=k_action)
    take = coin < epsilon
    if greedy.dim() == q.dim():
        take = take.unsqueeze(-1)
    return torch.where(take, explore, greedy)


# --- nets and params -----------------------------------------------------------------------------


def float_dtype(params: Any, owner: str, name: str) -> torch.dtype:
    """The floating dtype of ``params[name]``'s leaves (what the batch must match)."""
    from funcrl import tree

    for leaf in tree.leaves(params):
        if isinstance(leaf, torch.Tensor) and leaf.is_floating_point():
            return leaf.dtype
    raise TypeError(f"{owner}: params[{name!r}] hold no floating-point tensor")


def generator(seed: Any, owner: str = "init") -> torch.Generator:
    """:func:`funcrl.nn.make_generator` (an ``int``, a ``torch.Generator`` or a
    :mod:`funcrl.random` key) with errors naming ``owner``. Host-side; never the global RNG."""
    from funcrl.nn import make_generator

    try:
        return make_generator(seed)
    except (TypeError, ValueError) as e:
        raise type(e)(f"{owner}: {e}") from None


def checked_net(net: Any, owner: str, name: str) -> Any:
    """``net`` after checking it is a funcrl net (``init`` and ``__call__``)."""
    if not (callable(getattr(net, "init", None)) and callable(net)):
        raise TypeError(
            f"{owner}: nets.{name} must be a funcrl net (with .init and __call__), got "
            f"{net!r}; a plain function cannot say what its params are"
        )
    return net


def init_net(net: Any, seed: Any, device: Any, dtype: torch.dtype, owner: str, name: str) -> Any:
    """``net.init(seed)``: params for one ``Nets`` field (a funcrl net, with ``init``); ``seed``
    is a ``torch.Generator`` from :func:`generator`."""
    return checked_net(net, owner, name).init(seed, device=device, dtype=dtype)


def check_net_params(net: Any, params: Mapping[str, Any], names: Sequence[str], owner: str) -> None:
    """Checks ``params[name]`` against ``net`` for each name (a funcrl net's ``check_params``:
    static structure and shapes, free under compile), so a mismatch names the loss and the key."""
    check = getattr(net, "check_params", None)
    if check is None:
        return
    for name in names:
        if name in params:
            check(params[name], owner=f"{owner}: params[{name!r}]")


def check_same_shape(owner: str, a: torch.Tensor, b: torch.Tensor, ka: Any, kb: Any) -> None:
    if a.shape != b.shape:
        raise ValueError(
            f"{owner}: batch[{kb!r}] has shape {tuple(b.shape)}, expected batch[{ka!r}]'s "
            f"{tuple(a.shape)}"
        )


def action_values(
    net: Any, params: Any, obs: torch.Tensor, lead: tuple[int, ...], owner: str, name: str
) -> torch.Tensor:
    """``net(params, obs)`` after checking it is ``[*lead, n]`` action values."""
    q = net(params, obs)
    if q.dim() != len(lead) + 1 or tuple(q.shape[:-1]) != tuple(lead):
        raise ValueError(
            f"{owner}: nets.{name} returned shape {tuple(q.shape)}, expected "
            f"{(*lead, 'n')} action values"
        )
    return q


def check_prioritized(owner: str, value: Any) -> None:
    if not (value is True or value is False or value == "auto"):
        raise ValueError(
            f"{owner}: use_prioritized_weights must be one of ('auto', True, False), got {value!r}"
        )


def act_on_values(
    q: torch.Tensor,
    config: Any,
    action_mask: torch.Tensor | None,
    *,
    mode: str,
    epsilon: float | torch.Tensor,
    key: torch.Tensor | None,
    owner: str,
) -> torch.Tensor:
    """The greedy (deterministic) or epsilon-greedy (random) action on ``q [*B, n]``, masked by
    ``action_mask`` (required exactly when ``config.action_mask_key`` is set)."""
    check_mode(owner, mode)
    if getattr(config, "action_mask_key", None) is not None and action_mask is None:
        raise ValueError(
            f"{owner}: config.action_mask_key={config.action_mask_key!r} is set; pass "
            "action_mask= (bool [*B, n]) so the action honours it"
        )
    q = mask_action_values(q, action_mask, owner=owner) if action_mask is not None else q
    space, var_nums = config.action_space, getattr(config, "var_nums", None)
    if mode == "deterministic":
        return greedy_action(q, space, var_nums)
    if isinstance(epsilon, (int, float)) and not 0.0 <= epsilon <= 1.0:
        raise ValueError(f"{owner}: epsilon must be in [0, 1], got {epsilon}")
    return epsilon_greedy(q, space, var_nums, action_mask, epsilon=epsilon, key=key)


# --- default nets --------------------------------------------------------------------------------


# --- value estimators ----------------------------------------------------------------------------


def check_value_estimator(owner: str, value_estimator: str, lmbda: float) -> None:
    if value_estimator not in VALUE_ESTIMATORS:
        raise ValueError(
            f"{owner}: value_estimator must be one of {VALUE_ESTIMATORS}, got {value_estimator!r}"
        )
    if not 0.0 <= float(lmbda) <= 1.0:
        raise ValueError(f"{owner}: lmbda must be in [0, 1], got {lmbda}")


def bootstrap_target(
    config: Any,
    batch: Record,
    next_value: torch.Tensor,
    *,
    owner: str,
    reward_key: NestedKey = ("next", "reward"),
    done_key: NestedKey = ("next", "done"),
    terminated_key: NestedKey = ("next", "terminated"),
) -> torch.Tensor:
    """The detached value target ``y [*B]`` for ``next_value = V(s') [*B]`` under
    ``config.value_estimator`` (TorchRL's ``make_value_estimator`` for the DQN family):

    * ``"td0"``: ``y = r + gamma (1 - terminated) V(s')`` (:func:`funcrl.values.td0_return_estimate`);
    * ``"td1"``: the discounted return bootstrapped at trajectory ends;
    * ``"td_lambda"``: TD(``lmbda``), both by :mod:`funcrl.values` over the batch's last batch
      dim as time (TorchRL's ``[*B, T]`` trajectory layout; needs ``("next", "done")``).

    Reward and flags are ``[*B, 1]`` (TorchRL's layout), read with ``next_value``'s dtype.
    """
    shape = (*next_value.shape, 1)
    reward = get(batch, reward_key, owner=owner, shape=(1,), dtype=next_value.dtype)
    if tuple(reward.shape) != shape:
        raise ValueError(
            f"{owner}: batch[{reward_key!r}] has shape {tuple(reward.shape)}, expected {shape}"
        )
    terminated = _flag(batch, terminated_key, shape, owner)
    v = next_value.unsqueeze(-1).detach()
    if config.value_estimator == "td0":
        gamma = n_step_discount(batch, config.gamma, reward, owner=owner)
        return _values.td0_return_estimate(gamma, v, reward, terminated).squeeze(-1).detach()
    done = _flag(batch, done_key, shape, owner) | terminated
    if config.value_estimator == "td1":
        y = _values.td1_return_estimate(config.gamma, v, reward, done, terminated)
    else:
        y = _values.td_lambda_return_estimate(
            config.gamma, config.lmbda, v, reward, done, terminated
        )
    return y.squeeze(-1).detach()


class QLearning(NamedTuple):
    """The Q-learning terms of a batch (:func:`q_learning`).

    Attributes:
        raw_q: ``Q(s, .)`` ``[*B, n]`` before masking (gradients flow).
        q: ``raw_q`` with the disallowed actions at the dtype's lowest value.
        q_taken: ``Q(s, a)`` ``[*B]`` of the batch's action (gradients flow).
        target: the detached value target ``y`` ``[*B]`` (:func:`bootstrap_target`).
    """

    raw_q: torch.Tensor
    q: torch.Tensor
    q_taken: torch.Tensor
    target: torch.Tensor


def value_net(params: Mapping[str, Any], obs: torch.Tensor, nets: Any, owner: str) -> Any:
    """The concrete value net of a value-based objective's ``nets`` (``nets.resolve(obs_dim,
    num_actions)``; the default net's output size read from ``params["value"]``)."""
    n = out_features(params["value"], owner, "value") if nets.value is None else 0
    return nets.resolve(obs.shape[-1], n).value


def q_learning(
    params: Mapping[str, Any],
    batch: Record,
    config: Any,
    nets: Any,
    *,
    owner: str,
    var_nums: Any = None,
    double_dqn: bool = False,
) -> QLearning:
    """DQN's terms, shared by the value-based losses (``dqn``, ``discrete_cql``): reads and checks
    the batch, ``Q(s, .)`` from ``params["value"]`` (masked by ``config.action_mask_key``),
    ``Q(s, a)`` of the batch's action, and the target from ``params["target_value"]`` (or the
    gradient-stopped online params without ``config.delay_value``): ``max_a' Q'(s', a')``, or
    with ``double_dqn`` ``Q'(s', argmax_a' Q(s', a'))``, through :func:`bootstrap_target`.

    Args:
        params: ``{"value", "target_value"}`` (``"target_value"`` only with ``delay_value``).
        batch: ``observation [*B, o]``, ``action``, ``("next", "observation")``, reward and
            flags ``[*B, 1]``, the masks when ``config.action_mask_key`` is set.
        config: has ``action_space``, ``action_mask_key``, ``delay_value`` and the value
            estimator's fields.
        nets: has ``value`` and ``resolve(obs_dim, num_actions)``.
    """
    space = config.action_space
    dtype = float_dtype(params["value"], owner, "value")
    lead = tuple(batch.batch_size)
    obs = get(batch, "observation", owner=owner, dtype=dtype)
    next_obs = get(batch, ("next", "observation"), owner=owner, dtype=dtype)
    check_same_shape(owner, obs, next_obs, "observation", ("next", "observation"))
    net = value_net(params, obs, nets, owner)
    check_net_params(net, params, ("value", "target_value"), owner)

    raw_q = action_values(net, params["value"], obs, lead, owner, "value")
    mask = next_mask = None
    if config.action_mask_key is not None:
        n = (raw_q.shape[-1],)
        mask = get(batch, config.action_mask_key, owner=owner, shape=n)
        next_mask = get(batch, ("next", config.action_mask_key), owner=owner, shape=n)
    q = mask_action_values(raw_q, mask, owner=owner)
    action = get(batch, "action", owner=owner)
    check_action(action, q.shape[-1], space, var_nums, batch_shape=lead, owner=owner, key="action")
    q_taken = chosen_action_value(q, action, space)

    online = tree.detach(params["value"])
    target = tree.detach(params["target_value"]) if config.delay_value else online
    q_next = mask_action_values(net(target, next_obs), next_mask, owner=owner)
    if double_dqn:
        q_next_online = mask_action_values(net(online, next_obs), next_mask, owner=owner)
        next_value = double_q_value(q_next_online, q_next, space, var_nums)
    else:
        next_value = max_action_value(q_next, space, var_nums)
    y = bootstrap_target(config, batch, next_value, owner=owner)
    return QLearning(raw_q, q, q_taken, y)


def _flag(batch: Record, key: NestedKey, shape: tuple[int, ...], owner: str) -> torch.Tensor:
    x = get(batch, key, owner=owner, shape=(1,))
    if tuple(x.shape) != shape:
        raise ValueError(f"{owner}: batch[{key!r}] has shape {tuple(x.shape)}, expected {shape}")
    if x.is_complex():
        raise TypeError(f"{owner}: batch[{key!r}] is {x.dtype}, expected bool")
    return x.bool()


# --- TorchRL interop -----------------------------------------------------------------------------
# The objectives' from_torchrl/to_torchrl move params between funcrl pytrees and a TorchRL loss
# module's functional params (TensorDicts laid out like the wrapped torch modules): each side is
# swapped into the torch module (TensorDict.to_module) and read or written with
# funcrl.nn.from_module / to_module, so every net layout funcrl.nn converts works here.

_ESTIMATORS = {"TD0Estimator": "td0", "TD1Estimator": "td1", "TDLambdaEstimator": "td_lambda"}


def _layout(net: Any) -> str:
    from funcrl.nn import TorchModule

    return "flat" if isinstance(net, TorchModule) else "funcrl"


def torch_module(net: Any, params: Any, owner: str) -> torch.nn.Module:
    """A torch module computing ``net(params, x)``, for a TorchRL loss: a
    :class:`funcrl.nn.TorchModule`'s module (copied, ``params`` loaded) or TorchRL's ``MLP`` for
    a :class:`funcrl.nn.MLP` with linear layers and no norm or dropout.

    Raises:
        TypeError: naming ``owner`` for another net (wrap a torch module in ``TorchModule``).
    """
    import copy

    from funcrl.nn import MLP, TorchModule, to_module
    from funcrl.nn.convert import _ACTIVATION_NAMES

    dtype = float_dtype(params, owner, "params")
    if isinstance(net, TorchModule):
        module = copy.deepcopy(net.module)
        return to_module(params, module.to(dtype), layout="flat")
    classes = {name: cls for cls, name in _ACTIVATION_NAMES.items()}
    if (
        isinstance(net, MLP)
        and net.norm is None
        and net.dropout is None
        and getattr(net, "layer_class", "linear") == "linear"
        and net.activation in classes
    ):
        from torchrl.modules import MLP as TorchRLMLP

        module = TorchRLMLP(
            in_features=net.in_features,
            out_features=net.out_features,
            num_cells=list(net.hidden_sizes),
            activation_class=classes[net.activation],
            activate_last_layer=net.activate_last_layer,
            bias_last_layer=net.bias_last_layer,
        )
        return to_module(params, module.to(dtype))
    raise TypeError(
        f"{owner}: cannot build a torch module for {net!r}; use a funcrl.nn.MLP (linear layers, "
        "no norm or dropout, a named activation) or wrap a torch module in funcrl.nn.TorchModule"
    )


def read_params(td: Any, wrapper: torch.nn.Module, inner: torch.nn.Module, net: Any) -> Any:
    """funcrl params of ``inner`` from TorchRL functional params ``td`` of ``wrapper`` (a leading
    ensemble dim, if any, stacks them)."""
    from funcrl import tree
    from funcrl.nn import from_module

    if td.batch_dims:
        return tree.stack([read_params(td[i], wrapper, inner, net) for i in range(td.shape[0])])
    with td.to_module(wrapper):
        return from_module(inner, layout=_layout(net))


def write_params(
    params: Any, td: Any, wrapper: torch.nn.Module, inner: torch.nn.Module, net: Any
) -> None:
    """Writes funcrl ``params`` into the TorchRL functional params ``td`` of ``wrapper``, in place
    (members of a stacked ensemble one by one)."""
    from funcrl import tree
    from funcrl.nn import to_module

    if td.batch_dims:
        for i in range(td.shape[0]):
            write_params(tree.map(lambda x, i=i: x[i], params), td[i], wrapper, inner, net)
        return
    with td.to_module(wrapper), torch.no_grad():
        to_module(params, inner, layout=_layout(net))


def inner_module(wrapper: torch.nn.Module, owner: str) -> torch.nn.Module:
    """The network inside a TorchRL actor or value module: the first ``TensorDictModule``'s
    ``module`` that is not a q-value head."""
    from tensordict.nn import TensorDictModule, TensorDictSequential

    for m in wrapper.modules():
        if isinstance(m, TensorDictModule) and not isinstance(m, TensorDictSequential):
            if not type(m).__name__.endswith("QValueModule"):
                return m.module
    raise TypeError(f"{owner}: found no TensorDictModule network inside {type(wrapper).__name__}")


def estimator_of(loss_module: Any, owner: str) -> tuple[str, float, float]:
    """``(value_estimator, gamma, lmbda)`` of a TorchRL loss (its default estimator if unset)."""
    est = loss_module.value_estimator
    name = _ESTIMATORS.get(type(est).__name__)
    if name is None:
        raise TypeError(f"{owner}: value estimator {type(est).__name__} has no funcrl equivalent")
    lmbda = from_float32(getattr(est, "lmbda", 0.95)) if name == "td_lambda" else 0.95
    return name, from_float32(est.gamma), lmbda


def from_float32(x: Any) -> float:
    """The shortest decimal that rounds to ``float32(x)``: TorchRL keeps gamma, lmbda, alpha
    bounds and the support as float32 buffers (0.99 reads back as 0.9900000095...), and this is
    the value the user gave."""
    import numpy as np

    return float(np.format_float_positional(np.float32(float(x)), unique=True))


def make_estimator(loss_module: Any, config: Any) -> None:
    """``loss_module.make_value_estimator`` for ``config.value_estimator``/``gamma``/``lmbda``."""
    from torchrl.objectives import ValueEstimators

    kind = getattr(config, "value_estimator", "td0")
    if kind == "td_lambda":
        loss_module.make_value_estimator(
            ValueEstimators.TDLambda, gamma=config.gamma, lmbda=config.lmbda
        )
    else:
        value_type = ValueEstimators.TD1 if kind == "td1" else ValueEstimators.TD0
        loss_module.make_value_estimator(value_type, gamma=config.gamma)


def torchrl_spec(action_space: str, n: int, var_nums: Any = None, shape: tuple = ()) -> Any:
    """TorchRL's action spec for ``action_space`` with ``n`` action values (per agent when
    ``shape`` has leading agent dims)."""
    from torchrl.data import Binary, Categorical, MultiOneHot, OneHot

    if action_space == "one_hot":
        return OneHot(n, shape=(*shape, n))
    if action_space == "categorical":
        return Categorical(n, shape=shape)
    if action_space == "mult_one_hot":
        return MultiOneHot(list(var_nums), shape=(*shape, n))
    return Binary(n, shape=(*shape, n))


def num_outputs(net: Any, given: int | None, owner: str) -> int:
    """``given``, else ``net.out_features`` when it is an int (a TorchRL spec needs the width)."""
    if given is not None:
        return int(given)
    out = getattr(net, "out_features", None)
    if isinstance(out, int):
        return out
    raise TypeError(
        f"{owner}: cannot read the number of actions from {type(net).__name__}; pass num_actions="
    )


# --- categorical policies and critic ensembles (discrete SAC, discrete IQL, discrete CQL) -------

POLICY_SPACES = ("one_hot", "categorical")


def check_policy_space(owner: str, action_space: Any) -> str:
    """The canonical name of ``action_space`` for a loss over one categorical choice: ``"one_hot"``
    or ``"categorical"`` (TorchRL's discrete IQL/CQL/SAC losses raise for the other spaces).

    Raises:
        ValueError: naming ``owner`` and ``action_space``.
    """
    name = action_space_of(action_space, owner=owner)
    if name not in POLICY_SPACES:
        raise ValueError(
            f"{owner}: action_space must be one of {POLICY_SPACES}, got {action_space!r}"
        )
    return name


def ensemble_chosen_value(q: torch.Tensor, action: torch.Tensor, action_space: str) -> torch.Tensor:
    """``Q_i(s, a)`` of the data's action for every member: ``q [N, *B, n] -> [N, *B]``."""
    return chosen_action_value(q, action.expand(q.shape[0], *action.shape), action_space)


def action_log_prob(logits: torch.Tensor, action: torch.Tensor, action_space: str) -> torch.Tensor:
    """``log pi(a|s)`` of a categorical policy with ``logits [*B, n]`` at a valid one-hot or index
    action: ``[*B]`` (``torch.distributions.Categorical``/``OneHotCategorical``'s ``log_prob``)."""
    return chosen_action_value(torch.log_softmax(logits, -1), action, action_space)


def act_categorical(
    logits: torch.Tensor,
    action_space: str,
    *,
    mode: str,
    key: torch.Tensor | None,
    action_mask: torch.Tensor | None = None,
    owner: str = "act_categorical",
) -> torch.Tensor:
    """A draw from ``softmax(logits)`` (``mode="random"``) or its mode (``"deterministic"``), masked
    actions never chosen: ``[*B, n] ->`` one-hot ``[*B, n]`` or index ``[*B]`` int64 actions."""
    check_mode(owner, mode)
    logits = mask_action_values(logits, action_mask, owner=owner)
    index = logits.argmax(-1) if mode == "deterministic" else sample_categorical(logits, key)
    return index if action_space == "categorical" else one_hot(index, logits.shape[-1])
