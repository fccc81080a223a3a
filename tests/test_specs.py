"""Tests for funcrl.specs: hand-computed projections, properties, TorchRL parity, vmap, compile."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from funcrl import Record
from funcrl import specs as S

# ---------------------------------------------------------------- hand-computed projections


def test_bounded_project_clamps():
    spec = S.Bounded(torch.tensor([-1.0, 0.0]), torch.tensor([1.0, 2.0]))
    assert spec.shape == torch.Size([2]) and spec.dtype == torch.float32
    x = torch.tensor([[-3.0, 5.0], [0.5, 1.0]])
    torch.testing.assert_close(spec.project(x), torch.tensor([[-1.0, 2.0], [0.5, 1.0]]))
    assert bool(spec.is_in(spec.project(x)))
    assert not bool(spec.is_in(x))


def test_bounded_integer_rounds_then_clamps():
    spec = S.Bounded(0, 5, shape=(3,), dtype=torch.int32)
    out = spec.project(torch.tensor([2.6, -1.0, 9.0]))
    assert out.dtype == torch.int32
    assert out.tolist() == [3, 0, 5]
    samples = spec.rand((2000,))
    assert samples.min() == 0 and samples.max() == 5  # both ends are reachable


def test_bounded_scalar_bounds_broadcast_to_shape():
    spec = S.Bounded(-2.0, 3.0, shape=(2, 3))
    assert spec.low.shape == spec.high.shape == torch.Size([2, 3])
    assert (spec.low == -2).all() and (spec.high == 3).all()


def test_categorical_project_clamps():
    spec = S.Categorical(4)
    out = spec.project(torch.tensor([-2, 1, 7]))
    assert out.tolist() == [0, 1, 3] and out.dtype == torch.int64
    assert spec.project(torch.tensor([2.4, 2.6])).tolist() == [2, 3]


def test_one_hot_project_is_argmax():
    spec = S.OneHot(3)
    assert spec.dtype == torch.bool  # TorchRL's default
    x = torch.tensor([[0.1, 0.9, 0.3], [2.0, -1.0, 2.0]])
    out = spec.project(x)
    # ties go to the first maximum
    assert out.tolist() == [[False, True, False], [True, False, False]]
    assert spec.to_categorical(out).tolist() == [1, 0]


def test_multi_one_hot_project_per_segment():
    spec = S.MultiOneHot([2, 3])
    x = torch.tensor([0.0, 1.0, 5.0, 0.0, 1.0])
    out = spec.project(x)
    assert out.tolist() == [False, True, True, False, False]
    assert spec.to_categorical(out).tolist() == [1, 0]


def test_multi_categorical_project_per_column():
    spec = S.MultiCategorical([2, 3, 4])
    out = spec.project(torch.tensor([[5, 5, 5], [-1, 1, 2]]))
    assert out.tolist() == [[1, 2, 3], [0, 1, 2]]
    onehot = spec.to_one_hot(torch.tensor([1, 0, 3]))
    assert onehot.int().tolist() == [0, 1, 1, 0, 0, 0, 0, 0, 1]


def test_binary_project():
    spec = S.Binary(4)
    assert spec.dtype == torch.int8 and spec.n == 4
    out = spec.project(torch.tensor([0.7, -3.0, 0.2, 4.0]))
    assert out.tolist() == [1, 0, 0, 1] and out.dtype == torch.int8


def test_unbounded_project_casts():
    spec = S.Unbounded(3)
    out = spec.project(torch.tensor([1, 2, 3]))
    assert out.dtype == torch.float32 and out.tolist() == [1.0, 2.0, 3.0]
    assert bool(spec.is_in(torch.randn(4, 3)))
    assert not bool(spec.is_in(torch.randn(4, 2)))
    assert not bool(spec.is_in(torch.randn(4, 3, dtype=torch.float64)))


def test_categorical_one_hot_round_trip():
    cat = S.Categorical(5, shape=(2,))
    x = cat.rand((7,))
    oh = cat.to_one_hot(x)
    assert oh.shape == (7, 2, 5) and oh.dtype == torch.bool
    assert bool(cat.to_one_hot_spec().is_in(oh))
    assert torch.equal(cat.to_one_hot_spec().to_categorical(oh), x)
    mc = S.MultiCategorical([3, 4])
    y = mc.rand((6,))
    assert torch.equal(mc.to_one_hot_spec().to_categorical(mc.to_one_hot(y)), y)
    assert mc.to_one_hot_spec() == S.MultiOneHot([3, 4])
    assert S.MultiOneHot([3, 4]).to_categorical_spec() == mc
    assert S.OneHot(5).to_categorical_spec() == S.Categorical(5)


# ---------------------------------------------------------------- is_in
def test_is_in_returns_bool_tensor_and_rejects_wrong_values():
    spec = S.Categorical(3)
    assert isinstance(spec.is_in(torch.tensor([0, 2])), torch.Tensor)
    assert spec.is_in(torch.tensor([0, 2])).dtype == torch.bool
    assert not bool(spec.is_in(torch.tensor([0, 3])))
    assert not bool(spec.is_in(torch.tensor([0, 1], dtype=torch.int32)))  # dtype
    oh = S.OneHot(3)
    assert not bool(oh.is_in(torch.tensor([True, True, False])))  # two ones
    assert not bool(oh.is_in(torch.tensor([False, False, False])))  # none
    assert not bool(oh.is_in(torch.tensor([True, False])))  # shape
    assert not bool(S.Binary(2).is_in(torch.tensor([2, 0], dtype=torch.int8)))
    assert not bool(S.MultiOneHot([2, 2]).is_in(torch.tensor([1, 1, 0, 1]).bool()))
    assert not bool(S.MultiCategorical([2, 3]).is_in(torch.tensor([1, 3])))


# ---------------------------------------------------------------- construction errors
def test_construction_errors():
    with pytest.raises(ValueError, match="low > high"):
        S.Bounded(1.0, 0.0, shape=(2,))
    with pytest.raises(ValueError, match="does not broadcast"):
        S.Bounded(torch.zeros(3), torch.ones(3), shape=(2,))
    with pytest.raises(ValueError, match="NaN"):
        S.Bounded(float("nan"), 1.0, shape=())
    with pytest.raises(ValueError, match="infinite"):
        S.Bounded(-float("inf"), 1, shape=(), dtype=torch.int64)
    with pytest.raises(ValueError, match="shape\\[-1\\] must equal n=3"):
        S.OneHot(3, shape=(2, 4))
    with pytest.raises(ValueError, match="positive int"):
        S.Categorical(0)
    with pytest.raises(TypeError, match="integer"):
        S.Categorical(3, dtype=torch.float32)
    with pytest.raises(ValueError, match="sum\\(nvec\\)=5"):
        S.MultiOneHot([2, 3], shape=(4,))
    with pytest.raises(ValueError, match="nvec"):
        S.MultiCategorical([2, 0])
    with pytest.raises(ValueError, match="shape\\[-1\\] must equal n=3"):
        S.Binary(3, shape=(2,))
    with pytest.raises(ValueError, match="expected \\[\\*batch, 3\\]"):
        S.Bounded(0.0, 1.0, shape=(3,)).project(torch.zeros(2))
    with pytest.raises(ValueError, match="does not start with the composite shape"):
        S.Composite({"obs": S.Unbounded(3)}, shape=(4,))


# ---------------------------------------------------------------- properties
def spec_strategy():
    shapes = st.lists(st.integers(1, 3), min_size=0, max_size=2).map(tuple)
    bounded = st.tuples(shapes, st.floats(-5, 5), st.floats(0, 5), st.booleans()).map(
        lambda a: S.Bounded(
            round(a[1]) if a[3] else a[1],
            round(a[1]) + round(a[2]) if a[3] else a[1] + a[2],
            shape=a[0],
            dtype=torch.int64 if a[3] else torch.float32,
        )
    )
    categorical = st.tuples(st.integers(1, 6), shapes).map(lambda a: S.Categorical(a[0], a[1]))
    one_hot = st.tuples(st.integers(1, 6), shapes).map(
        lambda a: S.OneHot(a[0], shape=(*a[1], a[0]))
    )
    nvecs = st.lists(st.integers(1, 4), min_size=1, max_size=3)
    multi_oh = nvecs.map(S.MultiOneHot)
    multi_cat = nvecs.map(S.MultiCategorical)
    binary = st.integers(1, 5).map(S.Binary)
    unbounded = shapes.map(S.Unbounded)
    return st.one_of(bounded, categorical, one_hot, multi_oh, multi_cat, binary, unbounded)


@settings(max_examples=150, deadline=None)
@given(spec=spec_strategy(), batch=st.lists(st.integers(1, 3), max_size=2), seed=st.integers(0, 99))
def test_rand_and_project_land_inside(spec, batch, seed):
    g = torch.Generator().manual_seed(seed)
    x = spec.rand(tuple(batch), generator=g)
    assert x.shape == (*batch, *spec.shape) and x.dtype == spec.dtype
    assert bool(spec.is_in(x))
    # projecting a member leaves it unchanged
    assert torch.equal(spec.project(x), x)
    # projecting arbitrary values lands inside
    noise = 10 * torch.randn((*batch, *spec.shape), generator=g)
    assert bool(spec.is_in(spec.project(noise)))
    z = spec.zero(tuple(batch))
    assert z.shape == x.shape and z.dtype == spec.dtype and not z.any()


def test_rand_generator_reproducible_and_global_rng():
    spec = S.Bounded(-1.0, 1.0, shape=(4,))
    a = spec.rand((3,), generator=torch.Generator().manual_seed(0))
    b = spec.rand((3,), generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b)
    torch.manual_seed(1)
    c = spec.rand((3,))
    torch.manual_seed(1)
    assert torch.equal(c, spec.rand((3,)))


def test_rand_respects_mask():
    mask = torch.tensor([[True, False, False, True], [False, False, True, False]])
    cat = S.Categorical(4, shape=(2,))
    x = cat.rand((500,), mask=mask)
    assert set(x[:, 0].tolist()) == {0, 3} and set(x[:, 1].tolist()) == {2}
    oh = S.OneHot(4, shape=(2, 4)).rand((200,), mask=mask)
    assert torch.equal(oh.any(0), mask)
    with pytest.raises(ValueError, match="mask"):
        cat.rand((3,), mask=torch.ones(3, dtype=torch.bool))


def test_bounded_rand_with_infinite_bounds():
    inf = float("inf")
    spec = S.Bounded(torch.tensor([-inf, 0.0, -inf, 2.0]), torch.tensor([inf, inf, 1.0, 3.0]))
    x = spec.rand((1000,))
    assert torch.isfinite(x).all() and bool(spec.is_in(x))
    assert (x[:, 0] < 0).any() and (x[:, 0] > 0).any()


def test_bounded_rand_uniform_mean():
    x = S.Bounded(2.0, 4.0, shape=()).rand((20000,), generator=torch.Generator().manual_seed(0))
    assert abs(float(x.mean()) - 3.0) < 0.03


# ---------------------------------------------------------------- Composite
def make_composite():
    return S.Composite(
        {
            "observation": S.Unbounded((3,)),
            ("next", "reward"): S.Unbounded((1,)),
            "action": S.Bounded(-1.0, 1.0, shape=(2,)),
        },
        mask=S.Binary(4),
    )


def test_composite_rand_zero_return_records():
    spec = make_composite()
    assert spec.keys(include_nested=True, leaves_only=True) == [
        "observation",
        ("next", "reward"),
        "action",
        "mask",
    ]
    rec = spec.rand((5, 2))
    assert isinstance(rec, Record) and rec.batch_size == (5, 2)
    assert rec["next", "reward"].shape == (5, 2, 1)
    assert bool(spec.is_in(rec))
    zero = spec.zero((3,))
    assert zero.batch_size == (3,) and not zero["action"].any()
    assert isinstance(spec["next"], S.Composite) and spec["next", "reward"] == S.Unbounded(1)
    assert ("next", "reward") in spec and ("next", "done") not in spec


def test_composite_with_batch_shape():
    spec = S.Composite(
        {"obs": S.Unbounded((4, 3)), "nested": {"x": S.Categorical(2, (4,))}}, shape=(4,)
    )
    rec = spec.rand((2,))
    assert rec.batch_size == (2, 4) and rec["nested", "x"].shape == (2, 4)
    assert bool(spec.is_in(rec))


def test_composite_project_and_is_in():
    spec = make_composite()
    rec = spec.rand((4,))
    bad = rec.set("action", 3 * torch.ones(4, 2)).set("extra", torch.ones(4))
    assert not bool(spec.is_in(bad))
    fixed = spec.project(bad)
    assert bool(spec.is_in(fixed))
    assert torch.equal(fixed["action"], torch.ones(4, 2))
    assert torch.equal(fixed["extra"], torch.ones(4))  # keys the spec does not know stay
    assert not bool(spec.is_in(rec.exclude("action")))  # missing key


# ---------------------------------------------------------------- gymnasium
def test_from_gymnasium_spaces():
    box = S.from_gymnasium(gym.spaces.Box(-2.0, 3.0, (3,), dtype=np.float32))
    assert isinstance(box, S.Bounded) and box.shape == (3,) and (box.high == 3).all()
    inf_box = S.from_gymnasium(gym.spaces.Box(-np.inf, np.inf, (2,), dtype=np.float64))
    assert isinstance(inf_box, S.Unbounded) and inf_box.dtype == torch.float64
    half = S.from_gymnasium(
        gym.spaces.Box(np.array([0.0, -np.inf], np.float32), np.array([np.inf, 1.0], np.float32))
    )
    assert isinstance(half, S.Bounded) and bool(half.is_in(half.rand((10,))))
    assert S.from_gymnasium(gym.spaces.Discrete(4)) == S.Categorical(4)
    assert S.from_gymnasium(gym.spaces.Discrete(4), one_hot=True) == S.OneHot(4, dtype=torch.int64)
    assert S.from_gymnasium(gym.spaces.MultiDiscrete([2, 3])) == S.MultiCategorical([2, 3])
    assert S.from_gymnasium(gym.spaces.MultiDiscrete([2, 3]), one_hot=True) == S.MultiOneHot(
        [2, 3], dtype=torch.int64
    )
    assert S.from_gymnasium(gym.spaces.MultiBinary(5)) == S.Binary(5)
    with pytest.raises(ValueError, match="start"):
        S.from_gymnasium(gym.spaces.Discrete(3, start=1))
    nested = S.from_gymnasium(
        gym.spaces.Dict(
            {"pos": gym.spaces.Box(-1, 1, (2,)), "t": gym.spaces.Tuple((gym.spaces.Discrete(2),))}
        )
    )
    assert isinstance(nested, S.Composite)
    assert nested.keys(True, True) == ["pos", ("t", "0")]


@pytest.mark.parametrize(
    "space",
    [
        gym.spaces.Box(-2.0, 3.0, (3,), dtype=np.float32),
        gym.spaces.Box(0, 255, (2, 2), dtype=np.uint8),
        gym.spaces.Discrete(5),
        gym.spaces.MultiDiscrete([2, 3, 4]),
        gym.spaces.MultiBinary(3),
    ],
)
def test_gymnasium_samples_are_in_spec(space):
    space.seed(0)
    spec = S.from_gymnasium(space)
    for _ in range(20):
        x = torch.as_tensor(np.asarray(space.sample()))
        assert bool(spec.is_in(x)), (x, spec)
    # and our samples are in the gymnasium space
    for _ in range(20):
        assert space.contains(spec.rand().numpy().astype(space.dtype))


# ---------------------------------------------------------------- TorchRL parity
@pytest.fixture
def TS():
    return pytest.importorskip("torchrl.data", reason="TorchRL parity needs torchrl")


@pytest.mark.torchrl
def test_torchrl_parity_projection_and_membership(TS):
    torch.manual_seed(0)
    low, high = torch.tensor([-1.0, 0.0, 2.0]), torch.tensor([1.0, 0.5, 4.0])
    pairs = [
        (S.Bounded(low, high), TS.Bounded(low, high, shape=(3,))),
        (S.Unbounded((2,)), TS.Unbounded((2,))),
        (S.Categorical(5, shape=(2,)), TS.Categorical(5, shape=(2,))),
        (S.OneHot(4), TS.OneHot(4)),
        (S.MultiOneHot([2, 3]), TS.MultiOneHot([2, 3])),
        (S.MultiCategorical([2, 3]), TS.MultiCategorical([2, 3])),
        (S.Binary(3), TS.Binary(3)),
    ]
    for ours, ref in pairs:
        assert ours.shape == ref.shape and ours.dtype == ref.dtype, (ours, ref)
        for _ in range(10):
            assert bool(ref.is_in(ours.rand((4,))))
            assert bool(ours.is_in(ref.rand((4,))))
    # Bounded clamps exactly as TorchRL; Categorical clamps to [0, n - 1] as TorchRL.
    x = 5 * torch.randn(8, 3)
    torch.testing.assert_close(pairs[0][0].project(x), pairs[0][1].project(x))
    c = torch.randint(-4, 9, (8, 2))
    assert torch.equal(pairs[2][0].project(c), pairs[2][1].project(c.clone()))
    mc = torch.randint(-4, 9, (8, 2))
    assert torch.equal(pairs[5][0].project(mc), pairs[5][1].project(mc.clone()))
    # One-hot conversions agree.
    oh = pairs[3][0].rand((6,))
    assert torch.equal(pairs[3][0].to_categorical(oh), pairs[3][1].to_categorical(oh))
    cat = pairs[2][0].rand((6,))
    assert torch.equal(pairs[2][0].to_one_hot(cat), pairs[2][1].to_one_hot(cat))
    moh = pairs[4][0].rand((6,))
    assert torch.equal(pairs[4][0].to_categorical(moh), pairs[4][1].to_categorical(moh))


# ---------------------------------------------------------------- vmap and compile
def test_project_under_vmap():
    bounded = S.Bounded(-1.0, 1.0, shape=(3,))
    one_hot = S.OneHot(4)
    cat = S.MultiCategorical([2, 3])
    x, y, z = 3 * torch.randn(5, 3), torch.randn(5, 4), torch.randn(5, 2) * 3

    def f(x, y, z):
        return bounded.project(x), one_hot.project(y), cat.project(z), one_hot.to_categorical(y)

    for a, b in zip(torch.func.vmap(f)(x, y, z), f(x, y, z)):
        assert torch.equal(a, b)


def test_project_under_compile_fullgraph():
    torch._dynamo.reset()
    bounded = S.Bounded(torch.tensor([-1.0, 0.0]), torch.tensor([1.0, 3.0]))
    one_hot = S.OneHot(3)
    categorical = S.Categorical(4)
    composite = S.Composite(action=bounded, choice=one_hot)

    def f(x, y, c, rec):
        out = composite.project(rec)
        return (
            bounded.project(x),
            one_hot.project(y),
            categorical.project(c),
            out["action"],
            out["choice"],
            one_hot.to_categorical(one_hot.project(y)),
        )

    rec = Record({"action": 3 * torch.randn(4, 2), "choice": torch.randn(4, 3)}, batch_ndim=1)
    args = (3 * torch.randn(4, 2), torch.randn(4, 3), torch.randint(-3, 8, (4,)), rec)
    explanation = torch._dynamo.explain(f)(*args)
    assert explanation.graph_break_count == 0
    torch._dynamo.reset()
    compiled = torch.compile(f, fullgraph=True)
    for a, b in zip(compiled(*args), f(*args)):
        assert torch.equal(a, b)


# ---------------------------------------------------------------- every dtype (issue #12)
ALL_DTYPES = [
    torch.uint8,
    torch.int8,
    torch.int16,
    torch.int32,
    torch.int64,
    torch.bool,
    torch.float16,
    torch.bfloat16,
    torch.float32,
    torch.float64,
]
INT_DTYPES = ALL_DTYPES[:5]


def specs_of(dtype):
    """Every spec that allows ``dtype``, with small domains."""
    out = [S.Unbounded((2,), dtype=dtype), S.Binary(3, dtype=dtype)]
    out += [S.OneHot(3, dtype=dtype), S.MultiOneHot([2, 3], dtype=dtype)]
    if dtype != torch.bool:
        lo, hi = (0, 100) if dtype == torch.uint8 else (-3, 100)
        out.append(S.Bounded(lo, hi, shape=(2,), dtype=dtype))
    if dtype in INT_DTYPES:
        out += [S.Categorical(4, shape=(2,), dtype=dtype), S.MultiCategorical([2, 5], dtype=dtype)]
    return out


@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=str)
@given(
    values=st.lists(
        st.floats(allow_nan=False, allow_infinity=False, width=64), min_size=5, max_size=5
    ),
    src=st.sampled_from(ALL_DTYPES),
)
@settings(max_examples=25, deadline=None)
def test_project_lands_inside_for_every_dtype(dtype, values, src):
    x64 = torch.tensor(values, dtype=torch.float64)
    if src.is_floating_point:
        x = x64.to(src)  # may overflow to inf for float16: still has to land inside
    elif src == torch.bool:
        x = x64 != 0
    else:
        info = torch.iinfo(src)
        x = x64.clamp(info.min, info.max).round().to(torch.float64)
        x = (
            torch.where(x >= 2.0**63, torch.zeros_like(x), x)
            .to(torch.int64)
            .clamp(info.min, info.max)
            .to(src)
        )
    for spec in specs_of(dtype):
        width = spec.shape[-1]
        xs = x[:width] if x.numel() >= width else x.repeat(width)[:width]
        out = spec.project(xs)
        assert out.dtype == dtype and out.shape == spec.shape, spec
        if isinstance(spec, S.Unbounded) and dtype.is_floating_point:
            continue  # a float Unbounded holds inf too; project only casts
        assert bool(spec.is_in(out)), (spec, xs, out)
        # projection is the identity on members of the spec
        assert torch.equal(spec.project(out), out), spec


@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=str)
def test_project_is_identity_on_random_members(dtype):
    g = torch.Generator().manual_seed(0)
    for spec in specs_of(dtype):
        x = spec.rand((4,), generator=g)
        assert bool(spec.is_in(x)), spec
        assert torch.equal(spec.project(x), x), spec


def test_project_clamps_before_casting_hand_values():
    # the cases: each was a wrapped or garbage value before
    assert S.Bounded(0, 100, (), torch.uint8).project(torch.tensor(300)).item() == 100
    assert S.Bounded(0, 100, (), torch.uint8).project(torch.tensor(-7.0)).item() == 0
    assert S.Bounded(-5, 5, (), torch.int32).project(torch.tensor(1e10)).item() == 5
    big = S.Bounded(torch.iinfo(torch.int64).min, torch.iinfo(torch.int64).max, (), torch.int64)
    assert big.project(torch.tensor([1e30, -1e30])).tolist() == [2**63 - 1, -(2**63)]
    unb = S.Unbounded((4,), dtype=torch.int8).project(torch.tensor([1e3, -1e3, 2.5, 3.5]))
    assert unb.tolist() == [127, -128, 2, 4]  # saturate, round half to even
    assert S.Bounded(-1.0, 2.0, (), torch.float16).project(torch.tensor(1e30)).item() == 2.0
    assert S.Binary(2, dtype=torch.bool).project(torch.tensor([-3, 7])).tolist() == [False, True]


def test_nan_policy_is_the_lower_bound():
    nan = float("nan")
    assert S.Bounded(-1.0, 2.0).project(torch.tensor(nan)).item() == -1.0
    assert S.Bounded(2, 9, (), torch.int16).project(torch.tensor(nan)).item() == 2
    assert S.Categorical(3).project(torch.tensor(nan)).item() == 0
    assert S.MultiCategorical([2, 3]).project(torch.tensor([nan, nan])).tolist() == [0, 0]
    assert S.Binary(1).project(torch.tensor([nan])).tolist() == [0]
    assert S.Unbounded((), dtype=torch.int32).project(torch.tensor(nan)).item() == 0
    # one-hot: a NaN score is the lowest; an all-NaN row is category 0
    assert S.OneHot(3).project(torch.tensor([nan, 1.0, 0.0])).tolist() == [False, True, False]
    assert S.OneHot(3).project(torch.full((3,), nan)).tolist() == [True, False, False]
    assert torch.isnan(S.Unbounded(()).project(torch.tensor(nan)))  # floats hold NaN
    assert not bool(S.Bounded(-1.0, 2.0).is_in(torch.tensor(nan)))


def test_composite_merges_nested_spellings_in_any_order():
    r, o = S.Unbounded(1), S.Unbounded(3)
    inner = S.Composite({"o": o})
    a = S.Composite({("next", "r"): r, "next": {"o": o}})
    b = S.Composite({"next": inner, ("next", "r"): r})
    assert a == b and sorted(map(str, a.keys(True, True))) == ["('next', 'o')", "('next', 'r')"]
    assert list(inner.keys()) == ["o"]  # the caller's Composite is not modified by the merge


# ---------------------------------------------------------------- generator on another device
_RAND_SPECS = {
    "unbounded": lambda d: S.Unbounded((2,), device=d),
    "unbounded_int": lambda d: S.Unbounded((2,), dtype=torch.int32, device=d),
    "unbounded_bool": lambda d: S.Unbounded((2,), dtype=torch.bool, device=d),
    "bounded": lambda d: S.Bounded(-1.0, 2.0, shape=(2,), device=d),
    "bounded_half_open": lambda d: S.Bounded(
        torch.tensor([-1.0, -float("inf")]), torch.tensor([float("inf"), 2.0]), device=d
    ),
    "bounded_int": lambda d: S.Bounded(-1, 2, shape=(2,), dtype=torch.int64, device=d),
    "categorical": lambda d: S.Categorical(3, device=d),
    "binary": lambda d: S.Binary(3, device=d),
    "one_hot": lambda d: S.OneHot(3, device=d),
    "multi_one_hot": lambda d: S.MultiOneHot([2, 3], device=d),
    "multi_categorical": lambda d: S.MultiCategorical([2, 3], device=d),
}


def _on_meta(make):
    # A spec whose bounds live on "meta": built on the CPU (Bounded reads its bounds' values),
    # then its tensors moved.
    spec = make("cpu")
    spec.device = torch.device("meta")
    for name in ("low", "high", "_high"):
        if isinstance(getattr(spec, name, None), torch.Tensor):
            setattr(spec, name, getattr(spec, name).to("meta"))
    return spec


class _DrawDevices(torch.overrides.TorchFunctionMode):
    """Records (draw device, generator device) of every factory call given a generator."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        gen = kwargs.get("generator")
        if gen is not None:
            out = func(*args, **kwargs)
            dev = args[0].device if isinstance(args[0], torch.Tensor) else out.device
            self.seen.append((torch.device(dev).type, gen.device.type))
            return out
        return func(*args, **kwargs)


@pytest.mark.parametrize("kind", sorted(_RAND_SPECS))
def test_rand_draws_on_the_generators_device_and_returns_on_the_specs(kind):
    # torch draws only on a generator's own device: a CPU generator feeding a spec on another
    # device (the examples' warm-up actions on CUDA) must draw on the CPU, then move the result.
    spec = _on_meta(_RAND_SPECS[kind])
    with _DrawDevices() as mode:
        x = spec.rand((4,), generator=torch.Generator().manual_seed(0))
    assert mode.seen and all(d == g == "cpu" for d, g in mode.seen), mode.seen
    assert x.device.type == "meta"
    ref = _RAND_SPECS[kind]("cpu").rand((4,), generator=torch.Generator().manual_seed(0))
    assert x.shape == ref.shape and x.dtype == ref.dtype


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("kind", sorted(_RAND_SPECS))
def test_rand_with_a_cpu_generator_on_cuda_equals_the_cpu_draw(kind):
    got = _RAND_SPECS[kind]("cuda").rand((4,), generator=torch.Generator().manual_seed(0))
    ref = _RAND_SPECS[kind]("cpu").rand((4,), generator=torch.Generator().manual_seed(0))
    assert got.device.type == "cuda"
    torch.testing.assert_close(got.cpu(), ref, rtol=0, atol=0)
