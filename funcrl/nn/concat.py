"""``Concat(net)``: a net over several inputs concatenated on the last dim (e.g. a Q(s, a) critic)."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from funcrl.nn.core import Module, Params, net_name

__all__ = ["Concat"]


@dataclasses.dataclass(frozen=True)
class Concat(Module):
    """``net(params, cat(inputs, -1))``: any net as a function of several inputs.

    A critic over ``(observation, action)`` is one line from any funcrl net::

        qvalue = Concat(MLP(obs_dim + act_dim, 1, num_cells=(256, 256), norm="layer"))
        q = qvalue(params, observation, action)           # [*batch, 1]

    Params are ``net``'s (``init`` delegates to it), and ``net`` checks them and the
    concatenated input (its size and dtype) itself.

    Args:
        net: the wrapped net, taking ``[*batch, sum(d_i)]``.

    Shapes:
        ``(x_1 [*batch, d_1], ..., x_k [*batch, d_k]) -> net's output for [*batch, sum(d_i)]``.
    """

    net: Module

    def __post_init__(self) -> None:
        if not callable(getattr(self.net, "init", None)) or not callable(self.net):
            raise TypeError(
                f"Concat: net must be a funcrl net (init and __call__), got {type(self.net).__name__}"
            )

    def init(self, *args: Any, **kwargs: Any) -> Params:
        """``net.init`` with the same arguments and defaults (e.g. ``TorchModule``'s ``seed=None``:
        the module's current weights)."""
        return self.net.init(*args, **kwargs)

    def param_template(self) -> Params:
        return self.net.param_template()

    def __call__(self, params: Params, *inputs: torch.Tensor, **kwargs: Any) -> Any:
        if not inputs:
            raise TypeError(f"{net_name(self)}: expected at least one input tensor, got none")
        first = inputs[0]
        for i, x in enumerate(inputs):
            if not isinstance(x, torch.Tensor) or x.dim() == 0:
                got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
                raise ValueError(
                    f"{net_name(self)}: inputs[{i}] must be a tensor [*batch, d], got {got}"
                )
            # torch.cat would broadcast nothing but silently promote mixed dtypes.
            if x.dtype != first.dtype:
                raise TypeError(
                    f"{net_name(self)}: inputs[{i}] is {x.dtype} but inputs[0] is {first.dtype}; "
                    f"give every input the params' dtype"
                )
            if x.shape[:-1] != first.shape[:-1]:
                raise ValueError(
                    f"{net_name(self)}: inputs[{i}] has batch shape {tuple(x.shape[:-1])}, "
                    f"inputs[0] has {tuple(first.shape[:-1])}; inputs are concatenated on the "
                    f"last dim and must share [*batch]"
                )
        x = first if len(inputs) == 1 else torch.cat(inputs, dim=-1)
        return self.net(params, x, **kwargs)
