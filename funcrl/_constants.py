"""Constants built on a device without copying host memory on every call.

``torch.tensor(value, device=d)`` and ``torch.as_tensor(value, device=d)`` copy a host buffer to
``d`` on every eager call: on CUDA a synchronising copy, inside a training step or an
environment step. Compiled code bakes such constants in once, but eager and vmapped calls pay it
every time. :func:`filled` gives the same tensor without that copy.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from funcrl._tracing import is_tracing

__all__ = ["filled"]

# Eager sequences, built once per (value, dtype, device): the bounds and tables of the envs,
# actors and distributions in use, a few small tensors.
_CACHE: dict[tuple[Any, torch.dtype, torch.device], torch.Tensor] = {}
# The same entries by the value's identity: the sequences passed are mostly module or class
# constants, the same object every call, and hashing a 64-number tuple costs more than the copy.
# Each entry keeps its value alive, so the id is not reused while the entry exists.
_BY_ID: dict[tuple[int, torch.dtype, Any], tuple[Any, torch.Tensor]] = {}
# Both are emptied when they reach this size: a caller building new values every call (an
# annealed bound, a tuple made afresh) must not grow them without end.
_MAX_ENTRIES = 4096


def filled(value: Any, dtype: torch.dtype, device: torch.device | str) -> torch.Tensor:
    """``torch.as_tensor(value, dtype=dtype, device=device)`` without a host-to-device copy per
    call, for a Python number, a (nested) tuple or list of them, or a tensor.

    A number is one fill on ``device``. A sequence is a stack of its items' fills under a tracer
    (``torch.compile``, ``make_fx``: graph ops the compiler folds, not tensor constants) or in
    ``inference_mode`` or a dispatch mode; otherwise one tensor per ``(value, dtype, device)``,
    copied on first use and shared after (so never modify it in place). A tensor is cast and
    moved as ``Tensor.to`` does. Values round to ``dtype`` as ``torch.tensor`` rounds them,
    overflow to ``inf`` included.

    Args:
        value: a number, a rectangular (nested) sequence of numbers, or a tensor.
        dtype: the result's dtype.
        device: the result's device.

    Returns:
        ``[]`` for a number; ``[len(value), ...]`` for a sequence; ``value``'s shape for a tensor.
    """
    if isinstance(value, torch.Tensor):
        return value.to(dtype=dtype, device=device)
    if not isinstance(value, (tuple, list)):
        return _number(value, dtype, device)
    if (
        is_tracing()
        or torch.is_inference_mode_enabled()
        or torch._C._len_torch_dispatch_stack() > 0
    ):
        # Never cached: a tensor made here (an inference tensor, a fake one) would be handed
        # to every later eager call.
        return _stacked(value, dtype, device)
    by_id = _BY_ID.get((id(value), dtype, device))
    if by_id is not None and by_id[0] is value and isinstance(value, tuple):
        return by_id[1]
    key = (_key(value), dtype, torch.device(device))
    hit = _CACHE.get(key)
    if hit is None:
        if len(_CACHE) >= _MAX_ENTRIES:
            _CACHE.clear()
        hit = _CACHE[key] = torch.tensor(value, dtype=dtype).to(device)
    if isinstance(value, tuple) and key[0] == value:  # tuples all the way down: immutable
        if len(_BY_ID) >= _MAX_ENTRIES:
            _BY_ID.clear()
        _BY_ID[(id(value), dtype, device)] = (value, hit)
    return hit


def _number(value: Any, dtype: torch.dtype, device: torch.device | str) -> torch.Tensor:
    try:
        return torch.full((), value, dtype=dtype, device=device)
    except RuntimeError:
        # Out of dtype's range: torch.full refuses where torch.tensor rounds (to +-inf for a
        # float dtype) or wraps; the copy keeps torch.tensor's answer for these rare values.
        return torch.tensor(value, dtype=dtype).to(device)


def _stacked(value: Any, dtype: torch.dtype, device: torch.device | str) -> torch.Tensor:
    if not isinstance(value, (tuple, list)):
        return _number(value, dtype, device)
    if not value:
        return torch.empty((0,), dtype=dtype, device=device)
    return torch.stack([_stacked(v, dtype, device) for v in value])


def _key(value: Any) -> Any:
    """A hashable key: the value as nested tuples, or its ``repr`` where it holds -0.0 or NaN
    (equal to 0.0, or unequal to itself, as dict keys)."""
    frozen = _frozen(value)
    return repr(frozen) if _special(frozen) else frozen


def _frozen(value: Any) -> Any:
    return tuple(_frozen(v) for v in value) if isinstance(value, (tuple, list)) else value


def _special(value: Any) -> bool:
    if isinstance(value, tuple):
        return any(_special(v) for v in value)
    return isinstance(value, float) and (
        math.isnan(value) or (value == 0.0 and math.copysign(1.0, value) < 0)
    )
