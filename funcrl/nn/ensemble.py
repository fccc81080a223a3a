"""Ensembles: ``n`` independently initialised copies of a net, evaluated with ``torch.func.vmap``."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from funcrl import tree
from funcrl.nn.core import Module, Params, Seed, make_generator

__all__ = ["Ensemble"]


@dataclasses.dataclass(frozen=True)
class Ensemble(Module):
    """``num_members`` copies of ``net`` with their parameters stacked on a leading member dim.

    Args:
        net: any funcrl net (``init``/``__call__``).
        num_members: ensemble size.
        in_dims: ``None`` to give every member the same inputs (``[*batch, ...]``), ``0`` when each
            input already has a leading member dim (``[num_members, *batch, ...]``).
        mode: ``"vmap"`` (one batched call, the fast path) or ``"loop"`` (a Python loop over
            members; the same result, kept for checks and debugging).
        randomness: ``vmap``'s randomness for nets that sample (dropout, noisy layers).

    Shapes:
        returns ``[num_members, *batch, *out]``.
    """

    net: Module
    num_members: int
    in_dims: int | None = None
    mode: str = "vmap"
    randomness: str = "different"

    def __post_init__(self) -> None:
        if self.num_members < 1:
            raise ValueError(f"Ensemble: num_members must be >= 1, got {self.num_members}")
        if self.mode not in ("vmap", "loop"):
            raise ValueError(f"Ensemble: mode must be 'vmap' or 'loop', got {self.mode!r}")
        if self.in_dims not in (None, 0):
            raise ValueError(f"Ensemble: in_dims must be None or 0, got {self.in_dims!r}")

    def init(self, seed: Seed = 0, *, device=None, dtype=torch.float32) -> Params:
        gen = make_generator(seed)
        members = [self.net.init(gen, device=device, dtype=dtype) for _ in range(self.num_members)]
        return tree.stack(members)

    def __call__(self, params: Params, *inputs: Any, **kwargs: Any) -> Any:
        n = tree.leaves(params)[0].shape[0]
        if n != self.num_members:
            raise ValueError(
                f"Ensemble: params have {n} members on their leading dim, expected "
                f"num_members={self.num_members}"
            )
        if self.in_dims == 0:
            for i, x in enumerate(tree.leaves(inputs)):
                if x.shape[0] != self.num_members:
                    raise ValueError(
                        f"Ensemble(in_dims=0): input {i} has leading dim {x.shape[0]}, expected "
                        f"num_members={self.num_members}"
                    )
        if self.mode == "loop":
            outs = []
            for i in range(self.num_members):
                p = tree.map(lambda t, i=i: t[i], params)
                xs = inputs if self.in_dims is None else tree.map(lambda t, i=i: t[i], inputs)
                outs.append(self.net(p, *xs, **kwargs))
            return tree.stack(outs)

        def member(p, *xs):
            return self.net(p, *xs, **kwargs)

        in_dims = (0, *([self.in_dims] * len(inputs)))
        return torch.func.vmap(member, in_dims=in_dims, randomness=self.randomness)(params, *inputs)
