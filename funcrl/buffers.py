"""Replay buffers as pure state pytrees, prioritized replay and n-step transitions.

The buffer is a :class:`ReplayState` (a ``NamedTuple``): a :class:`funcrl.Record` of preallocated
storage with batch size ``[capacity]``, the insert ``cursor`` and the fill count ``size`` as 0-d
``int64`` tensors, and optionally the priorities of prioritized replay. Every function maps a state
to a new state, so a buffer can live inside a ``torch.compile``'d or ``vmap``'d training step::

    state = buffers.init(1_000_000, transition)        # transition: one step or a batch
    state = buffers.add_(state, transitions)           # in place, the fast path for eager loops
    batch = buffers.sample(state, 256)                 # Record [256] (+ "index")

:func:`add` is pure: it writes into a *copy* of the storage (``index_copy``), which costs
``O(capacity)`` memory traffic per call. :func:`add_` writes the slots in place
(``index_copy_``) and costs ``O(batch)``; use it in eager training loops where the old state is
not kept. Both wrap around the ring, accept batches of any size (one larger than the capacity
keeps its last ``capacity`` rows) and validate keys, trailing shapes and dtypes *before* writing
anything, so a bad record leaves the stored data untouched.

Prioritized replay (Schaul et al., 2016, proportional variant) follows TorchRL's
``PrioritizedSampler``: slot ``i`` holds ``p_i = (priority_i + eps) ** alpha``, new transitions get
the largest raw priority seen so far (1.0 before any update), ``P(i) = p_i / sum_j p_j`` and the
importance weights ``w_i = (N P(i)) ** -beta / max_j w_j = (p_i / min_j p_j) ** -beta``. Sampling
is a vectorised inverse-CDF (``cumsum`` in float64 + ``searchsorted``) over the capacity instead of
a sum-tree; see :func:`sample` for its cost.

Randomness: :func:`sample` draws its slots from a :mod:`funcrl.random` ``key`` when given (the same
key, the same batch; compiled and vmapped over keys alike), else from a ``generator`` or the global
torch RNG.

Files: :func:`save` and :func:`load` go through :mod:`funcrl.checkpoint` (atomic writes, no
pickle) and :func:`load` checks every field (:func:`validate`); :func:`restore` copies a buffer
into another capacity, keeping its newest transitions in age order with their priorities.

Invalid priorities (negative, NaN, inf) and exponents are refused eagerly on CPU; inside
``torch.compile``, :func:`funcrl.jit`, ``vmap`` or on an accelerator those value checks are
skipped (they would need a host read), the shape and dtype checks still run.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any, NamedTuple

import torch

from funcrl import random as funcrl_random
from funcrl import tree
from funcrl._constants import filled
from funcrl.jit import can_read_values
from funcrl.record import Record

__all__ = [
    "ReplayState",
    "PriorityState",
    "init",
    "add",
    "add_",
    "sample",
    "update_priorities",
    "update_priorities_",
    "set_beta",
    "capacity",
    "n_step",
    "state_dict",
    "load_state_dict",
    "save",
    "load",
    "restore",
    "validate",
]


class PriorityState(NamedTuple):
    """Prioritized-replay state.

    Attributes:
        priority: ``[capacity]`` float32, ``(raw_priority + eps) ** alpha``; 0 for empty slots.
        max_priority: 0-d float32, the largest raw priority given so far, ``-1`` before the first
            :func:`update_priorities` (new transitions then get priority 1.0, as in TorchRL).
        alpha: 0-d float32, the prioritisation exponent.
        beta: 0-d float32, the importance-sampling exponent (anneal it with :func:`set_beta`).
        eps: 0-d float32, added to raw priorities so no transition gets probability 0.
    """

    priority: torch.Tensor
    max_priority: torch.Tensor
    alpha: torch.Tensor
    beta: torch.Tensor
    eps: torch.Tensor


class ReplayState(NamedTuple):
    """A replay buffer's whole state, a pytree of tensors.

    Attributes:
        storage: Record with batch size ``[capacity]``.
        cursor: 0-d int64, the slot the next transition goes to.
        size: 0-d int64, the number of filled slots (``<= capacity``); slots ``[0, size)`` are
            filled because the ring fills from slot 0.
        prioritized: the :class:`PriorityState`, or ``()`` for uniform replay (an empty tuple
            rather than ``None``: torch's pytree counts ``None`` as a leaf, which would stop
            ``vmap(..., in_dims=0)`` over stacked buffers).
    """

    storage: Record
    cursor: torch.Tensor
    size: torch.Tensor
    prioritized: PriorityState | tuple[()] = ()


# ---------------------------------------------------------------------------- creation


def init(
    capacity: int,
    example_record: Record,
    device: torch.device | str | None = None,
    *,
    prioritized: bool = False,
    alpha: float = 0.6,
    beta: float = 0.4,
    eps: float = 1e-8,
) -> ReplayState:
    """An empty buffer whose storage has the keys, dtypes and trailing shapes of ``example_record``.

    Args:
        capacity: number of transitions the buffer holds.
        example_record: one transition (``batch_ndim == 0``) or a batch of them; only its keys,
            dtypes and the shapes after its batch dims are used.
        device: storage device; defaults to the example's device.
        prioritized: keep per-slot priorities (proportional prioritized replay).
        alpha: priority exponent (``0`` is uniform).
        beta: importance-sampling exponent.
        eps: added to every raw priority (> 0).

    Returns:
        A :class:`ReplayState` with zeroed storage ``[capacity, *trailing]``, cursor 0, size 0.
    """
    if not isinstance(capacity, int) or capacity < 1:
        raise ValueError(f"buffers.init: capacity must be a positive int, got {capacity!r}")
    if not isinstance(example_record, Record):
        raise TypeError(
            "buffers.init: example_record must be a funcrl.Record, got "
            f"{type(example_record).__name__}"
        )
    if not example_record.keys(include_nested=True, leaves_only=True):
        raise ValueError("buffers.init: example_record has no tensor entries")
    # `not x >= 0` rather than `x < 0`: NaN fails every comparison and must be rejected too.
    for name, v in (("alpha", alpha), ("beta", beta)):
        if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
            raise ValueError(f"buffers.init: {name} must be a finite float >= 0, got {v!r}")
    if prioritized and not (isinstance(eps, (int, float)) and math.isfinite(eps) and eps > 0):
        # A filled slot must keep a positive probability: that is also how sample() tells filled
        # slots from empty ones (priority 0) without a host sync.
        raise ValueError(f"buffers.init: eps must be a finite float > 0, got {eps!r}")
    dev = torch.device(device) if device is not None else example_record.device
    bnd = example_record.batch_ndim
    storage = example_record.apply(
        lambda t: torch.zeros((capacity, *t.shape[bnd:]), dtype=t.dtype, device=dev),
        batch_ndim=1,
    )
    zero = torch.zeros((), dtype=torch.int64, device=dev)
    prio: PriorityState | tuple[()] = ()
    if prioritized:

        def scalar(v: float) -> torch.Tensor:
            return torch.tensor(v, dtype=torch.float32, device=dev)

        prio = PriorityState(
            priority=torch.zeros(capacity, dtype=torch.float32, device=dev),
            max_priority=scalar(-1.0),
            alpha=scalar(alpha),
            beta=scalar(beta),
            eps=scalar(eps),
        )
    return ReplayState(storage, zero, zero.clone(), prio)


def capacity(state: ReplayState) -> int:
    """The buffer's capacity (static: read from the storage shape)."""
    return tree.leaves(state.storage)[0].shape[0]


def set_beta(state: ReplayState, beta: float | torch.Tensor) -> ReplayState:
    """A new state whose importance-sampling exponent is ``beta`` (for annealing).

    Raises:
        ValueError: ``beta`` is not a finite value ``>= 0`` (checked eagerly; see :func:`_host`).
    """
    if not state.prioritized:
        raise ValueError("buffers.set_beta: the buffer was not created with prioritized=True")
    p = state.prioritized
    beta_t = torch.as_tensor(beta, dtype=p.beta.dtype, device=p.beta.device)
    _check_beta(beta_t, "buffers.set_beta")
    return state._replace(prioritized=p._replace(beta=beta_t))


def _check_beta(beta: torch.Tensor, owner: str) -> None:
    if beta.ndim != 0 or not beta.is_floating_point():
        raise ValueError(
            f"{owner}: beta must be a 0-d float, got shape {tuple(beta.shape)} dtype {beta.dtype}"
        )
    if can_read_values(beta) and not (bool(torch.isfinite(beta)) and float(beta) >= 0):
        raise ValueError(f"{owner}: beta must be finite and >= 0, got {float(beta)}")


# ---------------------------------------------------------------------------- writing


def _check_and_flatten(state: ReplayState, records: Record, owner: str) -> list[torch.Tensor]:
    """Checks ``records`` against the storage and returns its leaves as ``[n, *trailing]``.

    All checks run before any write, so a mismatch leaves the buffer untouched. The checks read
    only static metadata (keys, shapes, dtypes), so they cost nothing under ``torch.compile``.
    """
    if not isinstance(records, Record):
        raise TypeError(f"{owner}: records must be a funcrl.Record, got {type(records).__name__}")
    storage = state.storage
    keys = storage.keys(include_nested=True, leaves_only=True)
    got = records.keys(include_nested=True, leaves_only=True)
    if set(keys) != set(got):
        missing = sorted(map(str, set(keys) - set(got)))
        extra = sorted(map(str, set(got) - set(keys)))
        raise KeyError(
            f"{owner}: records keys do not match the buffer's: missing {missing}, unexpected {extra}"
        )
    bnd = records.batch_ndim
    batch = tuple(records.batch_size)
    n = math.prod(batch)
    out = []
    for key in keys:
        s, x = storage[key], records[key]
        if x.dtype != s.dtype:
            raise TypeError(
                f"{owner}: key {key!r} has dtype {x.dtype}, the buffer stores {s.dtype}"
            )
        if tuple(x.shape[bnd:]) != tuple(s.shape[1:]):
            raise ValueError(
                f"{owner}: key {key!r} has shape {tuple(x.shape)} = batch {batch} + "
                f"{tuple(x.shape[bnd:])}, the buffer stores [capacity] + {tuple(s.shape[1:])}"
            )
        x = x.reshape(n, *s.shape[1:])
        if x.device != s.device:
            x = x.to(s.device, non_blocking=True)
        out.append(x)
    return out


def _slots(state: ReplayState, n: int) -> tuple[torch.Tensor, int]:
    """Slots for the last ``min(n, capacity)`` of ``n`` new rows, and how many rows are skipped."""
    cap = capacity(state)
    keep = min(n, cap)
    skip = n - keep
    offsets = torch.arange(skip, n, device=state.cursor.device)
    return (state.cursor + offsets) % cap, skip


def _new_priority(p: PriorityState) -> torch.Tensor:
    # New transitions get the largest raw priority seen so far (1.0 before any update), so each
    # is likely sampled at least once; stored transformed, as in TorchRL.
    raw = torch.where(p.max_priority < 0, torch.ones_like(p.max_priority), p.max_priority)
    return (raw + p.eps).pow(p.alpha)


def add(state: ReplayState, records: Record) -> ReplayState:
    """Writes ``records`` at the cursor (ring overwrite) and returns a new state. Pure.

    Args:
        state: the buffer.
        records: one transition (``batch_ndim == 0``) or a batch ``[*batch]`` with the buffer's
            keys, dtypes and trailing shapes; all batch dims are flattened. A batch larger than
            the capacity keeps its last ``capacity`` rows.

    Returns:
        The new state. The old one is unchanged: the storage is copied (``O(capacity)``); use
        :func:`add_` in eager loops.

    Raises:
        KeyError, ValueError, TypeError: on a key, trailing-shape or dtype mismatch, naming the key
            and shapes; nothing is written.
    """
    rows = _check_and_flatten(state, records, "buffers.add")
    n = rows[0].shape[0]
    if n == 0:
        return state
    idx, skip = _slots(state, n)
    leaves, treedef = tree.flatten(state.storage)
    # The storage's leaf order is the order of keys(include_nested=True, leaves_only=True).
    new_leaves = [s.index_copy(0, idx, x[skip:]) for s, x in zip(leaves, rows)]
    cap = capacity(state)
    prio = state.prioritized
    if prio:
        new_p = _new_priority(prio).expand(idx.shape[0])
        prio = prio._replace(priority=prio.priority.index_copy(0, idx, new_p))
    return ReplayState(
        storage=tree.unflatten(treedef, new_leaves),
        cursor=(state.cursor + n) % cap,
        size=torch.clamp(state.size + n, max=cap),
        prioritized=prio,
    )


def add_(state: ReplayState, records: Record) -> ReplayState:
    """In-place :func:`add`: writes the slots, cursor and size of ``state`` itself and returns it.

    The fast path for eager loops: ``O(batch)`` instead of ``O(capacity)``. Any other reference to
    ``state`` (or to its tensors) sees the change; do not use it on a state you keep, nor inside
    ``torch.func`` transforms. Same validation as :func:`add`: a mismatch raises before any write.
    """
    rows = _check_and_flatten(state, records, "buffers.add_")
    n = rows[0].shape[0]
    if n == 0:
        return state
    idx, skip = _slots(state, n)
    for s, x in zip(tree.leaves(state.storage), rows):
        s.index_copy_(0, idx, x[skip:])
    prio = state.prioritized
    if prio:
        prio.priority.index_copy_(0, idx, _new_priority(prio).expand(idx.shape[0]))
    cap = capacity(state)
    state.cursor.add_(n).remainder_(cap)
    state.size.add_(n).clamp_(max=cap)
    return state


# ---------------------------------------------------------------------------- sampling


def _check_not_empty(state: ReplayState, owner: str) -> None:
    # Reading `size` is free on CPU; on an accelerator it would be a host sync, and under
    # torch.compile or funcrl.jit a graph break or a trace error, so the check is skipped there
    # (an empty buffer then yields rows of slot 0, all zeros). Under torch.func.vmap `size` is a
    # batched tensor with no single value, so the check is skipped there too.
    size = state.size
    if can_read_values(size):
        if int(size) == 0:
            raise RuntimeError(f"{owner}: the buffer is empty; add transitions before sampling")


def _draw_uniform(
    state: ReplayState,
    batch_size: int,
    key: torch.Tensor | None,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """``[batch_size]`` float64 uniforms in ``[0, 1)`` from ``key``, else ``generator``/global."""
    dev = state.size.device
    if key is None:
        return torch.rand(batch_size, dtype=torch.float64, device=dev, generator=generator)
    if generator is not None:
        raise ValueError(
            "buffers.sample: pass either key= (a funcrl.random key) or generator= (a "
            "torch.Generator), not both"
        )
    key = funcrl_random._check_key("buffers.sample", key)
    if key.device != dev:
        raise ValueError(
            f"buffers.sample: key is on {key.device}, the buffer on {dev}; move the key "
            "(funcrl.random.key(seed, device=...))"
        )
    # float64: 52 random mantissa bits, as torch.rand's float64 draw (see below).
    return funcrl_random.uniform(key, (batch_size,), torch.float64)


def sample(
    state: ReplayState,
    batch_size: int,
    *,
    key: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    beta: float | torch.Tensor | None = None,
) -> Record:
    """Draws ``batch_size`` transitions with replacement.

    Uniform buffers draw uniformly over the filled slots ``[0, size)``. Prioritized buffers draw
    slot ``i`` with probability ``p_i / sum_j p_j`` and add the importance weights
    ``(p_i / min_j p_j) ** -beta`` (the max-normalised weights of Schaul et al. and TorchRL).

    Randomness: with ``key`` (a :mod:`funcrl.random` key) the slots are a pure function of the
    key and the buffer: the same key gives the same batch, eagerly, under ``torch.compile`` and
    under ``vmap`` over keys (and stacked buffers). Without it, ``generator`` or the global torch
    RNG draws them.

    Cost: uniform sampling is ``O(batch)``. Prioritized sampling is ``O(size)``: one float64
    cumsum, one ``searchsorted`` and one min over the priorities (about 1-3 ms at size 1e6 on
    one CPU core); a sum-tree would be ``O(batch log capacity)``
    but needs ~20 dependent gathers per draw.

    Args:
        state: the buffer.
        batch_size: number of transitions.
        key: a ``[2]`` int64 :mod:`funcrl.random` key on the buffer's device.
        generator: a ``torch.Generator`` (only without ``key``); the global RNG by default.
        beta: overrides the state's importance-sampling exponent.

    Returns:
        Record ``[batch_size]`` with the stored keys, plus ``"index"`` (int64 slots, to pass to
        :func:`update_priorities`) and, when prioritized, ``"priority_weight"`` (float32
        ``[batch_size]``, TorchRL's key and shape).

    Raises:
        ValueError: ``batch_size`` is not a positive int; both ``key`` and ``generator`` are
            given; ``key`` is not a ``[2]`` int64 key of uint32 words on the buffer's device.
        TypeError: ``key`` is not a tensor.
        RuntimeError: the buffer is empty (checked eagerly on CPU).
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"buffers.sample: batch_size must be a positive int, got {batch_size!r}")
    u = _draw_uniform(state, batch_size, key, generator)
    _check_not_empty(state, "buffers.sample")
    dev = state.size.device
    cap = capacity(state)
    prio = state.prioritized
    weight = None
    if not prio:
        # float64 so that every slot of a 1e6 buffer gets the same probability (a float32 draw
        # has only 2**24 values, which would favour some slots by ~6%).
        idx = (u * state.size).long()
    else:
        p = prio.priority
        if can_read_values(state.size):
            # Eager CPU: reading `size` is free, and the filled prefix is all that matters.
            p = p[: int(state.size)]
            p_min = p.amin()
        else:
            # Empty slots hold 0 and filled ones > 0 (eps > 0), so mask them out of the min
            # (compiled, on an accelerator, and under vmap, where `size` has no single value).
            p_min = torch.where(p > 0, p, math.inf).amin()
        cdf = torch.cumsum(p, 0, dtype=torch.float64)
        idx = torch.searchsorted(cdf, u * cdf[-1], right=True)
        b = prio.beta if beta is None else filled(beta, p.dtype, dev)
        if beta is not None:
            _check_beta(b, "buffers.sample")
    # Guards against round-off at the top of the range: filled slots are [0, size).
    idx = torch.minimum(idx, (state.size - 1).clamp(min=0)).clamp(max=cap - 1)
    if prio:
        weight = (prio.priority[idx] / p_min).pow(-b)
    leaves, treedef = tree.flatten(state.storage)
    out = tree.unflatten(treedef, [s.index_select(0, idx) for s in leaves])
    out = out.set("index", idx)
    if weight is not None:
        out = out.set("priority_weight", weight)
    return out


# ---------------------------------------------------------------------------- priorities


def _priority_args(
    state: ReplayState, indices: torch.Tensor, priorities: torch.Tensor, owner: str
) -> tuple[PriorityState, torch.Tensor, torch.Tensor]:
    if not state.prioritized:
        raise ValueError(f"{owner}: the buffer was not created with prioritized=True")
    p = state.prioritized
    indices = torch.as_tensor(indices, device=p.priority.device)
    priorities = torch.as_tensor(priorities, device=p.priority.device)
    if indices.ndim != 1 or indices.dtype not in (torch.int64, torch.int32):
        raise ValueError(
            f"{owner}: indices must be a 1-d integer tensor [k], got shape "
            f"{tuple(indices.shape)} and dtype {indices.dtype}"
        )
    k = indices.shape[0]
    if priorities.shape == (k, 1):
        priorities = priorities.squeeze(-1)
    if priorities.shape != (k,):
        raise ValueError(
            f"{owner}: priorities must have shape [{k}] or [{k}, 1] to match indices [{k}], got "
            f"{tuple(priorities.shape)}"
        )
    if not (priorities.is_floating_point() or priorities.dtype in (torch.int32, torch.int64)):
        raise TypeError(f"{owner}: priorities must be real numbers, got dtype {priorities.dtype}")
    if k and can_read_values(priorities):
        # A negative priority turns into NaN under ** alpha, a NaN one poisons max_priority for
        # every later add, an inf one makes its slot win every draw: refuse them all.
        bad = ~torch.isfinite(priorities) | (priorities < 0)
        if bool(bad.any()):
            i = int(bad.nonzero()[0, 0])
            raise ValueError(
                f"{owner}: priorities must be finite and >= 0; priorities[{i}] = "
                f"{float(priorities[i])} (for slot {int(indices[i])})"
            )
    if k and can_read_values(indices):
        cap = p.priority.shape[0]
        if bool(((indices < 0) | (indices >= cap)).any()):
            raise IndexError(
                f"{owner}: indices must be slots in [0, {cap}), got min {int(indices.min())} "
                f"max {int(indices.max())}"
            )
    return p, indices.long(), priorities.detach().to(p.priority.dtype)


def _new_max(p: PriorityState, priorities: torch.Tensor) -> torch.Tensor:
    m = priorities.max()
    return torch.where(p.max_priority < 0, m, torch.maximum(p.max_priority, m))


def update_priorities(
    state: ReplayState, indices: torch.Tensor, priorities: torch.Tensor
) -> ReplayState:
    """Sets the raw priorities (e.g. ``|td_error|``) of slots ``indices``. Pure.

    Args:
        state: a prioritized buffer.
        indices: ``[k]`` slots, e.g. ``batch["index"]``.
        priorities: ``[k]`` or ``[k, 1]`` non-negative raw priorities (gradients are stopped).
            Stored as ``(priority + eps) ** alpha``; the running max priority is updated.

    Returns:
        A new state (the priority vector is copied; see :func:`update_priorities_`).
    """
    p, idx, pr = _priority_args(state, indices, priorities, "buffers.update_priorities")
    if idx.shape[0] == 0:
        return state
    new = p._replace(
        priority=p.priority.index_copy(0, idx, (pr + p.eps).pow(p.alpha)),
        max_priority=_new_max(p, pr),
    )
    return state._replace(prioritized=new)


def update_priorities_(
    state: ReplayState, indices: torch.Tensor, priorities: torch.Tensor
) -> ReplayState:
    """In-place :func:`update_priorities`: writes ``state``'s own tensors and returns it."""
    p, idx, pr = _priority_args(state, indices, priorities, "buffers.update_priorities_")
    if idx.shape[0] == 0:
        return state
    p.priority.index_copy_(0, idx, (pr + p.eps).pow(p.alpha))
    p.max_priority.copy_(_new_max(p, pr))
    return state


# ---------------------------------------------------------------------------- n-step


def n_step(trajectory: Record, n: int, gamma: float) -> Record:
    """Turns a ``[*batch, T]`` trajectory into n-step transitions. Pure.

    For each step ``t`` the window is ``m = min(n, steps to the end of the episode (inclusive),
    T - t)`` steps long and never crosses a ``("next", "done")``:

    * ``("next", "reward") = sum_{k<m} gamma**k r_{t+k}``;
    * every other ``("next", ...)`` entry (observation, done, terminated, truncated, ...) is taken
      from step ``t + m - 1``, so a window ending on a termination does not bootstrap, one ending
      on a truncation bootstraps from the true final observation, and one cut by the end of the
      data bootstraps from the last next observation;
    * ``"steps_to_next_obs" = m`` (int64 ``[*batch, T, 1]``, TorchRL's key): the bootstrap
      discount is ``gamma ** m``.

    Root entries (observation, action, ...) are unchanged. Unlike TorchRL's ``MultiStep``, the
    done flags are carried from the window's last step (TorchRL keeps step ``t``'s), so a loss
    that stops bootstrapping on ``("next", "terminated")`` is correct on n-step data.

    Args:
        trajectory: Record with ``batch_ndim >= 1`` whose last batch dim is time, holding
            ``("next", "reward")`` and ``("next", "done")`` of shape ``[*batch, T, 1]``.
        n: the number of steps (``n == 1`` returns one-step transitions with
            ``steps_to_next_obs == 1``).
        gamma: discount factor.

    Returns:
        Record ``[*batch, T]``.
    """
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"buffers.n_step: n must be a positive int, got {n!r}")
    if not isinstance(trajectory, Record) or trajectory.batch_ndim < 1:
        raise ValueError("buffers.n_step: trajectory must be a Record with a time batch dim")
    bnd = trajectory.batch_ndim
    shape = tuple(trajectory.batch_size)
    T = shape[-1]
    for key in (("next", "reward"), ("next", "done")):
        if key not in trajectory:
            raise KeyError(f"buffers.n_step: trajectory has no key {key!r}")
        if tuple(trajectory[key].shape) != (*shape, 1):
            raise ValueError(
                f"buffers.n_step: trajectory[{key!r}] has shape "
                f"{tuple(trajectory[key].shape)}, expected {(*shape, 1)}"
            )
    reward = trajectory["next", "reward"]
    done = trajectory["next", "done"].to(torch.bool)
    # alive[k] says whether step t + k is still inside t's window: t + k < T and no done in
    # steps t .. t + k - 1. Built step by step over k (n is small and static).
    pad = n - 1
    done_p = torch.nn.functional.pad(done.squeeze(-1), (0, pad), value=True)
    reward_p = torch.nn.functional.pad(reward.squeeze(-1), (0, pad), value=0.0)
    in_range = torch.nn.functional.pad(
        torch.ones(shape, dtype=torch.bool, device=done.device), (0, pad), value=False
    )
    alive = torch.ones(shape, dtype=torch.bool, device=done.device)
    total = torch.zeros(shape, dtype=reward.dtype, device=reward.device)
    m = torch.zeros(shape, dtype=torch.int64, device=done.device)
    for k in range(n):
        if k > 0:
            alive = alive & ~done_p[..., k - 1 : k - 1 + T] & in_range[..., k : k + T]
        total = total + alive * (gamma**k) * reward_p[..., k : k + T]
        m = m + alive
    last = torch.arange(T, device=m.device) + m - 1  # [*batch, T], the window's last step

    def gather_time(x: torch.Tensor) -> torch.Tensor:
        index = last.reshape(*shape, *([1] * (x.ndim - bnd))).expand(*shape, *x.shape[bnd:])
        return torch.gather(x, bnd - 1, index)

    nxt = trajectory["next"].exclude("reward").apply(gather_time)
    out = trajectory.set("next", nxt.set("reward", total.unsqueeze(-1)))
    return out.set("steps_to_next_obs", m.unsqueeze(-1))


# ---------------------------------------------------------------------------- checkpoints


def validate(state: ReplayState, owner: str = "buffers.validate") -> None:
    """Checks every field of a buffer state, structure and values. Host-side (reads values).

    Checked: the storage is a Record with ``batch_ndim == 1`` and every leaf ``[capacity, ...]``;
    ``cursor`` and ``size`` are 0-d int64 with ``0 <= size <= capacity``, ``0 <= cursor <
    capacity`` and ``cursor == size`` until the ring is full (it fills from slot 0); a
    :class:`PriorityState` has 0-d float32 ``alpha >= 0``, ``beta >= 0``, ``eps > 0``, all finite,
    ``max_priority`` finite and ``-1`` (no update yet) or ``>= 0``, and a finite ``[capacity]``
    float32 ``priority`` that is ``> 0`` on the filled slots and ``0`` on the empty ones (how
    :func:`sample` tells them apart). All tensors are on one device.

    Args:
        state: the buffer.
        owner: the name errors start with (the calling function).

    Raises:
        TypeError, ValueError: naming the field and the expected against the actual value.
    """
    if not isinstance(state, ReplayState):
        raise TypeError(f"{owner}: expected a buffers.ReplayState, got {type(state).__name__}")
    st = state.storage
    if not isinstance(st, Record) or st.batch_ndim != 1:
        raise ValueError(
            f"{owner}: storage must be a Record with batch_ndim 1, got "
            f"{type(st).__name__} with batch_ndim {getattr(st, 'batch_ndim', None)}"
        )
    keys = st.keys(include_nested=True, leaves_only=True)
    if not keys:
        raise ValueError(f"{owner}: storage has no tensor entries")
    cap = st[keys[0]].shape[0]
    dev = st[keys[0]].device
    for key in keys:
        x = st[key]
        if not isinstance(x, torch.Tensor) or x.ndim < 1 or x.shape[0] != cap:
            raise ValueError(
                f"{owner}: storage[{key!r}] must be a tensor [capacity={cap}, ...], got "
                f"{tuple(getattr(x, 'shape', ()))} ({type(x).__name__})"
            )
    if cap < 1:
        raise ValueError(f"{owner}: capacity must be >= 1, got storage batch size {cap}")
    for name in ("cursor", "size"):
        t = getattr(state, name)
        if not isinstance(t, torch.Tensor) or t.ndim != 0 or t.dtype != torch.int64:
            raise ValueError(
                f"{owner}: {name} must be a 0-d int64 tensor, got "
                + (
                    f"shape {tuple(t.shape)} dtype {t.dtype}"
                    if isinstance(t, torch.Tensor)
                    else type(t).__name__
                )
            )
    tensors = [st[k] for k in keys] + [state.cursor, state.size]
    size, cursor = int(state.size), int(state.cursor)
    if not 0 <= size <= cap:
        raise ValueError(f"{owner}: size must be in [0, capacity={cap}], got {size}")
    if not 0 <= cursor < cap:
        raise ValueError(f"{owner}: cursor must be in [0, capacity={cap}), got {cursor}")
    if size < cap and cursor != size:
        raise ValueError(
            f"{owner}: cursor must equal size until the ring is full (it fills from slot 0), "
            f"got cursor {cursor} and size {size} < capacity {cap}"
        )
    prio = state.prioritized
    if isinstance(prio, tuple) and not isinstance(prio, PriorityState) and len(prio) == 0:
        pass
    elif not isinstance(prio, PriorityState):
        raise TypeError(
            f"{owner}: prioritized must be a PriorityState or (), got {type(prio).__name__}"
        )
    else:
        for name in ("max_priority", "alpha", "beta", "eps"):
            t = getattr(prio, name)
            if not isinstance(t, torch.Tensor) or t.ndim != 0 or t.dtype != torch.float32:
                raise ValueError(
                    f"{owner}: prioritized.{name} must be a 0-d float32 tensor, got "
                    + (
                        f"shape {tuple(t.shape)} dtype {t.dtype}"
                        if isinstance(t, torch.Tensor)
                        else type(t).__name__
                    )
                )
            if not bool(torch.isfinite(t)):
                raise ValueError(f"{owner}: prioritized.{name} must be finite, got {float(t)}")
        pr = prio.priority
        if not isinstance(pr, torch.Tensor) or pr.shape != (cap,) or pr.dtype != torch.float32:
            raise ValueError(
                f"{owner}: prioritized.priority must be a float32 tensor [capacity={cap}], got "
                + (
                    f"shape {tuple(pr.shape)} dtype {pr.dtype}"
                    if isinstance(pr, torch.Tensor)
                    else type(pr).__name__
                )
            )
        alpha, beta, eps, mx = (
            float(t) for t in (prio.alpha, prio.beta, prio.eps, prio.max_priority)
        )
        if alpha < 0 or beta < 0 or eps <= 0:
            raise ValueError(
                f"{owner}: prioritized needs alpha >= 0, beta >= 0 and eps > 0, got alpha "
                f"{alpha}, beta {beta}, eps {eps}"
            )
        if not (mx == -1.0 or mx >= 0):
            raise ValueError(
                f"{owner}: prioritized.max_priority must be -1 (no update yet) or >= 0, got {mx}"
            )
        filled, empty = pr[:size], pr[size:]
        if not bool(torch.isfinite(pr).all()):
            raise ValueError(f"{owner}: prioritized.priority holds non-finite values")
        if size and not bool((filled > 0).all()):
            raise ValueError(
                f"{owner}: prioritized.priority must be > 0 on the {size} filled slots, got min "
                f"{float(filled.min())}"
            )
        if empty.numel() and bool((empty != 0).any()):
            raise ValueError(
                f"{owner}: prioritized.priority must be 0 on the empty slots [{size}, {cap})"
            )
        tensors += [pr, prio.max_priority, prio.alpha, prio.beta, prio.eps]
    devices = {t.device for t in tensors}
    if devices != {dev}:
        raise ValueError(
            f"{owner}: all tensors must be on one device, got {sorted(map(str, devices))}"
        )


def state_dict(state: ReplayState) -> dict[str, Any]:
    """The state as nested plain dicts of tensors."""
    out: dict[str, Any] = {
        "storage": state.storage.to_dict(),
        "cursor": state.cursor,
        "size": state.size,
    }
    if state.prioritized:
        out["prioritized"] = dict(state.prioritized._asdict())
    return out


def load_state_dict(sd: Mapping[str, Any], device: torch.device | str | None = None) -> ReplayState:
    """Rebuilds a :class:`ReplayState` from :func:`state_dict`'s output (optionally on ``device``)
    and checks every field with :func:`validate`."""
    owner = "buffers.load_state_dict"
    if not isinstance(sd, Mapping):
        raise TypeError(f"{owner}: expected a mapping, got {type(sd).__name__}")
    for k in ("storage", "cursor", "size"):
        if k not in sd:
            raise KeyError(f"{owner}: missing entry {k!r}; got {sorted(sd)}")

    def mv(x: torch.Tensor) -> torch.Tensor:
        return x if device is None else x.to(device)

    if not isinstance(sd["storage"], Mapping):
        raise TypeError(f"{owner}: storage must be a mapping, got {type(sd['storage']).__name__}")
    storage = Record(sd["storage"], batch_ndim=1).apply(mv)
    prio: PriorityState | tuple[()] = ()
    if sd.get("prioritized") is not None:
        got = dict(sd["prioritized"])
        if set(got) != set(PriorityState._fields):
            raise KeyError(
                f"{owner}: prioritized must have entries {list(PriorityState._fields)}, got "
                f"{sorted(got)}"
            )
        prio = PriorityState(**{k: mv(v) for k, v in got.items()})
    state = ReplayState(storage, mv(sd["cursor"]), mv(sd["size"]), prio)
    validate(state, owner)
    return state


def save(state: ReplayState, path: str | os.PathLike) -> None:
    """Writes the buffer to ``path`` with :func:`funcrl.checkpoint.save` (atomic, no pickle)."""
    from funcrl import checkpoint

    if not isinstance(state, ReplayState):
        raise TypeError(f"buffers.save: expected a buffers.ReplayState, got {type(state).__name__}")
    checkpoint.save(path, state, metadata={"kind": "funcrl.buffers.ReplayState"})


def load(path: str | os.PathLike, device: torch.device | str | None = None) -> ReplayState:
    """Reads a buffer written by :func:`save` and checks every field (:func:`validate`).

    Raises:
        funcrl.checkpoint.CheckpointError: the file is not a readable funcrl checkpoint.
        TypeError, ValueError: the file holds something else than a valid buffer (naming the file
            and the field).
    """
    from funcrl import checkpoint

    state = checkpoint.load(path, device=device).tree
    validate(state, f"buffers.load({os.fspath(path)!r})")
    return state


def restore(state: ReplayState, empty: ReplayState) -> tuple[ReplayState, int]:
    """Copies a buffer into another capacity, keeping its newest transitions. Host-side.

    The newest ``min(size, capacity(empty))`` transitions of ``state`` are written in age order,
    oldest first from slot 0, with their priorities; the cursor is set after the last one (0 when
    the new ring is full). The running max priority and ``beta`` (its annealing position) come
    from ``state``.

    Args:
        state: the saved buffer.
        empty: a buffer with the new capacity (e.g. ``init(new_capacity, ...)``); only its
            storage layout, capacity, device and prioritisation are used (it is not modified).

    Returns:
        ``(new_state, dropped)``: ``dropped`` is how many of the oldest transitions did not fit.

    Raises:
        KeyError, TypeError, ValueError: the storages' keys, dtypes or trailing shapes differ,
            one buffer is prioritized and the other not, or their ``alpha``/``eps`` differ.
    """
    owner = "buffers.restore"
    validate(state, owner + " (state)")
    validate(empty, owner + " (empty)")
    _check_and_flatten(empty, state.storage, owner)
    old_p, new_p = state.prioritized, empty.prioritized
    if bool(old_p) != bool(new_p):
        raise ValueError(
            f"{owner}: state is {'prioritized' if old_p else 'uniform'} but empty is "
            f"{'prioritized' if new_p else 'uniform'}"
        )
    if old_p and new_p:
        for name in ("alpha", "eps"):
            a, b = float(getattr(old_p, name)), float(getattr(new_p, name))
            if a != b:
                # Stored priorities are (raw + eps) ** alpha: they cannot be carried over.
                raise ValueError(f"{owner}: state has {name} {a}, empty has {name} {b}")
    cap_old, cap_new = capacity(state), capacity(empty)
    size, cursor = int(state.size), int(state.cursor)
    keep = min(size, cap_new)
    oldest = cursor if size == cap_old else 0
    src = (oldest + torch.arange(size - keep, size, device=state.size.device)) % cap_old
    keys = empty.storage.keys(include_nested=True, leaves_only=True)
    leaves, treedef = tree.flatten(empty.storage)
    new_leaves = []
    for key, e in zip(keys, leaves):
        out = torch.zeros_like(e)
        out[:keep] = state.storage[key].index_select(0, src).to(e.device)
        new_leaves.append(out)
    dev = empty.size.device
    prio: PriorityState | tuple[()] = ()
    if new_p:
        pr = torch.zeros_like(new_p.priority)
        pr[:keep] = old_p.priority.index_select(0, src).to(dev)
        prio = new_p._replace(
            priority=pr,
            max_priority=old_p.max_priority.to(dev).clone(),
            beta=old_p.beta.to(dev).clone(),
        )
    new = ReplayState(
        storage=tree.unflatten(treedef, new_leaves),
        cursor=torch.tensor(keep % cap_new, dtype=torch.int64, device=dev),
        size=torch.tensor(keep, dtype=torch.int64, device=dev),
        prioritized=prio,
    )
    return new, size - keep
