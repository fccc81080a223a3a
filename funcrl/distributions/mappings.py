"""Positive scale mappings and ``NormalParamExtractor`` (tensordict/TorchRL's ``mappings``).

All mappings are pure element-wise functions; the configurable ones are frozen dataclasses
(hashable, tensor-free) so they are constants to ``torch.compile``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Union

import torch
import torch.nn.functional as F

__all__ = [
    "biased_softplus",
    "inv_softplus",
    "expln",
    "mappings",
    "NormalParamExtractor",
]

Mapping = Callable[[torch.Tensor], torch.Tensor]


def inv_softplus(y: Union[float, torch.Tensor]) -> Union[float, torch.Tensor]:
    """``x`` such that ``softplus(x) = y``: ``log(expm1(y))``, with ``expm1(y)`` floored at 1e-6.

    The floor is tensordict's (it keeps ``y <= 0`` finite: ``inv_softplus(0) = log(1e-6)``).

    Args:
      y: a Python number (returns a float) or a tensor (returns a tensor of the same shape).
    """
    if isinstance(y, torch.Tensor):
        return y.expm1().clamp_min(1e-6).log()
    return math.log(max(math.expm1(float(y)), 1e-6))


@dataclasses.dataclass(frozen=True)
class biased_softplus:  # noqa: N801  (lower case: tensordict's name)
    """``softplus(x + shift) + min_val`` with ``shift`` chosen so that ``f(0) = bias``.

    Args:
      bias: the value returned for ``x = 0``.
      min_val: the infimum of the map. Default 0.01 (tensordict's).
    """

    bias: float
    min_val: float = 0.01

    @property
    def shift(self) -> float:
        return inv_softplus(self.bias - self.min_val)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return F.softplus(x + self.shift) + self.min_val


def expln(x: torch.Tensor) -> torch.Tensor:
    """``exp(x)`` for ``x <= 0``, ``log1p(x) + 1`` above (Rueckstiess et al., 2008). Smooth, > 0."""
    neg = x <= 0
    # Each branch sees only inputs where it is finite, so gradients stay finite too.
    return torch.where(neg, torch.exp(x.clamp(max=0)), torch.log1p(x.clamp(min=0)) + 1)


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


_MAPPINGS: dict[str, Mapping] = {
    "softplus": F.softplus,
    "exp": torch.exp,
    "relu": torch.relu,
    "biased_softplus": biased_softplus(1.0),
    "none": _identity,
    "expln": expln,
}


def mappings(key: str) -> Mapping:
    """The positive map named ``key`` (tensordict's ``mappings``).

    ``"softplus"``, ``"exp"``, ``"relu"``, ``"expln"``, ``"none"``, ``"biased_softplus"``
    (bias 1.0), ``"biased_softplus_<bias>"`` and ``"biased_softplus_<bias>_<min_val>"``.

    Raises:
      ValueError: for an unknown name or a malformed ``biased_softplus_...`` key.
    """
    if not isinstance(key, str):
        raise TypeError(f"mappings: key must be a str, got {type(key).__name__}")
    if key in _MAPPINGS:
        return _MAPPINGS[key]
    if key.startswith("biased_softplus_"):
        parts = key.split("_")[2:]
        try:
            numbers = [float(p) for p in parts]
        except ValueError:
            numbers = []
        if len(numbers) == 1:
            return biased_softplus(numbers[0])
        if len(numbers) == 2:
            return biased_softplus(numbers[0], min_val=numbers[1])
        raise ValueError(
            f"mappings: malformed key {key!r}; expected 'biased_softplus_<bias>' or "
            "'biased_softplus_<bias>_<min_val>' with float values"
        )
    raise ValueError(
        f"mappings: unknown mapping {key!r}; expected one of {sorted(_MAPPINGS)} or "
        "'biased_softplus_<bias>[_<min_val>]'"
    )


@dataclasses.dataclass(frozen=True)
class NormalParamExtractor:
    """Splits ``[..., 2d]`` into ``loc [..., d]`` and a positive ``scale [..., d]``.

    ``scale = max(scale_mapping(x[..., d:]), scale_lb)``, as tensordict's ``NormalParamExtractor``.

    Args:
      scale_mapping: a ``mappings`` name or a callable. Default ``"biased_softplus_1.0"``.
      scale_lb: lower bound on the scale. Default 1e-4.

    Example:
      >>> loc, scale = NormalParamExtractor()(torch.zeros(5, 4))
      >>> loc.shape, scale[0, 0].item()  # softplus biased so that f(0) = 1
      (torch.Size([5, 2]), 1.0)
    """

    scale_mapping: Union[str, Mapping] = "biased_softplus_1.0"
    scale_lb: float = 1e-4

    def __post_init__(self) -> None:
        if isinstance(self.scale_mapping, str):
            mappings(self.scale_mapping)  # fail at construction on a bad name

    @property
    def mapping(self) -> Mapping:
        if isinstance(self.scale_mapping, str):
            return mappings(self.scale_mapping)
        return self.scale_mapping

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Args: x ``[..., 2d]``. Returns: ``(loc [..., d], scale [..., d])``."""
        if x.ndim == 0 or x.shape[-1] % 2:
            raise ValueError(
                f"NormalParamExtractor: input must have an even last dim [..., 2d], got shape "
                f"{tuple(x.shape)}"
            )
        loc, scale = x.chunk(2, -1)
        return loc, self.mapping(scale).clamp_min(self.scale_lb)
