"""funcrl._constants.filled equals torch.tensor without copying host memory; TanhBounded's bound
check in Python equals the tensor comparison it replaces."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from funcrl._constants import filled
from funcrl.nn.bounded import TanhBounded, _below
from funcrl.nn.core import MLP

_NUM = st.one_of(
    st.floats(-1e6, 1e6, allow_nan=False, width=64), st.integers(-1000, 1000), st.just(0.1)
)


@settings(max_examples=100, deadline=None)
@given(
    value=st.one_of(
        _NUM,
        st.lists(_NUM, min_size=1, max_size=4).map(tuple),
        st.integers(1, 3).flatmap(
            lambda n: st.lists(st.lists(_NUM, min_size=n, max_size=n), min_size=1, max_size=3)
        ),
    ),
    dtype=st.sampled_from([torch.float32, torch.float64, torch.bfloat16, torch.float16]),
)
def test_filled_equals_torch_tensor(value, dtype):
    got = filled(value, dtype, "cpu")
    want = torch.tensor(value, dtype=dtype)
    assert got.shape == want.shape and got.dtype == dtype
    assert torch.equal(got, want)  # the same rounding to dtype, bit for bit


def test_filled_integers_and_empty():
    assert torch.equal(filled(2**32, torch.int64, "cpu"), torch.tensor(2**32))
    assert filled((), torch.float32, "cpu").shape == (0,)


def test_filled_makes_no_tensor_constant():
    from torch.fx.experimental.proxy_tensor import make_fx

    gm = make_fx(lambda x: x + filled(((0.5, 2.0), (1.0, 3.0)), x.dtype, x.device))(torch.ones(2))
    assert not [n for n in gm.graph.nodes if n.op == "get_attr"]


_BOUND = st.one_of(
    st.integers(-3, 3),
    st.lists(st.integers(-3, 3), min_size=1, max_size=3).map(tuple),
    st.lists(
        st.lists(st.integers(-3, 3), min_size=2, max_size=2).map(tuple), min_size=1, max_size=2
    ).map(tuple),  # fmt: skip
)


@settings(max_examples=300, deadline=None)
@given(low=_BOUND, high=_BOUND)
def test_bound_check_equals_the_tensor_comparison(low, high):
    try:
        want = bool((torch.as_tensor(low) < torch.as_tensor(high)).all())
    except RuntimeError:  # shapes that do not broadcast raise either way
        with pytest.raises(RuntimeError):
            _below(low, high)
        return
    assert _below(low, high) == want


def test_tanh_bounded_still_rejects_empty_boxes():
    with pytest.raises(ValueError, match=r"TanhBounded: need low < high everywhere"):
        TanhBounded(MLP(2, 2, num_cells=(4,)), (0.0, 1.0), (1.0, 1.0))


def test_filled_sequences_are_built_once_and_keep_signed_zeros_and_nans_apart():
    a = filled((0.0, 1.0), torch.float32, "cpu")
    assert filled((0.0, 1.0), torch.float32, "cpu") is a  # eager: one tensor per value
    neg = filled((-0.0, 1.0), torch.float32, "cpu")
    assert torch.signbit(neg[0]) and not torch.signbit(a[0])
    assert filled((0.0, 1.0), torch.float64, "cpu").dtype == torch.float64
    assert torch.isnan(filled((float("nan"),), torch.float32, "cpu")).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_filled_on_cuda_copies_no_host_data_after_its_first_use():
    filled((0.5, 2.0), torch.float32, "cuda")  # the one copy
    old = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("error")
    try:
        x = filled((0.5, 2.0), torch.float32, "cuda") + filled(3.0, torch.float32, "cuda")
    finally:
        torch.cuda.set_sync_debug_mode(old)
    assert x.device.type == "cuda"


def test_filled_caches_no_inference_or_fake_tensor():
    from torch._subclasses.fake_tensor import FakeTensorMode

    with torch.inference_mode():
        filled((0.25, 0.75), torch.float32, "cpu")
    with FakeTensorMode():
        filled((0.125, 0.375), torch.float32, "cpu")
    assert not filled((0.25, 0.75), torch.float32, "cpu").is_inference()
    assert type(filled((0.125, 0.375), torch.float32, "cpu")) is torch.Tensor


def test_filled_follows_a_mutated_list_and_overflows_like_torch_tensor():
    v = [[1.0, 2.0], [3.0, 4.0]]
    assert filled(v, torch.float32, "cpu")[1, 0] == 3.0
    v[1][0] = 9.0
    assert filled(v, torch.float32, "cpu")[1, 0] == 9.0
    t = ((1.0, 2.0), [3.0, 4.0])  # a tuple holding a list is looked up by value, not identity
    filled(t, torch.float32, "cpu")
    t[1][0] = 7.0
    assert filled(t, torch.float32, "cpu")[1, 0] == 7.0
    assert torch.equal(filled(1e39, torch.float32, "cpu"), torch.tensor(1e39, dtype=torch.float32))
    assert torch.equal(filled((1e39, -1e39), torch.float32, "cpu"), torch.tensor((1e39, -1e39)))


def test_filled_casts_tensors():
    x = torch.tensor([[2, 3], [4, 5]])
    got = filled(x, torch.float64, "cpu")
    assert got.dtype == torch.float64 and torch.equal(got, x.double())


def test_filled_caches_stay_bounded():
    from funcrl import _constants

    for i in range(_constants._MAX_ENTRIES + 10):
        got = filled((float(i), 1.0), torch.float32, "cpu")  # a new tuple and value every call
        assert got[0] == float(i)
    assert len(_constants._CACHE) <= _constants._MAX_ENTRIES
    assert len(_constants._BY_ID) <= _constants._MAX_ENTRIES


def test_filled_under_vmap_and_compile():
    # Inside a vmapped or fullgraph-compiled function: numbers, sequences and tensors give what
    # eager gives, with no graph break.
    def fn(x):
        return x * filled((0.5, 2.0), x.dtype, x.device) + filled(3.0, x.dtype, x.device)

    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    want = torch.tensor([[3.5, 7.0], [4.5, 11.0]])  # hand-computed
    assert torch.equal(fn(x), want)
    assert torch.equal(torch.func.vmap(fn)(x), want)
    assert torch.equal(torch.compile(fn, fullgraph=True, backend="eager")(x), want)
