"""Pytree helpers over optree, aware of :class:`funcrl.Record`.

Parameter trees are nested ``dict``/``list``/``tuple``/``Record`` of tensors. ``None`` is an empty
subtree (not a leaf), as in JAX.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import optree
import torch

import funcrl.record  # noqa: F401  (registers Record with optree's "funcrl" namespace)

__all__ = [
    "map",
    "map_with_path",
    "leaves",
    "flatten",
    "unflatten",
    "structure",
    "stack",
    "unstack",
    "zeros_like",
    "ones_like",
    "full_like",
    "clone",
    "detach",
    "allclose",
    "global_norm",
    "add",
    "sub",
    "scale",
    "where",
    "num_params",
    "same_structure",
    "any_batched",
]

_NS = "funcrl"
_tree_map = optree.tree_map


def map(fn: Callable[..., Any], tree: Any, *rest: Any) -> Any:
    """Applies ``fn`` leaf-wise over one or more trees of the same structure."""
    return _tree_map(fn, tree, *rest, namespace=_NS)


def map_with_path(fn: Callable[..., Any], tree: Any, *rest: Any) -> Any:
    """Like :func:`map`, with the leaf's path (a tuple of keys/indices) as first argument."""
    return optree.tree_map_with_path(fn, tree, *rest, namespace=_NS)


def leaves(tree: Any) -> list[Any]:
    return optree.tree_leaves(tree, namespace=_NS)


def flatten(tree: Any) -> tuple[list[Any], Any]:
    """Returns ``(leaves, treedef)``; :func:`unflatten` inverts it."""
    return optree.tree_flatten(tree, namespace=_NS)


def unflatten(treedef: Any, leaves_: Sequence[Any]) -> Any:
    return optree.tree_unflatten(treedef, leaves_)


def structure(tree: Any) -> Any:
    return optree.tree_structure(tree, namespace=_NS)


def same_structure(a: Any, b: Any) -> bool:
    return structure(a) == structure(b)


def stack(trees: Sequence[Any], dim: int = 0) -> Any:
    """Stacks trees of identical structure leaf-wise: ``n`` trees -> one tree with a new dim.

    This is how ensembles and seeds are built: ``stack([net.init(s) for s in range(n)])``.
    """
    if len(trees) == 0:
        raise ValueError("tree.stack needs at least one tree")
    first = structure(trees[0])
    for i, t in enumerate(trees[1:], 1):
        if structure(t) != first:
            raise ValueError(f"tree.stack: tree {i} has structure {structure(t)}, tree 0 {first}")
    return map(lambda *xs: torch.stack(xs, dim), *trees)


def unstack(tree: Any, dim: int = 0) -> list[Any]:
    """Inverse of :func:`stack`: splits every leaf along ``dim``."""
    flat, treedef = flatten(tree)
    if not flat:
        return []
    n = flat[0].shape[dim]
    return [unflatten(treedef, [x.select(dim, i) for x in flat]) for i in range(n)]


def zeros_like(tree: Any) -> Any:
    return map(torch.zeros_like, tree)


def ones_like(tree: Any) -> Any:
    return map(torch.ones_like, tree)


def full_like(tree: Any, value: float) -> Any:
    return map(lambda x: torch.full_like(x, value), tree)


def clone(tree: Any) -> Any:
    return map(torch.clone, tree)


def detach(tree: Any) -> Any:
    """Stops gradients through every leaf (``Tensor.detach``)."""
    return map(torch.Tensor.detach, tree)


def add(a: Any, b: Any) -> Any:
    return map(torch.add, a, b)


def sub(a: Any, b: Any) -> Any:
    return map(torch.sub, a, b)


def scale(tree: Any, s: float | torch.Tensor) -> Any:
    return map(lambda x: x * s, tree)


def where(cond: torch.Tensor, a: Any, b: Any) -> Any:
    """Leaf-wise ``torch.where(cond, a, b)`` with a scalar (0-d) condition."""
    return map(lambda x, y: torch.where(cond, x, y), a, b)


def allclose(a: Any, b: Any, rtol: float = 1e-5, atol: float = 1e-8) -> bool:
    """True when ``a`` and ``b`` have the same structure, shapes and close leaves."""
    la, ta = flatten(a)
    lb, tb = flatten(b)
    if ta != tb:
        return False
    return all(x.shape == y.shape and torch.allclose(x, y, rtol, atol) for x, y in zip(la, lb))


def global_norm(tree: Any) -> torch.Tensor:
    """The l2 norm of all leaves taken together (as in gradient clipping)."""
    ls = leaves(tree)
    if not ls:
        return torch.zeros(())
    return torch.sqrt(sum(x.pow(2).sum() for x in ls))


def num_params(tree: Any) -> int:
    return sum(x.numel() for x in leaves(tree))


def any_batched(*trees: Any) -> bool:
    """Whether any tensor leaf is being ``torch.func.vmap``-ed (a functorch batched tensor).

    ``torch._foreach_*`` kernels have no batching rule; code with a foreach fast path (Adam, Polyak)
    takes its per-leaf path when this is true. Dynamo traces the check, so the same code compiles.
    """
    is_batched = torch._C._functorch.is_batchedtensor
    return any(isinstance(x, torch.Tensor) and is_batched(x) for t in trees for x in leaves(t))
