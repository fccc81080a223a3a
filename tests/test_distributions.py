"""funcrl.distributions: hand-computed log-probs, bounds, samplers, vmap and compile."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from funcrl import distributions as fd
from funcrl.distributions._utils import safe_atanh, safe_tanh, tanh_log_abs_det_jacobian

LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)
DTYPES = (torch.float32, torch.float64)


def normal_lp(x, mu=0.0, s=1.0):
    return -((x - mu) ** 2) / (2 * s**2) - math.log(s) - LOG_SQRT_2PI


# ---------------------------------------------------------------- helpers ---------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_tanh_log_abs_det_jacobian_matches_naive(dtype):
    x = torch.linspace(-5, 5, 101, dtype=dtype)
    # The naive form loses digits in float32 near |x| = 5; compute it in float64.
    naive = torch.log(1 - torch.tanh(x.double()) ** 2).to(dtype)
    torch.testing.assert_close(tanh_log_abs_det_jacobian(x), naive, rtol=1e-5, atol=1e-5)
    # Where the naive form underflows to -inf, the stable one stays finite and ~ 2 log 2 - 2|x|.
    big = torch.tensor([30.0, -30.0, 200.0], dtype=dtype)
    out = tanh_log_abs_det_jacobian(big)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, 2 * math.log(2) - 2 * big.abs())


@pytest.mark.parametrize("dtype", DTYPES)
def test_safe_tanh_atanh_bounds_and_gradients(dtype):
    eps = torch.finfo(dtype).resolution
    x = torch.tensor([-100.0, -3.0, 0.0, 3.0, 100.0], dtype=dtype, requires_grad=True)
    y = safe_tanh(x)
    assert y.abs().max() <= 1 - eps
    (g,) = torch.autograd.grad(y.sum(), x)
    torch.testing.assert_close(g, 1 - torch.tanh(x.detach()) ** 2)
    v = torch.tensor([-1.5, -1.0, 0.5, 1.0, 2.0], dtype=dtype, requires_grad=True)
    u = safe_atanh(v)
    assert torch.isfinite(u).all()
    lim = torch.tensor(1 - eps, dtype=dtype).item()  # 1 - eps rounded to dtype
    assert abs(u[1].item() + math.atanh(lim)) < 1e-5 * math.atanh(lim)
    assert abs(u[3].item() - {torch.float32: 7.2477, torch.float64: 17.6163}[dtype]) < 1e-3
    (g,) = torch.autograd.grad(u.sum(), v)
    # The gradient passes through the clamp: 1 / (1 - clamp(v)^2), finite and > 0.
    assert torch.isfinite(g).all() and (g > 0).all()
    torch.testing.assert_close(g[2], torch.tensor(1 / (1 - 0.25), dtype=dtype))


# ---------------------------------------------------------------- TanhNormal ------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_tanh_normal_hand_computed(dtype):
    # loc=0, scale=1, a=0: u=0, log|dtanh/du|(0)=0, so log p = 2 * N(0;0,1) for 2 dims.
    d = fd.TanhNormal(torch.zeros(2, dtype=dtype), torch.ones(2, dtype=dtype))
    lp = d.log_prob(torch.zeros(2, dtype=dtype))
    assert lp.shape == ()
    torch.testing.assert_close(lp, torch.tensor(2 * normal_lp(0.0), dtype=dtype))
    # a = 0.5 with loc=0.3, scale=0.7: u = atanh(0.5), minus log(1 - 0.25).
    d = fd.TanhNormal(torch.tensor([0.3], dtype=dtype), torch.tensor([0.7], dtype=dtype))
    u = math.atanh(0.5)
    expected = normal_lp(u, 0.3, 0.7) - math.log(1 - 0.25)
    torch.testing.assert_close(
        d.log_prob(torch.tensor([0.5], dtype=dtype)), torch.tensor(expected, dtype=dtype)
    )
    # Bounds [0, 4]: a = 3 -> t = (3 - 2) / 2 = 0.5, extra -log(2) for the affine map.
    d = fd.TanhNormal(
        torch.tensor([0.3], dtype=dtype), torch.tensor([0.7], dtype=dtype), low=0.0, high=4.0
    )
    torch.testing.assert_close(
        d.log_prob(torch.tensor([3.0], dtype=dtype)),
        torch.tensor(expected - math.log(2.0), dtype=dtype),
    )


def test_tanh_normal_at_bound_documented_value():
    d = fd.TanhNormal(torch.zeros(1), torch.ones(1))
    u = math.atanh(torch.tensor(1 - 1e-6).item())  # 7.2477
    expected = normal_lp(u) - 2 * (math.log(2) - u - math.log1p(math.exp(-2 * u)))
    lp = d.log_prob(torch.ones(1))
    assert abs(lp.item() - expected) < 1e-2
    assert abs(lp.item() - (-14.07)) < 0.01


def test_tanh_normal_shapes_and_event_dims():
    loc, scale = torch.zeros(5, 3), torch.ones(5, 3)
    d = fd.TanhNormal(loc, scale)
    assert d.batch_shape == (5,) and d.event_shape == (3,)
    assert d.rsample().shape == (5, 3) and d.sample((7, 2)).shape == (7, 2, 5, 3)
    assert d.log_prob(d.sample((7,))).shape == (7, 5)
    a, lp = d.rsample_and_log_prob((4,))
    assert a.shape == (4, 5, 3) and lp.shape == (4, 5)
    d0 = fd.TanhNormal(loc, scale, event_dims=0)
    assert d0.log_prob(torch.zeros(5, 3)).shape == (5, 3)
    d2 = fd.TanhNormal(loc, scale, event_dims=2)
    assert d2.log_prob(torch.zeros(5, 3)).shape == ()
    # scalar scale and callable scale (TorchRL's torch.ones_like idiom)
    d = fd.TanhNormal(loc, 0.5)
    assert d.scale.shape == (5, 3)
    d = fd.TanhNormal(loc, torch.ones_like)
    assert torch.equal(d.scale, torch.ones(5, 3))
    assert not d.sample().requires_grad


def test_tanh_normal_tanh_loc_and_modes():
    loc = torch.tensor([100.0, -100.0, 0.2])
    d = fd.TanhNormal(loc, torch.ones(3), tanh_loc=True, upscale=5.0)
    torch.testing.assert_close(d.loc, 5.0 * torch.tanh(loc / 5.0))
    d = fd.TanhNormal(torch.tensor([0.2, -0.4]), torch.ones(2), low=0.0, high=2.0)
    expected = 1.0 + torch.tanh(torch.tensor([0.2, -0.4]))
    torch.testing.assert_close(d.deterministic_sample, expected)
    torch.testing.assert_close(d.mode, expected)


def test_tanh_normal_mean_quadrature_matches_empirical():
    torch.manual_seed(0)
    loc = torch.tensor([0.0, 0.5, -1.5, 3.0], dtype=torch.float64)
    scale = torch.tensor([1.0, 0.3, 2.0, 0.8], dtype=torch.float64)
    d = fd.TanhNormal(loc, scale, low=-2.0, high=1.0)
    samples = d.sample((1_000_000,))
    emp, std = samples.mean(0), samples.std(0)
    # 5 standard errors of the Monte-Carlo estimate.
    assert ((d.mean - emp).abs() < 5 * std / 1000).all(), (d.mean, emp)
    # At loc=0 on symmetric bounds the mean is exactly the midpoint.
    d0 = fd.TanhNormal(
        torch.zeros(1, dtype=torch.float64), torch.full((1,), 2.0, dtype=torch.float64)
    )
    assert abs(d0.mean.item()) < 1e-12
    assert d.sample_mean(10).shape == (4,)


@pytest.mark.parametrize("dtype", DTYPES)
def test_tanh_normal_million_samples_finite(dtype):
    torch.manual_seed(0)
    loc = torch.tensor([-60.0, -8.0, 0.0, 8.0, 60.0], dtype=dtype).repeat(2)
    scale = torch.tensor([1e-4] * 5 + [20.0] * 5, dtype=dtype)
    d = fd.TanhNormal(loc, scale, low=-1.0, high=1.0, event_dims=0)
    a, lp = d.rsample_and_log_prob((100_000,))  # 1e6 draws in all
    assert a.numel() == 1_000_000
    assert torch.isfinite(a).all() and torch.isfinite(lp).all()
    assert (a >= -1).all() and (a <= 1).all()
    assert (a.abs() < 1).all()  # the safe tanh keeps them strictly inside
    assert torch.isfinite(d.log_prob(a)).all()


def _next_to(x: float, dtype, towards: float) -> float:
    return torch.nextafter(torch.tensor(x, dtype=dtype), torch.tensor(towards, dtype=dtype)).item()


@settings(max_examples=60, deadline=None)
@given(
    loc=st.floats(-30, 30),
    log_scale=st.floats(-6, 3),
    low=st.floats(-5, 4),
    width=st.floats(1e-2, 10),
    where=st.sampled_from(["low", "high", "next_low", "next_high", "mid", "outside"]),
    dtype=st.sampled_from(DTYPES),
    tanh_loc=st.booleans(),
)
def test_tanh_normal_bounds_property(loc, log_scale, low, width, where, dtype, tanh_loc):
    high = low + width
    loc_t = torch.tensor([loc, -loc], dtype=dtype, requires_grad=True)
    scale_t = torch.full((2,), math.exp(log_scale), dtype=dtype, requires_grad=True)
    d = fd.TanhNormal(loc_t, scale_t, low=low, high=high, tanh_loc=tanh_loc)
    value = {
        "low": low,
        "high": high,
        "next_low": _next_to(low, dtype, high),
        "next_high": _next_to(high, dtype, low),
        "mid": (low + high) / 2,
        "outside": high + 1.0,
    }[where]
    v = torch.full((2,), value, dtype=dtype, requires_grad=True)
    lp = d.log_prob(v)
    assert torch.isfinite(lp)
    gl, gs, gv = torch.autograd.grad(lp, (loc_t, scale_t, v), retain_graph=True)
    assert torch.isfinite(gl).all() and torch.isfinite(gs).all() and torch.isfinite(gv).all()
    a, lp2 = d.rsample_and_log_prob((64,))
    assert (a >= d.low).all() and (a <= d.high).all()
    assert torch.isfinite(lp2).all()
    gl, gs = torch.autograd.grad(lp2.sum() + a.sum(), (loc_t, scale_t))
    assert torch.isfinite(gl).all() and torch.isfinite(gs).all()
    assert torch.isfinite(d.log_prob(a.detach())).all()


def test_tanh_normal_unsafe_matches_plain_tanh():
    d = fd.TanhNormal(torch.zeros(1), torch.ones(1), safe_tanh=False)
    assert d.log_prob(torch.ones(1)).item() == math.inf or math.isnan(
        d.log_prob(torch.ones(1)).item()
    )
    torch.testing.assert_close(
        d.log_prob(torch.tensor([0.5])),
        fd.TanhNormal(torch.zeros(1), torch.ones(1)).log_prob(torch.tensor([0.5])),
    )


def test_tanh_normal_validate_args():
    with pytest.raises(ValueError, match="high must be strictly greater than low"):
        fd.TanhNormal(torch.zeros(2), torch.ones(2), low=1.0, high=1.0)
    with pytest.raises(ValueError, match="high must be strictly greater"):
        fd.TanhNormal(
            torch.zeros(2),
            torch.ones(2),
            low=torch.ones(2),
            high=torch.zeros(2),
            validate_args=True,
        )
    with pytest.raises(ValueError, match="scale must be finite and > 0"):
        fd.TanhNormal(torch.zeros(2), torch.tensor([1.0, 0.0]), validate_args=True)
    with pytest.raises(TypeError, match="loc must be a floating tensor"):
        fd.TanhNormal(torch.zeros(2, dtype=torch.long), torch.ones(2), validate_args=True)
    d = fd.TanhNormal(torch.zeros(4, 2), torch.ones(4, 2), validate_args=True)
    with pytest.raises(ValueError, match=r"value has shape \(4, 3\)"):
        d.log_prob(torch.zeros(4, 3))
    with pytest.raises(ValueError, match="outside"):
        d.log_prob(torch.full((4, 2), 1.5))
    # Without validation nothing is checked and out-of-support values are clamped (finite).
    assert torch.isfinite(
        fd.TanhNormal(torch.zeros(2), torch.ones(2)).log_prob(torch.full((2,), 1.5))
    )


def test_tanh_normal_vmap_randomness_different():
    loc, scale = torch.zeros(8, 3), torch.ones(8, 3)

    def f(loc, scale):
        d = fd.TanhNormal(loc, scale, low=-2.0, high=2.0)
        a, lp = d.rsample_and_log_prob()
        return a, lp, d.log_prob(a)

    a, lp, lp2 = torch.func.vmap(f, randomness="different")(loc, scale)
    assert a.shape == (8, 3) and lp.shape == (8,)
    assert not torch.allclose(a[0], a[1])  # different draws per member
    torch.testing.assert_close(lp, lp2, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(lp, fd.TanhNormal(loc, scale, low=-2.0, high=2.0).log_prob(a))
    g = torch.func.vmap(torch.func.grad(lambda mu, s: f(mu, s)[1]), randomness="different")(
        loc, scale
    )
    assert torch.isfinite(g).all()


def test_tanh_normal_compile_fullgraph():
    torch._dynamo.reset()

    def f(loc, scale, a):
        d = fd.TanhNormal(loc, scale, low=-2.0, high=2.0)
        s, lp = d.rsample_and_log_prob()
        return s, lp, d.log_prob(a), d.deterministic_sample

    loc, scale, a = torch.randn(4, 3), torch.rand(4, 3) + 0.1, torch.rand(4, 3)
    explain = torch._dynamo.explain(f)(loc, scale, a)
    assert explain.graph_break_count == 0
    out = torch.compile(f, fullgraph=True)(loc, scale, a)
    ref = f(loc, scale, a)
    torch.testing.assert_close(out[2], ref[2])
    torch.testing.assert_close(out[3], ref[3])
    assert out[0].shape == (4, 3) and out[1].shape == (4,)


# ---------------------------------------------------------------- IndependentNormal / Delta ----


def test_independent_normal_hand_computed():
    d = fd.IndependentNormal(torch.tensor([0.0, 1.0]), torch.tensor([1.0, 2.0]))
    lp = d.log_prob(torch.tensor([0.5, -1.0]))
    torch.testing.assert_close(lp, torch.tensor(normal_lp(0.5) + normal_lp(-1.0, 1.0, 2.0)))
    h = 2 * (0.5 + LOG_SQRT_2PI) + math.log(2.0)
    torch.testing.assert_close(d.entropy(), torch.tensor(h))
    assert d.rsample((3,)).shape == (3, 2) and d.log_prob(d.sample((3,))).shape == (3,)
    torch.testing.assert_close(d.mode, torch.tensor([0.0, 1.0]))
    d = fd.IndependentNormal(torch.tensor([100.0]), 1.0, tanh_loc=True, upscale=5.0)
    torch.testing.assert_close(d.loc, torch.tensor([5.0 * math.tanh(20.0)]))


def test_delta_and_tanh_delta():
    p = torch.tensor([[0.2, -0.3], [1.0, 2.0]], requires_grad=True)
    d = fd.Delta(p)
    assert d.batch_shape == (2,) and d.event_shape == (2,)
    lp = d.log_prob(torch.tensor([[0.2, -0.3], [1.0, 2.5]]))
    assert lp.tolist() == [math.inf, -math.inf]
    assert d.rsample((3,)).shape == (3, 2, 2) and d.rsample().requires_grad
    assert not d.sample().requires_grad
    t = fd.TanhDelta(p.detach(), low=0.0, high=2.0)
    # TorchRL's shift: pre-tanh location is param + (high + low) / 2 = param + 1.
    torch.testing.assert_close(t.mode, 1.0 + torch.tanh(p.detach() + 1.0))
    assert t.log_prob(t.mode).tolist() == [math.inf, math.inf]
    assert t.log_prob(t.mode + 0.01).tolist() == [-math.inf, -math.inf]
    torch.testing.assert_close(t.mean, t.mode)


# ---------------------------------------------------------------- TruncatedNormal --------------


def test_truncated_normal_hand_computed():
    # Standard normal on [-1, 1]: Z = erf(1/sqrt2) = 0.682689...; log p(0) = -log sqrt(2 pi) - log Z.
    d = fd.TruncatedNormal(torch.zeros(1), torch.ones(1))
    Z = math.erf(1 / math.sqrt(2))
    torch.testing.assert_close(
        d.log_prob(torch.zeros(1)), torch.tensor(-LOG_SQRT_2PI - math.log(Z))
    )
    torch.testing.assert_close(
        d.log_prob(torch.tensor([0.5])), torch.tensor(-LOG_SQRT_2PI - math.log(Z) - 0.125)
    )
    torch.testing.assert_close(d.mean, torch.zeros(1))  # symmetric
    # Var = 1 - 2 phi(1) / Z for the symmetric [-1, 1] truncation.
    phi1 = math.exp(-0.5) / math.sqrt(2 * math.pi)
    torch.testing.assert_close(d.variance, torch.tensor([1 - 2 * phi1 / Z]))
    assert d.log_prob(torch.tensor([1.5])).item() == -math.inf
    # Event of 2: any entry outside makes the whole event -inf.
    d2 = fd.TruncatedNormal(torch.zeros(2), torch.ones(2))
    assert d2.log_prob(torch.tensor([0.0, 1.01])).item() == -math.inf
    torch.testing.assert_close(d2.mode, torch.zeros(2))


@settings(max_examples=40, deadline=None)
@given(
    loc=st.floats(-30, 30),
    log_scale=st.floats(-8, 3),
    where=st.sampled_from(["low", "high", "next_low", "next_high", "mid"]),
    dtype=st.sampled_from(DTYPES),
)
def test_truncated_normal_bounds_property(loc, log_scale, where, dtype):
    low, high = -1.0, 2.0
    loc_t = torch.tensor([loc, -loc], dtype=dtype, requires_grad=True)
    scale_t = torch.full((2,), math.exp(log_scale), dtype=dtype, requires_grad=True)
    d = fd.TruncatedNormal(loc_t, scale_t, low=low, high=high)
    value = {
        "low": low,
        "high": high,
        "next_low": _next_to(low, dtype, high),
        "next_high": _next_to(high, dtype, low),
        "mid": 0.5,
    }[where]
    lp = d.log_prob(torch.full((2,), value, dtype=dtype))
    assert torch.isfinite(lp)
    gl, gs = torch.autograd.grad(lp, (loc_t, scale_t), retain_graph=True)
    assert torch.isfinite(gl).all() and torch.isfinite(gs).all()
    a = d.rsample((64,))
    assert (a >= low).all() and (a <= high).all()
    assert torch.isfinite(d.log_prob(a)).all()
    gl, gs = torch.autograd.grad(a.sum(), (loc_t, scale_t))
    assert torch.isfinite(gl).all() and torch.isfinite(gs).all()


def test_truncated_normal_empirical_mean():
    torch.manual_seed(0)
    d = fd.TruncatedNormal(
        torch.tensor([0.3, -2.0], dtype=torch.float64),
        torch.tensor([0.5, 1.0], dtype=torch.float64),
        low=-1.0,
        high=1.0,
    )
    s = d.sample((1_000_000,))
    assert torch.isfinite(s).all()
    assert ((s.mean(0) - d.mean).abs() < 5 * s.std(0) / 1000).all()
    assert ((s.var(0) - d.variance).abs() < 0.01 * d.variance).all()


# ---------------------------------------------------------------- categorical family -----------


def test_categorical_hand_computed():
    logits = torch.log(torch.tensor([0.5, 0.25, 0.25]))
    d = fd.OneHotCategorical(logits=logits)
    torch.testing.assert_close(d.log_prob(torch.tensor([0, 1, 0])), torch.tensor(math.log(0.25)))
    torch.testing.assert_close(
        d.entropy(), torch.tensor(-(0.5 * math.log(0.5) + 0.5 * math.log(0.25)))
    )
    assert d.mode.tolist() == [1, 0, 0] and d.mode.dtype == torch.long
    assert d.sample((5,)).shape == (5, 3) and d.sample().dtype == torch.long
    c = fd.Categorical(probs=torch.tensor([2.0, 1.0, 1.0]))
    torch.testing.assert_close(
        c.log_prob(torch.tensor([0, 2])), torch.log(torch.tensor([0.5, 0.25]))
    )


def test_categorical_sampling_frequencies():
    torch.manual_seed(0)
    probs = torch.tensor([0.1, 0.6, 0.3])
    s = fd.Categorical(probs=probs).sample((200_000,))
    freq = torch.bincount(s, minlength=3).float() / s.numel()
    torch.testing.assert_close(freq, probs, atol=5e-3, rtol=0)
    m = fd.MaskedCategorical(probs=probs, mask=torch.tensor([True, False, True]))
    s = m.sample((200_000,))
    freq = torch.bincount(s, minlength=3).float() / s.numel()
    torch.testing.assert_close(freq, torch.tensor([0.25, 0.0, 0.75]), atol=5e-3, rtol=0)


def test_masked_categorical_hand_computed():
    logits = torch.zeros(4)
    mask = torch.tensor([True, False, True, True])
    d = fd.MaskedCategorical(logits, mask=mask)
    lp = d.log_prob(torch.arange(4))
    torch.testing.assert_close(lp[[0, 2, 3]], torch.full((3,), -math.log(3)))
    assert lp[1].item() == -math.inf
    torch.testing.assert_close(d.entropy(), torch.tensor(math.log(3)))
    d = fd.MaskedCategorical(logits, mask=mask, neg_inf=-1e9)
    assert d.log_prob(torch.tensor(1)).item() < -1e8
    # Sparse: valid ids [3, 0] padded with -1.
    d = fd.MaskedCategorical(logits, indices=torch.tensor([3, 0, -1]), padding_value=-1)
    torch.testing.assert_close(d.log_prob(torch.tensor([3, 0])), torch.full((2,), -math.log(2)))
    assert d.log_prob(torch.tensor(2)).item() == -math.inf
    assert set(d.sample((200,)).unique().tolist()) <= {0, 3}
    assert d.mode.item() in (0, 3)
    with pytest.raises(ValueError, match="sparse"):
        d.mask
    oh = fd.MaskedOneHotCategorical(logits, indices=torch.tensor([3, 0, -1]), padding_value=-1)
    assert oh.sample().shape == (4,) and oh.sample()[[1, 2]].sum() == 0
    torch.testing.assert_close(oh.mean, torch.tensor([0.5, 0.0, 0.0, 0.5]))


def test_ordinal_hand_computed():
    s = torch.tensor([0.3, -1.2, 2.0])
    lp_, lq = torch.nn.functional.logsigmoid(s), torch.nn.functional.logsigmoid(-s)
    expected = torch.stack([lp_[0] + lq[1] + lq[2], lp_[0] + lp_[1] + lq[2], lp_[:3].sum()])
    torch.testing.assert_close(fd.ordinal_logits(s), expected)
    d = fd.Ordinal(s)
    torch.testing.assert_close(d.probs.sum(), torch.tensor(1.0))
    torch.testing.assert_close(d.logits, expected - expected.logsumexp(-1))
    assert fd.OneHotOrdinal(s).rsample().shape == (3,)


@pytest.mark.parametrize("grad_method", list(fd.ReparamGradientStrategy))
@pytest.mark.parametrize("masked", [False, True])
def test_straight_through_rsample(grad_method, masked):
    torch.manual_seed(0)
    logits = torch.randn(5, 4, requires_grad=True)
    if masked:
        mask = torch.tensor([True, True, False, True]).expand(5, 4)
        d = fd.MaskedOneHotCategorical(logits, mask=mask, grad_method=grad_method)
    else:
        d = fd.OneHotCategorical(logits=logits, grad_method=grad_method)
    out = d.rsample((7,))
    assert out.shape == (7, 5, 4) and out.dtype == logits.dtype
    # The value is an exact one-hot, never an invalid action...
    assert torch.equal(out.detach().sum(-1), torch.ones(7, 5))
    assert set(out.detach().unique().tolist()) <= {0.0, 1.0}
    if masked:
        assert out.detach()[..., 2].sum() == 0
    # ...and gradients reach the logits.
    (g,) = torch.autograd.grad((out * torch.arange(4.0)).sum(), logits)
    assert torch.isfinite(g).all() and g.abs().sum() > 0
    if grad_method is fd.ReparamGradientStrategy.PassThrough:
        # Exactly the softmax Jacobian-vector product, independent of the draw.
        p = d.probs.detach()
        w = torch.arange(4.0)
        expected = 7 * p * (w - (p * w).sum(-1, keepdim=True))
        torch.testing.assert_close(g, expected)


def test_discrete_validate_args():
    with pytest.raises(ValueError, match="exactly one of logits or probs"):
        fd.Categorical()
    with pytest.raises(ValueError, match="exactly one of mask or indices"):
        fd.MaskedCategorical(torch.zeros(3))
    with pytest.raises(TypeError, match="mask must be a bool tensor"):
        fd.MaskedCategorical(torch.zeros(3), mask=torch.ones(3))
    with pytest.raises(ValueError, match="at least one valid action"):
        fd.MaskedCategorical(
            torch.zeros(3), mask=torch.zeros(3, dtype=torch.bool), validate_args=True
        )
    with pytest.raises(ValueError, match=r"in \[0, 3\)"):
        fd.MaskedCategorical(torch.zeros(3), indices=torch.tensor([0, 4]), validate_args=True)
    d = fd.Categorical(logits=torch.zeros(2, 3), validate_args=True)
    with pytest.raises(ValueError, match=r"in \[0, 3\)"):
        d.log_prob(torch.tensor([0, 3]))
    with pytest.raises(TypeError, match="integer tensor"):
        d.log_prob(torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="one-hot"):
        fd.OneHotCategorical(logits=torch.zeros(2, 3), validate_args=True).log_prob(
            torch.zeros(2, 4)
        )
    with pytest.raises(ValueError, match="grad_method"):
        fd.OneHotCategorical(logits=torch.zeros(3), grad_method="pass_through")


# ---------------------------------------------------------------- mappings ---------------------


def test_mappings_hand_computed():
    x = torch.tensor([0.0, -3.0, 2.0])
    bs = fd.mappings("biased_softplus_1.0")
    torch.testing.assert_close(bs(torch.zeros(1)), torch.ones(1))  # f(0) = bias
    assert bs == fd.biased_softplus(1.0) and bs.min_val == 0.01
    bs2 = fd.mappings("biased_softplus_2.0_0.1")
    torch.testing.assert_close(bs2(torch.zeros(1)), torch.tensor([2.0]))
    assert bs2(torch.tensor([-100.0])).item() == pytest.approx(0.1)
    torch.testing.assert_close(fd.mappings("exp")(x), x.exp())
    torch.testing.assert_close(fd.mappings("relu")(x), x.relu())
    torch.testing.assert_close(fd.mappings("none")(x), x)
    torch.testing.assert_close(
        fd.mappings("expln")(x), torch.tensor([1.0, math.exp(-3), math.log(3) + 1])
    )
    assert fd.inv_softplus(math.log(1 + math.e)) == pytest.approx(1.0)
    torch.testing.assert_close(
        torch.nn.functional.softplus(fd.inv_softplus(torch.tensor([0.3, 4.0]))),
        torch.tensor([0.3, 4.0]),
    )
    with pytest.raises(ValueError, match="unknown mapping"):
        fd.mappings("cube")
    with pytest.raises(ValueError, match="malformed"):
        fd.mappings("biased_softplus_a_b_c")


def test_normal_param_extractor():
    ext = fd.NormalParamExtractor()
    x = torch.cat([torch.arange(3.0).expand(4, 3), torch.full((4, 3), -50.0)], -1)
    loc, scale = ext(x)
    assert loc.shape == scale.shape == (4, 3)
    torch.testing.assert_close(loc, torch.arange(3.0).expand(4, 3))
    torch.testing.assert_close(scale, torch.full((4, 3), 0.01))  # biased softplus floor 0.01
    loc, scale = fd.NormalParamExtractor("exp", scale_lb=1e-4)(x)
    assert (scale == 1e-4).all()  # exp(-50) clamped at scale_lb
    loc, scale = fd.NormalParamExtractor()(torch.zeros(2, 4))
    torch.testing.assert_close(scale, torch.ones(2, 2))
    with pytest.raises(ValueError, match="even last dim"):
        ext(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="unknown mapping"):
        fd.NormalParamExtractor("cube")
    hash(ext)  # static config: a constant to torch.compile


# ---------------------------------------------------------------- vmap / compile, the rest ----


def test_discrete_and_truncated_vmap():
    logits = torch.randn(6, 4)
    mask = torch.rand(6, 4) > 0.3
    mask[:, 0] = True

    def f(logits, mask, loc):
        m = fd.MaskedOneHotCategorical(logits, mask=mask)
        a = m.rsample()
        o = fd.OneHotOrdinal(logits)
        t = fd.TruncatedNormal(loc, torch.ones_like(loc))
        x = t.rsample()
        return a, m.log_prob(a), o.log_prob(o.sample()), x, t.log_prob(x)

    a, lp, lo, x, lt = torch.func.vmap(f, randomness="different")(logits, mask, torch.zeros(6, 2))
    assert a.shape == (6, 4) and lp.shape == (6,) and lo.shape == (6,) and x.shape == (6, 2)
    assert torch.isfinite(lp).all() and torch.isfinite(lt).all()
    assert (a[~mask] == 0).all()
    ref = fd.MaskedOneHotCategorical(logits, mask=mask).log_prob(a)
    torch.testing.assert_close(lp, ref)


def test_discrete_and_truncated_compile_fullgraph():
    torch._dynamo.reset()

    def f(logits, mask, loc, scale):
        m = fd.MaskedCategorical(logits, mask=mask)
        i = m.sample()
        oh = fd.OneHotCategorical(logits=logits).rsample()
        t = fd.TruncatedNormal(loc, scale, low=-1.0, high=2.0)
        x = t.rsample()
        return i, m.log_prob(i), oh, x, t.log_prob(x), m.entropy()

    logits, loc, scale = torch.randn(3, 5), torch.zeros(3, 2), torch.ones(3, 2)
    mask = torch.ones(3, 5, dtype=torch.bool)
    assert torch._dynamo.explain(f)(logits, mask, loc, scale).graph_break_count == 0
    out = torch.compile(f, fullgraph=True)(logits, mask, loc, scale)
    assert out[0].shape == (3,) and torch.isfinite(out[1]).all() and out[2].shape == (3, 5)
    torch.testing.assert_close(out[1], fd.MaskedCategorical(logits, mask=mask).log_prob(out[0]))
    torch.testing.assert_close(
        out[4], fd.TruncatedNormal(loc, scale, low=-1.0, high=2.0).log_prob(out[3])
    )
