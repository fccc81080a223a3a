"""funcrl.random's native Threefry operator (``funcrl::threefry2x32``): the same bits as the
torch-op path, eagerly, broadcast, under vmap and compile; clear errors; the switch that turns it
off; and the cached build of funcrl's C++ sources (``funcrl._native``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from funcrl import _native
from funcrl import random as R

M32 = 0xFFFFFFFF


def test_the_operator_builds_and_is_used(monkeypatch):
    # Not a skip where it cannot build: the suite needs a C++ compiler for Inductor anyway, so a
    # failed build here is a bug in the build, which a skip would hide.
    assert R.native_enabled()
    expected = R.split(R.key(3), 5)

    def unused(*args):
        raise AssertionError("the torch-op path ran on a CPU")

    monkeypatch.setattr(R, "_threefry2x32_ops", unused)
    assert R.split(R.key(3), 5).equal(expected)


def test_with_the_operator_only_normals_and_large_uniforms_compile(monkeypatch):
    # Keys, bits and uniforms under 2^18 values run as plain ops around the operator: a process
    # drawing only those never compiles funcrl.random's kernels. The bits are the same.
    monkeypatch.setattr(R, "_FUSED_ENV", True)  # conftest turns the kernels off elsewhere
    compiled = []

    def record(kind):
        compiled.append(kind)
        return R._KERNELS[kind]  # the plain function: the same bits, no compile in a test

    monkeypatch.setattr(R, "_compiled", record)
    k = R.key(7)

    def small_draws():
        return [
            R.split(k, 64),
            R.fold_in(k, 3),
            R.bits(k, (1000,)),
            R.uniform(k, (1000,)),
            R.uniform(k, (1 << 17,)),
        ]

    draws = small_draws()
    assert compiled == []
    big = R.uniform(k, (1 << 18,))
    assert compiled == ["uniform"]
    normal = R.normal(k, (2,))
    assert compiled == ["uniform", "normal"]
    assert R.fused_enabled(k, 2) and not R.fused_enabled(k, 2, "split")
    monkeypatch.setattr(R, "_FUSED_ENV", False)
    plain = small_draws()
    for a, b in zip(draws + [big, normal], plain + [R.uniform(k, (1 << 18,)), R.normal(k, (2,))]):
        assert torch.equal(a, b)


def _words(shape, seed):
    g = torch.Generator().manual_seed(seed)
    # Edge words first: 0, 1, 2**31 and 2**32 - 1 carry through every sum and rotation.
    w = torch.randint(0, 2**32, shape, dtype=torch.int64, generator=g)
    edges = torch.tensor([0, 1, 2**31, M32], dtype=torch.int64)
    flat = w.reshape(-1)
    flat[: min(4, flat.numel())] = edges[: min(4, flat.numel())]
    return w


def _same(a, b):
    return all(
        x.dtype == y.dtype and x.shape == y.shape and torch.equal(x, y) for x, y in zip(a, b)
    )


@settings(max_examples=40, deadline=None)
@given(
    shapes=st.sampled_from(
        [
            [(), (), (9,), (9,)],
            [(), (), (), ()],
            [(3, 1), (3, 1), (3, 5), (1, 5)],
            [(4,), (1,), (2, 4), (2, 1)],
            [(2, 1, 3), (), (1, 4, 1), (4, 3)],
            [(0,), (), (0,), (0,)],
        ]
    ),
    seed=st.integers(0, 2**31),
)
def test_native_equals_torch_ops_broadcast(shapes, seed):
    words = [_words(s, seed + i) for i, s in enumerate(shapes)]
    native = torch.ops.funcrl.threefry2x32(*words)
    ops = R._threefry2x32_ops(*words)
    assert _same(native, ops)
    assert native[0].shape == torch.broadcast_shapes(*shapes)


def test_strided_and_offset_words():
    # Transposed, sliced and expanded inputs are read through their strides, not copied.
    w = _words((6, 5), 3)
    k0, k1 = _words((5, 1), 4)[::2].t(), _words((1,), 5).expand(3)
    x0, x1 = w.t()[1:4, ::2], w[2:5, 1:4]
    assert not x0.is_contiguous() and k1.stride() == (0,)
    assert _same(torch.ops.funcrl.threefry2x32(k0, k1, x0, x1), R._threefry2x32_ops(k0, k1, x0, x1))


def test_a_compiled_draw_is_one_operator_call():
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        return gm

    k = R.key(0)
    torch._dynamo.reset()
    out = torch.compile(lambda k: R.split(k, 4), backend=backend, fullgraph=True)(k)
    called = [str(n.target) for n in graphs[0].graph.nodes if n.op == "call_function"]
    assert called.count("funcrl.threefry2x32") == 1, called
    assert len(called) < 15, called  # not ~170 integer ops
    assert out.equal(R.split(k, 4))


@pytest.mark.parametrize("in_dims", [(0, 0, None, None), (None, None, 1, 1), (0, None, 1, 0)])
def test_vmap_rule_equals_the_loop(in_dims):
    b = 3
    words = []
    for i, d in enumerate(in_dims):
        shape = [5]
        if d is not None:
            shape.insert(d, b)
        words.append(_words(tuple(shape), 10 + i))
    batched = torch.func.vmap(torch.ops.funcrl.threefry2x32, in_dims=in_dims)(*words)
    rows = [
        R._threefry2x32_ops(*[w if d is None else w.select(d, j) for w, d in zip(words, in_dims)])
        for j in range(b)
    ]
    assert _same(batched, tuple(torch.stack(r) for r in zip(*rows)))


def test_vmapped_and_inductor_compiled_draws_equal_eager():
    keys = R.split(R.key(4), 3)

    def draw(k):
        a, b = R.split(k)
        return R.uniform(a, (33,)), R.normal(b, (5, 2)), R.bits(R.fold_in(k, 7), (3,))

    torch._dynamo.reset()
    compiled = torch.compile(torch.func.vmap(draw), fullgraph=True)(keys)
    eager = [draw(k) for k in keys]
    for j, out in enumerate(compiled):
        assert torch.equal(out, torch.stack([e[j] for e in eager]))


def test_switched_off_gives_the_same_bits():
    code = (
        "import json, funcrl.random as R; k = R.key(7);"
        "print(json.dumps([R.native_enabled(), R.split(k, 3).tolist(), R.bits(k, (4,)).tolist()]))"
    )
    outs = []
    for flag in ("0", "1"):
        env = {**os.environ, "FUNCRL_RANDOM_NATIVE": flag}
        proc = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        outs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    assert outs[0][0] is False and outs[1][0] is True
    assert outs[0][1:] == outs[1][1:]


# --- funcrl._native: the cached build ------------------------------------------------------------


def test_the_build_is_reused_and_built_atomically(tmp_path, monkeypatch):
    monkeypatch.setenv("FUNCRL_CACHE_DIR", str(tmp_path))
    first = _native.library("cpu_allocator")
    assert first.parent == tmp_path and first.exists()
    assert [p.name for p in tmp_path.iterdir()] == [first.name]  # no temporary left behind

    def no_compiler(*a, **k):
        raise AssertionError("rebuilt")

    monkeypatch.setattr(_native.subprocess, "run", no_compiler)
    assert _native.library("cpu_allocator") == first


def test_the_cache_folder_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("FUNCRL_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert _native.cache_dir() == tmp_path / "funcrl"
    monkeypatch.setenv("FUNCRL_CACHE_DIR", str(tmp_path / "x"))
    assert _native.cache_dir() == tmp_path / "x"


@pytest.mark.parametrize(
    "cxx, match",
    [
        ("false", r"funcrl.cpu_allocator: building cpu_allocator.cpp with false failed \(exit 1\)"),
        ("/no/such/c++", r"funcrl.cpu_allocator: cannot run the C\+\+ compiler '/no/such/c\+\+'"),
    ],
)
def test_a_failed_build_is_a_clear_error(tmp_path, monkeypatch, cxx, match):
    monkeypatch.setenv("FUNCRL_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(_native, "_compiler", lambda: cxx)
    with pytest.raises(RuntimeError, match=match):
        _native.library("cpu_allocator", owner="funcrl.cpu_allocator")
    assert list(tmp_path.iterdir()) == []
