"""Numerical helpers shared by the distributions: safe tanh/atanh, Normal log-density, checks.

Everything here is a pure tensor function with no host syncs, so it traces under
``torch.compile(fullgraph=True)`` and batches under ``torch.func.vmap``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from numbers import Number
from typing import Union

import torch
import torch.nn.functional as F

from funcrl._constants import filled

__all__ = [
    "standard_normal",
    "standard_uniform",
    "TensorLike",
    "tanh_eps",
    "safe_tanh",
    "safe_atanh",
    "tanh_log_abs_det_jacobian",
    "normal_log_prob",
    "sum_rightmost",
    "as_param",
    "check_positive",
    "check_value_shape",
    "check_low_high",
]

TensorLike = Union[torch.Tensor, Number]
Scale = Union[torch.Tensor, Number, Callable[[torch.Tensor], torch.Tensor]]

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)
_LOG2 = math.log(2.0)


def tanh_eps(dtype: torch.dtype) -> float:
    """The margin kept from +-1 by the safe tanh: ``torch.finfo(dtype).resolution``.

    1e-6 in float32, 1e-15 in float64 (0.001 in float16/bfloat16), as TorchRL's ``safetanh``.
    """
    return torch.finfo(dtype).resolution


def _straight_through(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    # Value of `y`, gradient of `x`: `x - x.detach()` is exactly 0.0, so the value is `y` bit for bit.
    return y.detach() + (x - x.detach())


def safe_tanh(x: torch.Tensor) -> torch.Tensor:
    """``tanh(x)`` kept in ``[-1 + eps, 1 - eps]`` (``eps = tanh_eps(x.dtype)``).

    The clamp keeps the result invertible: ``atanh`` of it is finite. The gradient is the one of
    the unclamped ``tanh`` (``1 - tanh(x)^2``), as TorchRL's ``SafeTanhTransform``, so the clamp
    never cuts the pathwise gradient.

    Args:
      x: any shape.

    Returns:
      Same shape as ``x``.
    """
    lim = 1.0 - tanh_eps(x.dtype)
    t = torch.tanh(x)
    return _straight_through(t, t.clamp(-lim, lim))


def safe_atanh(y: torch.Tensor) -> torch.Tensor:
    """``atanh(clamp(y, -1 + eps, 1 - eps))``, finite for every ``y`` (even ``|y| >= 1``).

    The gradient passes through the clamp, ``1 / (1 - clamp(y)^2)``, as TorchRL's ``safeatanh``.
    At ``|y| = 1`` in float32 the result is ``+-atanh(1 - 1e-6) = +-7.248``; in float64
    ``+-atanh(1 - 1e-15) = +-17.616``.

    Args:
      y: any shape.

    Returns:
      Same shape as ``y``.
    """
    lim = 1.0 - tanh_eps(y.dtype)
    return torch.atanh(_straight_through(y, y.clamp(-lim, lim)))


def tanh_log_abs_det_jacobian(x: torch.Tensor) -> torch.Tensor:
    """``log |d tanh(x) / dx| = log(1 - tanh(x)^2) = 2 (log 2 - x - softplus(-2x))``.

    The right-hand form never evaluates ``1 - tanh^2`` (which rounds to 0 for ``|x| > 9`` in
    float32), so it is finite and accurate for every finite ``x``.

    Args:
      x: pre-tanh values, any shape.

    Returns:
      Same shape as ``x``.
    """
    return 2.0 * (_LOG2 - x - F.softplus(-2.0 * x))


def normal_log_prob(x: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Element-wise Gaussian log-density, written as ``torch.distributions.Normal.log_prob``.

    Args:
      x, loc, scale: broadcastable shapes.

    Returns:
      ``-(x - loc)^2 / (2 scale^2) - log(scale) - log(2 pi) / 2``, broadcast shape.
    """
    return -((x - loc) ** 2) / (2.0 * scale**2) - torch.log(scale) - _HALF_LOG_2PI


def sum_rightmost(x: torch.Tensor, n: int) -> torch.Tensor:
    """Sums the ``n`` rightmost dims of ``x`` (``n = 0``: ``x`` itself)."""
    if n == 0:
        return x
    return x.sum(dim=tuple(range(-n, 0)))


def as_param(value: TensorLike, like: torch.Tensor, *, name: str, owner: str) -> torch.Tensor:
    """A number or tensor as a tensor of ``like``'s dtype/device (no copy when already right).

    Numbers become 0-d tensors. Tensors on another device are moved (TorchRL does the same).
    """
    if isinstance(value, torch.Tensor):
        if value.device != like.device or value.dtype != like.dtype:
            value = value.to(device=like.device, dtype=like.dtype)
        return value
    if isinstance(value, Number):
        return filled(value, like.dtype, like.device)
    raise TypeError(f"{owner}: {name} must be a tensor or a number, got {type(value).__name__}")


def resolve_scale(scale: Scale, loc: torch.Tensor, *, owner: str) -> torch.Tensor:
    """TorchRL accepts ``scale`` as a tensor, a number, or a callable ``scale(loc)``."""
    if callable(scale) and not isinstance(scale, torch.Tensor):
        scale = scale(loc)
    return as_param(scale, loc, name="scale", owner=owner)


# ---- validation (only when validate_args=True: these sync with the host) -----------------------


def check_floating(x: torch.Tensor, *, name: str, owner: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{owner}: {name} must be a tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{owner}: {name} must be a floating tensor, got dtype {x.dtype}")


def check_positive(x: torch.Tensor, *, name: str, owner: str) -> None:
    """Raises unless every entry of ``x`` is finite and > 0 (host sync)."""
    bad = ~(torch.isfinite(x) & (x > 0))
    if bool(bad.any()):
        raise ValueError(
            f"{owner}: {name} must be finite and > 0 everywhere; {int(bad.sum())} of "
            f"{x.numel()} entries are not (min={x.min().item():.4g})"
        )


def check_finite(x: torch.Tensor, *, name: str, owner: str) -> None:
    """Raises unless every entry of ``x`` is finite (host sync)."""
    bad = ~torch.isfinite(x)
    if bool(bad.any()):
        raise ValueError(f"{owner}: {name} has {int(bad.sum())} non-finite entries")


def check_low_high(low: torch.Tensor, high: torch.Tensor, *, owner: str) -> None:
    """Raises unless ``high > low`` everywhere (host sync)."""
    if not bool((high > low).all()):
        raise ValueError(
            f"{owner}: high must be strictly greater than low everywhere, got low={low.tolist()} "
            f"high={high.tolist()}"
        )


def check_value_shape(
    value: torch.Tensor,
    shape: Sequence[int],
    *,
    owner: str,
    name: str = "value",
    what: str = "batch_shape + event_shape",
) -> None:
    """Raises unless ``value.shape`` ends with a shape broadcastable to ``shape``.

    Leading extra dims (sample dims) are allowed: ``value`` is ``[*sample, *shape]``.
    """
    shape = tuple(shape)
    vshape = tuple(value.shape)
    ok = len(vshape) >= len(shape)
    if ok:
        tail = vshape[len(vshape) - len(shape) :]
        ok = all(v == s or v == 1 for v, s in zip(tail, shape))
    if not ok:
        raise ValueError(
            f"{owner}: {name} has shape {vshape}, expected [*sample_shape, *{what}] with "
            f"{what} = {shape}"
        )


def standard_normal(
    shape: torch.Size, like: torch.Tensor, key: torch.Tensor | None = None
) -> torch.Tensor:
    """``N(0, 1)`` noise of ``shape``, dtype/device of ``like``. Samples.

    With ``key=None`` the global torch RNG (``torch.randn``, TorchRL's draw); with a key,
    :func:`funcrl.random.normal` (bitwise reproducible, eager or compiled, under ``vmap``).
    """
    if key is None:
        return torch.randn(shape, dtype=like.dtype, device=like.device)
    from funcrl import random

    return random.normal(key, shape, like.dtype).to(like.device)


def standard_uniform(
    shape: torch.Size, like: torch.Tensor, key: torch.Tensor | None = None
) -> torch.Tensor:
    """``U[0, 1)`` noise of ``shape``, dtype/device of ``like`` (``torch.rand`` or a key). Samples."""
    if key is None:
        return torch.rand(shape, dtype=like.dtype, device=like.device)
    from funcrl import random

    return random.uniform(key, shape, like.dtype).to(like.device)
