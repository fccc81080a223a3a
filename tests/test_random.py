"""funcrl.random: known answers (Random123, JAX), paths agree bitwise, compile/vmap, statistics."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import funcrl
from funcrl import random as R

M32 = 0xFFFFFFFF


def _t(*v: int) -> torch.Tensor:
    return torch.tensor(v, dtype=torch.int64)


def _ints(x: torch.Tensor) -> list[int]:
    # Bit patterns of a float tensor, to compare exactly (and -0.0 != 0.0).
    view = {2: torch.int16, 4: torch.int32, 8: torch.int64}[x.element_size()]
    return x.reshape(-1).view(view).tolist()


@pytest.fixture
def plain(monkeypatch):
    """Force the plain-op path (no compiled kernel)."""
    monkeypatch.setattr(R, "FUSED_MIN_NUMEL", 2**62)


# --- known answers -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "k, x, expected",
    [
        # Random123 kat_vectors, threefry2x32_20 (also in JAX's random_test.py).
        ((0, 0), (0, 0), (0x6B200159, 0x99BA4EFE)),
        ((M32, M32), (M32, M32), (0x1CB996FC, 0xBB002BE7)),
        ((0x13198A2E, 0x03707344), (0x243F6A88, 0x85A308D3), (0xC4923A9C, 0x483DF7A0)),
    ],
)
def test_threefry_known_answers(k, x, expected):
    # R.threefry2x32 is the native operator on a CPU (where it builds); the torch ops elsewhere.
    for fn in (R.threefry2x32, R._threefry2x32_ops):
        y0, y1 = fn(_t(k[0]), _t(k[1]), _t(x[0]), _t(x[1]))
        assert (int(y0), int(y1)) == expected


def test_key_layout_matches_jax():
    assert R.key(0).tolist() == [0, 0]
    assert R.key(42).tolist() == [0, 42]
    assert R.key(-1).tolist() == [0, M32]  # JAX's default 32-bit seed
    assert R.key(2**40 + 3).tolist() == [256, 3]  # JAX with x64
    assert R.key(0).dtype == torch.int64


# Reference values generated once with jax 0.10.2 (jax_threefry_partitionable=True, the default).
def test_split_fold_in_bits_match_jax():
    assert R.split(R.key(0)).tolist() == [[1797259609, 2579123966], [928981903, 3453687069]]
    assert R.split(R.key(42), 3).tolist() == [
        [1832780943, 270669613],
        [64467757, 2916123636],
        [2465931498, 255383827],
    ]
    assert R.split(R.key(42), (3, 1)).shape == (3, 1, 2)
    assert R.fold_in(R.key(0), 7).tolist() == [2716826189, 292468403]
    assert R.fold_in(R.key(123), M32).tolist() == [2301478522, 2278974641]
    assert R.fold_in(R.key(0), torch.tensor(7)).tolist() == [2716826189, 292468403]
    assert R.bits(R.key(0), (2, 3)).tolist() == [
        [4070199207, 4202968722, 1427181096],
        [2012915765, 2447653815, 710830403],
    ]


def test_uniform_matches_jax_bitwise():
    u = R.uniform(R.key(0), (5,))
    assert _ints(u) == [1064475214, 1064993846, 1051337244, 1055913296, 1058137146]
    u = R.uniform(R.key(7), (4,), minval=-2.0, maxval=3.0)
    assert [b & M32 for b in _ints(u)] == [1068460772, 1077403806, 3203971184, 1046548816]
    u64 = R.uniform(R.key(0), (3,), torch.float64)
    assert _ints(u64) == [4601209873087491728, 4596960885320641928, 4606870062290452936]
    assert _ints(R.uniform(R.key(2), (4,), torch.float16)) == [15122, 15066, 14382, 12984]
    assert _ints(R.uniform(R.key(2), (4,), torch.bfloat16)) == [16080, 16072, 16232, 16200]


def test_normal_and_derived_match_jax():
    expected = [1.6226422, 2.0252647, -0.43359444, -0.07861735, 0.1760909]
    torch.testing.assert_close(R.normal(R.key(0), (5,)), torch.tensor(expected), rtol=0, atol=1e-6)
    expected = [[-0.15443718, 0.08470728], [-0.13598049, -0.15503626]]
    torch.testing.assert_close(
        R.normal(R.key(1), (2, 2)), torch.tensor(expected), rtol=0, atol=1e-6
    )
    assert R.randint(R.key(3), (8,), -5, 100).tolist() == [40, 29, 20, 99, 26, -3, 33, 59]
    logits = torch.tensor([0.1, 0.2, 0.3, 0.4]).log()
    assert R.categorical(R.key(4), logits, shape=(10,)).tolist() == [3, 3, 0, 1, 1, 1, 2, 1, 2, 3]
    assert R.permutation(R.key(5), 12).tolist() == [10, 9, 0, 2, 4, 8, 1, 3, 5, 7, 11, 6]
    bern = [False, True, True, True, False, True, True, True, False, False]
    assert R.bernoulli(R.key(6), 0.5, (10,)).tolist() == bern


# --- the compiled kernel and the plain ops agree bitwise -----------------------------------


# float32 always; the other dtypes each compile their own kernel (seconds), so they run with -m slow.
@pytest.mark.parametrize(
    "dtype",
    [torch.float32]
    + [
        pytest.param(d, marks=pytest.mark.slow)
        for d in (torch.float64, torch.float16, torch.bfloat16)
    ],
)
def test_fused_and_plain_paths_bitwise_equal(dtype, monkeypatch):
    monkeypatch.setattr(R, "_FUSED_ENV", True)  # conftest turns the kernel off elsewhere
    k = R.key(3)
    n = 4099  # not a multiple of any vector width: covers the kernel's tail loop
    fused = (R.uniform(k, (n,), dtype), R.normal(k, (n,), dtype), R.uniform(k, (n,), dtype, -2, 3))
    assert R.fused_enabled(k, n)
    monkeypatch.setattr(R, "FUSED_MIN_NUMEL", 2**62)
    assert not R.fused_enabled(k, n)
    plain = (R.uniform(k, (n,), dtype), R.normal(k, (n,), dtype), R.uniform(k, (n,), dtype, -2, 3))
    for a, b in zip(fused, plain):
        assert _ints(a) == _ints(b)


def test_fused_integer_kernels_equal_plain(monkeypatch):
    monkeypatch.setattr(R, "_FUSED_ENV", True)
    k = R.key(11)

    def draws():
        return R.bits(k, (70, 3)), R.split(k, 5), R.fold_in(k, 9), R.fold_in(k, torch.tensor(9))

    fused = draws()
    monkeypatch.setattr(R, "FUSED_MIN_NUMEL", 2**62)
    for a, b in zip(fused, draws()):
        assert torch.equal(a, b)


@pytest.mark.slow  # an Inductor compile of the whole caller: tens of seconds cold
def test_compiled_caller_matches_eager():
    def draw(k):
        a, b = R.split(k)
        return R.uniform(a, (300,)), R.normal(b, (300,)), R.bits(k, (5,))

    k = R.key(5)
    compiled = torch.compile(draw, fullgraph=True)(k)
    for a, b in zip(compiled, draw(k)):
        assert _ints(a) == _ints(b) if a.is_floating_point() else torch.equal(a, b)


def test_key_is_an_ordinary_compile_input():
    from torch._dynamo.testing import CompileCounter

    counter = CompileCounter()

    @torch.compile(backend=counter, fullgraph=True)
    def f(k):
        k1, k2 = R.split(k)
        return R.normal(k1, (4, 3)) + R.uniform(R.fold_in(k2, 3), (4, 3))

    a, b = f(R.key(0)), f(R.key(1))
    assert counter.frame_count == 1
    assert not torch.equal(a, b)


def test_vmap_over_keys_equals_loop():
    keys = R.split(R.key(9), 5)
    logits = torch.randn(4, 5)

    def draw(k):
        return (
            R.normal(k, (3, 4)),
            R.uniform(k, (7,), minval=-1.0, maxval=2.0),
            R.bits(k, (2,)),
            R.split(k, 3),
            R.fold_in(k, 5),
            R.randint(k, (6,), 0, 7),
            R.categorical(k, logits),
            R.bernoulli(k, 0.3, (8,)),
        )

    batched = torch.func.vmap(draw)(keys)
    for i in range(5):
        for a, b in zip(batched, draw(keys[i])):
            assert torch.equal(a[i], b)


def test_funcrl_random_is_lazy_submodule():
    assert funcrl.random is R
    assert callable(funcrl.random.normal)


# --- structure -------------------------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), num=st.integers(1, 6), data=st.integers(0, 2**32 - 1))
def test_split_and_fold_in_give_new_keys(seed, num, data):
    k = R.key(seed)
    children = R.split(k, num)
    assert children.shape == (num, 2)
    rows = {tuple(c) for c in children.tolist()}
    assert len(rows) == num and tuple(k.tolist()) not in rows
    assert ((children >= 0) & (children <= M32)).all()
    other = (data + 1) % 2**32
    assert not torch.equal(R.fold_in(k, data), R.fold_in(k, other))
    assert not torch.equal(R.fold_in(k, data), k)


@settings(max_examples=25, deadline=None)
@given(shape=st.lists(st.integers(0, 5), max_size=3), seed=st.integers(0, 1000))
def test_shapes_dtypes_and_ranges(shape, seed):
    k = R.key(seed)
    u = R.uniform(k, shape, torch.float64, -3.0, 2.0)
    assert u.shape == tuple(shape) and u.dtype == torch.float64
    assert ((u >= -3.0) & (u < 2.0)).all()
    b = R.bits(k, shape)
    assert ((b >= 0) & (b <= M32)).all()
    r = R.randint(k, shape, -2, 3)
    assert ((r >= -2) & (r < 3)).all() and r.dtype == torch.int64


def test_same_key_same_draw_and_prefix_consistency():
    k = R.key(17)
    assert torch.equal(R.normal(k, (100,)), R.normal(k, (100,)))
    # Counter i gives element i whatever the total size (partitionable layout).
    assert torch.equal(R.bits(k, (10,)), R.bits(k, (200,))[:10])


def test_permutation_of_tensor_and_int():
    k = R.key(2)
    p = R.permutation(k, 100)
    assert sorted(p.tolist()) == list(range(100))
    x = torch.arange(20.0).reshape(10, 2)
    xp = R.permutation(k, x)
    assert torch.equal(xp, x[R.permutation(k, 10)])
    assert R.permutation(k, 0).shape == (0,)


def test_truncated_normal_and_gumbel():
    k = R.key(8)
    t = R.truncated_normal(k, -0.5, 1.5, (10000,))
    assert t.min() > -0.5 and t.max() < 1.5
    # Mean of N(0,1) truncated to (-0.5, 1.5): (phi(a) - phi(b)) / (Phi(b) - Phi(a)) = 0.3563.
    assert abs(t.mean().item() - 0.3563) < 0.02
    g = R.gumbel(k, (100000,))
    assert abs(g.mean().item() - 0.5772) < 0.02  # Euler-Mascheroni constant
    assert torch.isfinite(g).all()


# --- statistics (n = 1e6) --------------------------------------------------------------------

# chi-square with 255 degrees of freedom: the 1e-6 upper quantile is about 390.
CHI2_255 = 390.0


def _chi2(counts: torch.Tensor) -> float:
    expected = counts.sum() / counts.numel()
    return float(((counts - expected) ** 2 / expected).sum())


def test_bits_and_uniform_chi_square():
    n = 10**6
    b = R.bits(R.key(0), (n,))
    for shift in (0, 8, 16, 24):  # every byte of the word is uniform
        assert _chi2(torch.bincount((b >> shift) & 255, minlength=256).double()) < CHI2_255
    u = R.uniform(R.key(1), (n,))
    counts = torch.bincount((u * 256).long(), minlength=256).double()
    assert counts.numel() == 256 and _chi2(counts) < CHI2_255


def test_normal_moments():
    x = R.normal(R.key(2), (10**6,)).double()
    m = x.mean()
    c = x - m
    var = (c**2).mean()
    skew = (c**3).mean() / var**1.5
    kurt = (c**4).mean() / var**2
    # Standard errors at n=1e6: mean 1e-3, var 1.4e-3, skew 2.4e-3, kurtosis 4.9e-3; 5 sigma.
    assert abs(m) < 5e-3 and abs(var - 1) < 7e-3
    assert abs(skew) < 1.2e-2 and abs(kurt - 3) < 2.5e-2
    x64 = R.normal(R.key(2), (10**5,), torch.float64)  # torch.erfinv path
    assert abs(x64.mean()) < 1.6e-2 and abs(x64.var() - 1) < 2.2e-2


def _corr(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).mean() / (a.std() * b.std()))


def test_streams_are_independent():
    n = 10**6
    bound = 5 / math.sqrt(n)  # 5 standard errors of a correlation
    k1, k2 = R.split(R.key(0))
    assert abs(_corr(R.uniform(k1, (n,)), R.uniform(k2, (n,)))) < bound
    assert abs(_corr(R.uniform(R.key(0), (n,)), R.uniform(R.key(1), (n,)))) < bound
    # Adjacent counters of one stream are independent too (lag-1 autocorrelation).
    u = R.uniform(R.key(3), (n + 1,))
    assert abs(_corr(u[:-1], u[1:])) < bound


def test_discrete_frequencies():
    n = 200_000
    r = R.randint(R.key(4), (n,), 0, 10)
    counts = torch.bincount(r, minlength=10).double()
    assert ((counts / n - 0.1).abs() < 0.005).all()
    p = torch.tensor([0.1, 0.2, 0.3, 0.4])
    c = R.categorical(R.key(5), p.log(), shape=(n,))
    assert ((torch.bincount(c, minlength=4).double() / n - p).abs() < 0.005).all()
    assert abs(R.bernoulli(R.key(6), 0.3, (n,)).double().mean() - 0.3) < 0.005


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_same_bits_on_cuda_eager_and_compiled():
    k = R.key(12)
    cpu = (R.bits(k, (1000,)), R.uniform(k, (1000,)), R.normal(k, (1000,)))
    kc = k.cuda()
    # The bits and the uniforms are the same numbers on every device; normals go through
    # erfinv, whose CUDA implementation differs from the CPU's in the last bits (seen on an H200).
    assert torch.equal(R.bits(kc, (1000,)).cpu(), cpu[0])
    assert torch.equal(R.uniform(kc, (1000,)).cpu(), cpu[1])
    torch.testing.assert_close(R.normal(kc, (1000,)).cpu(), cpu[2], rtol=1e-6, atol=1e-6)
    compiled = torch.compile(lambda k: (R.split(k), R.uniform(k, (1000,))), fullgraph=True)(kc)
    assert torch.equal(compiled[0].cpu(), R.split(k))
    assert torch.equal(compiled[1].cpu(), cpu[1])


def test_under_grad_and_funcrl_jit():
    k = R.key(13)
    eps = R.normal(k, (300,))
    g = torch.func.grad(lambda x: (x * R.normal(k, (300,))).sum())(torch.ones(300))
    assert torch.equal(g, eps)
    jitted = funcrl.jit.jit(lambda k: R.normal(k, (300,)), backend="eager")
    assert torch.equal(jitted(k), eps)
    assert torch.equal(jitted(R.key(14)), R.normal(R.key(14), (300,)))  # a key is a traced input


def test_split_and_fold_in_optional():
    k = R.key(7)
    parts = R.split_optional(k, 3)
    assert len(parts) == 3
    for got, want in zip(parts, R.split(k, 3)):
        assert torch.equal(got, want)
    assert R.split_optional(None, 2) == [None, None]
    assert torch.equal(R.fold_in_optional(k, 4), R.fold_in(k, 4))
    assert R.fold_in_optional(None, 4) is None


@pytest.mark.parametrize(
    ("dtype", "bits"),
    [(torch.float64, 64), (torch.float32, 32), (torch.float16, 16), (torch.bfloat16, 16)],
)
def test_uniform_floats_equal_jaxs_bit_cast_for_every_mantissa(dtype, bits):
    # _float_flat builds 1 + m * 2**-k arithmetically (vmap on torch 2.11 cannot batch a bit
    # cast); JAX builds (m | exponent of 1).view(dtype). Over 16k draws (every mantissa of the
    # 16-bit types, among them all zeros and all ones) the two must be the same floats.
    from funcrl.random import _block, _float_flat

    n = 4096
    for seed in range(4):
        key = R.key(seed)
        got = _float_flat(key, n, dtype)
        y0, y1 = _block(key, n)
        if dtype == torch.float64:
            ref = (((y0 << 20) | (y1 >> 12)) | 0x3FF0000000000000).view(torch.float64)
        elif dtype == torch.float32:
            ref = (((y0 ^ y1) >> 9) | 0x3F800000).to(torch.int32).view(torch.float32)
        elif dtype == torch.float16:
            ref = ((((y0 ^ y1) & 0xFFFF) >> 6) | 0x3C00).to(torch.int16).view(torch.float16)
        else:
            ref = ((((y0 ^ y1) & 0xFF) >> 1) | 0x3F80).to(torch.int16).view(torch.bfloat16)
        assert got.dtype == dtype
        assert torch.equal(got, ref)
