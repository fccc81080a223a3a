"""Value targets as pure functions: TD(0), n-step, TD(lambda), TD(1) and GAE.

These are TorchRL's ``torchrl.objectives.value.functional`` estimators written as small pure
functions of tensors (names as in TorchRL; ``n_step_return`` as in rlax's
``n_step_bootstrapped_returns``).

Layout. All tensors share one shape, TorchRL's batch-major ``[*batch, T, 1]`` by default
(``time_dim=-2``); pass ``time_dim=0`` for time-major ``[T, *batch, 1]``. The trailing singleton
is required: a ``[B, T]`` tensor with the default ``time_dim=-2`` would silently read the batch
dim as time, so it raises and says to call ``x.unsqueeze(-1)`` (or to pass ``time_dim=-1``, the
only case where no trailing singleton is needed). Feature dims may sit between time and the
singleton (``[*batch, T, *F, 1]`` with ``time_dim`` pointing at ``T``). The shapes must be equal:
nothing is broadcast. Under ``torch.func.vmap`` use a negative ``time_dim`` (it counts from the
end, so it does not move when vmap strips a batch dim).

Dtypes. ``reward`` and the values are floating tensors of one dtype. ``gamma`` and ``lmbda`` are
in ``[0, 1]``: Python floats are checked; tensor values are not (that would force a host sync
inside a training step), only their shape and dtype.

Flags. ``done`` ends a trajectory: nothing (no lambda or GAE carry, no n-step sum) crosses from
step ``t`` to ``t + 1`` when ``done[t]``. ``terminated`` (a subset of ``done``) stops
bootstrapping: ``next_value[t]`` counts as 0 when ``terminated[t]``. A step that is ``done`` but
not ``terminated`` (truncation) bootstraps from ``next_value[t]``. The last step of the window is
treated as a trajectory end that bootstraps (the data stop there, the episode does not).
Flags may be bool or 0/1 integers or floats (any non-zero value counts as ``True``). Unlike TorchRL, ``terminated`` has no default: conflating it with
``done`` is a classic bug, so it must be passed explicitly.

``gamma`` and ``lmbda`` are Python floats, 0-dim tensors, or tensors of the inputs' shape
(per-step values, TorchRL's "rolling gamma" convention).

Gradients flow through every input; the objectives stop them (``.detach()``) where a target must
be constant.

The reverse recursions are computed by ``discounted_cumsum``: ``method="scan"`` is a Python loop
over the static ``T`` (unrolled by ``torch.compile``, fine under ``vmap``); ``method="matrix"``
builds the ``[T, T]`` discount matrix with a ``cumprod`` and does one reduction, which has no
sequential dependency (better for long windows on an accelerator; ``O(T^2)`` memory);
``method="associative"`` combines steps ``1, 2, 4, ...`` apart (Hillis-Steele, as
``jax.lax.associative_scan``): ``log2 T`` rounds of shifted products, ``O(T log T)`` work and
``O(T)`` memory, which a compiler fuses into a few kernels.
"""

from __future__ import annotations

import torch

__all__ = [
    "discounted_cumsum",
    "td0_return_estimate",
    "td0_advantage_estimate",
    "n_step_return",
    "td_lambda_return_estimate",
    "td_lambda_advantage_estimate",
    "td1_return_estimate",
    "td1_advantage_estimate",
    "generalized_advantage_estimate",
]

Scalar = float | torch.Tensor


# ------------------------------------------------------------------------------ input checks
_FLAGS = ("done", "terminated")


def _check_same_shape(owner: str, **tensors: torch.Tensor) -> torch.Size:
    """All tensors share one shape; values are floating (one dtype), flags bool/int/float."""
    shape = None
    first = None
    value_dtype, value_name = None, None
    for name, t in tensors.items():
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{owner}: {name} must be a tensor, got {type(t).__name__}")
        if shape is None:
            shape, first = t.shape, name
        elif t.shape != shape:
            raise ValueError(
                f"{owner}: {name} has shape {tuple(t.shape)}, expected {tuple(shape)} (the shape "
                f"of {first}); inputs must share TorchRL's [*batch, T, 1] layout, nothing is "
                "broadcast"
            )
        if name in _FLAGS:
            if t.is_complex():
                raise TypeError(
                    f"{owner}: {name} must be a bool, integer or float tensor, got {t.dtype}"
                )
        elif not t.is_floating_point():
            raise TypeError(
                f"{owner}: {name} must be a floating tensor, got {t.dtype}; call {name}.float()"
            )
        elif value_dtype is None:
            value_dtype, value_name = t.dtype, name
        elif t.dtype != value_dtype:
            raise TypeError(
                f"{owner}: {name} has dtype {t.dtype}, {value_name} has {value_dtype}; cast them "
                "to one floating dtype"
            )
    assert shape is not None
    return shape


def _time_dim(owner: str, shape: torch.Size, time_dim: int, name: str = "reward") -> int:
    """Resolves ``time_dim`` and checks the layout ``[*batch, T, *F, 1]`` (see the module doc)."""
    if (
        not isinstance(time_dim, int)
        or isinstance(time_dim, bool)
        or not -len(shape) <= time_dim < len(shape)
    ):
        raise ValueError(
            f"{owner}: time_dim={time_dim!r} is out of range for inputs of shape {tuple(shape)}"
        )
    dim = time_dim % len(shape)
    if dim != len(shape) - 1 and shape[-1] != 1:
        raise ValueError(
            f"{owner}: {name} has shape {tuple(shape)}, which does not end with the singleton "
            f"dim of the [*batch, T, 1] layout, so time_dim={time_dim} would read dim {dim} "
            f"(size {shape[dim]}) as time; call {name}.unsqueeze(-1) (and the same on every "
            "input), or pass time_dim=-1 if the last dim is time"
        )
    if shape[dim] == 0:
        raise ValueError(f"{owner}: the time dim {dim} of shape {tuple(shape)} is empty")
    return dim


def _flag(x: torch.Tensor) -> torch.Tensor:
    return x if x.dtype == torch.bool else x != 0


def _coef(owner: str, name: str, c: Scalar, like: torch.Tensor) -> torch.Tensor | float:
    """A Python float in ``[0, 1]`` stays a float; a tensor must be floating, 0-dim or ``like``'s
    shape (its values are not read: that would sync inside a compiled step)."""
    if isinstance(c, torch.Tensor):
        if c.ndim != 0 and c.shape != like.shape:
            raise ValueError(
                f"{owner}: {name} must be a float, a 0-dim tensor or a tensor of shape "
                f"{tuple(like.shape)}, got shape {tuple(c.shape)}"
            )
        if not c.is_floating_point():
            raise TypeError(f"{owner}: a tensor {name} must be floating, got {c.dtype}")
        return c
    if isinstance(c, bool) or not isinstance(c, int | float):
        raise TypeError(f"{owner}: {name} must be a float or a tensor, got {type(c).__name__}")
    if not 0.0 <= float(c) <= 1.0:  # also rejects NaN
        raise ValueError(f"{owner}: {name} must be in [0, 1], got {c}")
    return float(c)


def _time_major(x: torch.Tensor | float, dim: int) -> torch.Tensor | float:
    if isinstance(x, torch.Tensor) and x.ndim > 0:
        return x.movedim(dim, 0)
    return x


def _last_step_done(done_tm: torch.Tensor) -> torch.Tensor:
    """``done`` (time-major) with the last step forced to ``True``: the window ends there."""
    return torch.cat([done_tm[:-1], torch.ones_like(done_tm[-1:])], 0)


def _masked_next_value(next_value: torch.Tensor, terminated: torch.Tensor) -> torch.Tensor:
    # where, not a product: a terminal next_value may be garbage (inf/nan) and must not leak.
    return torch.where(terminated, torch.zeros_like(next_value), next_value)


# ------------------------------------------------------------------------------ the recursion
def _scan(x: torch.Tensor, discount: torch.Tensor) -> torch.Tensor:
    # y_t = x_t + discount_t * y_{t+1}, time-major; the loop is over a static T.
    outs = []
    acc = torch.zeros_like(x[0])
    for t in range(x.shape[0] - 1, -1, -1):
        acc = x[t] + discount[t] * acc
        outs.append(acc)
    return torch.stack(outs[::-1], 0)


def _matrix(x: torch.Tensor, discount: torch.Tensor) -> torch.Tensor:
    # y_t = sum_{s >= t} A[t, s] x_s with A[t, s] = prod_{k=t}^{s-1} discount_k.
    T = x.shape[0]
    rest = (1,) * (x.ndim - 1)
    idx = torch.arange(T, device=x.device)
    upper = (idx.view(1, T) >= idx.view(T, 1)).view(T, T, *rest)  # [t, k]: k >= t
    # prod_{j=t}^{k} discount_j for k >= t, obtained as a cumprod of discount masked to 1 for k < t.
    factors = torch.where(upper, discount.unsqueeze(0), torch.ones_like(discount).unsqueeze(0))
    prods = torch.cumprod(factors, dim=1)
    # A[t, s] = prods[t, s - 1] (an empty product, 1, at s = t), zero below the diagonal.
    shifted = torch.cat([torch.ones_like(prods[:, :1]), prods[:, :-1]], dim=1)
    a = torch.where(upper, shifted, torch.zeros_like(shifted))
    return (a * x.unsqueeze(0)).sum(1)


def _associative(x: torch.Tensor, discount: torch.Tensor) -> torch.Tensor:
    # (a_t, y_t) -> (a_t a_{t+k}, y_t + a_t y_{t+k}) for k = 1, 2, 4, ...: after the round with
    # shift k, y_t sums x over [t, t + 2k) and a_t is the discount across that span. Past T the
    # padding is (0, 0): y_T = 0, and a zero a_t stops a span that has already reached T.
    y, a = x, discount
    k, T = 1, x.shape[0]
    while k < T:
        y = y + a * torch.cat([y[k:], torch.zeros_like(y[:k])], 0)
        a = a * torch.cat([a[k:], torch.zeros_like(a[:k])], 0)
        k *= 2
    return y


_METHODS = {"scan": _scan, "matrix": _matrix, "associative": _associative}


def discounted_cumsum(
    x: torch.Tensor,
    discount: Scalar,
    *,
    time_dim: int = -2,
    method: str = "scan",
) -> torch.Tensor:
    """Reverse discounted sum ``y_t = x_t + discount_t * y_{t+1}`` with ``y_T = 0``.

    Args:
        x: ``[*batch, T, 1]`` (time along ``time_dim``; feature dims may precede the trailing
            singleton, which may be left out only when ``time_dim`` is the last dim).
        discount: a float, a 0-dim tensor, or a tensor of ``x``'s shape (``discount_t``; put a 0
            where the sum must not carry over).
        time_dim: the time dimension of ``x``.
        method: ``"scan"`` (loop over T), ``"matrix"`` (``[T, T]`` discount matrix) or
            ``"associative"`` (``log2 T`` rounds of shifted products).

    Returns:
        ``y`` of ``x``'s shape.
    """
    owner = "discounted_cumsum"
    _check_method(owner, method)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{owner}: x must be a tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{owner}: x must be a floating tensor, got {x.dtype}; call x.float()")
    dim = _time_dim(owner, x.shape, time_dim, "x")
    d = _coef(owner, "discount", discount, x)
    d_tm = _time_major(torch.as_tensor(d, dtype=x.dtype, device=x.device).expand_as(x), dim)
    return _cumsum_tm(_time_major(x, dim), d_tm, method, owner).movedim(0, dim)


def _check_method(owner: str, method: str) -> None:
    if not isinstance(method, str) or method not in _METHODS:
        raise ValueError(f"{owner}: method must be one of {sorted(_METHODS)}, got {method!r}")


def _cumsum_tm(x: torch.Tensor, discount: torch.Tensor, method: str, owner: str) -> torch.Tensor:
    _check_method(owner, method)
    return _METHODS[method](x, discount)


# ------------------------------------------------------------------------------ TD(0)
def td0_return_estimate(
    gamma: Scalar,
    next_value: torch.Tensor,
    reward: torch.Tensor,
    terminated: torch.Tensor,
) -> torch.Tensor:
    """One-step bootstrapped return ``G_t = r_t + gamma * (1 - terminated_t) * V(s_{t+1})``.

    Args:
        gamma: discount.
        next_value: ``V(s_{t+1})``, ``[*batch, 1]`` (any shape, equal to the others).
        reward: ``r_t``, same shape.
        terminated: ``True`` where ``s_{t+1}`` is terminal, same shape.

    Returns:
        The target, same shape. No time dimension is needed.
    """
    owner = "td0_return_estimate"
    _check_same_shape(owner, next_value=next_value, reward=reward, terminated=terminated)
    g = _coef(owner, "gamma", gamma, reward)
    return reward + g * _masked_next_value(next_value, _flag(terminated))


def td0_advantage_estimate(
    gamma: Scalar,
    value: torch.Tensor,
    next_value: torch.Tensor,
    reward: torch.Tensor,
    terminated: torch.Tensor,
) -> torch.Tensor:
    """TD error ``delta_t = r_t + gamma * (1 - terminated_t) * V(s_{t+1}) - V(s_t)``."""
    _check_same_shape(
        "td0_advantage_estimate",
        value=value,
        next_value=next_value,
        reward=reward,
        terminated=terminated,
    )
    _coef("td0_advantage_estimate", "gamma", gamma, reward)
    return td0_return_estimate(gamma, next_value, reward, terminated) - value


# ------------------------------------------------------------------------------ n-step
def n_step_return(
    gamma: Scalar,
    n: int,
    next_value: torch.Tensor,
    reward: torch.Tensor,
    done: torch.Tensor,
    terminated: torch.Tensor,
    *,
    time_dim: int = -2,
) -> torch.Tensor:
    """n-step bootstrapped return, truncated at trajectory ends.

    ``G_t = sum_{k=0}^{m-1} gamma^k r_{t+k} + gamma^m (1 - terminated_{t+m-1}) V(s_{t+m})`` where
    ``m = min(n, steps to the first done at or after t, steps to the end of the window)``. With
    per-step ``gamma``, ``gamma^k`` is the product of the ``gamma`` s along the way. Computed as the
    recursion ``G^(1)_t = r_t + gamma_t V'_t`` and
    ``G^(k+1)_t = r_t + gamma_t * (V'_t if done_t else G^(k)_{t+1})`` (``V'`` = next value masked
    by ``terminated``; the last step counts as done), ``n`` vectorized steps.

    Args:
        gamma: discount.
        n: number of steps (static Python int >= 1); ``n = 1`` is TD(0), ``n >= T`` is TD(1).
        next_value: ``V(s_{t+1})``, ``[*batch, T, 1]``.
        reward: ``r_t``, same shape.
        done: trajectory ends, same shape.
        terminated: terminal next states, same shape.
        time_dim: the time dimension (``-2`` batch-major, ``0`` time-major).

    Returns:
        ``G_t`` of the inputs' shape.
    """
    owner = "n_step_return"
    shape = _check_same_shape(
        owner, next_value=next_value, reward=reward, done=done, terminated=terminated
    )
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"{owner}: n must be an int >= 1, got {n!r}")
    dim = _time_dim(owner, shape, time_dim)
    g = _time_major(_coef(owner, "gamma", gamma, reward), dim)
    r = _time_major(reward, dim)
    nv = _time_major(_masked_next_value(next_value, _flag(terminated)), dim)
    ends = _last_step_done(_time_major(_flag(done), dim))
    ret = r + g * nv
    for _ in range(n - 1):
        ahead = torch.cat([ret[1:], torch.zeros_like(ret[:1])], 0)
        ret = r + g * torch.where(ends, nv, ahead)
    return ret.movedim(0, dim)


# ------------------------------------------------------------------------------ TD(lambda)
def td_lambda_return_estimate(
    gamma: Scalar,
    lmbda: Scalar,
    next_value: torch.Tensor,
    reward: torch.Tensor,
    done: torch.Tensor,
    terminated: torch.Tensor,
    *,
    time_dim: int = -2,
    method: str = "scan",
) -> torch.Tensor:
    """TD(lambda) return (TorchRL's ``td_lambda_return_estimate``, rolling gamma).

    ``G_t = r_t + gamma_t * ((1 - lambda_t) V'_t + lambda_t * G_{t+1})`` inside a trajectory and
    ``G_t = r_t + gamma_t V'_t`` where ``done_t`` (and at the last step), with
    ``V'_t = (1 - terminated_t) V(s_{t+1})``. As a discounted cumulative sum:
    ``x_t = r_t + gamma_t V'_t (1 - lambda_t c_t)``, ``discount_t = gamma_t lambda_t c_t`` with
    ``c_t = 1 - done_t`` (0 at the last step).

    Args:
        gamma: discount.
        lmbda: the lambda mixing coefficient (``0`` gives TD(0), ``1`` the Monte-Carlo return
            bootstrapped at trajectory ends).
        next_value: ``V(s_{t+1})``, ``[*batch, T, 1]``.
        reward: ``r_t``, same shape.
        done: trajectory ends, same shape.
        terminated: terminal next states, same shape.
        time_dim: the time dimension (``-2`` batch-major, ``0`` time-major).
        method: ``"scan"``, ``"matrix"`` or ``"associative"`` (see ``discounted_cumsum``).

    Returns:
        ``G_t`` of the inputs' shape.
    """
    owner = "td_lambda_return_estimate"
    _check_method(owner, method)
    shape = _check_same_shape(
        owner, next_value=next_value, reward=reward, done=done, terminated=terminated
    )
    dim = _time_dim(owner, shape, time_dim)
    g = _time_major(_coef(owner, "gamma", gamma, reward), dim)
    lam = _time_major(_coef(owner, "lmbda", lmbda, reward), dim)
    r = _time_major(reward, dim)
    nv = _time_major(_masked_next_value(next_value, _flag(terminated)), dim)
    carry = (~_last_step_done(_time_major(_flag(done), dim))).to(r.dtype)
    x = r + g * nv * (1.0 - lam * carry)
    discount = (g * lam * carry).expand_as(x)
    return _cumsum_tm(x, discount, method, owner).movedim(0, dim)


def td_lambda_advantage_estimate(
    gamma: Scalar,
    lmbda: Scalar,
    value: torch.Tensor,
    next_value: torch.Tensor,
    reward: torch.Tensor,
    done: torch.Tensor,
    terminated: torch.Tensor,
    *,
    time_dim: int = -2,
    method: str = "scan",
) -> torch.Tensor:
    """TD(lambda) return minus ``V(s_t)``."""
    owner = "td_lambda_advantage_estimate"
    shape = _check_same_shape(
        owner, value=value, next_value=next_value, reward=reward, done=done, terminated=terminated
    )
    _time_dim(owner, shape, time_dim)
    _coef(owner, "gamma", gamma, reward)
    _coef(owner, "lmbda", lmbda, reward)
    ret = td_lambda_return_estimate(
        gamma, lmbda, next_value, reward, done, terminated, time_dim=time_dim, method=method
    )
    return ret - value


def td1_return_estimate(
    gamma: Scalar,
    next_value: torch.Tensor,
    reward: torch.Tensor,
    done: torch.Tensor,
    terminated: torch.Tensor,
    *,
    time_dim: int = -2,
    method: str = "scan",
) -> torch.Tensor:
    """TD(1): the discounted return to the trajectory end, bootstrapped there unless terminated.

    Equal to ``td_lambda_return_estimate`` with ``lmbda=1`` (TorchRL's ``td1_return_estimate``).
    """
    owner = "td1_return_estimate"
    shape = _check_same_shape(
        owner, next_value=next_value, reward=reward, done=done, terminated=terminated
    )
    _time_dim(owner, shape, time_dim)
    _coef(owner, "gamma", gamma, reward)
    return td_lambda_return_estimate(
        gamma, 1.0, next_value, reward, done, terminated, time_dim=time_dim, method=method
    )


def td1_advantage_estimate(
    gamma: Scalar,
    value: torch.Tensor,
    next_value: torch.Tensor,
    reward: torch.Tensor,
    done: torch.Tensor,
    terminated: torch.Tensor,
    *,
    time_dim: int = -2,
    method: str = "scan",
) -> torch.Tensor:
    """TD(1) return minus ``V(s_t)``."""
    owner = "td1_advantage_estimate"
    shape = _check_same_shape(
        owner, value=value, next_value=next_value, reward=reward, done=done, terminated=terminated
    )
    _time_dim(owner, shape, time_dim)
    _coef(owner, "gamma", gamma, reward)
    return td_lambda_advantage_estimate(
        gamma, 1.0, value, next_value, reward, done, terminated, time_dim=time_dim, method=method
    )


# ------------------------------------------------------------------------------ GAE
def generalized_advantage_estimate(
    gamma: Scalar,
    lmbda: Scalar,
    value: torch.Tensor,
    next_value: torch.Tensor,
    reward: torch.Tensor,
    done: torch.Tensor,
    terminated: torch.Tensor,
    *,
    time_dim: int = -2,
    method: str = "scan",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized advantage estimation (Schulman et al. 2016, arXiv:1506.02438).

    ``delta_t = r_t + gamma_t (1 - terminated_t) V(s_{t+1}) - V(s_t)`` and
    ``A_t = delta_t + gamma_t lambda_t (1 - done_t) A_{t+1}`` (``A_T = 0``).

    Args:
        gamma: discount.
        lmbda: GAE's lambda.
        value: ``V(s_t)``, ``[*batch, T, 1]``.
        next_value: ``V(s_{t+1})``, same shape.
        reward: ``r_t``, same shape.
        done: trajectory ends, same shape.
        terminated: terminal next states, same shape.
        time_dim: the time dimension (``-2`` batch-major, ``0`` time-major).
        method: ``"scan"``, ``"matrix"`` or ``"associative"`` (see ``discounted_cumsum``).

    Returns:
        ``(advantage, value_target)`` with ``value_target = advantage + value``, both of the
        inputs' shape (TorchRL's order).
    """
    owner = "generalized_advantage_estimate"
    _check_method(owner, method)
    shape = _check_same_shape(
        owner,
        value=value,
        next_value=next_value,
        reward=reward,
        done=done,
        terminated=terminated,
    )
    dim = _time_dim(owner, shape, time_dim)
    g = _coef(owner, "gamma", gamma, reward)
    lam = _coef(owner, "lmbda", lmbda, reward)
    delta = reward + g * _masked_next_value(next_value, _flag(terminated)) - value
    carry = (~_flag(done)).to(delta.dtype)
    discount = (g * lam * carry).expand_as(delta)
    advantage = _cumsum_tm(
        _time_major(delta, dim), _time_major(discount, dim), method, owner
    ).movedim(0, dim)
    return advantage, advantage + value
