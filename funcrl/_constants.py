"""Constants built on a device without copying host memory.

``torch.tensor(value, device=d)`` and ``torch.as_tensor(value, device=d)`` copy a host buffer to
``d`` on every eager call: on CUDA a synchronising copy, inside a training step or an
environment step. Compiled code bakes such constants in once, but eager and vmapped calls pay it
every time. :func:`filled` builds the same tensor from fills on the device instead.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["filled"]


def filled(value: Any, dtype: torch.dtype, device: torch.device | str) -> torch.Tensor:
    """``torch.tensor(value, dtype=dtype, device=device)`` for a Python number or a (nested)
    tuple or list of them, filled on ``device``: a number is one fill, a sequence a stack of its
    items' fills. The values round to ``dtype`` exactly as ``torch.tensor`` rounds them.

    Shapes:
        ``[]`` for a number; ``[len(value), ...]`` for a sequence (rectangular).
    """
    if isinstance(value, (tuple, list)):
        if not value:
            return torch.empty((0,), dtype=dtype, device=device)
        return torch.stack([filled(v, dtype, device) for v in value])
    return torch.full((), value, dtype=dtype, device=device)
