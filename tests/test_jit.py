"""funcrl.jit: trace once per signature, replay; equal to the function it wraps."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from funcrl import Record, dqn, optim, sac, specs, tree
from funcrl.jit import jit
from funcrl.training import update


def _dqn_setup(batch=8):
    nets = dqn.Nets(num_cells=(8,))
    params = dqn.init(0, specs.Unbounded(shape=(3,)), specs.OneHot(4), nets=nets)
    train = dqn.trainer(optim.adam(1e-2, foreach=True), nets=nets, tau=0.1)
    g = torch.Generator().manual_seed(0)

    def make(b):
        return Record(
            {
                "observation": torch.randn(b, 3, generator=g),
                "action": torch.nn.functional.one_hot(torch.randint(0, 4, (b,), generator=g), 4),
                "next": {
                    "observation": torch.randn(b, 3, generator=g),
                    "reward": torch.randn(b, 1, generator=g),
                    "terminated": torch.rand(b, 1, generator=g) < 0.2,
                },
            },
            batch_ndim=1,
        )

    return params, train, make


def test_jitted_step_equals_eager_step_and_traces_once_per_signature():
    params, train, make = _dqn_setup()
    step = jit(train.step, backend="eager")
    p_e, s_e = params, train.init(params)
    p_j, s_j = params, train.init(params)
    for _ in range(3):
        rec = make(8)
        p_e, s_e, m_e = train.step(p_e, s_e, rec)
        p_j, s_j, m_j = step(p_j, s_j, rec)
    assert tree.allclose(p_e, p_j, rtol=1e-6, atol=1e-7)
    assert torch.allclose(m_e["loss"], m_j["loss"])
    assert isinstance(s_j, type(s_e)) and int(s_j.step) == 3
    assert len(step.cache) == 1
    step(p_j, s_j, make(5))  # a new batch size is a new signature
    assert len(step.cache) == 2
    step(p_j, s_j, make(8))
    assert len(step.cache) == 2


def test_static_leaves_are_part_of_the_signature():
    calls = []

    def f(x, k):
        calls.append(k)
        return {"y": x * k}

    g = jit(f, backend="eager")
    x = torch.ones(2)
    assert torch.equal(g(x, 2)["y"], torch.full((2,), 2.0))
    assert torch.equal(g(x, 3)["y"], torch.full((2,), 3.0))
    assert torch.equal(g(x, 2)["y"], torch.full((2,), 2.0))
    assert calls == [2, 3]  # traced once per static value, then replayed


@pytest.mark.parametrize("backend", ["eager", "inductor"])
def test_fast_path_replays_only_the_signature_it_checked(backend):
    # Every call after the first is matched by the C++ tensor check (no signature tuple): the
    # replayed graph must be the one of this exact signature, and each change retraces.
    traces = []

    def f(x, y, k):
        traces.append((x.dtype, x.requires_grad, k))
        return {"z": x * y + k}

    g = jit(f, backend=backend)
    x, y = torch.randn(4), torch.randn(4)
    for _ in range(3):
        torch.testing.assert_close(g(x, y, 2)["z"], x * y + 2)
    assert len(traces) == 1 and len(g.cache) == 1
    # The same tensor in both places (an alias): the same graph of a pure function, replayed.
    torch.testing.assert_close(g(x, x, 2)["z"], x * x + 2)
    torch.testing.assert_close(g(y, y, 2)["z"], y * y + 2)
    assert len(traces) == 1
    # True == 1 and hash alike, but a static leaf's type is part of the signature.
    g(x, y, True)
    assert len(traces) == 2
    xd = x.double()
    torch.testing.assert_close(g(xd, y.double(), 2)["z"], xd * y.double() + 2)
    assert len(traces) == 3
    g(x.clone().requires_grad_(), y, 2)
    assert len(traces) == 4
    g(torch.randn(5), torch.randn(5), 2)
    assert len(traces) == 5
    assert len(g.cache) == 5
    # A tensor where a static leaf was, and the reverse, are other structures' signatures.
    torch.testing.assert_close(g(x, y, torch.tensor(3.0))["z"], x * y + 3)
    assert len(traces) == 6
    for _ in range(2):  # each signature seen before is replayed, not traced again
        g(x, y, 2), g(xd, y.double(), 2), g(x, x, 2), g(x, y, True)
    assert len(traces) == 6


@pytest.mark.parametrize("backend", ["eager", "inductor"])
def test_strides_are_part_of_the_signature_and_outputs_are_contiguous(backend):
    # A step that returns a transposed layout: its output fed back in must not trip the graph's
    # stride assumptions (inductor asserts them), and should not need a second trace.
    def f(w):
        return {"w": (w.mT @ w).mT + 1.0, "t": w.mT * 2.0}

    g = jit(f, backend=backend)
    w = torch.randn(3, 3)
    out = g(w)
    assert all(v.is_contiguous() for v in out.values())
    torch.testing.assert_close(out["t"], w.mT * 2.0)
    out2 = g(out["w"])
    assert len(g.cache) == 1
    torch.testing.assert_close(out2["w"], f(out["w"])["w"])
    # A genuinely non-contiguous input is a new signature, traced and run correctly.
    wt = torch.randn(3, 3).mT
    assert not wt.is_contiguous()
    torch.testing.assert_close(g(wt)["t"], wt.mT * 2.0)
    assert len(g.cache) == 2


def test_random_ops_are_redrawn_every_call_and_seeded_by_manual_seed():
    def f(x):
        return x + torch.randn_like(x)

    g = jit(f)  # inductor
    x = torch.zeros(64)
    g(x)  # the first call traces (running the function once) and compiles
    torch.manual_seed(0)
    a, b = g(x), g(x)
    torch.manual_seed(0)
    a2 = g(x)
    assert not torch.equal(a, b)
    assert torch.equal(a, a2)
    assert 0.5 < a.std() < 1.5


def test_sac_step_with_vmapped_ensemble_and_inductor_matches_eager_statistics():
    nets = sac.Nets(num_cells=(8, 8))
    params = sac.init(0, 3, 1, nets=nets)
    train = update(
        lambda p, b: sac.loss(p, b, nets=nets),
        optim.adam(1e-3),
        trainable=("actor", "qvalue", "log_alpha"),
        targets={"target_qvalue": "qvalue"},
    )
    rec = Record(
        {
            "observation": torch.randn(16, 3),
            "action": torch.rand(16, 1) * 2 - 1,
            "next": {
                "observation": torch.randn(16, 3),
                "reward": torch.randn(16, 1),
                "terminated": torch.zeros(16, 1, dtype=torch.bool),
            },
        },
        batch_ndim=1,
    )
    step = jit(train.step, backend="eager")
    p, s = params, train.init(params)
    for _ in range(5):
        p, s, m = step(p, s, rec)
    assert all(torch.isfinite(v).all() for v in m.values())
    # The online critic moved and the target followed it by Polyak (tau 0.005).
    d_online = tree.global_norm(tree.sub(p["qvalue"], params["qvalue"]))
    d_target = tree.global_norm(tree.sub(p["target_qvalue"], params["target_qvalue"]))
    assert d_online > 0 and 0 < d_target < d_online


def test_errors():
    with pytest.raises(ValueError, match="backend must be"):
        jit(lambda x: x, backend="nope")
    with pytest.raises(TypeError, match="pytree of tensors"):
        jit(lambda x: {"n": 3, "x": x}, backend="eager")(torch.ones(1))


def test_is_tracing_eager_make_fx_and_compile():
    from torch.fx.experimental.proxy_tensor import make_fx

    from funcrl.jit import is_tracing

    seen = []

    def f(x):
        seen.append(is_tracing())
        return x + 1

    f(torch.zeros(2))
    make_fx(f)(torch.zeros(2))
    torch.compile(f, fullgraph=True, backend="eager")(torch.zeros(2))
    assert seen == [False, True, True]


def test_prioritized_sampling_under_jit_follows_the_buffer_as_it_grows():
    # Eager CPU sampling slices the filled prefix with int(size); under make_fx that host read
    # would freeze the size into the graph (or fail), so the traced path masks empty slots.
    from funcrl import buffers

    def transitions(n, start):
        return Record({"x": torch.arange(start, start + n, dtype=torch.float32)[:, None]}, 1)

    buf = buffers.init(64, transitions(1, 0)[0], prioritized=True, alpha=1.0)
    buf = buffers.add(buf, transitions(8, 0))
    g = jit(lambda state: buffers.sample(state, 512), backend="eager")
    first = g(buf)
    assert int(first["index"].max()) < 8
    buf = buffers.add(buf, transitions(8, 8))
    second = g(buf)
    assert len(g.cache) == 1  # size is a tensor: the same trace serves the grown buffer
    assert int(second["index"].max()) < 16 and int(second["index"].min()) >= 0
    assert int((second["index"] >= 8).sum()) > 100  # new slots are drawn (p = 0.5 each)
    torch.testing.assert_close(second["x"][:, 0], second["index"].float())


# --- CUDA graphs ---------------------------------------------------------------------------------

_NO_CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


_DTYPES = [torch.float32, torch.float64, torch.int64, torch.int32, torch.bool, torch.bfloat16]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(_DTYPES), st.lists(st.integers(0, 3), min_size=0, max_size=3)),
        min_size=1,
        max_size=8,
    )
)
def test_cuda_graph_output_copies_equal_the_outputs(specs_):
    # The CUDA-graph path copies its outputs out of the graph's memory by one multi-tensor
    # `x * 1` per dtype; the copies must equal the outputs bit for bit (-0.0, extremes; a NaN's
    # payload may be canonicalised), keep shape, dtype and contiguity, and own their memory. (Pure tensor code: checked on the
    # CPU here, and end to end on CUDA by the tests below.)
    from funcrl.jit import _clone_all

    g = torch.Generator().manual_seed(len(specs_))
    outs = []
    for dtype, shape in specs_:
        if dtype == torch.bool:
            outs.append(torch.rand(shape, generator=g) < 0.5)
        elif dtype.is_floating_point:
            x = torch.randn(shape, generator=g) * 1e30
            special = torch.tensor([float("nan"), -0.0, float("-inf"), 1e-40])
            x.view(-1)[: min(4, x.numel())] = special[: min(4, x.numel())]
            outs.append(x.to(dtype))
        else:
            info = torch.iinfo(dtype)
            outs.append(torch.randint(info.min, info.max, shape, generator=g, dtype=dtype))
    got = _clone_all(outs)
    for x, y in zip(outs, got):
        assert y.dtype == x.dtype and y.shape == x.shape and y.is_contiguous()
        assert y.numel() == 0 or y.data_ptr() != x.data_ptr()
        if x.dtype.is_floating_point:
            # Every number bit for bit (-0.0, inf, subnormals); a NaN stays a NaN.
            nan = torch.isnan(x)
            assert torch.equal(nan, torch.isnan(y))
            bits = torch.int16 if x.element_size() == 2 else torch.int32
            bits = torch.int64 if x.element_size() == 8 else bits
            assert torch.equal(x[~nan].view(bits), y[~nan].view(bits))
        else:
            assert torch.equal(x, y)


def test_cudagraphs_flag_errors():
    with pytest.raises(TypeError, match="jit: cudagraphs must be a bool, got str"):
        jit(lambda x: x, cudagraphs="yes")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match=r"jit: cudagraphs=True needs a CUDA device"):
            jit(lambda x: x, cudagraphs=True)
        with pytest.raises(ValueError, match=r"jit: cudagraphs=True needs a CUDA device"):
            jit(cudagraphs=True)(lambda x: x)
    else:
        g = jit(lambda x: {"y": x + 1}, cudagraphs=True)
        with pytest.raises(
            ValueError,
            match=r"jit: cudagraphs=True needs every tensor input on one CUDA device, got \['cpu'\]",
        ):
            g(torch.ones(2))


@_NO_CUDA
@pytest.mark.parametrize("backend", ["eager", "inductor"])
def test_cudagraphs_step_equals_plain_jit_and_results_survive_the_next_call(backend):
    params, train, make = _dqn_setup()
    dev = torch.device("cuda")
    params = tree.map(lambda x: x.to(dev), params)
    plain = jit(train.step, backend=backend)
    graphed = jit(train.step, backend=backend, cudagraphs=True)
    p_a, s_a = params, train.init(params)
    p_b, s_b = params, train.init(params)
    history = []
    for _ in range(4):
        rec = make(8).to(dev)
        p_a, s_a, m_a = plain(p_a, s_a, rec)
        p_b, s_b, m_b = graphed(p_b, s_b, rec)
        history.append((m_b["loss"], m_a["loss"]))
    assert tree.allclose(p_a, p_b, rtol=1e-5, atol=1e-6)
    assert len(graphed.cache) == 1
    # Every returned loss is a clone: later replays did not overwrite the earlier results.
    for got, want in history:
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert int(s_b.step) == 4


@_NO_CUDA
def test_cudagraphs_random_ops_redraw_on_replay():
    g = jit(lambda x: {"y": x + torch.randn_like(x)}, cudagraphs=True)
    x = torch.zeros(256, device="cuda")
    a, b = g(x)["y"], g(x)["y"]
    assert not torch.equal(a, b)
    assert 0.5 < float(a.std()) < 1.5


def test_can_read_values_only_eagerly_on_cpu():
    from funcrl.jit import can_read_values

    t = torch.ones(3)
    assert can_read_values(t)
    seen = []
    torch.func.vmap(lambda x: seen.append(can_read_values(x)) or x)(torch.ones(2, 3))
    torch.func.grad(lambda x: seen.append(can_read_values(x)) or x.sum())(t)
    torch.compile(lambda x: seen.append(can_read_values(x)) or x + 1, backend="eager")(t)
    assert seen == [False, False, False]


_CACHE_PROBE = """
import torch
from torch._dynamo.utils import counters
from funcrl.jit import jit

def f(x, c):
    return {"y": x.sin() * c + x.cos()}

x, c = torch.arange(15.0).reshape(5, 3), torch.tensor(2.0)
y = jit(f)(x, c)["y"]
torch.testing.assert_close(y, f(x, c)["y"])
print(counters["inductor"]["fxgraph_cache_hit"], counters["inductor"]["fxgraph_cache_bypass"])
"""


def test_a_new_process_loads_the_compiled_graph_from_inductors_cache(tmp_path):
    # Inductor's FX graph cache needs a ShapeEnv in the tracing context and bypasses the cache
    # without one; jit provides it, so a second process reuses the first one's kernels. Run in
    # fresh processes with their own cache directory: no state from other tests.
    import os
    import subprocess
    import sys

    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor")}
    runs = [
        subprocess.run(
            [sys.executable, "-c", _CACHE_PROBE], env=env, capture_output=True, text=True
        )
        for _ in range(2)
    ]
    for r in runs:
        assert r.returncode == 0, r.stderr[-2000:]
    (hit_1, bypass_1), (hit_2, bypass_2) = (map(int, r.stdout.split()[-2:]) for r in runs)
    assert (hit_1, bypass_1) == (0, 0)  # compiled and stored
    assert hit_2 >= 1 and bypass_2 == 0  # loaded


def test_compile_step_without_cudagraphs_equals_the_eager_step():
    from funcrl.jit import compile_step

    params, train, make = _dqn_setup()
    rec = make(8)
    state = train.init(params)
    want = train.step(params, state, rec)
    torch._dynamo.reset()
    got = compile_step(train.step)(params, state, rec)
    assert tree.allclose(got, want, rtol=1e-5, atol=1e-6)


@_NO_CUDA
def test_compile_step_cudagraphs_results_survive_the_next_call():
    # A step fed its own outputs, as a training loop does, with every result kept: under
    # mode="reduce-overhead" alone the second call overwrites the first call's outputs.
    from funcrl.jit import compile_step

    params, train, make = _dqn_setup()
    dev = torch.device("cuda")
    params = tree.map(lambda x: x.to(dev), params)
    torch._dynamo.reset()
    graphed = compile_step(train.step, cudagraphs=True)
    p_a, s_a = params, train.init(params)
    p_b, s_b = params, train.init(params)
    history = []
    for _ in range(4):
        rec = make(8).to(dev)
        p_a, s_a, m_a = train.step(p_a, s_a, rec)
        p_b, s_b, m_b = graphed(p_b, s_b, rec)
        history.append((m_b["loss"], m_a["loss"], p_b))
    for got, want, p in history:  # every earlier result still readable, and right
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
        assert all(torch.isfinite(x).all() for x in tree.leaves(p))
    assert tree.allclose(p_a, p_b, rtol=1e-4, atol=1e-5)
