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

Every ``update`` checks that ``updates`` (and ``params`` when given) have exactly the tree -- keys,
shapes and dtypes -- that ``init`` saw, and names the first differing path: a moment is never
paired with another leaf's gradient. The check reads only static metadata, so it is free under
``torch.compile`` and ``vmap``. Hyperparameters are validated when a factory is called, as
``torch.optim`` does (``lr >= 0`` and finite, ``betas`` in ``[0, 1)``, ``eps >= 0``, ...).
"""

from __future__ import annotations

import math
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
    "FlattenState",
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
    "flatten",
    "multi_transform",
    "adam",
    "adamw",
    "sgd",
    "rmsprop",
    "apply_updates",
    "linear_schedule",
    "cosine_decay_schedule",
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


class FlattenState(NamedTuple):
    inner: Any  # the inner transform's state over the flat buffers
    # An empty tensor [0, h]: h hashes the params' leaf shapes and dtypes (update's check).
    signature: torch.Tensor


class MultiTransformState(NamedTuple):
    inner: dict[str, Any]


def _count_like(params: Params) -> torch.Tensor:
    leaves = tree.leaves(params)
    device = leaves[0].device if leaves else None
    return torch.zeros((), dtype=torch.int32, device=device)


def _flat(x: Params) -> tuple[list[torch.Tensor], Any]:
    return tree.flatten(x)


_FIX = (
    "init the optimizer on exactly the params it updates (e.g. opt.init({k: params[k] for k in "
    "trainable})) and pass grads of that same tree"
)


def _check_tree(owner: str, what: str, x: Any, reference: Any, ref_name: str) -> None:
    """``x`` must have ``reference``'s structure, shapes and dtypes (static: free when compiled)."""
    tree.check_same_structure(
        reference, x, owner=owner, names=(ref_name, what), dtypes=True, hint=_FIX
    )


def _check_inputs(owner: str, grads: Any, state_tree: Any, params: Any) -> None:
    """``grads`` (and ``params`` when given) against the tree the state was initialised on."""
    _check_tree(owner, "updates", grads, state_tree, "the optimizer state")
    if params is not None:
        _check_tree(owner, "params", params, state_tree, "the optimizer state")


def _check_pair(owner: str, grads: Any, params: Any) -> None:
    # Stateless transforms have no initial tree to compare with; updates and params must agree.
    if params is not None:
        tree.check_same_structure(
            params, grads, owner=owner, names=("params", "updates"), dtypes=True, hint=_FIX
        )


def _real(owner: str, name: str, value: Any) -> float:
    if isinstance(value, torch.Tensor) and value.ndim == 0 and not value.dtype == torch.bool:
        value = value.item()  # factory time, on the host: never inside a step
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{owner}: {name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if math.isnan(value):
        raise ValueError(f"{owner}: {name} must not be NaN")
    return value


def _check_range(
    owner: str,
    name: str,
    value: Any,
    lo: float = 0.0,
    hi: float = math.inf,
    *,
    lo_open: bool = False,
    hi_open: bool = False,
    finite: bool = True,
) -> float:
    """Validates a hyperparameter at factory time (as ``torch.optim`` does) and returns it."""
    v = _real(owner, name, value)
    if finite and math.isinf(v):
        raise ValueError(f"{owner}: {name} must be finite, got {v}")
    too_low = v <= lo if lo_open else v < lo
    too_high = v >= hi if hi_open else v > hi
    if too_low or too_high:
        interval = f"{'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
        raise ValueError(f"{owner}: {name} must be in {interval}, got {v}")
    return v


def _check_lr(owner: str, learning_rate: ScalarOrSchedule) -> ScalarOrSchedule:
    if not callable(learning_rate):
        return _check_range(owner, "learning_rate", learning_rate)
    # A schedule is checked at its first step (it is a pure function of the count).
    first = learning_rate(torch.zeros((), dtype=torch.int32))
    if isinstance(first, torch.Tensor) and first.ndim != 0:
        raise ValueError(
            f"{owner}: learning_rate schedule must return a scalar, got shape {tuple(first.shape)}"
        )
    _check_range(owner, "learning_rate (the schedule's value at step 0)", first)
    return learning_rate


def identity() -> GradientTransformation:
    return GradientTransformation(lambda params: EmptyState(), lambda g, s, p=None: (g, s))


def scale(factor: float) -> GradientTransformation:
    """Multiplies updates by a constant ``factor`` (finite)."""
    factor = _check_range("scale", "factor", factor, -math.inf)

    def update(grads, state, params=None):
        _check_pair("scale.update", grads, params)
        return tree.map(lambda g: g * factor, grads), state

    return GradientTransformation(lambda params: EmptyState(), update)


def scale_by_learning_rate(
    learning_rate: ScalarOrSchedule, *, flip_sign: bool = True
) -> GradientTransformation:
    """Multiplies updates by ``-learning_rate`` (a float, or a schedule of the step count)."""
    sign = -1.0 if flip_sign else 1.0
    learning_rate = _check_lr("scale_by_learning_rate", learning_rate)
    if not callable(learning_rate):
        return scale(sign * learning_rate)

    def init(params):
        return ScheduleState(_count_like(params))

    def update(grads, state, params=None):
        _check_pair("scale_by_learning_rate.update", grads, params)
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

    Raises:
        ValueError: at construction if ``b1`` or ``b2`` is outside ``[0, 1)`` or ``eps < 0``; at
            ``update`` if ``grads`` or ``params`` do not have the tree (keys, shapes, dtypes) the
            state was initialised on, so no moment is ever paired with another leaf's gradient.
    """
    b1 = _check_range("scale_by_adam", "b1", b1, 0.0, 1.0, hi_open=True)
    b2 = _check_range("scale_by_adam", "b2", b2, 0.0, 1.0, hi_open=True)
    eps = _check_range("scale_by_adam", "eps", eps)

    def init(params):
        nu_max = tree.zeros_like(params) if amsgrad else ()
        return ScaleByAdamState(
            _count_like(params), tree.zeros_like(params), tree.zeros_like(params), nu_max
        )

    def update(grads, state, params=None):
        _check_inputs("scale_by_adam.update", grads, state.mu, params)
        count = state.count + 1
        g, treedef = _flat(grads)
        mu, _ = _flat(state.mu)
        nu, _ = _flat(state.nu)
        # Bias corrections in float64, as torch.optim computes them from a Python step count.
        # b ** t as exp(t log b) (within 3e-14 relative of pow for t <= 1e5 and b <= 0.9999,
        # and the same after the cast to float32; tested): Inductor keeps an
        # exp shared by many kernels as one value but re-inlines a pow into each, where libm's
        # pow ran per vector of every leaf (~3% of a compiled PPO iteration, perf).
        t = count.to(torch.float64)
        inv_bc1 = 1.0 / (1.0 - torch.exp(t * math.log(b1))) if b1 > 0 else torch.ones_like(t)
        bc2_sqrt = torch.sqrt(1.0 - torch.exp(t * math.log(b2))) if b2 > 0 else torch.ones_like(t)
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
    momentum = _check_range("trace", "momentum", momentum)
    dampening = _check_range("trace", "dampening", dampening, 0.0, 1.0)
    if nesterov and (momentum <= 0 or dampening != 0):
        raise ValueError("trace: nesterov needs momentum > 0 and dampening == 0")

    def init(params):
        return TraceState(_count_like(params), tree.zeros_like(params))

    def update(grads, state, params=None):
        _check_inputs("trace.update", grads, state.trace, params)
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
    alpha = _check_range("scale_by_rms", "alpha", alpha, 0.0, 1.0)
    eps = _check_range("scale_by_rms", "eps", eps)

    def init(params):
        mu = tree.zeros_like(params) if centered else ()
        return ScaleByRmsState(_count_like(params), tree.zeros_like(params), mu)

    def update(grads, state, params=None):
        _check_inputs("scale_by_rms.update", grads, state.nu, params)
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
    weight_decay = _check_range("add_decayed_weights", "weight_decay", weight_decay)

    def update(grads, state, params=None):
        if params is None:
            raise ValueError("add_decayed_weights: update(grads, state, params) needs params")
        _check_pair("add_decayed_weights.update", grads, params)
        return tree.map(lambda g, p: g + weight_decay * p, grads, params), state

    return GradientTransformation(lambda params: EmptyState(), update)


def clip_by_global_norm(max_norm: float) -> GradientTransformation:
    """Rescales updates so their global l2 norm is at most ``max_norm`` (``clip_grad_norm_``).

    Like ``torch.nn.utils.clip_grad_norm_``: ``coef = min(1, max_norm / (norm + 1e-6))``.
    """
    # inf is allowed (no clipping), as in torch.nn.utils.clip_grad_norm_; NaN never is.
    max_norm = _check_range(
        "clip_by_global_norm", "max_norm", max_norm, 0.0, lo_open=True, finite=False
    )

    def update(grads, state, params=None):
        _check_pair("clip_by_global_norm.update", grads, params)
        norm = tree.global_norm(grads)
        coef = torch.clamp(max_norm / (norm + 1e-6), max=1.0)
        return tree.map(lambda g: g * coef, grads), state

    return GradientTransformation(lambda params: EmptyState(), update)


def chain(*transforms: GradientTransformation) -> GradientTransformation:
    """Applies ``transforms`` in order; the state is the tuple of their states."""

    for i, t in enumerate(transforms):
        if not isinstance(t, GradientTransformation):
            raise TypeError(
                f"chain: transform {i} must be a GradientTransformation, got {type(t).__name__}"
            )

    def init(params):
        return tuple(t.init(params) for t in transforms)

    def update(grads, state, params=None):
        if not isinstance(state, tuple) or len(state) != len(transforms):
            raise ValueError(
                f"chain.update: state must be the tuple of {len(transforms)} states that "
                f"chain.init returned, got {type(state).__name__}"
                + (f" of length {len(state)}" if isinstance(state, tuple) else "")
            )
        new_states = []
        for t, s in zip(transforms, state):
            grads, s = t.update(grads, s, params)
            new_states.append(s)
        return grads, tuple(new_states)

    return GradientTransformation(init, update)


def flatten(inner: GradientTransformation) -> GradientTransformation:
    """``inner`` run on the params' leaves concatenated into one vector per dtype
    (``optax.flatten``).

    A compiled step then runs each of ``inner``'s operations once per dtype instead of once per
    leaf: a smaller graph that compiles faster and runs fewer, longer kernels (PPO on pure
    CartPole, 12 leaves with a global-norm clip and Adam: ``docs/results.md``). Elementwise
    transforms give exactly ``inner``'s numbers; reductions over the whole tree
    (:func:`clip_by_global_norm`'s norm) sum in another order, so they agree to round-off.

    The state is a :class:`FlattenState`: ``inner``'s state over a tuple of buffers ``[F_d]``,
    one per dtype in order of first appearance (:func:`funcrl.tree.pack`'s layout), and an
    empty tensor ``[0, h]`` whose size ``h`` hashes the params' tree
    (:func:`funcrl.tree.fingerprint`: node kinds, dict keys, NamedTuple types, and the leaves'
    shapes and dtypes in order). ``update`` checks ``updates``
    against ``params`` leaf by leaf and ``updates`` against that hash, so gradients of another
    tree (other keys, shapes or dtypes, another order, another number of leaves) are an error,
    not moments paired with the wrong leaves. The hash has 2^20 values: another tree passes
    with a chance of about one in a million. One empty tensor, not a template per leaf: each
    tensor a compiled loop carries costs trace time and per-step handles. Under dynamic shapes
    the hash is a symbolic expression (correct, but slower to trace).

    Args:
        inner: the transform to run on the flat buffers.
    """
    if not isinstance(inner, GradientTransformation):
        raise TypeError(
            f"flatten: inner must be a GradientTransformation, got {type(inner).__name__}"
        )

    def leaves_of(owner: str, what: str, x: Any) -> tuple[list[torch.Tensor], Any]:
        leaves, spec = tree.flatten(x)
        if not leaves:
            raise ValueError(f"{owner}: {what} hold no tensors; there is nothing to flatten")
        for i, v in enumerate(leaves):
            if not isinstance(v, torch.Tensor):
                raise TypeError(
                    f"{owner}: leaf {tree.leaf_path(x, i)} of {what} is a {type(v).__name__}; "
                    "every leaf must be a tensor"
                )
            if v.device != leaves[0].device:
                raise ValueError(
                    f"{owner}: leaf {tree.leaf_path(x, i)} of {what} is on {v.device}, leaf "
                    f"{tree.leaf_path(x, 0)} on {leaves[0].device}; flatten concatenates the "
                    "leaves, so they must share a device"
                )
        return leaves, spec

    def init(params):
        leaves, _ = leaves_of("flatten.init", "params", params)
        flat, _ = tree.pack(leaves)
        signature = leaves[0].new_empty((0, tree.fingerprint(params, leaves)))
        return FlattenState(inner.init(flat), signature)

    def update(updates, state, params=None):
        owner = "flatten.update"
        if not isinstance(state, FlattenState):
            raise TypeError(
                f"{owner}: state must be the FlattenState flatten.init returned, got "
                f"{type(state).__name__}"
            )
        leaves, spec = leaves_of(owner, "updates", updates)
        param_leaves = None if params is None else leaves_of(owner, "params", params)[0]
        _check_pair(owner, updates, params)
        got, want = tree.fingerprint(updates, leaves), state.signature.shape[-1]
        if got != want:
            described = ", ".join(f"{tuple(x.shape)} {x.dtype}" for x in leaves)
            raise ValueError(
                f"{owner}: updates are not the tree flatten.init saw: their structure, keys and "
                f"leaf shapes and dtypes hash to {got}, the optimizer state's to {want}; "
                f"updates have [{described}]; {_FIX}"
            )
        flat, layout = tree.pack(leaves)
        flat_params = None if param_leaves is None else tree.pack(param_leaves)[0]
        flat, inner_state = inner.update(flat, state.inner, flat_params)
        return tree.unflatten(spec, tree.unpack(flat, layout)), FlattenState(
            inner_state, state.signature
        )

    return GradientTransformation(init, update)


def multi_transform(transforms: Mapping[str, GradientTransformation]) -> GradientTransformation:
    """One transform per top-level key of a dict of params (e.g. actor / qvalue / log_alpha).

    ``update`` accepts grads for all keys or for a subset (those not given keep their state), so
    TD3's delayed actor can skip the actor's update on some steps.
    """
    transforms = dict(transforms)
    for k, t in transforms.items():
        if not isinstance(k, str) or not isinstance(t, GradientTransformation):
            raise TypeError(
                f"multi_transform: transforms must map str labels to GradientTransformations, "
                f"got {k!r}: {type(t).__name__}"
            )

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
        if params is not None:
            _check(params, "params")
            missing = set(grads) - set(params)
            if missing:
                raise KeyError(
                    f"multi_transform.update: params lack keys {sorted(missing)} that grads have"
                )
        if set(state.inner) != set(transforms):
            raise KeyError(
                f"multi_transform.update: state has keys {sorted(state.inner)}, transforms "
                f"{sorted(transforms)}; pass the state multi_transform.init returned"
            )
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
    """``torch.optim.Adam`` (L2 ``weight_decay`` added to the gradient, as torch does).

    Hyperparameters are validated here, as ``torch.optim.Adam`` does: ``learning_rate >= 0``
    and finite (a schedule at step 0), ``b1, b2`` in ``[0, 1)``, ``eps >= 0``,
    ``weight_decay >= 0``.
    """
    _check_lr("adam", learning_rate)
    _check_range("adam", "weight_decay", weight_decay)
    _check_adam_args("adam", b1, b2, eps)
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
    """``torch.optim.AdamW``: decoupled weight decay ``p <- p - lr * (adam(g) + wd * p)``.

    Validated as :func:`adam`.
    """
    _check_lr("adamw", learning_rate)
    _check_range("adamw", "weight_decay", weight_decay)
    _check_adam_args("adamw", b1, b2, eps)
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
    """``torch.optim.SGD`` with momentum, dampening, Nesterov and L2 weight decay.

    Validated as ``torch.optim.SGD``: ``learning_rate >= 0`` and finite, ``momentum >= 0``,
    ``dampening`` in ``[0, 1]``, ``weight_decay >= 0``.
    """
    _check_lr("sgd", learning_rate)
    momentum = _check_range("sgd", "momentum", momentum)
    _check_range("sgd", "dampening", dampening, 0.0, 1.0)
    _check_range("sgd", "weight_decay", weight_decay)
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
    """``torch.optim.RMSprop`` (momentum buffer applied after the RMS scaling, as torch does).

    Validated as ``torch.optim.RMSprop``: ``learning_rate >= 0`` and finite, ``alpha`` in
    ``[0, 1]``, ``eps >= 0``, ``momentum >= 0``, ``weight_decay >= 0``.
    """
    _check_lr("rmsprop", learning_rate)
    _check_range("rmsprop", "alpha", alpha, 0.0, 1.0)
    _check_range("rmsprop", "eps", eps)
    momentum = _check_range("rmsprop", "momentum", momentum)
    _check_range("rmsprop", "weight_decay", weight_decay)
    parts = [add_decayed_weights(weight_decay)] if weight_decay else []
    parts.append(scale_by_rms(alpha, eps, centered=centered))
    if momentum:
        parts.append(_plain_momentum(momentum))
    parts.append(scale_by_learning_rate(learning_rate))
    return chain(*parts)


def _check_adam_args(owner: str, b1: float, b2: float, eps: float) -> None:
    _check_range(owner, "b1", b1, 0.0, 1.0, hi_open=True)
    _check_range(owner, "b2", b2, 0.0, 1.0, hi_open=True)
    _check_range(owner, "eps", eps)


def _plain_momentum(momentum: float) -> GradientTransformation:
    # RMSprop's buffer starts at zero: buf = momentum * buf + g (no first-step special case).
    def init(params):
        return TraceState(_count_like(params), tree.zeros_like(params))

    def update(grads, state, params=None):
        _check_inputs("rmsprop momentum.update", grads, state.trace, params)
        buf = tree.map(lambda b, g: b * momentum + g, state.trace, grads)
        return buf, TraceState(state.count + 1, buf)

    return GradientTransformation(init, update)


def apply_updates(params: Params, updates: Updates) -> Params:
    """``params + updates`` leaf-wise (a new tree; nothing is modified in place).

    ``updates`` must have ``params``' structure and shapes (a broadcast would silently change a
    parameter's shape); their dtype is cast to each parameter's.
    """
    tree.check_same_structure(
        params, updates, owner="apply_updates", names=("params", "updates"), hint=_FIX
    )
    return tree.map(lambda p, u: p + u.to(p.dtype), params, updates)


def linear_schedule(init_value: float, end_value: float, transition_steps: int) -> Schedule:
    """A schedule going linearly from ``init_value`` to ``end_value`` over ``transition_steps``."""
    if (
        not isinstance(transition_steps, int)
        or isinstance(transition_steps, bool)
        or transition_steps <= 0
    ):
        raise ValueError(
            f"linear_schedule: transition_steps must be an int > 0, got {transition_steps!r}"
        )
    init_value = _check_range("linear_schedule", "init_value", init_value, -math.inf)
    end_value = _check_range("linear_schedule", "end_value", end_value, -math.inf)

    def schedule(count: torch.Tensor) -> torch.Tensor:
        frac = torch.clamp(count.float() / transition_steps, 0.0, 1.0)
        return init_value + frac * (end_value - init_value)

    return schedule


def cosine_decay_schedule(init_value: float, decay_steps: int, alpha: float = 0.0) -> Schedule:
    """optax's cosine decay: ``init_value * ((1 - alpha) (1 + cos(pi t / decay_steps)) / 2 +
    alpha)`` for ``t <= decay_steps``, then ``init_value * alpha`` (IQL's actor schedule,
    PyTorch's ``CosineAnnealingLR`` with ``eta_min = alpha * init_value``)."""
    owner = "cosine_decay_schedule"
    if not isinstance(decay_steps, int) or isinstance(decay_steps, bool) or decay_steps <= 0:
        raise ValueError(f"{owner}: decay_steps must be an int > 0, got {decay_steps!r}")
    init_value = _check_range(owner, "init_value", init_value, -math.inf)
    alpha = _check_range(owner, "alpha", alpha, 0.0, 1.0)

    def schedule(count: torch.Tensor) -> torch.Tensor:
        frac = torch.clamp(count.float() / decay_steps, 0.0, 1.0)
        cosine = 0.5 * (1.0 + torch.cos(math.pi * frac))
        return init_value * ((1.0 - alpha) * cosine + alpha)

    return schedule
