"""Inductor settings funcrl's compiled loops share: what makes their compile cheaper.

Two costs dominate compiling a whole training iteration (:mod:`funcrl.pure_train`) on a CPU,
neither of them the C++ compiler's:

* **Inductor's kernel code generation re-registers its dtype rules for every op it emits.**
  ``DtypePropagationOpsHandler`` is a singleton, but its ``__init__`` runs on every
  construction, and the C++ backend constructs it once per generated op: ~290k times for a PPO
  iteration, ~17 s of its ~105 s compile (cProfile, torch 2.13). :func:`prepare` makes that
  ``__init__`` run again only when the rule tables it reads have grown.
* **Inductor intersects value ranges with sympy's ``Max``/``Min``.** Its CSE tightens the
  bounds of every value it reuses (``ValueRanges.tighten``), ~470k times for a PPO iteration,
  and building a ``sympy.Max``/``Min`` of two numbers costs far more than comparing them.
  :func:`prepare` answers the intersection of two ranges with numeric, strictly ordered or
  identical bounds by comparison, and leaves every other case to sympy. The generated code is
  the same file for file; a one-seed cold compile went from 82.2-83.2 s to 73.5-74.3 s.
* **The on-disk caches refuse graphs with loops.** Inductor's FX graph cache and AOTAutograd's
  cache bypass every graph holding a higher-order op unless it is marked cacheable, so each new
  process compiled a scan-based iteration from scratch. :data:`CACHEABLE_LOOPS` marks ``scan``
  and ``while_loop`` (the form Inductor lowers a scan to) cacheable, keyed by the torch
  version. Their bodies are ``GraphModule`` submodules of the graph, and the cache key pickles
  the graph with its submodules' code, so a changed body is a different key
  (``tests/test_inductor_cache.py`` checks that in fresh processes). A second process then skips
  AOTAutograd and Inductor: a one-seed PPO iteration's compile went from ~90 s to ~11 s
  (with :mod:`funcrl.tree`'s traced path, ~8 s).

Two fixes make compiled loops run at all under the C++ wrapper:

* **Inductor's C++ wrapper frees a nested loop's loop-invariant inputs after their first use.**
  A ``while_loop`` (or ``scan``) inside another loop's body reads tensors of the outer body
  (the params its body closes over). When such an input is a view of an outer-body input,
  ``CppWrapperCpu.codegen_while_loop`` writes a temporary handle for it once, before the loop,
  and refers to it as ``RAIIAtenTensorHandle(tmp)`` in every iteration's condition and body: the
  first reference takes ownership and frees it, the next one reads freed memory (a segfault,
  torch 2.13). :func:`prepare` makes such a loop bind each loop-invariant input that is an
  expression to one named handle before the loop, which every iteration then copies; inputs that
  are already named handles are passed through unchanged. This is what lets
  :func:`funcrl.pure_train.seeded_iteration` run several iterations per compiled call.
* **Inductor's C++ wrapper moves a loop body's output twice when the body returns one buffer
  twice.** ``codegen_subgraph_suffix`` writes ``out_i = std::move(buf)`` for each output; a
  buffer returned as two outputs (two carried leaves with the same value, e.g. an environment's
  state and its observation, once Inductor has dropped the copies between them) leaves the
  second output a null handle, which the next iteration dereferences (a segfault, torch 2.13).
  :func:`prepare` moves each buffer once and makes every later output that names it a new
  handle of the same tensor.
"""

from __future__ import annotations

import threading
from typing import Any

import torch

from funcrl._compat import torch_release

__all__ = [
    "CACHEABLE_LOOPS",
    "CPP_WRAPPER_LOOPS",
    "NESTED_LOOPS",
    "intersect_ranges",
    "prepare",
]


def _cacheable_loops() -> dict[str, Any]:
    import torch._inductor.config as config

    if not hasattr(config, "unsafe_marked_cacheable_functions"):
        return {}  # pragma: no cover - a torch without the opt-in: loops stay uncached
    # The tag is part of every cache key: code generated before prepare()'s loop fixes (the
    # nested loop's inputs, a body's repeated output; both crash) is never loaded by a process
    # that has them.
    tag = f"{torch.__version__}+funcrl-loops-3"
    marked = {
        "torch.ops.higher_order.scan": tag,
        "torch.ops.higher_order.while_loop": tag,
    }
    return {"unsafe_marked_cacheable_functions": marked}


CACHEABLE_LOOPS: dict[str, Any] = _cacheable_loops()

# Whether Inductor's C++ wrapper (``cpp_wrapper``) can call a loop's body: torch 2.11's fails an
# assertion generating a ``while_loop`` subgraph call (``codegen_subgraph_prefix``), where its
# Python wrapper compiles the same graph.
CPP_WRAPPER_LOOPS: bool = torch_release() >= (2, 13)

_LOCK = threading.Lock()
_DONE = False


def prepare() -> None:
    """Once per process: make Inductor's dtype-rule singleton initialise only when needed, its
    value-range intersections compare numbers instead of building sympy expressions, and its C++
    wrapper keep a nested loop's loop-invariant inputs alive and hand a loop body's repeated
    output to each of its outputs.

    Each is without effect (and without error) on a torch whose classes are not as described in
    the module docstring.
    """
    global _DONE
    if _DONE:
        return
    with _LOCK:
        if _DONE:
            return
        _DONE = True
        _patch_range_intersection()
        _patch_dtype_rules()
        _patch_nested_loop_inputs()
        _patch_duplicate_subgraph_outputs()


def _numeric_bound(a: Any, b: Any, pick_larger: bool) -> Any:
    """``max(a, b)`` (or ``min``) of two sympy numbers, or ``None`` where sympy's own ``Max``/
    ``Min`` must decide: unequal types of equal value, NaN or anything not a number."""
    import sympy

    if a is b:
        return a
    if not (isinstance(a, sympy.Number) and isinstance(b, sympy.Number)):
        return None
    try:
        if bool(a > b):
            return a if pick_larger else b
        if bool(a < b):
            return b if pick_larger else a
    except TypeError:  # NaN is unordered
        return None
    return None


def intersect_ranges(self: Any, other: Any, original: Any) -> Any:
    """``ValueRanges.__and__`` with a fast path: two numeric, non-boolean ranges of the same kind
    whose bounds compare strictly (or are the same object) intersect by comparison, to the
    same bounds ``sympy.Max``/``Min`` return; everything else goes to ``original``."""
    if self is other:
        return self
    if (
        not self.is_bool
        and not other.is_bool
        and self.is_int == other.is_int
        and self.is_float == other.is_float
    ):
        lower = _numeric_bound(self.lower, other.lower, pick_larger=True)
        upper = _numeric_bound(self.upper, other.upper, pick_larger=False)
        if lower is not None and upper is not None:
            for given in (self, other):  # most often one range already is the intersection
                if lower is given.lower and upper is given.upper:
                    return given
            return type(self)(lower, upper)
    return original(self, other)


def _patch_range_intersection() -> None:
    try:
        from torch.utils._sympy.value_ranges import ValueRanges
    except ImportError:  # pragma: no cover - a torch without value ranges
        return
    original = vars(ValueRanges).get("__and__")
    if original is None or getattr(original, "_funcrl_patched", False):
        return  # pragma: no cover - another torch layout, or patched already

    def __and__(self: Any, other: Any) -> Any:  # noqa: N807
        return intersect_ranges(self, other, original)

    __and__._funcrl_patched = True  # type: ignore[attr-defined]
    __and__._funcrl_original = original  # type: ignore[attr-defined]
    ValueRanges.__and__ = __and__


def _patch_dtype_rules() -> None:
    try:
        from torch._inductor import dtype_propagation, utils
        from torch._inductor.codegen import common
    except ImportError:  # pragma: no cover - a torch without Inductor's C++ backend
        return
    cls = getattr(dtype_propagation, "DtypePropagationOpsHandler", None)
    rules = getattr(utils, "op_dtype_propagation_rules", None)
    pointwise = getattr(common, "pointwise_overrides_data", None)
    if cls is None or rules is None or pointwise is None or "_instance" not in vars(cls):
        return  # pragma: no cover - another torch layout: leave it alone
    original = cls.__init__

    def __init__(self: Any) -> None:  # noqa: N807
        # The tables __init__ copies into attributes: while they have not grown, every
        # attribute it would set is already set to the same rule.
        tables = (len(rules), len(pointwise))
        if self.__dict__.get("_funcrl_tables") == tables:
            return
        original(self)
        self._funcrl_tables = tables

    cls.__init__ = __init__


class _NamedHandle:
    """Stands in for a loop input whose C++ reference is the name of a handle."""

    def __init__(self, name: str) -> None:
        self.name = name

    def codegen_reference(self, writer: Any = None) -> str:
        return self.name


def _loop_wrapper_class() -> Any:
    # Inductor's C++ wrapper class when it generates while loops as this module's patches
    # expect (torch 2.13's layout), else None: then neither loop patch is applied.
    try:
        from torch._inductor.codegen.cpp_wrapper_cpu import CppWrapperCpu
    except ImportError:  # pragma: no cover - a torch without the C++ wrapper
        return None
    original = vars(CppWrapperCpu).get("codegen_while_loop")
    if original is None:
        return None  # pragma: no cover - another torch layout: leave it alone
    return CppWrapperCpu


# Whether a loop may run inside another loop's body under the C++ wrapper (see the module
# docstring); False leaves funcrl's callers at one iteration per compiled call.
NESTED_LOOPS: bool = CPP_WRAPPER_LOOPS and _loop_wrapper_class() is not None


def _patch_nested_loop_inputs() -> None:
    cls = _loop_wrapper_class()
    if cls is None:
        return  # pragma: no cover - another torch layout
    original = cls.codegen_while_loop
    if getattr(original, "_funcrl_patched", False):
        return

    def codegen_while_loop(self: Any, while_loop: Any, stack_output: bool = False) -> Any:
        saved = while_loop.additional_inputs
        bound = []
        for i, buf in enumerate(saved):
            ref = buf.codegen_reference()
            if ref.isidentifier():
                bound.append(buf)
                continue
            # An expression (a view's temporary handle): one named handle, made once here,
            # which each iteration's assign_tensors_out copies and none frees.
            name = f"{while_loop.get_name()}_invariant_{i}"
            self.writeline(f"RAIIAtenTensorHandle {name} = {ref};")
            bound.append(_NamedHandle(name))
        while_loop.additional_inputs = bound
        try:
            return original(self, while_loop, stack_output)
        finally:
            while_loop.additional_inputs = saved

    codegen_while_loop._funcrl_patched = True  # type: ignore[attr-defined]
    codegen_while_loop._funcrl_original = original  # type: ignore[attr-defined]
    cls.codegen_while_loop = codegen_while_loop


def _patch_duplicate_subgraph_outputs() -> None:
    cls = _loop_wrapper_class()
    original = None if cls is None else vars(cls).get("codegen_subgraph_suffix")
    if original is None or getattr(original, "_funcrl_patched", False):
        return  # pragma: no cover - another torch layout, or patched already
    from types import SimpleNamespace

    from torch._inductor import ir

    def codegen_subgraph_suffix(self: Any, subgraph: Any, outer_inputs: Any, outer_outputs: Any):
        inner = list(subgraph.graph.graph_outputs)
        first: dict[str, str] = {}  # an inner buffer's reference -> the outer output it went to
        kept, repeats = [], []
        for x, out in zip(inner, outer_outputs):
            # Only a plain buffer's reference is its name: a view's codegen_reference writes
            # C++ (a new handle) each time it is called, and an expression or a None output
            # ("nullptr") is not a buffer moved out; those are left to the original.
            ref = x.codegen_reference() if _is_buffer(x) else None
            if ref is not None and not ref.isidentifier():
                ref = None
            if ref is not None and ref in first:
                repeats.append((out, first[ref]))
            else:
                if ref is not None:
                    first[ref] = out
                kept.append((x, out))
        if not repeats:
            return original(self, subgraph, outer_inputs, outer_outputs)
        # The original reads only subgraph.graph.graph_outputs: it runs on the outputs that
        # name a buffer for the first time.
        view = SimpleNamespace(graph=SimpleNamespace(graph_outputs=[x for x, _ in kept]))
        original(self, view, outer_inputs, [out for _, out in kept])
        for out, source in repeats:
            self.writeline("{")
            self.writeline("AtenTensorHandle funcrl_alias_handle;")
            self.writeline(
                f"AOTI_TORCH_ERROR_CODE_CHECK(aoti_torch_assign_tensors_out({source}, "
                "&funcrl_alias_handle));"
            )
            self.writeline(f"{out}.reset();")
            self.writeline(f"{out} = RAIIAtenTensorHandle(funcrl_alias_handle);")
            self.writeline("}")

    def _is_buffer(x: Any) -> bool:
        # A subgraph's outputs come boxed (TensorBox, StorageBox); a view's box holds the view.
        while isinstance(x, ir.MutableBox):
            x = x.data
        return isinstance(x, ir.Buffer)

    codegen_subgraph_suffix._funcrl_patched = True  # type: ignore[attr-defined]
    codegen_subgraph_suffix._funcrl_original = original  # type: ignore[attr-defined]
    cls.codegen_subgraph_suffix = codegen_subgraph_suffix
