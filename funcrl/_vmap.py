"""``vmap`` over the leading dim of every leaf, cheap for dynamo to trace.

``torch.func.vmap`` flattens its inputs and outputs with ``torch.utils._pytree`` and matches
``in_dims``/``out_dims`` against them node by node. Under ``torch.compile`` dynamo executes that
Python symbolically, at ~600 bytecodes per leaf: vmapping a pure PPO iteration over seeds (its
state has 45 tensors, its outputs 59) cost ~6 s of dynamo's ~26 s trace, where the iteration's
own work is tracing the networks, the environment and the loops. :func:`vmap_leading` does the
same batching with funcrl's traced tree path (:mod:`funcrl.tree`) and functorch's batching
primitives, one call per leaf.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
from torch._functorch.vmap import _add_batch_dim, _remove_batch_dim, vmap_increment_nesting

from funcrl import tree

__all__ = ["vmap_leading"]

_RANDOMNESS = ("error", "different", "same")


def vmap_leading(
    fn: Callable[..., Any], *, randomness: str = "error", owner: str = "vmap_leading"
) -> Callable[..., Any]:
    """``torch.func.vmap(fn, in_dims=0, out_dims=0, randomness=randomness)`` for pytrees of
    tensors.

    Every leaf of the positional arguments is batched along its dim 0 and every leaf of the
    result is returned with the batch at dim 0 (an output that does not depend on the batch is
    expanded, as ``vmap`` does). Keyword arguments are not batched.

    Args:
        fn: a function of pytrees of tensors, returning a pytree of tensors.
        randomness: ``vmap``'s ``randomness`` (``"error"``, ``"different"`` or ``"same"``).
        owner: the function named in error messages.

    Returns:
        The batched function: leaves ``[B, ...]`` in, leaves ``[B, ...]`` out.

    Raises:
        ValueError: at construction when ``randomness`` is not one of vmap's three values (a
            bad value reaches functorch's C++ as an internal assertion); at call time when a
            leaf is not a tensor, is 0-d, or when the leaves' leading sizes differ (messages
            name ``owner``, the leaf's position and its shape).
    """
    if randomness not in _RANDOMNESS:
        raise ValueError(
            f"{owner}: randomness must be one of {', '.join(map(repr, _RANDOMNESS))}, "
            f"got {randomness!r}"
        )

    @functools.wraps(fn)
    def batched(*args: Any, **kwargs: Any) -> Any:
        leaves, spec = tree.flatten(args)
        if not leaves:
            raise ValueError(f"{owner}: no tensors to vmap over")
        size = None
        for i, x in enumerate(leaves):
            if not isinstance(x, torch.Tensor):
                raise ValueError(
                    f"{owner}: every input leaf must be a tensor with a leading batch dim, "
                    f"leaf {i} is of type {type(x).__name__}"
                )
            if x.ndim == 0:
                raise ValueError(
                    f"{owner}: leaf {i} is 0-d; every input leaf needs a leading batch dim"
                )
            if size is None:
                size = x.shape[0]
            elif x.shape[0] != size:
                raise ValueError(
                    f"{owner}: the leaves' leading (batch) sizes differ: leaf 0 has {size}, "
                    f"leaf {i} has shape {list(x.shape)}"
                )
        with vmap_increment_nesting(size, randomness) as level:
            inner = tree.unflatten(spec, [_add_batch_dim(x, 0, level) for x in leaves])
            out = fn(*inner, **kwargs)
            out_leaves, out_spec = tree.flatten(out)
            for i, y in enumerate(out_leaves):
                if not isinstance(y, torch.Tensor):
                    raise ValueError(
                        f"{owner}: every output leaf must be a tensor, leaf {i} is of type "
                        f"{type(y).__name__}"
                    )
            flat = [_remove_batch_dim(y, level, size, 0) for y in out_leaves]
        return tree.unflatten(out_spec, flat)

    return batched
