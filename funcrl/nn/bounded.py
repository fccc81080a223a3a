"""A net squashed into a box: ``mid + half * tanh(net(x))``."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from funcrl._constants import filled
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
        if not _below(self.low, self.high):
            raise ValueError(
                f"TanhBounded: need low < high everywhere, got {self.low}, {self.high}"
            )

    def init(self, seed: Seed = 0, *, device=None, dtype=torch.float32) -> Params:
        return self.net.init(seed, device=device, dtype=dtype)

    def __call__(self, params: Params, *inputs: torch.Tensor) -> torch.Tensor:
        # The wrapped net checks params and inputs: its params are this module's params.
        y = torch.tanh(self.net(params, *inputs))
        low, high = filled(self.low, y.dtype, y.device), filled(self.high, y.dtype, y.device)
        return (high + low) / 2 + (high - low) / 2 * y


def _below(low: Any, high: Any) -> bool:
    """``low < high`` everywhere, broadcasting like tensors. In Python where no broadcasting of
    sequences is needed (numbers, or sequences of one structure): a net built inside a traced
    step (the objectives' default nets) then adds no tensor constants to the trace."""
    seq = (tuple, list)
    if isinstance(low, seq) and isinstance(high, seq):
        if len(low) != len(high) or _depth(low) != _depth(high):
            return bool((torch.as_tensor(low) < torch.as_tensor(high)).all())
        return all(_below(lo, hi) for lo, hi in zip(low, high))
    if isinstance(low, seq):
        return all(_below(lo, high) for lo in low)
    if isinstance(high, seq):
        return all(_below(low, hi) for hi in high)
    return low < high


def _depth(v: Any) -> int:
    return (
        1 + _depth(v[0])
        if isinstance(v, (tuple, list)) and v
        else int(isinstance(v, (tuple, list)))
    )
