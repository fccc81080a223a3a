"""Ensembles: ``n`` independently initialised copies of a net, evaluated with ``torch.func.vmap``."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import optree
import torch

from funcrl import tree
from funcrl.nn.core import Module, Params, Seed, make_generator, net_name

__all__ = ["Ensemble", "vmap_members"]


def vmap_members(
    apply: Callable[..., Any],
    params: Params,
    *inputs: Any,
    in_dims: int | None = None,
    randomness: str = "error",
) -> Any:
    """``apply(params[i], *inputs)`` for every member ``i`` of stacked ``params``, in one ``vmap``.

    The params tree is flattened with optree (C++) first and ``vmap`` is given a flat list: its own
    pure-Python pytree code costs ~0.1 ms per call on a nested MLP tree, a third of an eager
    ensemble call on small nets. The maths is ``torch.func.vmap(apply, in_dims=(0, in_dims,
    ...))(params, *inputs)`` exactly.

    Args:
        apply: ``(member_params, *inputs) -> out`` for one member.
        params: stacked members, every leaf ``[n, ...]``.
        inputs: shared by all members (``in_dims=None``) or split on their leading dim
            (``in_dims=0``).
        randomness: ``vmap``'s randomness, for members that sample.

    Shapes:
        returns ``[n, *out]``.
    """
    leaves, spec = optree.tree_flatten(params, namespace="funcrl")

    def member(member_leaves, *xs):
        return apply(optree.tree_unflatten(spec, member_leaves), *xs)

    dims = (0, *([in_dims] * len(inputs)))
    return torch.func.vmap(member, in_dims=dims, randomness=randomness)(leaves, *inputs)


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
        leaves = tree.leaves(params)
        n = leaves[0].shape[0] if leaves and leaves[0].dim() else None
        if n != self.num_members and leaves and all(t.dim() and t.shape[0] == n for t in leaves):
            raise ValueError(
                f"{net_name(self)}: params have {n} members on their leading dim, expected "
                f"num_members={self.num_members}"
            )
        # Every member has the member net's layout (the member net checks it again under vmap).
        self.check_params(params)
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

        return vmap_members(
            member, params, *inputs, in_dims=self.in_dims, randomness=self.randomness
        )
