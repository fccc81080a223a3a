"""Pytree helpers over optree, aware of :class:`funcrl.Record`.

Parameter trees are nested ``dict``/``list``/``tuple``/``Record`` of tensors. ``None`` is an empty
subtree (not a leaf), as in JAX.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

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
    "check_same_structure",
    "leaf_path",
    "is_namedtuple",
    "fingerprint",
    "FINGERPRINT_MODULUS",
    "any_batched",
    "Packing",
    "pack",
    "unpack",
]

_NS = "funcrl"
_tree_map = optree.tree_map

# ---------------------------------------------------------------------------------------------
# The traced path. Under torch.compile, dynamo runs optree's functions as Python polyfills that
# build a spec object per node: about half of the ~10 s dynamo spends tracing a PPO iteration
# (cProfile). Trees of plain dicts (string keys), lists, tuples, NamedTuples, None and tensors --
# parameter and optimizer trees -- are flattened here instead into a spec of nested tuples, in
# optree's leaf order (dict keys sorted, NamedTuple fields in order, None an empty node).
# Anything else (a Record, an OrderedDict, a custom node) takes optree's path, as eagerly.
# ---------------------------------------------------------------------------------------------

# A traced-path spec: ("funcrl.tree.traced", nodes, number of leaves, each dict's own key order).
# nodes is the tree's nodes in pre-order, each _LEAF, _NONE, ("d", sorted keys) or (kind, number
# of children); flattening and rebuilding walk it with a stack, not recursion: every function
# call dynamo inlines costs about as much as a node's whole handling.
_FAST = "funcrl.tree.traced"
_LEAF, _NONE = 0, 1


def is_namedtuple(t: type) -> bool:
    """Whether ``t`` is a NamedTuple class (a ``tuple`` subclass with ``_fields`` and ``_make``)."""
    if not (isinstance(t, type) and issubclass(t, tuple)):
        return False
    fields = getattr(t, "_fields", None)
    # getattr, not hasattr: dynamo on torch 2.11 cannot trace hasattr on a class.
    return type(fields) is tuple and callable(getattr(t, "_make", None))


def _traced_flatten(tree: Any) -> tuple[list[Any], Any] | None:
    # (leaves, spec), or None for a tree with a node the traced path does not take.
    out: list[Any] = []
    orders: list[tuple[str, ...]] = []
    nodes: list[Any] = []
    stack = [tree]
    while stack:
        x = stack.pop()
        if isinstance(x, torch.Tensor):
            out.append(x)
            nodes.append(_LEAF)
            continue
        t = type(x)
        if t is dict:
            for k in x:  # a loop, not all(<generator>): dynamo traces generators slowly
                if type(k) is not str:
                    return None
            keys = tuple(sorted(x))
            orders.append(tuple(x))
            nodes.append(("d", keys))
            for i in range(len(keys) - 1, -1, -1):
                stack.append(x[keys[i]])
        elif t is list or t is tuple or (isinstance(x, tuple) and is_namedtuple(t)):
            nodes.append(("l" if t is list else ("t" if t is tuple else t), len(x)))
            for i in range(len(x) - 1, -1, -1):
                stack.append(x[i])
        elif x is None:
            nodes.append(_NONE)
        elif t is int or t is float or t is bool or t is str:
            out.append(x)
            nodes.append(_LEAF)
        else:
            return None
    return out, (_FAST, tuple(nodes), len(out), tuple(orders))


def _build(spec: Any, leaves: list[Any]) -> Any:
    # The pre-order nodes read backwards: each container takes its children, already built,
    # from the top of the stack (first child on top).
    nodes, orders = spec[1], spec[3]
    i, j = len(leaves), len(orders)
    built: list[Any] = []
    for n in range(len(nodes) - 1, -1, -1):
        node = nodes[n]
        if node == _LEAF:
            i -= 1
            built.append(leaves[i])
        elif node == _NONE:
            built.append(None)
        elif node[0] == "d":
            # Leaves in sorted-key order, the dict in its keys' own order: optree's behaviour.
            by_key = {}
            for k in node[1]:
                by_key[k] = built.pop()
            j -= 1
            built.append({k: by_key[k] for k in orders[j]})
        else:
            children = []
            for _ in range(node[1]):
                children.append(built.pop())
            kind = node[0]
            if kind == "l":
                built.append(children)
            elif kind == "t":
                built.append(tuple(children))
            else:
                built.append(kind(*children))
    return built[0]


def _is_traced_spec(treedef: Any) -> bool:
    return type(treedef) is tuple and len(treedef) == 4 and treedef[0] == _FAST


def _same(a: Any, b: Any) -> bool:
    # Spec equality as optree's: dict key order is not part of the structure. A traced spec and
    # an optree one never compare equal. One of the trees then holds a node type the other lacks,
    # or a leaf that is neither a tensor nor a Python scalar; for the latter optree would say
    # "same structure", but it cannot be asked inside the trace (dynamo fails on its specs of
    # traced values). Parameter trees hold tensors only.
    if _is_traced_spec(a) and _is_traced_spec(b):
        return a[:3] == b[:3]
    return a == b


def map(fn: Callable[..., Any], tree: Any, *rest: Any) -> Any:
    """Applies ``fn`` leaf-wise over one or more trees of the same structure."""
    if torch.compiler.is_compiling():
        first = _traced_flatten(tree)
        if first is not None:
            others = []
            for t in rest:  # loops, not generators: dynamo traces generators slowly
                f = _traced_flatten(t)
                if f is None or not _same(f[1], first[1]):
                    break  # optree's path: its own error for a mismatch
                others.append(f[0])
            else:
                return unflatten(first[1], [fn(*xs) for xs in zip(first[0], *others)])
    return _tree_map(fn, tree, *rest, namespace=_NS)


def map_with_path(fn: Callable[..., Any], tree: Any, *rest: Any) -> Any:
    """Like :func:`map`, with the leaf's path (a tuple of keys/indices) as first argument."""
    return optree.tree_map_with_path(fn, tree, *rest, namespace=_NS)


def leaves(tree: Any) -> list[Any]:
    if torch.compiler.is_compiling():
        flat = _traced_flatten(tree)
        if flat is not None:
            return flat[0]
    return optree.tree_leaves(tree, namespace=_NS)


def flatten(tree: Any) -> tuple[list[Any], Any]:
    """Returns ``(leaves, treedef)``; :func:`unflatten` inverts it.

    Under ``torch.compile`` the treedef of a tree of dicts, lists, tuples, NamedTuples and
    tensors is funcrl's own (nested tuples, cheap to trace) rather than optree's; the leaves and
    their order are the same, and :func:`unflatten` takes either.
    """
    if torch.compiler.is_compiling():
        flat = _traced_flatten(tree)
        if flat is not None:
            return flat
    return optree.tree_flatten(tree, namespace=_NS)


def unflatten(treedef: Any, leaves_: Sequence[Any]) -> Any:
    if _is_traced_spec(treedef):
        leaves_ = list(leaves_)
        n = treedef[2]
        if len(leaves_) != n:
            raise ValueError(f"tree.unflatten: the treedef has {n} leaves, got {len(leaves_)}")
        return _build(treedef, leaves_)
    n = getattr(treedef, "num_leaves", None)
    if n is not None and len(leaves_) != n:
        raise ValueError(f"tree.unflatten: the treedef has {n} leaves, got {len(leaves_)}")
    return optree.tree_unflatten(treedef, leaves_)


def structure(tree: Any) -> Any:
    if torch.compiler.is_compiling():
        flat = _traced_flatten(tree)
        if flat is not None:
            return flat[1]
    return optree.tree_structure(tree, namespace=_NS)


def same_structure(a: Any, b: Any) -> bool:
    return _same(structure(a), structure(b))


def _describe(path: tuple) -> str:
    return "the root" if not path else "".join(f"[{k!r}]" for k in path)


def leaf_path(tree: Any, i: int) -> str:
    """The path of ``tree``'s ``i``-th leaf as text (``"['actor'][0]"``), for error messages."""
    paths = optree.tree_paths(tree, namespace=_NS)
    if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < len(paths):
        raise IndexError(f"tree.leaf_path: i must be an int in [0, {len(paths)}), got {i!r}")
    return _describe(paths[i])


# Codes of the dtypes a leaf may have, for fingerprint (the same in every process: a fingerprint
# is saved in checkpoints, as the size of FlattenState's empty signature tensor).
_DTYPE_CODES = {
    d: i + 1
    for i, d in enumerate(
        (
            torch.float32,
            torch.float64,
            torch.float16,
            torch.bfloat16,
            torch.complex64,
            torch.complex128,
            torch.int64,
            torch.int32,
            torch.int16,
            torch.int8,
            torch.uint8,
            torch.bool,
        )
    )
}
FINGERPRINT_MODULUS = (1 << 20) - 3  # a prime


def _mix(h: int, values: Any) -> int:
    for v in values:
        h = (h * 1_000_003 + v) % FINGERPRINT_MODULUS
    return h


def _mix_text(h: int, text: str) -> int:
    return _mix(h, [ord(c) for c in text])


def fingerprint(tree: Any, flat_leaves: list[torch.Tensor] | None = None) -> int:
    """A hash in ``[0, FINGERPRINT_MODULUS)`` of ``tree``'s structure and its leaves' shapes and
    dtypes: node kinds, dict keys, NamedTuple type names, then each leaf's shape and dtype in
    order.

    Plain int and str arithmetic over static metadata: with static shapes dynamo folds it to a
    constant, so a compiled function can check a tree against a saved fingerprint for free.
    Nodes the traced path does not walk itself (a ``Record``, an ``OrderedDict``) and
    non-tensor leaves count by their type's name only, their contents unhashed. The value is the
    same in every process and torch version (checkpoints keep it); two different trees of dicts,
    lists, tuples, NamedTuples and tensors share it with a chance of about one in a million.

    Args:
        tree: a pytree of tensors.
        flat_leaves: ``leaves(tree)`` when the caller has them already (saves a second walk
            under dynamo); not checked against ``tree``.
    """
    h = 17
    stack = [tree]
    while stack:
        x = stack.pop()
        if isinstance(x, torch.Tensor):
            h = _mix(h, (-3,))
        elif type(x) is dict:
            keys = sorted(x, key=str)
            h = _mix(h, (-4, len(keys)))
            for k in keys:
                # Each key's type and length first: {"ab", "c"} against {"a", "bc"}, 1 against "1".
                text = str(k)
                h = _mix_text(_mix(h, (-9, len(text))), type(k).__name__ + ":" + text)
            for i in range(len(keys) - 1, -1, -1):
                stack.append(x[keys[i]])
        elif (
            type(x) is list or type(x) is tuple or (isinstance(x, tuple) and is_namedtuple(type(x)))
        ):
            # A list and a tuple differ (optree's structures do); a NamedTuple adds its name.
            h = _mix(h, (-8 if type(x) is tuple else -5, len(x)))
            if type(x) is not list and type(x) is not tuple:
                h = _mix_text(h, type(x).__name__)
            for i in range(len(x) - 1, -1, -1):
                stack.append(x[i])
        elif x is None:
            h = _mix(h, (-6,))
        else:
            h = _mix_text(_mix(h, (-7,)), type(x).__name__)
    for x in leaves(tree) if flat_leaves is None else flat_leaves:
        if isinstance(x, torch.Tensor):  # any other leaf counted by its type in the walk
            h = _mix(h, (*x.shape, -1, _DTYPE_CODES.get(x.dtype, 0), -2))
    return h


def check_same_structure(
    a: Any,
    b: Any,
    *,
    owner: str,
    names: tuple[str, str] = ("a", "b"),
    shapes: bool = True,
    dtypes: bool = False,
    hint: str = "",
) -> None:
    """Raises a ``ValueError`` naming the first path where ``a`` and ``b`` differ.

    Compares the tree structure (keys, node types) and, optionally, each leaf's shape and dtype.
    Everything compared is static metadata, so the check costs nothing inside a compiled or
    vmapped function (under ``vmap`` both sides are compared on their per-example shapes).

    Args:
        a: a pytree of tensors.
        b: a pytree of tensors.
        owner: the function doing the check, named in the message.
        names: what ``a`` and ``b`` are, named in the message (``("target", "online")``).
        shapes: also require equal leaf shapes.
        dtypes: also require equal leaf dtypes.
        hint: appended to the message (how to fix the call).
    """
    na, nb = names
    la, ta = flatten(a)
    lb, tb = flatten(b)
    suffix = f"; {hint}" if hint else ""
    if not _same(ta, tb):
        pa = optree.tree_paths(a, namespace=_NS)
        pb = optree.tree_paths(b, namespace=_NS)
        only_a = [p for p in pa if p not in set(pb)]
        only_b = [p for p in pb if p not in set(pa)]
        if only_a:
            where = f"{_describe(only_a[0])} is in {na} but not in {nb}"
        elif only_b:
            where = f"{_describe(only_b[0])} is in {nb} but not in {na}"
        else:  # same leaf paths, different node types (list vs tuple, dict vs Record)
            sa = optree.tree_structure(a, namespace=_NS)
            sb = optree.tree_structure(b, namespace=_NS)
            where = f"same paths, different node types: {sa} vs {sb}"
        raise ValueError(f"{owner}: {na} and {nb} differ in structure: {where}{suffix}")
    if not (shapes or dtypes):
        return
    for i, (x, y) in enumerate(zip(la, lb)):
        bad_shape = shapes and x.shape != y.shape
        if bad_shape or (dtypes and x.dtype != y.dtype):
            path = leaf_path(a, i)
            what, u, v = (
                ("shape", tuple(x.shape), tuple(y.shape))
                if bad_shape
                else ("dtype", x.dtype, y.dtype)
            )
            raise ValueError(f"{owner}: leaf {path} has {what} {u} in {na}, {v} in {nb}{suffix}")


def stack(trees: Sequence[Any], dim: int = 0) -> Any:
    """Stacks trees of identical structure leaf-wise: ``n`` trees -> one tree with a new dim.

    This is how ensembles and seeds are built: ``stack([net.init(s) for s in range(n)])``.
    """
    if len(trees) == 0:
        raise ValueError("tree.stack needs at least one tree")
    first = structure(trees[0])
    for i, t in enumerate(trees[1:], 1):
        if not _same(structure(t), first):
            raise ValueError(f"tree.stack: tree {i} has structure {structure(t)}, tree 0 {first}")
        check_same_structure(trees[0], t, owner="tree.stack", names=("tree 0", f"tree {i}"))
    return map(lambda *xs: torch.stack(xs, dim), *trees)


def unstack(tree: Any, dim: int = 0) -> list[Any]:
    """Inverse of :func:`stack`: splits every leaf along ``dim``."""
    flat, treedef = flatten(tree)
    if not flat:
        return []
    n = flat[0].shape[dim]
    for i, x in enumerate(flat):
        if x.shape[dim] != n:
            path = leaf_path(tree, i)
            raise ValueError(
                f"tree.unstack: leaf {path} has size {x.shape[dim]} along dim {dim}, the first "
                f"leaf {n}; every leaf must share the stacked dim"
            )
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
    if not isinstance(cond, torch.Tensor) or cond.ndim != 0 or cond.dtype != torch.bool:
        got = (
            f"{cond.dtype} of shape {tuple(cond.shape)}"
            if isinstance(cond, torch.Tensor)
            else type(cond).__name__
        )
        raise ValueError(f"tree.where: cond must be a 0-dim bool tensor, got {got}")
    check_same_structure(a, b, owner="tree.where", names=("a", "b"))
    return map(lambda x, y: torch.where(cond, x, y), a, b)


def allclose(a: Any, b: Any, rtol: float = 1e-5, atol: float = 1e-8) -> bool:
    """True when ``a`` and ``b`` have the same structure, shapes and close leaves."""
    la, ta = flatten(a)
    lb, tb = flatten(b)
    if not _same(ta, tb):
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


class Packing(NamedTuple):
    """The static layout :func:`pack` returns and :func:`unpack` reads.

    Attributes:
        dtypes: one per buffer, in order of first appearance among the leaves.
        slots: per leaf ``(buffer, offset, width, shape)``: its columns ``[offset, offset +
            width)`` of that buffer hold it, reshaped from ``shape`` (its dims after the batch).
        batch_ndim: leading dims every leaf and buffer share.
    """

    dtypes: tuple[torch.dtype, ...]
    slots: tuple[tuple[int, int, int, tuple[int, ...]], ...]
    batch_ndim: int


def _packing(metas: Sequence[tuple[Sequence[int], torch.dtype]], batch_ndim: int) -> Packing:
    # The layout of leaves of these (shape after the batch dims, dtype), in order.
    dtypes: list[torch.dtype] = []
    widths: list[int] = []
    slots = []
    for shape, dtype in metas:
        if dtype not in dtypes:
            dtypes.append(dtype)
            widths.append(0)
        g = dtypes.index(dtype)
        width = math.prod(shape)
        slots.append((g, widths[g], width, tuple(shape)))
        widths[g] += width
    return Packing(tuple(dtypes), tuple(slots), batch_ndim)


def pack(
    leaves_: Sequence[torch.Tensor], batch_ndim: int = 0
) -> tuple[tuple[torch.Tensor, ...], Packing]:
    """Concatenates tensors into one buffer per dtype: ``[*batch, F]`` each.

    Compiled loops pay per tensor that crosses an iteration (Inductor's ``scan`` allocates and
    wraps each carried tensor anew every step): packing a pytree's leaves into a few buffers
    before a loop and :func:`unpack`-ing views of them inside makes that cost per dtype.

    Args:
        leaves_: tensors sharing their first ``batch_ndim`` dims ``batch``.
        batch_ndim: how many leading dims stay dims of the buffers.

    Returns:
        ``(buffers, packing)``: fresh tensors (never views of the leaves) and the layout.
    """
    owner = "tree.pack"
    if isinstance(batch_ndim, bool) or not isinstance(batch_ndim, int) or batch_ndim < 0:
        raise ValueError(f"{owner}: batch_ndim must be an int >= 0, got {batch_ndim!r}")
    if not leaves_:
        raise ValueError(f"{owner}: no tensors to pack")
    batch = tuple(leaves_[0].shape[:batch_ndim])
    for i, x in enumerate(leaves_):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{owner}: leaf {i} is a {type(x).__name__}, not a tensor")
        if x.ndim < batch_ndim or tuple(x.shape[:batch_ndim]) != batch:
            raise ValueError(
                f"{owner}: leaf {i} has shape {list(x.shape)}; expected leading dims "
                f"{list(batch)} like leaf 0 (batch_ndim={batch_ndim})"
            )
    layout = _packing([(x.shape[batch_ndim:], x.dtype) for x in leaves_], batch_ndim)
    columns: list[list[torch.Tensor]] = [[] for _ in layout.dtypes]
    for x, (g, _, width, _) in zip(leaves_, layout.slots):
        columns[g].append(x.reshape((*batch, width)))
    buffers = tuple(torch.cat(c, dim=batch_ndim) for c in columns)
    return buffers, layout


def unpack(
    buffers: Sequence[torch.Tensor], packing: Packing, *, copy: bool = False
) -> list[torch.Tensor]:
    """The leaves :func:`pack` concatenated, as views of ``buffers`` (whose leading dims may
    differ from the packed ones, e.g. after indexing rows), or with ``copy`` as fresh tensors.

    ``copy`` is for a compiled function's outputs: Inductor drops a ``clone`` of a view as a
    no-op, so cloned views would come back as views of one buffer (other strides than the
    inputs they replace: a recompile); ``narrow_copy`` is a copy it keeps.
    """
    owner = "tree.unpack"
    nb = packing.batch_ndim
    if len(buffers) != len(packing.dtypes):
        raise ValueError(
            f"{owner}: the packing has {len(packing.dtypes)} buffers "
            f"({', '.join(map(str, packing.dtypes))}), got {len(buffers)}"
        )
    widths = [0] * len(buffers)
    for g, offset, width, _ in packing.slots:
        widths[g] = max(widths[g], offset + width)
    for g, (buf, dtype) in enumerate(zip(buffers, packing.dtypes)):
        if buf.dtype != dtype or buf.ndim != nb + 1 or buf.shape[-1] != widths[g]:
            raise ValueError(
                f"{owner}: buffer {g} must be {dtype} [*batch ({nb} dims), {widths[g]}], got "
                f"{buf.dtype} {list(buf.shape)}"
            )
    out = []
    for g, offset, width, shape in packing.slots:
        buf = buffers[g]
        col = torch.narrow_copy(buf, nb, offset, width) if copy else buf.narrow(nb, offset, width)
        out.append(col.reshape((*buf.shape[:nb], *shape)))
    return out
