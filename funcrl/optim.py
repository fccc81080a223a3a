"""Optax-style optimizers: ``(init, update)`` pairs over parameter pytrees.

Each optimizer is a :class:`GradientTransformation`; its state is a pytree of NamedTuples and
tensors, so a training step that carries it is pure and can be vmapped and compiled::

    opt = optim.adam(3e-4)
    state = opt.init(params)
    updates, state = opt.update(grads, state, params)
    params = optim.apply_updates(params, updates)

The arithmetic follows ``torch.optim`` (Adam, AdamW, SGD, RMSprop) so that results agree with it.
``foreach=True`` computes every transform with ``torch._foreach_*`` kernels (one launch per op over
all leaves), the fast path for eager loops; both paths are pure and give the same numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple, Union

import torch

from funcrl import tree

__all__ = [
    "GradientTransformation",
    "Schedule",
    "EmptyState",
    "ScaleByAdamState",
    "TraceState",
    "ScaleByRmsState",
    "MultiTransformState",
    "identity",
    "scale",
    "scale_by_learning_rate",
    "scale_by_adam",
    "scale_by_rms",
    "trace",
    "add_decayed_weights",
    "clip_by_global_norm",
    "chain",
    "multi_transform",
    "adam",
    "adamw",
    "sgd",
    "rmsprop",
    "apply_updates",
    "linear_schedule",
]

Params = Any
Updates = Any
Schedule = Callable[[torch.Tensor], torch.Tensor | float]
ScalarOrSchedule = Union[float, Schedule]


class GradientTransformation(NamedTuple):
    """A pure optimizer: ``init(params) -> state``, ``update(grads, state, params) -> (upd, state)``."""

    init: Callable[[Params], Any]
    update: Callable[..., tuple[Updates, Any]]


class EmptyState(NamedTuple):
    pass


class ScaleByAdamState(NamedTuple):
    count: torch.Tensor  # [] int32: number of updates so far
    mu: Params
    nu: Params
    nu_max: Params  # amsgrad's running max of nu (an empty tuple when amsgrad is off)


class TraceState(NamedTuple):
    count: torch.Tensor
    trace: Params


class ScaleByRmsState(NamedTuple):
    count: torch.Tensor
    nu: Params
    mu: Params  # centred RMSprop's mean of gradients (an empty tuple when not centred)


class ScheduleState(NamedTuple):
    count: torch.Tensor


class MultiTransformState(NamedTuple):
    inner: dict[str, Any]


def _count_like(params: Params) -> torch.Tensor:
    leaves = tree.leaves(params)
    device = leaves[0].device if leaves else None
    return torch.zeros((), dtype=torch.int32, device=device)


def _flat(x: Params) -> tuple[list[torch.Tensor], Any]:
    return tree.flatten(x)


def identity() -> GradientTransformation:
    return GradientTransformation(lambda params: EmptyState(), lambda g, s, p=None: (g, s))


def scale(factor: float) -> GradientTransformation:
    """Multiplies updates by a constant ``factor``."""

    def update(grads, state, params=None):
        return tree.map(lambda g: g * factor, grads), state

    return GradientTransformation(lambda params: EmptyState(), update)


def scale_by_learning_rate(
    learning_rate: ScalarOrSchedule, *, flip_sign: bool = True
) -> GradientTransformation:
    """Multiplies updates by ``-learning_rate`` (a float, or a schedule of the step count)."""
    sign = -1.0 if flip_sign else 1.0
    if not callable(learning_rate):
        return scale(sign * float(learning_rate))

    def init(params):
        return ScheduleState(_count_like(params))

    def update(grads, state, params=None):
        lr = learning_rate(state.count)
        return tree.map(lambda g: g * (sign * lr), grads), ScheduleState(state.count + 1)

    return GradientTransformation(init, update)


def scale_by_adam(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    *,
    amsgrad: bool = False,
    foreach: bool = False,
) -> GradientTransformation:
    """Adam's moment estimates: returns ``m_hat / (sqrt(v_hat) + eps)`` as ``torch.optim.Adam``.

    ``torch.optim.Adam`` computes ``m / (1 - b1^t) / (sqrt(v) / sqrt(1 - b2^t) + eps)``; the
    same expression (not optax's ``eps`` placement) is used here so the two agree.
    """

    def init(params):
        nu_max = tree.zeros_like(params) if amsgrad else ()
        return ScaleByAdamState(
            _count_like(params), tree.zeros_like(params), tree.zeros_like(params), nu_max
        )

    def update(grads, state, params=None):
        count = state.count + 1
        g, treedef = _flat(grads)
        mu, _ = _flat(state.mu)
        nu, _ = _flat(state.nu)
        # Bias corrections in float64, as torch.optim computes them from a Python step count.
        t = count.to(torch.float64)
        inv_bc1 = 1.0 / (1.0 - torch.pow(torch.full_like(t, b1), t))
        bc2_sqrt = torch.sqrt(1.0 - torch.pow(torch.full_like(t, b2), t))
        # foreach kernels cannot be vmapped: under vmap over seeds, take the per-leaf path.
        if foreach and g and not tree.any_batched(g, mu, nu, count):
            mu = torch._foreach_lerp(mu, g, 1 - b1)
            nu = torch._foreach_add(
                torch._foreach_mul(nu, b2), torch._foreach_mul(torch._foreach_mul(g, g), 1 - b2)
            )
            if amsgrad:
                nu_max = torch._foreach_maximum(_flat(state.nu_max)[0], nu)
                denom_src = nu_max
            else:
                denom_src = nu
            denom = torch._foreach_add(
                torch._foreach_div(torch._foreach_sqrt(denom_src), bc2_sqrt.to(g[0].dtype)), eps
            )
            upd = torch._foreach_mul(torch._foreach_div(mu, denom), inv_bc1.to(g[0].dtype))
        else:
            mu = [m.lerp(x, 1 - b1) for m, x in zip(mu, g)]
            nu = [v * b2 + x * x * (1 - b2) for v, x in zip(nu, g)]
            if amsgrad:
                nu_max = [torch.maximum(a, b) for a, b in zip(_flat(state.nu_max)[0], nu)]
                denom_src = nu_max
            else:
                denom_src = nu
            upd = [
                (m / (v.sqrt() / bc2_sqrt.to(v.dtype) + eps)) * inv_bc1.to(m.dtype)
                for m, v in zip(mu, denom_src)
            ]
        new_nu_max = tree.unflatten(treedef, nu_max) if amsgrad else ()
        return tree.unflatten(treedef, list(upd)), ScaleByAdamState(
            count, tree.unflatten(treedef, list(mu)), tree.unflatten(treedef, list(nu)), new_nu_max
        )

    return GradientTransformation(init, update)


def trace(
    momentum: float, *, dampening: float = 0.0, nesterov: bool = False
) -> GradientTransformation:
    """``torch.optim.SGD``'s momentum buffer (the first step's buffer is the raw gradient)."""
    if nesterov and (momentum <= 0 or dampening != 0):
        raise ValueError("trace: nesterov needs momentum > 0 and dampening == 0")

    def init(params):
        return TraceState(_count_like(params), tree.zeros_like(params))

    def update(grads, state, params=None):
        first = state.count == 0
        buf = tree.map(
            lambda b, g: torch.where(first, g, b * momentum + g * (1 - dampening)),
            state.trace,
            grads,
        )
        upd = tree.map(lambda g, b: g + b * momentum, grads, buf) if nesterov else buf
        return upd, TraceState(state.count + 1, buf)

    return GradientTransformation(init, update)


def scale_by_rms(
    alpha: float = 0.99, eps: float = 1e-8, *, centered: bool = False
) -> GradientTransformation:
    """``torch.optim.RMSprop``'s scaling ``g / (sqrt(E[g^2] - centred) + eps)``."""

    def init(params):
        mu = tree.zeros_like(params) if centered else ()
        return ScaleByRmsState(_count_like(params), tree.zeros_like(params), mu)

    def update(grads, state, params=None):
        nu = tree.map(lambda v, g: v * alpha + g * g * (1 - alpha), state.nu, grads)
        if centered:
            mu = tree.map(lambda m, g: m.lerp(g, 1 - alpha), state.mu, grads)
            upd = tree.map(lambda g, v, m: g / ((v - m * m).sqrt() + eps), grads, nu, mu)
        else:
            mu = ()
            upd = tree.map(lambda g, v: g / (v.sqrt() + eps), grads, nu)
        return upd, ScaleByRmsState(state.count + 1, nu, mu)

    return GradientTransformation(init, update)


def add_decayed_weights(weight_decay: float) -> GradientTransformation:
    """Adds ``weight_decay * params`` to the updates (L2 before Adam, decoupled after it)."""

    def update(grads, state, params=None):
        if params is None:
            raise ValueError("add_decayed_weights: update(grads, state, params) needs params")
        return tree.map(lambda g, p: g + weight_decay * p, grads, params), state

    return GradientTransformation(lambda params: EmptyState(), update)


def clip_by_global_norm(max_norm: float) -> GradientTransformation:
    """Rescales updates so their global l2 norm is at most ``max_norm`` (``clip_grad_norm_``).

    Like ``torch.nn.utils.clip_grad_norm_``: ``coef = min(1, max_norm / (norm + 1e-6))``.
    """
    if max_norm <= 0:
        raise ValueError(f"clip_by_global_norm: max_norm must be > 0, got {max_norm}")

    def update(grads, state, params=None):
        norm = tree.global_norm(grads)
        coef = torch.clamp(max_norm / (norm + 1e-6), max=1.0)
        return tree.map(lambda g: g * coef, grads), state

    return GradientTransformation(lambda params: EmptyState(), update)


def chain(*transforms: GradientTransformation) -> GradientTransformation:
    """Applies ``transforms`` in order; the state is the tuple of their states."""

    def init(params):
        return tuple(t.init(params) for t in transforms)

    def update(grads, state, params=None):
        new_states = []
        for t, s in zip(transforms, state):
            grads, s = t.update(grads, s, params)
            new_states.append(s)
        return grads, tuple(new_states)

    return GradientTransformation(init, update)


def multi_transform(transforms: Mapping[str, GradientTransformation]) -> GradientTransformation:
    """One transform per top-level key of a dict of params (e.g. actor / qvalue / log_alpha).

    ``update`` accepts grads for all keys or for a subset (those not given keep their state), so
    TD3's delayed actor can skip the actor's update on some steps.
    """
    transforms = dict(transforms)

    def _check(x: Mapping, what: str):
        if not isinstance(x, Mapping):
            raise TypeError(f"multi_transform: {what} must be a dict keyed like the transforms")
        unknown = set(x) - set(transforms)
        if unknown:
            raise KeyError(
                f"multi_transform: {what} has keys {sorted(unknown)} with no transform; "
                f"transforms are given for {sorted(transforms)}"
            )

    def init(params):
        _check(params, "params")
        missing = set(transforms) - set(params)
        if missing:
            raise KeyError(f"multi_transform.init: params lack keys {sorted(missing)}")
        return MultiTransformState({k: t.init(params[k]) for k, t in transforms.items()})

    def update(grads, state, params=None):
        _check(grads, "grads")
        updates, inner = {}, dict(state.inner)
        for k, g in grads.items():
            p = None if params is None else params[k]
            updates[k], inner[k] = transforms[k].update(g, state.inner[k], p)
        return updates, MultiTransformState(inner)

    return GradientTransformation(init, update)


def adam(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    *,
    weight_decay: float = 0.0,
    amsgrad: bool = False,
    foreach: bool = False,
) -> GradientTransformation:
    """``torch.optim.Adam`` (L2 ``weight_decay`` added to the gradient, as torch does)."""
    parts = [add_decayed_weights(weight_decay)] if weight_decay else []
    parts += [scale_by_adam(b1, b2, eps, amsgrad=amsgrad, foreach=foreach)]
    parts += [scale_by_learning_rate(learning_rate)]
    return chain(*parts)


def adamw(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    *,
    weight_decay: float = 1e-2,
    amsgrad: bool = False,
    foreach: bool = False,
) -> GradientTransformation:
    """``torch.optim.AdamW``: decoupled weight decay ``p <- p - lr * (adam(g) + wd * p)``."""
    return chain(
        scale_by_adam(b1, b2, eps, amsgrad=amsgrad, foreach=foreach),
        add_decayed_weights(weight_decay),
        scale_by_learning_rate(learning_rate),
    )


def sgd(
    learning_rate: ScalarOrSchedule,
    momentum: float = 0.0,
    *,
    dampening: float = 0.0,
    nesterov: bool = False,
    weight_decay: float = 0.0,
) -> GradientTransformation:
    """``torch.optim.SGD`` with momentum, dampening, Nesterov and L2 weight decay."""
    parts = [add_decayed_weights(weight_decay)] if weight_decay else []
    if momentum:
        parts.append(trace(momentum, dampening=dampening, nesterov=nesterov))
    elif nesterov:
        raise ValueError("sgd: nesterov needs momentum > 0")
    parts.append(scale_by_learning_rate(learning_rate))
    return chain(*parts)


def rmsprop(
    learning_rate: ScalarOrSchedule,
    alpha: float = 0.99,
    eps: float = 1e-8,
    *,
    centered: bool = False,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
) -> GradientTransformation:
    """``torch.optim.RMSprop`` (momentum buffer applied after the RMS scaling, as torch does)."""
    parts = [add_decayed_weights(weight_decay)] if weight_decay else []
    parts.append(scale_by_rms(alpha, eps, centered=centered))
    if momentum:
        parts.append(_plain_momentum(momentum))
    parts.append(scale_by_learning_rate(learning_rate))
    return chain(*parts)


def _plain_momentum(momentum: float) -> GradientTransformation:
    # RMSprop's buffer starts at zero: buf = momentum * buf + g (no first-step special case).
    def init(params):
        return TraceState(_count_like(params), tree.zeros_like(params))

    def update(grads, state, params=None):
        buf = tree.map(lambda b, g: b * momentum + g, state.trace, grads)
        return buf, TraceState(state.count + 1, buf)

    return GradientTransformation(init, update)


def apply_updates(params: Params, updates: Updates) -> Params:
    """``params + updates`` leaf-wise (a new tree; nothing is modified in place)."""
    return tree.map(lambda p, u: p + u.to(p.dtype), params, updates)


def linear_schedule(init_value: float, end_value: float, transition_steps: int) -> Schedule:
    """A schedule going linearly from ``init_value`` to ``end_value`` over ``transition_steps``."""
    if transition_steps <= 0:
        raise ValueError(f"linear_schedule: transition_steps must be > 0, got {transition_steps}")

    def schedule(count: torch.Tensor) -> torch.Tensor:
        frac = torch.clamp(count.float() / transition_steps, 0.0, 1.0)
        return init_value + frac * (end_value - init_value)

    return schedule
