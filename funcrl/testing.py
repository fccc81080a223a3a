"""Test helpers for code written with funcrl (chex-like assertions, variants, strategies).

Assertions work on tensors and on pytrees (``dict``/``list``/``tuple``/:class:`funcrl.Record`)
and name the first offending leaf by its path::

    from funcrl import testing

    testing.assert_shape(q, (batch, None))          # None matches any size
    testing.assert_trees_all_close(new_params, ref_params, rtol=1e-6)

``variants`` runs one test body three ways -- eagerly, under ``torch.func.vmap`` and under
``torch.compile(fullgraph=True)`` -- by handing it a ``variant`` that transforms a function::

    @testing.variants
    def test_td_error(variant):
        f = variant(my_td_error)               # eager / vmapped / compiled version of the function
        testing.assert_trees_all_close(f(q, target), expected)

The vmap variant stacks every tensor argument ``size`` times on a new leading dim, calls
``vmap(fn)`` and checks that all members agree before returning member 0, so the call sees batched
tensors (no ``.item()``, no data-dependent Python branches) and the result keeps eager's shape. The
compile variant resets dynamo and compiles with ``fullgraph=True``, so any graph break fails the
test. A ``variant`` fixture gives the same three cases to any test that asks for it (import it in
``conftest.py``: ``from funcrl.testing import variant  # noqa: F401``).

The hypothesis strategies (``tensors``, ``records``, ``param_trees``, ``specs``) import hypothesis
lazily; it is only needed when they are called.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import optree
import torch

from funcrl import tree
from funcrl.record import Record

__all__ = [
    "assert_shape",
    "assert_rank",
    "assert_trees_all_close",
    "assert_trees_all_equal",
    "assert_trees_all_equal_shapes",
    "assert_tree_all_finite",
    "format_path",
    "Variant",
    "VARIANT_NAMES",
    "make_variant",
    "variants",
    "variant",
    "tensors",
    "records",
    "param_trees",
    "specs",
]

_NS = "funcrl"

# ---------------------------------------------------------------------------- paths


def format_path(path: Sequence[Any]) -> str:
    """``("actor", "layers", 0, "weight") -> "['actor']['layers'][0]['weight']"`` (``<root>`` if empty)."""
    if not path:
        return "<root>"
    return "".join(f"[{p!r}]" for p in path)


def _flatten_with_path(x: Any) -> tuple[list[tuple], list[Any], Any]:
    return optree.tree_flatten_with_path(x, namespace=_NS)


def _leaf_items(x: Any) -> list[tuple[str, Any]]:
    paths, leaves, _ = _flatten_with_path(x)
    return [(format_path(p), leaf) for p, leaf in zip(paths, leaves)]


def _shape_str(shape: Sequence[Any]) -> str:
    return "(" + ", ".join("..." if s is Ellipsis else str(s) for s in shape) + ")"


# ---------------------------------------------------------------------------- assertions


def _shape_matches(actual: tuple[int, ...], expected: Sequence[Any]) -> bool:
    expected = tuple(expected)
    if Ellipsis in expected:
        i = expected.index(Ellipsis)
        head, tail = expected[:i], expected[i + 1 :]
        if Ellipsis in tail:
            raise ValueError(f"assert_shape: at most one Ellipsis in shape, got {expected}")
        if len(actual) < len(head) + len(tail):
            return False
        return _shape_matches(actual[: len(head)], head) and _shape_matches(
            actual[len(actual) - len(tail) :], tail
        )
    if len(actual) != len(expected):
        return False
    return all(e is None or e == a for e, a in zip(expected, actual))


def assert_shape(x: Any, shape: Sequence[int | None | Any]) -> None:
    """Asserts every tensor leaf of ``x`` has ``shape``.

    Args:
        x: a tensor or a pytree of tensors.
        shape: a sequence of ints; ``None`` matches any size, one ``...`` matches any number of
            dims (``(..., 3)``: any tensor whose last dim is 3).

    Raises:
        AssertionError: naming the leaf path, the expected and the actual shape.
    """
    __tracebackhide__ = True  # pytest shows the caller's line
    if isinstance(shape, int):
        raise TypeError(f"assert_shape: shape must be a sequence, got the int {shape}")
    for path, leaf in _leaf_items(x):
        actual = tuple(leaf.shape)
        if not _shape_matches(actual, shape):
            where = "" if path == "<root>" else f" at {path}"
            raise AssertionError(
                f"assert_shape: expected shape {_shape_str(shape)}{where}, got {actual}"
            )


def assert_rank(x: Any, rank: int | Iterable[int]) -> None:
    """Asserts every tensor leaf of ``x`` has ``rank`` dims (an int or a set of allowed ranks)."""
    __tracebackhide__ = True  # pytest shows the caller's line
    allowed = {rank} if isinstance(rank, int) else set(rank)
    for path, leaf in _leaf_items(x):
        if leaf.ndim not in allowed:
            where = "" if path == "<root>" else f" at {path}"
            want = rank if isinstance(rank, int) else sorted(allowed)
            raise AssertionError(
                f"assert_rank: expected rank {want}{where}, got rank {leaf.ndim} "
                f"(shape {tuple(leaf.shape)})"
            )


def _check_structures(a: Any, b: Any, fn: str) -> tuple[list, list, list]:
    __tracebackhide__ = True  # pytest shows the caller's line
    pa, la, ta = _flatten_with_path(a)
    pb, lb, tb = _flatten_with_path(b)
    if ta != tb:
        only_a = sorted(map(format_path, set(pa) - set(pb)))
        only_b = sorted(map(format_path, set(pb) - set(pa)))
        detail = []
        if only_a:
            detail.append(f"only in the first: {only_a}")
        if only_b:
            detail.append(f"only in the second: {only_b}")
        if not detail:
            detail.append(f"{ta}\nvs\n{tb}")
        raise AssertionError(f"{fn}: trees differ in structure; " + "; ".join(detail))
    return pa, la, lb


def _as_tensor(x: Any) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.as_tensor(x)


def assert_trees_all_close(
    a: Any,
    b: Any,
    rtol: float = 1e-5,
    atol: float = 1e-6,
    *,
    equal_nan: bool = False,
    check_dtype: bool = False,
) -> None:
    """Asserts two pytrees have the same structure and leaf-wise ``|a - b| <= atol + rtol * |b|``.

    Args:
        a, b: tensors or pytrees of tensors (Python numbers are accepted as leaves).
        rtol, atol: tolerances, as ``torch.allclose``.
        equal_nan: treat NaNs in the same places as equal.
        check_dtype: also require identical dtypes.

    Raises:
        AssertionError: naming the first differing leaf path, the largest absolute and relative
            differences and where the largest one is.
    """
    __tracebackhide__ = True  # pytest shows the caller's line
    paths, la, lb = _check_structures(a, b, "assert_trees_all_close")
    for path, x, y in zip(paths, la, lb):
        x, y = _as_tensor(x), _as_tensor(y)
        name = format_path(path)
        if x.shape != y.shape:
            raise AssertionError(
                f"assert_trees_all_close: leaf {name} has shape {tuple(x.shape)} vs "
                f"{tuple(y.shape)}"
            )
        if check_dtype and x.dtype != y.dtype:
            raise AssertionError(
                f"assert_trees_all_close: leaf {name} has dtype {x.dtype} vs {y.dtype}"
            )
        x, y = x.detach(), y.detach().to(x.device)
        if x.dtype == torch.bool or y.dtype == torch.bool:
            if not torch.equal(x, y.to(x.dtype)):
                n = int((x != y.to(x.dtype)).sum())
                raise AssertionError(
                    f"assert_trees_all_close: leaf {name} differs in {n} of {x.numel()} entries"
                )
            continue
        common = torch.promote_types(x.dtype, y.dtype)
        if not common.is_floating_point and not common.is_complex:
            common = torch.float64
        xf, yf = x.to(common), y.to(common)
        if torch.allclose(xf, yf, rtol=rtol, atol=atol, equal_nan=equal_nan):
            continue
        diff = (xf - yf).abs()
        finite = torch.isfinite(diff)
        bad = ~torch.isclose(xf, yf, rtol=rtol, atol=atol, equal_nan=equal_nan)
        worst = torch.where(finite, diff, torch.full_like(diff, math.inf))
        flat_i = int(torch.argmax(torch.where(bad, worst, torch.zeros_like(worst))))
        index = tuple(int(i) for i in torch.unravel_index(torch.tensor(flat_i), x.shape))
        rel = diff / yf.abs().clamp_min(torch.finfo(diff.dtype).tiny)
        raise AssertionError(
            f"assert_trees_all_close: leaf {name} differs (rtol={rtol}, atol={atol}): "
            f"{int(bad.sum())} of {x.numel()} entries mismatch; max abs diff "
            f"{float(diff[finite].max()) if finite.any() else math.nan:.3g}, max rel diff "
            f"{float(rel[finite].max()) if finite.any() else math.nan:.3g}; at index {index}: "
            f"{float(xf.reshape(-1)[flat_i])} vs {float(yf.reshape(-1)[flat_i])}"
        )


def assert_trees_all_equal(a: Any, b: Any) -> None:
    """Asserts two pytrees have the same structure, shapes, dtypes and exactly equal leaves."""
    __tracebackhide__ = True  # pytest shows the caller's line
    paths, la, lb = _check_structures(a, b, "assert_trees_all_equal")
    for path, x, y in zip(paths, la, lb):
        x, y = _as_tensor(x), _as_tensor(y)
        name = format_path(path)
        if x.shape != y.shape or x.dtype != y.dtype:
            raise AssertionError(
                f"assert_trees_all_equal: leaf {name} is {tuple(x.shape)} {x.dtype} vs "
                f"{tuple(y.shape)} {y.dtype}"
            )
        if not torch.equal(x, y.to(x.device)):
            n = int((x != y.to(x.device)).sum())
            raise AssertionError(
                f"assert_trees_all_equal: leaf {name} differs in {n} of {x.numel()} entries"
            )


def assert_trees_all_equal_shapes(*trees: Any) -> None:
    """Asserts all trees have the same structure and the same leaf shapes."""
    __tracebackhide__ = True  # pytest shows the caller's line
    if len(trees) < 2:
        raise ValueError("assert_trees_all_equal_shapes needs at least two trees")
    for i, t in enumerate(trees[1:], 1):
        paths, la, lb = _check_structures(trees[0], t, "assert_trees_all_equal_shapes")
        for path, x, y in zip(paths, la, lb):
            if tuple(x.shape) != tuple(y.shape):
                raise AssertionError(
                    f"assert_trees_all_equal_shapes: leaf {format_path(path)} has shape "
                    f"{tuple(x.shape)} in tree 0 and {tuple(y.shape)} in tree {i}"
                )


def assert_tree_all_finite(x: Any) -> None:
    """Asserts no leaf holds NaN or infinity; names every offending leaf and its count."""
    __tracebackhide__ = True  # pytest shows the caller's line
    bad = []
    for path, leaf in _leaf_items(x):
        leaf = _as_tensor(leaf)
        if leaf.is_floating_point() or leaf.is_complex():
            n = int((~torch.isfinite(leaf)).sum())
            if n:
                bad.append(f"{path} ({n} of {leaf.numel()} entries)")
    if bad:
        raise AssertionError("assert_tree_all_finite: non-finite values at " + ", ".join(bad))


# ---------------------------------------------------------------------------- variants

VARIANT_NAMES = ("eager", "vmap", "compile")


@dataclasses.dataclass(frozen=True)
class Variant:
    """A way to run a function: ``variant(fn)`` returns an eager, vmapped or compiled version.

    Attributes:
        name: ``"eager"``, ``"vmap"`` or ``"compile"``.
        vmap_size: how many copies of the inputs the vmap variant batches over.
        randomness: ``vmap``'s randomness (``"same"`` so that all members of a sampling function
            agree and can be compared).
        backend: the ``torch.compile`` backend. ``"aot_eager"`` (the default, or the
            ``FUNCRL_TEST_COMPILE_BACKEND`` environment variable) traces through dynamo and
            AOTAutograd, which is where graph breaks and untraceable ops show up, without paying
            for inductor's code generation; pass ``"inductor"`` to test the generated kernels too.
        check_members: in the vmap variant, assert every member's output equals member 0's.
    """

    name: str
    vmap_size: int = 3
    randomness: str = "same"
    backend: str | None = None
    check_members: bool = True

    def __post_init__(self) -> None:
        if self.name not in VARIANT_NAMES:
            raise ValueError(f"Variant: name must be one of {VARIANT_NAMES}, got {self.name!r}")
        if self.vmap_size < 1:
            raise ValueError(f"Variant: vmap_size must be >= 1, got {self.vmap_size}")

    def __call__(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        if self.name == "eager":
            return fn
        if self.name == "vmap":
            return _vmapped(fn, self.vmap_size, self.randomness, self.check_members)
        backend = self.backend or os.environ.get("FUNCRL_TEST_COMPILE_BACKEND", "aot_eager")
        # A fresh dynamo cache per compiled function: tests never hit the recompile limit and a
        # graph break cannot hide behind an earlier successful compile.
        torch._dynamo.reset()
        return torch.compile(fn, fullgraph=True, backend=backend, dynamic=False)

    def __repr__(self) -> str:
        return f"Variant({self.name!r})"


def _vmapped(fn: Callable, size: int, randomness: str, check_members: bool) -> Callable:
    """``fn`` run under ``vmap`` over ``size`` stacked copies of every tensor argument."""

    @functools.wraps(fn)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        leaves, treedef = optree.tree_flatten((args, kwargs), namespace=_NS, none_is_leaf=True)
        where = [i for i, x in enumerate(leaves) if isinstance(x, torch.Tensor)]
        if not where:
            raise ValueError(
                f"vmap variant of {getattr(fn, '__name__', fn)}: no tensor among the arguments "
                "to batch over"
            )
        # A stacked copy, not an expand: the function may write into its inputs' clones.
        stacked = [torch.stack([leaves[i]] * size) for i in where]

        def inner(tensors: list[torch.Tensor]) -> Any:
            full = list(leaves)
            for i, t in zip(where, tensors):
                full[i] = t
            a, kw = optree.tree_unflatten(treedef, full)
            return fn(*a, **kw)

        out = torch.func.vmap(inner, randomness=randomness)(stacked)
        if check_members:
            first = tree.map(lambda y: y[0], out)
            for m in range(1, size):
                try:
                    assert_trees_all_close(
                        tree.map(lambda y, m=m: y[m], out), first, rtol=1e-5, atol=1e-6
                    )
                except AssertionError as e:
                    raise AssertionError(
                        f"vmap variant of {getattr(fn, '__name__', fn)}: member {m} of identical "
                        f"inputs differs from member 0 ({e})"
                    ) from None
        return tree.map(lambda y: y[0], out)

    return wrapped


def make_variant(name: str, **options: Any) -> Variant:
    """``Variant(name, **options)`` (``vmap_size``, ``randomness``, ``backend``, ``check_members``)."""
    return Variant(name, **options)


def variants(*names: Any, **options: Any) -> Any:
    """Runs a test once per variant: eager, under ``vmap`` and under ``torch.compile``.

    Use bare or with a subset / options::

        @variants
        def test_a(variant): ...

        @variants("eager", "compile", backend="inductor")
        def test_b(variant): ...

    With pytest each variant is its own test case (``test_a[eager]``, ``test_a[vmap]``, ...);
    it composes with ``pytest.mark.parametrize`` and hypothesis's ``@given`` (put ``@variants``
    outermost). Without pytest the variants run one after another in a single call.

    Args:
        *names: variant names (default: all of ``"eager"``, ``"vmap"``, ``"compile"``).
        **options: passed to :class:`Variant`.
    """
    if len(names) == 1 and callable(names[0]) and not isinstance(names[0], str):
        return variants()(names[0])
    chosen = names or VARIANT_NAMES
    for n in chosen:
        if n not in VARIANT_NAMES:
            raise ValueError(f"variants: unknown variant {n!r}; expected one of {VARIANT_NAMES}")
    vs = [Variant(n, **options) for n in chosen]

    def decorate(test: Callable) -> Callable:
        try:
            import pytest
        except ImportError:  # pragma: no cover - exercised only without pytest

            @functools.wraps(test)
            def run_all(*args: Any, **kwargs: Any) -> None:
                for v in vs:
                    test(*args, variant=v, **kwargs)

            return run_all
        return pytest.mark.parametrize("variant", vs, ids=[v.name for v in vs])(test)

    return decorate


def _make_fixture() -> Any:
    try:
        import pytest
    except ImportError:  # pragma: no cover - exercised only without pytest
        return None

    @pytest.fixture(params=VARIANT_NAMES)
    def variant(request: Any) -> Variant:
        """A pytest fixture giving each test the eager, vmap and compile :class:`Variant`."""
        return Variant(request.param)

    return variant


variant = _make_fixture()


# ---------------------------------------------------------------------------- hypothesis strategies


def _hyp() -> tuple[Any, Any, Any]:
    try:
        import hypothesis.extra.numpy as hnp
        import hypothesis.strategies as st
        import numpy as np
    except ImportError as e:  # pragma: no cover - exercised only without hypothesis
        raise ImportError("funcrl.testing strategies require the hypothesis package") from e
    return st, hnp, np


_NP_DTYPES = {
    torch.float16: "float16",
    torch.float32: "float32",
    torch.float64: "float64",
    torch.int8: "int8",
    torch.int16: "int16",
    torch.int32: "int32",
    torch.int64: "int64",
    torch.uint8: "uint8",
    torch.bool: "bool",
}


def tensors(
    shape: Sequence[int] | Any = (),
    dtype: torch.dtype = torch.float32,
    *,
    min_value: float | None = -10.0,
    max_value: float | None = 10.0,
    allow_nan: bool = False,
    allow_infinity: bool = False,
    device: torch.device | str | None = None,
) -> Any:
    """A hypothesis strategy for tensors.

    Args:
        shape: a fixed shape, or a strategy of shapes (e.g. ``batch_shapes()``).
        dtype: float, int or bool dtype.
        min_value, max_value: bounds of the elements (ignored for bool; ``None`` for unbounded).
        allow_nan, allow_infinity: for float dtypes.
        device: where the tensors are put.
    """
    st, hnp, np = _hyp()
    if dtype not in _NP_DTYPES:
        raise ValueError(f"tensors: unsupported dtype {dtype}; expected one of {list(_NP_DTYPES)}")
    np_dtype = np.dtype(_NP_DTYPES[dtype])
    if dtype == torch.bool:
        elements = st.booleans()
    elif dtype.is_floating_point:
        width = {torch.float16: 16, torch.float32: 32, torch.float64: 64}[dtype]
        elements = st.floats(
            min_value=_inward(min_value, np_dtype, up=True),
            max_value=_inward(max_value, np_dtype, up=False),
            allow_nan=allow_nan,
            allow_infinity=allow_infinity,
            allow_subnormal=False,
            width=width,
        )
    else:
        info = np.iinfo(np_dtype)
        lo = info.min if min_value is None else max(int(math.ceil(min_value)), int(info.min))
        hi = info.max if max_value is None else min(int(math.floor(max_value)), int(info.max))
        elements = st.integers(lo, hi)
    shapes = shape if isinstance(shape, st.SearchStrategy) else st.just(tuple(shape))
    arrays = shapes.flatmap(lambda s: hnp.arrays(np_dtype, tuple(s), elements=elements))
    return arrays.map(lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(device))


def _inward(bound: float | None, np_dtype: Any, *, up: bool) -> float | None:
    """``bound`` rounded into the float dtype, towards the inside of the interval."""
    if bound is None:
        return None
    _, _, np = _hyp()
    x = np_dtype.type(bound)
    if up and float(x) < bound:
        x = np.nextafter(x, np_dtype.type(np.inf))
    elif not up and float(x) > bound:
        x = np.nextafter(x, np_dtype.type(-np.inf))
    return float(x)


def batch_shapes(min_dims: int = 0, max_dims: int = 2, min_side: int = 1, max_side: int = 4) -> Any:
    """A strategy of small shapes (tuples of ints)."""
    st, hnp, _ = _hyp()
    return hnp.array_shapes(
        min_dims=min_dims, max_dims=max_dims, min_side=min_side, max_side=max_side
    ).map(tuple)


def _key_names() -> Any:
    st, _, _ = _hyp()
    return st.text(alphabet="abcdefgh_", min_size=1, max_size=6)


def records(
    *,
    batch_shape: Sequence[int] | Any | None = None,
    max_depth: int = 2,
    max_keys: int = 4,
    dtypes: Sequence[torch.dtype] = (torch.float32,),
    min_value: float = -10.0,
    max_value: float = 10.0,
    max_event_dims: int = 2,
    keys: Any = None,
) -> Any:
    """A strategy of :class:`funcrl.Record` with nested keys, a batch shape and mixed event shapes.

    Args:
        batch_shape: a fixed batch shape, a strategy of them, or ``None`` for 0-2 dims of size 1-4.
        max_depth: deepest nesting (1: flat records).
        max_keys: most keys per level (at least one tensor leaf is always present).
        dtypes: the dtypes leaves are drawn from.
        min_value, max_value: element bounds.
        max_event_dims: most trailing (non-batch) dims of a leaf.
        keys: a strategy of key names (default: short lowercase names).
    """
    st, _, _ = _hyp()
    if max_depth < 1:
        raise ValueError(f"records: max_depth must be >= 1, got {max_depth}")
    if batch_shape is None:
        batch_shapes_ = batch_shapes(0, 2)
    elif isinstance(batch_shape, st.SearchStrategy):
        batch_shapes_ = batch_shape
    else:
        batch_shapes_ = st.just(tuple(batch_shape))
    names = _key_names() if keys is None else keys

    @st.composite
    def build(draw: Any) -> Record:
        bs = tuple(draw(batch_shapes_))

        def level(depth: int) -> dict[str, Any]:
            ks = draw(st.lists(names, min_size=1, max_size=max_keys, unique=True))
            out: dict[str, Any] = {}
            for j, k in enumerate(ks):
                nested = depth < max_depth and j > 0 and draw(st.booleans())
                if nested:
                    out[k] = level(depth + 1)
                else:
                    event = draw(batch_shapes(0, max_event_dims, 1, 3))
                    dtype = draw(st.sampled_from(list(dtypes)))
                    out[k] = draw(
                        tensors((*bs, *event), dtype, min_value=min_value, max_value=max_value)
                    )
            return out

        return Record(level(1), batch_ndim=len(bs))

    return build()


def param_trees(
    *,
    max_depth: int = 3,
    max_children: int = 3,
    max_leaf_dims: int = 2,
    dtype: torch.dtype = torch.float32,
    min_value: float = -10.0,
    max_value: float = 10.0,
    leading: Sequence[int] = (),
) -> Any:
    """A strategy of parameter pytrees: nested dicts/lists of float tensors (at least one leaf).

    Args:
        max_depth: deepest nesting of containers.
        max_children: most entries per container.
        max_leaf_dims: most dims of a leaf (sizes 1-4).
        dtype: the leaves' dtype.
        min_value, max_value: element bounds.
        leading: a shape prepended to every leaf (e.g. ``(n,)`` for an ensemble of ``n``).
    """
    st, _, _ = _hyp()
    lead = tuple(leading)
    leaf = batch_shapes(0, max_leaf_dims, 1, 4).flatmap(
        lambda s: tensors((*lead, *s), dtype, min_value=min_value, max_value=max_value)
    )

    def extend(children: Any) -> Any:
        return st.one_of(
            st.dictionaries(_key_names(), children, min_size=1, max_size=max_children),
            st.lists(children, min_size=1, max_size=max_children),
        )

    return st.dictionaries(
        _key_names(),
        st.recursive(leaf, extend, max_leaves=max_children ** max(max_depth - 1, 1)),
        min_size=1,
        max_size=max_children,
    )


def specs(*, kinds: Sequence[str] | None = None, max_side: int = 4, composite: bool = True) -> Any:
    """A strategy of :mod:`funcrl.specs` specs (``Unbounded``, ``Bounded``, ``Categorical``, ...).

    Args:
        kinds: names of the spec classes to draw (default: all, ``Composite`` included when
            ``composite``).
        max_side: the largest size of a shape dim and of ``n``/``nvec`` entries.
        composite: also draw ``Composite`` specs of the others.
    """
    st, _, _ = _hyp()
    try:
        from funcrl import specs as S
    except ImportError as e:
        raise ImportError("funcrl.testing.specs needs funcrl.specs") from e

    shape = batch_shapes(0, 2, 1, max_side)
    bounds = st.floats(-5.0, 5.0, allow_nan=False, width=32)
    widths = st.floats(0.125, 5.0, allow_nan=False, width=32)
    n = st.integers(2, max(2, max_side))
    nvec = st.lists(st.integers(2, max(2, max_side)), min_size=1, max_size=3)

    @st.composite
    def bounded(draw: Any) -> Any:
        s = draw(shape)
        lo = draw(bounds)
        width = draw(widths)
        return S.Bounded(lo, lo + width, shape=s)

    basic = {
        "Unbounded": shape.map(lambda s: S.Unbounded(shape=s)),
        "Bounded": bounded(),
        "Categorical": st.tuples(n, batch_shapes(0, 1, 1, max_side)).map(
            lambda a: S.Categorical(a[0], shape=a[1])
        ),
        "OneHot": n.map(lambda k: S.OneHot(k)),
        "MultiOneHot": nvec.map(lambda v: S.MultiOneHot(v)),
        "MultiCategorical": nvec.map(lambda v: S.MultiCategorical(v)),
        "Binary": n.map(lambda k: S.Binary(k)),
    }
    chosen = list(basic) if kinds is None else [k for k in kinds if k != "Composite"]
    for k in chosen:
        if k not in basic:
            raise ValueError(f"specs: unknown kind {k!r}; expected one of {sorted(basic)}")
    leaf = st.one_of([basic[k] for k in chosen])
    with_composite = composite and (kinds is None or "Composite" in kinds)
    if not with_composite:
        return leaf
    comp = st.dictionaries(_key_names(), leaf, min_size=1, max_size=3).map(S.Composite)
    return st.one_of(leaf, comp)
