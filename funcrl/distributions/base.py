"""The small protocol every funcrl distribution follows.

A distribution is a light Python object built *inside* the function that uses it (a policy, a
loss): it holds the parameter tensors and static options, no state, no caches. Its methods are
pure tensor code (no ``.item()``, no Python branch on tensor values), so building and using it
traces under ``torch.compile(fullgraph=True)`` and batches under ``torch.func.vmap``.

Methods that draw random numbers (``rsample``, ``sample``) take ``key=``: with a
:func:`funcrl.random.key` they draw from it only (bitwise reproducible, eager or compiled, one key
per ``vmap`` row); with ``key=None`` from the global torch RNG, so ``torch.manual_seed`` reproduces
them (TorchRL's draws; under ``vmap`` pass ``randomness="different"``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Union

import torch

__all__ = ["Distribution", "ShapeLike"]

ShapeLike = Union[Sequence[int], torch.Size, int]


def as_size(sample_shape: ShapeLike) -> torch.Size:
    if isinstance(sample_shape, int):
        return torch.Size((sample_shape,))
    return torch.Size(sample_shape)


class Distribution:
    """Base class: ``batch_shape``, ``event_shape``, ``sample``, ``rsample``, ``log_prob``.

    Subclasses set ``self.batch_shape`` and ``self.event_shape`` (``torch.Size``) and implement
    ``rsample`` (or ``sample`` when there is no reparameterisation) and ``log_prob``.
    ``log_prob(value)`` always returns ``[*sample_shape, *batch_shape]``: the event dims are
    summed (independent dims) or consumed (categorical one-hot dims).
    """

    has_rsample: bool = True
    batch_shape: torch.Size
    event_shape: torch.Size
    validate_args: bool = False

    def rsample(
        self, sample_shape: ShapeLike = (), *, key: torch.Tensor | None = None
    ) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} has no reparameterised sampler")

    def sample(
        self, sample_shape: ShapeLike = (), *, key: torch.Tensor | None = None
    ) -> torch.Tensor:
        """A draw with no gradient, ``[*sample_shape, *batch_shape, *event_shape]``. Samples."""
        return self.rsample(sample_shape, key=key).detach()

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _extended_shape(self, sample_shape: ShapeLike = ()) -> torch.Size:
        return as_size(sample_shape) + self.batch_shape + self.event_shape

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(batch_shape={tuple(self.batch_shape)}, "
            f"event_shape={tuple(self.event_shape)})"
        )
