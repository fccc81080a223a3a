"""A net squashed into a box: ``mid + half * tanh(net(x))``."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from funcrl.nn.core import Module, Params, Seed

__all__ = ["TanhBounded"]


@dataclasses.dataclass(frozen=True)
class TanhBounded(Module):
    """``y = (high + low) / 2 + (high - low) / 2 * tanh(net(params, *inputs))``.

    The deterministic actor of DDPG/TD3 on any action box: ``tanh`` keeps ``y`` strictly inside
    ``[low, high]``. (TorchRL's ``TanhDelta`` also shifts the pre-tanh value by the box's middle;
    see :class:`funcrl.nn.TanhDeltaActor` for that variant.)

    Args:
        net: the unbounded network; its params are this module's params.
        low, high: the bounds, floats or (nested) tuples broadcastable to the output. They are
            static so the module stays hashable (a constant to ``torch.compile``).

    Shapes:
        ``net``'s output shape, e.g. ``[*batch, action_dim]``.
    """

    net: Module
    low: float | tuple[Any, ...] = -1.0
    high: float | tuple[Any, ...] = 1.0

    def __post_init__(self) -> None:
        low, high = torch.as_tensor(self.low), torch.as_tensor(self.high)
        if not bool((low < high).all()):
            raise ValueError(
                f"TanhBounded: need low < high everywhere, got {self.low}, {self.high}"
            )

    def init(self, seed: Seed = 0, *, device=None, dtype=torch.float32) -> Params:
        return self.net.init(seed, device=device, dtype=dtype)

    def __call__(self, params: Params, *inputs: torch.Tensor) -> torch.Tensor:
        # The wrapped net checks params and inputs: its params are this module's params.
        y = torch.tanh(self.net(params, *inputs))
        low = torch.as_tensor(self.low, dtype=y.dtype, device=y.device)
        high = torch.as_tensor(self.high, dtype=y.dtype, device=y.device)
        return (high + low) / 2 + (high - low) / 2 * y
