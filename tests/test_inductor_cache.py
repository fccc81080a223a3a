"""funcrl._inductor: compiled loops load from Inductor's on-disk cache in a new process, a
changed loop body is never served a stale entry, a loop inside a loop runs under the C++
wrapper, the dtype-rule singleton initialises only when its tables grow, and value ranges
intersect as sympy's Max/Min would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import sympy
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils._sympy.numbers import int_oo
from torch.utils._sympy.value_ranges import ValueRangeError, ValueRanges

from funcrl import _inductor

_SCRIPT = textwrap.dedent(
    """
    import json, os, torch
    from torch._dynamo.utils import counters
    from funcrl import _inductor
    from funcrl.envs import pure

    c = float(os.environ["FUNCRL_TEST_C"])

    def run(x, xs):
        def body(carry, x):
            (h,) = carry
            h = torch.tanh(h * c + x)  # c only inside the scan body
            return (h.clone(),), h.clone()
        return pure.scan(body, (x,), xs)

    _inductor.prepare()
    options = {**_inductor.CACHEABLE_LOOPS, "cpp_wrapper": _inductor.CPP_WRAPPER_LOOPS}
    x, xs = torch.ones(3), torch.arange(12.0).reshape(4, 3) / 10
    (h,), ys = torch.compile(run, fullgraph=True, options=options)(x, xs)
    (h_ref,), ys_ref = run(x, xs)  # eagerly: pure.scan's Python loop
    print(json.dumps({
        "close": bool(torch.allclose(ys, ys_ref, atol=1e-6) and torch.allclose(h, h_ref, atol=1e-6)),
        "hit": counters["inductor"]["fxgraph_cache_hit"],
        "miss": counters["inductor"]["fxgraph_cache_miss"],
        "bypass": counters["inductor"]["fxgraph_cache_bypass"],
    }))
    """
)


def _run(cache_dir: str, c: float) -> dict:
    env = {
        **os.environ,
        "TORCHINDUCTOR_CACHE_DIR": cache_dir,
        "FUNCRL_TEST_C": repr(c),
        "OMP_NUM_THREADS": "1",
    }
    out = subprocess.run(
        [sys.executable, "-c", _SCRIPT], env=env, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_scan_graph_is_cached_across_processes_and_keyed_on_its_body(tmp_path):
    cache = str(tmp_path / "inductor")
    first = _run(cache, 0.5)
    assert first == {"close": True, "hit": 0, "miss": 1, "bypass": 0}
    again = _run(cache, 0.5)
    assert again == {"close": True, "hit": 1, "miss": 0, "bypass": 0}
    # The same program with another constant inside the body: a new key, compiled, right values.
    other = _run(cache, 0.75)
    assert other == {"close": True, "hit": 0, "miss": 1, "bypass": 0}


_NESTED = textwrap.dedent(
    """
    import json, torch
    from funcrl import _inductor
    from funcrl.envs import pure

    def run(w, h, xs):
        def outer(carry, x):
            w, h = carry
            def inner(c, y):
                (g,) = c
                # w[0]: a view of the outer body's input, read by every inner step. Unpatched,
                # torch 2.13's C++ wrapper frees its handle after the first read (a segfault).
                g = torch.tanh(g @ w[0] + y)
                return (g.clone(),), g.clone()
            (g,), ys = pure.scan(inner, (h,), x)
            return (w * 0.9, g.clone()), ys.sum(0)
        return pure.scan(outer, (w, h), xs)

    _inductor.prepare()
    w, h = (torch.eye(3).repeat(2, 1, 1) * 0.5)[None], torch.ones(1, 3)
    xs = (torch.arange(24.0).reshape(2, 4, 3) / 10)[None]
    f = torch.func.vmap(run)  # batched as a seed dim is: the captured params become views
    options = {"cpp_wrapper": _inductor.CPP_WRAPPER_LOOPS}
    got = torch.compile(f, fullgraph=True, options=options)(w, h, xs)
    want = f(w, h, xs)  # eagerly: pure.scan's Python loops
    flat = zip(torch.utils._pytree.tree_leaves(got), torch.utils._pytree.tree_leaves(want))
    print(json.dumps({"close": all(torch.allclose(a, b, atol=1e-6) for a, b in flat)}))
    """
)


def test_a_loop_inside_a_loop_compiles_and_runs(tmp_path):
    # In a fresh process: without the fix the process dies (rc -11), which fails here.
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(tmp_path), "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", _NESTED], env=env, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, (out.returncode, out.stderr[-3000:])
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"close": True}
    assert _inductor.NESTED_LOOPS is _inductor.CPP_WRAPPER_LOOPS


_TWICE = textwrap.dedent(
    """
    import json, sys, torch
    from funcrl import _inductor
    from funcrl.envs import pure

    def run(h, xs):
        def outer(carry, x):
            s, o = carry
            def inner(c, y):
                (g,) = c
                g = torch.tanh(g * 0.5 + y)
                return (g.clone(),), g.clone()
            (g,), ys = pure.scan(inner, (s,), x)
            # A state and its observation with one value: Inductor drops the copies and the
            # body returns one buffer as two carries. Unpatched, the C++ wrapper moves it twice
            # and the next step reads a null handle (a segfault, torch 2.13).
            return (g.clone(), g.clone()), ys.sum(0)
        return pure.scan(outer, (h, h.clone()), xs)

    _inductor.prepare()
    if sys.argv[1:] == ["unpatched"]:
        from torch._inductor.codegen.cpp_wrapper_cpu import CppWrapperCpu as C
        C.codegen_subgraph_suffix = C.codegen_subgraph_suffix._funcrl_original
    h, xs = torch.ones(4, 3), torch.arange(60.0).reshape(5, 4, 3) / 50
    options = {"cpp_wrapper": _inductor.CPP_WRAPPER_LOOPS}
    got = torch.compile(run, fullgraph=True, options=options)(h, xs)
    want = run(h, xs)
    flat = zip(torch.utils._pytree.tree_leaves(got), torch.utils._pytree.tree_leaves(want))
    print(json.dumps({"close": all(torch.allclose(a, b, atol=1e-6) for a, b in flat)}))
    """
)


def test_a_loop_body_returning_one_buffer_twice_runs(tmp_path):
    def run(*args):
        # A cache per run: the unpatched run must compile, not load the patched code.
        cache = str(tmp_path / (args[0] if args else "patched"))
        env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache, "OMP_NUM_THREADS": "1"}
        return subprocess.run(
            [sys.executable, "-c", _TWICE, *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )

    out = run()
    assert out.returncode == 0, (out.returncode, out.stderr[-3000:])
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"close": True}
    # The repeat path ran: the generated wrapper hands the buffer on as a new handle.
    generated = [f.read_text() for f in (tmp_path / "patched").rglob("*.cpp")]
    assert any("funcrl_alias_handle" in text for text in generated)
    # The case is the bug's: without the patch the same program dies of a segfault, after
    # compiling (no result line).
    bad = run("unpatched")
    assert bad.returncode == -11 and "close" not in bad.stdout, (bad.returncode, bad.stderr[-3000:])


def test_loops_are_cacheable_only_with_the_marking():
    # What CACHEABLE_LOOPS is for: unmarked, torch's caches bypass graphs holding these ops.
    from torch._higher_order_ops.scan import scan_op
    from torch._higher_order_ops.while_loop import while_loop_op

    assert not scan_op.cacheable() and not while_loop_op.cacheable()
    import torch._inductor.config as config

    with config.patch(_inductor.CACHEABLE_LOOPS):
        assert scan_op.cacheable() and while_loop_op.cacheable()


def test_dtype_rules_initialise_again_only_when_their_tables_grow(monkeypatch):
    import torch._inductor.lowering  # noqa: F401  (registers the rules the handler reads)
    from torch._inductor import utils
    from torch._inductor.dtype_propagation import DtypePropagationOpsHandler

    _inductor.prepare()
    handler = DtypePropagationOpsHandler()
    rule = handler.add
    monkeypatch.setattr(handler, "add", "sentinel")
    assert DtypePropagationOpsHandler() is handler
    assert handler.add == "sentinel"  # not re-initialised: the tables did not change

    name = "funcrl_test_op"
    monkeypatch.setitem(
        utils.op_dtype_propagation_rules, name, utils.op_dtype_propagation_rules["add"]
    )
    try:
        DtypePropagationOpsHandler()
        assert handler.add != "sentinel" and handler.add.keywords == rule.keywords
        assert getattr(handler, name).keywords == rule.keywords
    finally:
        monkeypatch.undo()
        if name in vars(handler):
            delattr(handler, name)
        DtypePropagationOpsHandler()  # re-initialised for the restored tables
    assert handler.add.keywords == rule.keywords


def test_prepare_is_idempotent():
    from torch._inductor.codegen.cpp_wrapper_cpu import CppWrapperCpu

    _inductor.prepare()
    init = torch._inductor.dtype_propagation.DtypePropagationOpsHandler.__init__
    loop = CppWrapperCpu.codegen_while_loop
    _inductor.prepare()
    assert torch._inductor.dtype_propagation.DtypePropagationOpsHandler.__init__ is init
    assert CppWrapperCpu.codegen_while_loop is loop and loop._funcrl_patched
    assert CppWrapperCpu.codegen_subgraph_suffix._funcrl_patched


def _original_and():
    return getattr(ValueRanges.__and__, "_funcrl_original", ValueRanges.__and__)


_INT_BOUNDS = st.one_of(
    st.integers(-3, 3).map(sympy.Integer), st.sampled_from([int_oo, -int_oo, sympy.oo, -sympy.oo])
)
_FLOAT_BOUNDS = st.one_of(
    st.integers(-3, 3).map(sympy.Integer),  # Integer(0) beside Float(0.0): equal, unlike types
    st.sampled_from([-1.5, 0.0, 0.5, 2.0]).map(sympy.Float),
    st.sampled_from([sympy.oo, -sympy.oo, sympy.nan]),
)


def _range(bounds):
    return st.tuples(bounds, bounds).map(lambda b: (min(b, key=_key), max(b, key=_key)))


def _key(x):
    return (0, 0.0) if x is sympy.nan else (1, float(x))


def _build(pair):
    try:
        return ValueRanges(*pair)
    except (ValueRangeError, TypeError, AssertionError):  # an empty range, or NaN
        return None


def _described(f):
    try:
        r = f()
    except Exception as e:  # the same error type from both
        return type(e)
    return (type(r.lower), r.lower, type(r.upper), r.upper, r.is_bool, r.is_int, r.is_float)


@settings(max_examples=400, deadline=None)
@given(
    st.one_of(
        st.tuples(_range(_INT_BOUNDS), _range(_INT_BOUNDS)),
        st.tuples(_range(_FLOAT_BOUNDS), _range(_FLOAT_BOUNDS)),
        st.tuples(_range(_INT_BOUNDS), _range(_FLOAT_BOUNDS)),
    )
)
def test_range_intersection_equals_sympys(pairs):
    a, b = (_build(p) for p in pairs)
    if a is None or b is None:
        return
    original = _original_and()
    want = _described(lambda: original(a, b))
    got = _described(lambda: _inductor.intersect_ranges(a, b, original))
    assert got == want, (a, b)


def test_range_intersection_fast_path_and_fallbacks():
    original = _original_and()
    calls = []

    def spy(x, y):
        calls.append((x, y))
        return original(x, y)

    a, b = ValueRanges(0, 5), ValueRanges(2, 9)
    assert _inductor.intersect_ranges(a, b, spy) == ValueRanges(2, 5) and not calls
    booleans = ValueRanges(sympy.false, sympy.true)
    _inductor.intersect_ranges(booleans, booleans.boolify(), spy)  # the same object: no call
    assert not calls
    _inductor.intersect_ranges(booleans, ValueRanges(sympy.true, sympy.true), spy)
    assert len(calls) == 1  # booleans: sympy's Or/And
    zero_int, zero_float = ValueRanges(sympy.Integer(0), 1.0), ValueRanges(0.0, 2.0)
    _inductor.intersect_ranges(zero_int, zero_float, spy)  # equal lower bounds, unlike types
    assert len(calls) == 2
    _inductor.intersect_ranges(ValueRanges.unknown(), a, spy)  # a float and an int range
    assert len(calls) == 3
    with pytest.raises(ValueRangeError):  # disjoint: empty, as sympy's answer would be
        _inductor.intersect_ranges(ValueRanges(0, 1), ValueRanges(2, 3), spy)
