"""Q-value policies: action values -> greedy action, as pure functions and keyed modules.

Action spaces (TorchRL's names; ``"one-hot"`` style spellings are accepted too):

* ``"one_hot"``: ``action_value [*batch, n] -> action [*batch, n]`` (int64 one-hot; ties give
  several ones, as TorchRL's ``value == value.max()``);
* ``"categorical"``: ``[*batch, n] -> [*batch]`` (int64 index, ``argmax``);
* ``"mult_one_hot"``: ``[*batch, sum(nvec)] -> [*batch, sum(nvec)]``, one-hot per component;
* ``"binary"``: ``[*batch, n] -> [*batch, n]``, bit ``i`` set where ``value_i > 0``. TorchRL
  raises ``NotImplementedError``; funcrl uses the factorisation its DQN loss implies,
  ``Q(s, a) = sum_i a_i * value_i``, whose maximiser is ``a_i = [value_i > 0]``.

``chosen_action_value`` is ``value.gather(-1, action[..., None])`` for ``"categorical"`` and
``(action * value).sum(-1, keepdim=True)`` otherwise, ``[*batch, 1]``. Masked-out actions
(``action_mask`` False) get ``finfo.min`` before the argmax. The action-space functions are
:mod:`funcrl.objectives.discrete`'s, shared with the DQN family's objectives.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.nn.functional as F

from funcrl.modules.keyed import Keyed, as_keys, read_key, spec_for, spec_items
from funcrl.nn.core import Module, Params, make_generator
from funcrl.objectives.discrete import (
    ACTION_SPACES,
    action_space_of,
    greedy_action,
    mask_action_values,
    var_nums_of,
)
from funcrl.objectives.discrete import chosen_action_value as _chosen
from funcrl.record import NestedKey, Record

__all__ = [
    "ACTION_SPACES",
    "action_space_of",
    "mask_action_values",
    "greedy_action",
    "chosen_action_value",
    "support_expected",
    "QValueModule",
    "QValueActor",
    "DistributionalQValueModule",
    "DistributionalQValueActor",
]


def support_expected(log_probs: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
    """Expected value of each action's return distribution.

    Args:
        log_probs: ``[*batch, n_atoms, n_actions]`` log-softmax over the atoms.
        support: ``[n_atoms]`` atom values.

    Returns:
        ``[*batch, n_actions]``: ``sum_j exp(log_probs[..., j, a]) * support[j]``.
    """
    if log_probs.ndim < 2 or log_probs.shape[-2] != support.shape[-1]:
        raise ValueError(
            f"support_expected: action_value shape {tuple(log_probs.shape)} must be "
            f"[*batch, n_atoms={support.shape[-1]}, n_actions]"
        )
    support = support.to(device=log_probs.device, dtype=log_probs.dtype)
    return (log_probs.exp() * support.unsqueeze(-1)).sum(-2)


def chosen_action_value(
    action_value: torch.Tensor, action: torch.Tensor, action_space: str
) -> torch.Tensor:
    """``Q(s, a)`` of ``action`` as ``[*batch, 1]`` (TorchRL's ``chosen_action_value`` entry):
    :func:`funcrl.objectives.discrete.chosen_action_value` with a trailing unit dim."""
    space = action_space_of(action_space, owner="chosen_action_value")
    return _chosen(action_value, action, space).unsqueeze(-1)


def _leaf_action_spec(spec: Any, action_key: NestedKey, owner: str) -> tuple[Any, tuple]:
    items = spec_items(spec, (action_key,), owner)
    return spec_for(items, action_key), items


@dataclasses.dataclass(frozen=True, eq=False)
class QValueModule(Module):
    """``action_value -> (action, action_value, chosen_action_value)`` (TorchRL's QValueModule).

    Reads ``action_value_key`` (and ``action_mask_key`` when given) and writes
    ``out_keys = (action, action_value, chosen_action_value)``; the written action values are
    the masked ones, as in TorchRL. Params: none.

    Args:
        action_space: one of :data:`ACTION_SPACES` (or inferred from ``spec``).
        action_value_key: default ``"action_value"``.
        action_mask_key: optional ``[*batch, n]`` bool mask.
        out_keys: default ``("action", action_value_key, "chosen_action_value")``.
        var_nums: component sizes for ``"mult_one_hot"`` (default: the spec's ``nvec``).
        spec: the action spec.
        safe: project the action onto the spec.
    """

    action_space: str | None = None
    action_value_key: NestedKey = "action_value"
    action_mask_key: NestedKey | None = None
    out_keys: Any = None
    var_nums: Any = None
    spec: Any = None
    safe: bool = False

    def __post_init__(self) -> None:
        owner = type(self).__name__
        out = self._default_out_keys() if self.out_keys is None else as_keys(self.out_keys, owner)
        leaf, items = _leaf_action_spec(self.spec, out[0], owner)
        object.__setattr__(self, "action_space", action_space_of(self.action_space, leaf, owner))
        object.__setattr__(self, "out_keys", out)
        object.__setattr__(self, "spec", items)
        object.__setattr__(self, "var_nums", var_nums_of(self.var_nums, leaf))
        if self.action_value_key not in out:
            raise ValueError(
                f"{owner}: out_keys {list(out)} must contain action_value_key "
                f"{self.action_value_key!r}"
            )
        if self.action_space == "mult_one_hot" and self.var_nums is None:
            raise ValueError(f"{owner}: 'mult_one_hot' needs var_nums or a MultiOneHot spec")
        if self.safe and leaf is None:
            raise ValueError(f"{owner}: safe=True requires an action spec")

    def _default_out_keys(self) -> tuple[NestedKey, ...]:
        return ("action", self.action_value_key, "chosen_action_value")

    @property
    def in_keys(self) -> tuple[NestedKey, ...]:
        keys = (self.action_value_key,)
        return keys if self.action_mask_key is None else (*keys, self.action_mask_key)

    def init(self, seed=0, *, device=None, dtype=torch.float32) -> Params:
        return {}

    def _values(self, record: Record) -> torch.Tensor:
        owner = type(self).__name__
        values = read_key(record, self.action_value_key, owner)
        if self.action_mask_key is not None:
            values = self._mask(values, read_key(record, self.action_mask_key, owner))
        return values

    def _mask(self, values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return mask_action_values(values, mask, owner=type(self).__name__)

    def _project(self, action: torch.Tensor) -> torch.Tensor:
        if self.safe:
            s = spec_for(self.spec, self.out_keys[0])
            if s is not None:
                action = s.project(action)
        return action

    def __call__(self, params: Params, record: Record, **options: Any) -> Record:
        values = self._values(record)
        action = greedy_action(values, self.action_space, self.var_nums)
        chosen = chosen_action_value(values, action, self.action_space)
        outs = (self._project(action), values, chosen)
        for key, value in zip(self.out_keys, outs):
            record = record.set(key, value)
        return record


@dataclasses.dataclass(frozen=True, eq=False)
class DistributionalQValueModule(QValueModule):
    """Greedy action from return distributions (C51; TorchRL's DistributionalQValueModule).

    ``action_value`` is ``[*batch, n_atoms, n_actions]`` log-softmax over the atoms; the expected
    values ``sum_j p_j * support_j`` (:func:`support_expected`) are maximised. Writes
    ``out_keys = (action, action_value)``.

    Masks: TorchRL fills masked log-probs with ``finfo.min``, which gives those actions an
    expected value of 0 (not -inf) and can select them; funcrl masks the expected values
    instead, so a masked action is never chosen. The written ``action_value`` is unmasked.
    TorchRL's host-side check that the inputs are non-positive is omitted (no host sync).

    Args:
        support: ``[n_atoms]`` atom values.
        (others as :class:`QValueModule`)
    """

    support: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.support is None:
            raise ValueError("DistributionalQValueModule: support is required")
        super().__post_init__()

    def _default_out_keys(self) -> tuple[NestedKey, ...]:
        return ("action", self.action_value_key)

    def __call__(self, params: Params, record: Record, **options: Any) -> Record:
        owner = type(self).__name__
        log_probs = read_key(record, self.action_value_key, owner)
        if self.action_space == "mult_one_hot":
            parts = log_probs.split(self.var_nums, dim=-1)
            q = torch.cat([support_expected(p, self.support) for p in parts], -1)
        else:
            q = support_expected(log_probs, self.support)
        if self.action_mask_key is not None:
            q = mask_action_values(q, read_key(record, self.action_mask_key, owner))
        action = greedy_action(q, self.action_space, self.var_nums)
        record = record.set(self.out_keys[0], self._project(action))
        return record.set(self.out_keys[1], log_probs)


def _value_module(net: Any, in_keys: Any, action_value_key: NestedKey, owner: str) -> Any:
    out_keys = getattr(net, "out_keys", None)
    if out_keys is not None and hasattr(net, "in_keys"):
        if action_value_key not in tuple(out_keys):
            raise KeyError(
                f"{owner}: the keyed module's out_keys {list(out_keys)} do not contain "
                f"{action_value_key!r}"
            )
        return net
    return Keyed(net, ("observation",) if in_keys is None else in_keys, (action_value_key,))


@dataclasses.dataclass(frozen=True, eq=False)
class QValueActor(Module):
    """A Q-network followed by :class:`QValueModule` (TorchRL's QValueActor).

    Params are the network's params. ``net`` is a network ``net(params, *inputs)`` (wrapped to
    read ``in_keys`` and write ``action_value_key``) or a keyed module writing it.

    Args:
        net: the Q-network.
        in_keys: default ``("observation",)``.
        spec: the action spec (infers the action space).
        safe: project the action onto the spec.
        action_space, action_value_key, action_key, chosen_action_value_key, action_mask_key:
            as :class:`QValueModule`.
    """

    net: Any
    in_keys: Any = None
    spec: Any = None
    safe: bool = False
    action_space: str | None = None
    action_value_key: NestedKey = "action_value"
    action_key: NestedKey = "action"
    chosen_action_value_key: NestedKey = "chosen_action_value"
    action_mask_key: NestedKey | None = None
    var_nums: Any = None

    def __post_init__(self) -> None:
        owner = type(self).__name__
        value = _value_module(self.net, self.in_keys, self.action_value_key, owner)
        head = QValueModule(
            action_space=self.action_space,
            action_value_key=self.action_value_key,
            action_mask_key=self.action_mask_key,
            out_keys=(self.action_key, self.action_value_key, self.chosen_action_value_key),
            var_nums=self.var_nums,
            spec=self.spec,
            safe=self.safe,
        )
        object.__setattr__(self, "_value", value)
        object.__setattr__(self, "_head", head)
        object.__setattr__(self, "in_keys", tuple(value.in_keys))
        object.__setattr__(self, "action_space", head.action_space)
        object.__setattr__(self, "var_nums", head.var_nums)

    @property
    def out_keys(self) -> tuple[NestedKey, ...]:
        return self._head.out_keys

    def init(self, seed=0, *, device=None, dtype=torch.float32) -> Params:
        return self._value.init(make_generator(seed), device=device, dtype=dtype)

    def __call__(self, params: Params, record: Record, **options: Any) -> Record:
        return self._head(None, self._value(params, record, **options), **options)


@dataclasses.dataclass(frozen=True, eq=False)
class DistributionalQValueActor(Module):
    """A distributional Q-network followed by :class:`DistributionalQValueModule`.

    The network writes ``action_value`` ``[*batch, n_atoms, n_actions]`` logits; with
    ``make_log_softmax=True`` (TorchRL's default) a log-softmax over the atoms (dim -2) is
    applied first, as TorchRL's ``DistributionalDQNnet``.
    """

    net: Any
    support: torch.Tensor
    in_keys: Any = None
    spec: Any = None
    safe: bool = False
    var_nums: Any = None
    action_space: str | None = None
    action_value_key: NestedKey = "action_value"
    action_mask_key: NestedKey | None = None
    make_log_softmax: bool = True

    def __post_init__(self) -> None:
        owner = type(self).__name__
        value = _value_module(self.net, self.in_keys, self.action_value_key, owner)
        head = DistributionalQValueModule(
            action_space=self.action_space,
            action_value_key=self.action_value_key,
            action_mask_key=self.action_mask_key,
            var_nums=self.var_nums,
            spec=self.spec,
            safe=self.safe,
            support=self.support,
        )
        object.__setattr__(self, "_value", value)
        object.__setattr__(self, "_head", head)
        object.__setattr__(self, "in_keys", tuple(value.in_keys))
        object.__setattr__(self, "action_space", head.action_space)
        object.__setattr__(self, "var_nums", head.var_nums)

    @property
    def out_keys(self) -> tuple[NestedKey, ...]:
        return self._head.out_keys

    def init(self, seed=0, *, device=None, dtype=torch.float32) -> Params:
        return self._value.init(make_generator(seed), device=device, dtype=dtype)

    def __call__(self, params: Params, record: Record, **options: Any) -> Record:
        record = self._value(params, record, **options)
        if self.make_log_softmax:
            logits = record[self.action_value_key]
            if logits.ndim < 2:
                raise ValueError(
                    f"{type(self).__name__}: action_value must be [*batch, n_atoms, n_actions], "
                    f"got {tuple(logits.shape)}"
                )
            record = record.set(self.action_value_key, F.log_softmax(logits, dim=-2))
        return self._head(None, record, **options)
