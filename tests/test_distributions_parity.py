"""Parity of funcrl.distributions with TorchRL 0.14 on identical parameters and values."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from funcrl import distributions as fd

torchrl = pytest.importorskip("torchrl", reason="parity tests need torchrl")
T = pytest.importorskip("torchrl.modules.distributions")
tensordict_nn = pytest.importorskip("tensordict.nn")

pytestmark = pytest.mark.torchrl

DTYPES = (torch.float32, torch.float64)
BOUNDS = [
    (-1.0, 1.0),
    (0.0, 4.0),
    ("tensor", "tensor"),
]


def _bounds(kind, dtype):
    low, high = kind
    if low == "tensor":
        return (
            torch.tensor([-2.0, 0.0, -1.0], dtype=dtype),
            torch.tensor([3.0, 0.5, 1.0], dtype=dtype),
        )
    return low, high


def _close(a, b, tol=1e-5):
    # Same infinities in the same places, finite parts within tol (relative for large values).
    a, b = torch.as_tensor(a), torch.as_tensor(b)
    assert a.shape == b.shape, (a.shape, b.shape)
    assert torch.equal(torch.isposinf(a), torch.isposinf(b))
    assert torch.equal(torch.isneginf(a), torch.isneginf(b))
    fin = torch.isfinite(a)
    torch.testing.assert_close(a[fin], b[fin].to(a.dtype), rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bounds", BOUNDS)
@pytest.mark.parametrize("tanh_loc", [False, True])
def test_tanh_normal_parity(dtype, bounds, tanh_loc):
    torch.manual_seed(0)
    low, high = _bounds(bounds, dtype)
    loc = torch.randn(4, 3, dtype=dtype) * 3
    scale = torch.rand(4, 3, dtype=dtype) + 0.05
    ours = fd.TanhNormal(loc, scale, low=low, high=high, tanh_loc=tanh_loc)
    ref = T.TanhNormal(loc, scale, low=low, high=high, tanh_loc=tanh_loc)
    torch.manual_seed(1)
    a = ours.rsample((5,))
    torch.manual_seed(1)
    b = ref.rsample((5,))
    _close(a, b)  # same RNG stream, same transform
    lo = torch.as_tensor(low, dtype=dtype).expand(4, 3)
    hi = torch.as_tensor(high, dtype=dtype).expand(4, 3)
    eps = torch.finfo(dtype).eps
    values = torch.cat(
        [b, lo[None], hi[None], (lo + 4 * eps * (hi - lo))[None], (hi - 4 * eps * (hi - lo))[None]]
    )
    _close(ours.log_prob(values), ref.log_prob(values))
    _close(ours.deterministic_sample, ref.deterministic_sample)
    # rsample_and_log_prob: same pre-image, same score.
    torch.manual_seed(2)
    a, la = ours.rsample_and_log_prob((3,))
    torch.manual_seed(2)
    b, lb = ref.rsample_and_log_prob((3,))
    _close(a, b)
    _close(la, lb)


def test_tanh_normal_gradient_parity():
    torch.manual_seed(0)
    loc = (torch.randn(5, 2) * 4).requires_grad_()
    scale = (torch.rand(5, 2) + 0.1).requires_grad_()
    v = torch.tensor([-1.0, -0.999999, 0.0, 0.5, 1.0]).unsqueeze(-1).expand(5, 2).contiguous()
    g_ours = torch.autograd.grad(fd.TanhNormal(loc, scale).log_prob(v).sum(), (loc, scale))
    g_ref = torch.autograd.grad(T.TanhNormal(loc, scale).log_prob(v).sum(), (loc, scale))
    for x, y in zip(g_ours, g_ref):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bounds", BOUNDS)
@pytest.mark.parametrize("tanh_loc", [False, True])
def test_truncated_normal_parity(dtype, bounds, tanh_loc):
    torch.manual_seed(0)
    low, high = _bounds(bounds, dtype)
    loc = torch.randn(4, 3, dtype=dtype) * 2
    scale = torch.rand(4, 3, dtype=dtype) + 0.05
    ours = fd.TruncatedNormal(loc, scale, low=low, high=high, tanh_loc=tanh_loc)
    ref = T.TruncatedNormal(loc, scale, low=low, high=high, tanh_loc=tanh_loc)
    torch.manual_seed(3)
    a = ours.rsample((6,))
    torch.manual_seed(3)
    b = ref.rsample((6,))
    _close(a, b, tol=1e-4)
    lo = torch.as_tensor(low, dtype=dtype).expand(1, 4, 3)
    hi = torch.as_tensor(high, dtype=dtype).expand(1, 4, 3)
    values = torch.cat([b, lo, hi, hi + 1.0, lo - 1e-3])
    _close(ours.log_prob(values), ref.log_prob(values))
    _close(ours.mean, ref.mean)
    _close(ours.variance, ref.variance)
    _close(ours.entropy(), ref.entropy())
    _close(ours.mode, ref.mode)
    _close(ours.deterministic_sample, ref.deterministic_sample)


@pytest.mark.parametrize("bounds", BOUNDS)
def test_tanh_delta_and_delta_parity(bounds):
    torch.manual_seed(0)
    low, high = _bounds(bounds, torch.float32)
    p = torch.randn(4, 3)
    ours, ref = fd.TanhDelta(p, low=low, high=high), T.TanhDelta(p, low=low, high=high)
    _close(ours.mode, ref.mode)
    _close(ours.deterministic_sample, ref.deterministic_sample)
    _close(ours.rsample((2,)), ref.rsample((2,)))
    for v in (ref.mode, ref.mode + 0.1):
        _close(ours.log_prob(v), ref.log_prob(v))
    d, r = fd.Delta(p), T.Delta(p)
    for v in (p, p + 1e-7, p + 1e-3):
        _close(d.log_prob(v), r.log_prob(v))
    _close(d.sample((3,)), r.sample((3,)))


def test_independent_normal_parity():
    torch.manual_seed(0)
    loc, scale = torch.randn(4, 3) * 10, torch.rand(4, 3) + 0.1
    for tanh_loc in (False, True):
        ours = fd.IndependentNormal(loc, scale, tanh_loc=tanh_loc)
        ref = T.IndependentNormal(loc, scale, tanh_loc=tanh_loc)
        v = torch.randn(2, 4, 3)
        ref_lp = ref.log_prob(v)
        if tanh_loc:  # TorchRL applies tanh_loc only in update(); its __init__ keeps loc raw.
            ref.update(loc, scale)
            ref_lp = ref.log_prob(v)
        _close(ours.log_prob(v), ref_lp)
        _close(ours.entropy(), ref.entropy())
        _close(ours.mode, ref.mode)
        torch.manual_seed(4)
        a = ours.rsample()
        torch.manual_seed(4)
        _close(a, ref.rsample())


def _logits_mask():
    torch.manual_seed(0)
    logits = torch.randn(4, 6)
    mask = torch.rand(4, 6) > 0.4
    mask[:, 0] = True
    return logits, mask


ACTIONS = torch.arange(6).view(6, 1).expand(6, 4)  # every action for every batch row


def _per_action(dist, values):
    # TorchRL's cross-entropy path does not broadcast sample dims: score one row of values at a time.
    return torch.stack([dist.log_prob(v) for v in values])


@pytest.mark.parametrize("neg_inf", [float("-inf"), -1e10])
@pytest.mark.parametrize("use_probs", [False, True])
def test_masked_categorical_dense_parity(neg_inf, use_probs):
    logits, mask = _logits_mask()
    kw = {"probs": logits.softmax(-1)} if use_probs else {"logits": logits}
    ours = fd.MaskedCategorical(**kw, mask=mask, neg_inf=neg_inf)
    ref = T.MaskedCategorical(**kw, mask=mask, neg_inf=neg_inf)
    _close(ours.log_prob(ACTIONS), _per_action(ref, ACTIONS))
    _close(ours.entropy(), ref.entropy())
    assert torch.equal(ours.mode, ref.mode)
    _close(ours.probs, ref.probs)
    o1, r1 = (
        fd.MaskedOneHotCategorical(**kw, mask=mask, neg_inf=neg_inf),
        T.MaskedOneHotCategorical(**kw, mask=mask, neg_inf=neg_inf),
    )
    oh = F.one_hot(ACTIONS, 6)
    _close(o1.log_prob(oh), _per_action(r1, oh))
    assert torch.equal(o1.mode, r1.mode)


@pytest.mark.parametrize("padding_value", [None, -1, 5])
def test_masked_categorical_sparse_parity(padding_value):
    logits, _ = _logits_mask()
    idx = torch.tensor([[0, 2, 5, -1], [1, 3, -1, -1], [0, 1, 2, 3], [4, 5, 0, -1]])
    if padding_value is None:
        idx = torch.tensor([[0, 2, 5, 1], [1, 3, 4, 0], [0, 1, 2, 3], [4, 5, 0, 2]])
    else:
        idx = idx.masked_fill(idx == -1, padding_value)
    ours = fd.MaskedCategorical(logits, indices=idx, padding_value=padding_value)
    ref = T.MaskedCategorical(logits, indices=idx, padding_value=padding_value)
    _close(ours.log_prob(ACTIONS), _per_action(ref, ACTIONS))
    assert torch.equal(ours.mode, ref.mode)
    o1 = fd.MaskedOneHotCategorical(logits, indices=idx, padding_value=padding_value)
    r1 = T.MaskedOneHotCategorical(logits, indices=idx, padding_value=padding_value)
    oh = F.one_hot(ACTIONS, 6)
    _close(o1.log_prob(oh), _per_action(r1, oh))
    assert torch.equal(o1.mode, r1.mode)
    s = ours.sample((500,))
    valid = (s.unsqueeze(-1) == idx).any(-1)
    if padding_value is not None:
        valid &= s != padding_value
    assert valid.all()


def test_one_hot_and_ordinal_parity():
    logits, _ = _logits_mask()
    oh = F.one_hot(ACTIONS, 6)
    for kw in ({"logits": logits}, {"probs": logits.softmax(-1)}):
        ours, ref = fd.OneHotCategorical(**kw), T.OneHotCategorical(**kw)
        _close(ours.log_prob(oh), ref.log_prob(oh))
        _close(ours.entropy(), ref.entropy())
        assert torch.equal(ours.mode, ref.mode)
    scores = torch.randn(4, 6)
    ours, ref = fd.Ordinal(scores), T.Ordinal(scores)
    _close(ours.logits, ref.logits)
    _close(ours.log_prob(ACTIONS), ref.log_prob(ACTIONS))
    _close(ours.entropy(), ref.entropy())
    ours, ref = fd.OneHotOrdinal(scores), T.OneHotOrdinal(scores)
    _close(ours.log_prob(oh), ref.log_prob(oh))
    assert torch.equal(ours.mode, ref.mode)


def test_straight_through_gradient_parity():
    # PassThrough: d/dlogits of sum(w * rsample) is the softmax Jacobian times w, whatever the draw.
    logits, mask = _logits_mask()
    w = torch.randn(4, 6)

    def grad_of(dist_cls, **kw):
        lg = logits.clone().requires_grad_()
        out = dist_cls(logits=lg, **kw).rsample((3,))
        return torch.autograd.grad((out * w).sum(), lg)[0]

    torch.testing.assert_close(grad_of(fd.OneHotCategorical), grad_of(T.OneHotCategorical))
    torch.testing.assert_close(
        grad_of(fd.MaskedOneHotCategorical, mask=mask),
        grad_of(T.MaskedOneHotCategorical, mask=mask),
    )
    idx = torch.tensor([[0, 2, 5], [1, 3, 4], [0, 1, 2], [4, 5, 0]])
    torch.testing.assert_close(
        grad_of(fd.MaskedOneHotCategorical, indices=idx),
        grad_of(T.MaskedOneHotCategorical, indices=idx),
    )


@pytest.mark.parametrize(
    "name",
    [
        "biased_softplus_1.0",
        "biased_softplus_0.5_0.001",
        "softplus",
        "exp",
        "relu",
        "none",
        "expln",
    ],
)
def test_mappings_and_param_extractor_parity(name):
    x = torch.linspace(-6, 6, 25).reshape(5, 5).repeat(1, 2)
    torch.testing.assert_close(fd.mappings(name)(x), tensordict_nn.mappings(name)(x))
    ours = fd.NormalParamExtractor(scale_mapping=name)(x)
    ref = tensordict_nn.NormalParamExtractor(scale_mapping=name)(x)
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b)
    from tensordict.nn.utils import inv_softplus as ref_inv

    for y in (0.5, 1.0, 3.0, 1e-8):
        assert abs(fd.inv_softplus(y) - ref_inv(y)) < 1e-5
