"""Constants built on a device without copying host memory on every call.

``torch.tensor(value, device=d)`` and ``torch.as_tensor(value, device=d)`` copy a host buffer to
``d`` on every eager call: on CUDA a synchronising copy, inside a training step or an
environment step. Compiled code bakes such constants in once, but eager and vmapped calls pay it
every time. :func:`filled` gives the same tensor without that copy.
"""

from __future__ import annotations

from typing import Any

import torch

from funcrl._tracing import is_tracing

__all__ = ["filled"]

# Eager sequences, built once per (value, dtype, device). A few small tensors: the bounds and
# tables of the envs, actors and distributions in use.
_CACHE: dict[tuple[str, torch.dtype, torch.device], torch.Tensor] = {}


def filled(value: Any, dtype: torch.dtype, device: torch.device | str) -> torch.Tensor:
    """``torch.tensor(value, dtype=dtype, device=device)`` for a Python number or a (nested)
    tuple or list of them, without a host-to-device copy per call. The values round to ``dtype``
    exactly as ``torch.tensor`` rounds them.

    A number is one fill on ``device``. A sequence is a stack of its items' fills under a tracer
    (``torch.compile``, ``make_fx``: graph ops, folded by the compiler, not tensor constants);
    eagerly, one tensor per ``(value, dtype, device)`` built on first use and shared after, so
    it must not be modified in place.

    Shapes:
        ``[]`` for a number; ``[len(value), ...]`` for a sequence (rectangular).
    """
    if not isinstance(value, (tuple, list)):
        return torch.full((), value, dtype=dtype, device=device)
    if is_tracing():
        return _stacked(value, dtype, device)
    # repr, not the value: -0.0 == 0.0 and nan != nan as dict keys.
    key = (repr(_frozen(value)), dtype, torch.device(device))
    hit = _CACHE.get(key)
    if hit is None:
        hit = _CACHE[key] = torch.tensor(value, dtype=dtype).to(device)
    return hit


def _stacked(value: Any, dtype: torch.dtype, device: torch.device | str) -> torch.Tensor:
    if not isinstance(value, (tuple, list)):
        return torch.full((), value, dtype=dtype, device=device)
    if not value:
        return torch.empty((0,), dtype=dtype, device=device)
    return torch.stack([_stacked(v, dtype, device) for v in value])


def _frozen(value: Any) -> Any:
    return tuple(_frozen(v) for v in value) if isinstance(value, (tuple, list)) else value
