"""funcrl._small_products: weight-gradient-shaped products with a small N computed as their
transpose give the product's values and gradients, in plain graphs and in a scan's body, and
every other product is left as it is."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from funcrl import _small_products as sp
from funcrl.envs import pure


class _Counting(sp.SMALL_PRODUCTS.__class__):
    """The shipped pass, recording how many products it rewrote in each graph it saw."""

    def __init__(self) -> None:
        self.counts: list[int] = []

    def __call__(self, graph: torch.fx.Graph) -> None:
        self.counts.append(sp.small_products_pass(graph))

    def uuid(self) -> None:
        return None  # no cache: every compile runs the pass


def _compile(fn, counting: _Counting):
    torch._dynamo.reset()
    return torch.compile(
        fn, fullgraph=True, dynamic=False, options={"post_grad_custom_post_pass": counting}
    )


@settings(max_examples=60, deadline=None)
@given(
    batch=st.sampled_from([(), (3,), (2, 2)]),
    m=st.integers(1, 70),
    k=st.integers(1, 9),
    n=st.integers(1, 9),
    transpose_a=st.booleans(),
    dtype=st.sampled_from([torch.float32, torch.float64]),
)
def test_swapped_is_the_product(batch, m, k, n, transpose_a, dtype):
    g = torch.Generator().manual_seed(m * 100 + k * 10 + n)
    a = torch.randn(*batch, m, k, generator=g, dtype=dtype)
    if transpose_a:  # the strides of a gradient's transposed operand
        a = torch.randn(*batch, k, m, generator=g, dtype=dtype).transpose(-1, -2)
    b = torch.randn(*batch, k, n, generator=g, dtype=dtype)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(sp.swapped(a, b), a @ b, atol=tol, rtol=tol)


def _t(*shape, **kw):
    """A transposed view ``[..., M, K]``: the layout of ``grad_out^T``."""
    return torch.empty(*shape[:-2], shape[-1], shape[-2], **kw).transpose(-1, -2)


def test_which_products_are_swapped():
    e = torch.empty
    assert sp.should_swap(_t(64, 128), e(128, 4))  # a 4-input layer's weight gradient
    assert sp.should_swap(_t(16, 64, 128), e(16, 128, 4))  # the same, seeds batched
    assert sp.should_swap(_t(256, 256), e(256, 1))
    assert not sp.should_swap(e(128, 64), e(64, 2))  # row-major: a forward head
    assert not sp.should_swap(_t(4, 64), e(64, 2))  # M = 4: a rollout step
    assert not sp.should_swap(_t(64, 128), e(128, 64))  # N large
    assert not sp.should_swap(_t(64, 128), e(128, 5))
    assert not sp.should_swap(_t(64, 0), e(0, 2))
    half = torch.float16
    assert not sp.should_swap(_t(64, 128, dtype=half), e(128, 2, dtype=half))
    assert not sp.should_swap(_t(64, 128), e(128, 2, dtype=torch.float64))
    assert not sp.should_swap(_t(64, 128, device="meta"), e(128, 2, device="meta"))


def _mlp(x, w1, b1, w2, b2, w3, b3):
    h = torch.tanh(F.linear(x, w1, b1))
    h = torch.tanh(F.linear(h, w2, b2))
    return F.linear(h, w3, b3)


@pytest.mark.parametrize("batched", [False, True])
def test_compiled_mlp_values_and_gradients(batched):
    """CartPole's policy shapes: the first layer's weight gradient (``[64, 128] @ [128, 4]``)
    is rewritten; values and gradients match the eager ones."""
    g = torch.Generator().manual_seed(0)
    shapes = [(128, 4), (64, 4), (64,), (64, 64), (64,), (2, 64), (2,)]
    params = [torch.randn(*s, generator=g) for s in shapes]

    def loss(*args):
        return _mlp(*args).square().mean()

    fn = torch.func.grad(loss, argnums=tuple(range(1, 7)))
    if batched:  # seeds vmapped: every product becomes a bmm
        params = [p.expand(3, *p.shape).clone() for p in params]
        fn = torch.func.vmap(fn)
    counting = _Counting()
    got = _compile(fn, counting)(*params)
    want = fn(*params)
    assert sum(counting.counts) >= 1, counting.counts
    for x, y in zip(got, want):
        torch.testing.assert_close(x, y, atol=2e-5, rtol=1e-4)


def test_other_products_are_left_alone():
    counting = _Counting()
    a, b = torch.randn(64, 64), torch.randn(64, 64)
    torch.testing.assert_close(_compile(torch.mm, counting)(a, b), a @ b)
    assert counting.counts and sum(counting.counts) == 0


def test_addmm_with_scales_is_left_alone():
    counting = _Counting()
    bias, a, b = torch.randn(2), torch.randn(8, 128), torch.randn(8, 2)

    def fn(bias, a, b):
        return torch.addmm(bias, a.t(), b, beta=0.5, alpha=2.0)

    torch.testing.assert_close(_compile(fn, counting)(bias, a, b), fn(bias, a, b))
    assert counting.counts and sum(counting.counts) == 0


def test_a_scan_body_is_rewritten():
    """A weight-gradient-shaped product (``h^T @ w``, N = 2) in every step of a compiled scan."""
    g = torch.Generator().manual_seed(1)
    w = torch.randn(8, 2, generator=g) / 2

    def run(h0, xs):
        def body(h, x):
            y = torch.tanh(h.transpose(0, 1) @ w)
            return (h + y.sum() * 1e-3).clone(), y.clone()

        return pure.scan(body, h0, xs)

    h0, xs = torch.randn(8, 64, generator=g), torch.randn(16, 1, generator=g)
    counting = _Counting()
    got = _compile(run, counting)(h0, xs)
    want = run(h0, xs)
    assert sum(counting.counts) >= 1, counting.counts
    for x, y in zip(got, want):
        torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-5)


def test_the_pass_keys_the_caches():
    """Inductor's caches take the pass's uuid in their key: this file's text, the same each
    time it is asked."""
    key = sp.SMALL_PRODUCTS.uuid()
    assert isinstance(key, str) and len(key) == 64 and key == sp._make_pass().uuid()


def test_addmm_is_bias_plus_the_swapped_product():
    counting = _Counting()
    bias, a, b = torch.randn(2), torch.randn(8, 128), torch.randn(8, 2)

    def fn(bias, a, b):
        return torch.addmm(bias, a.t(), b)

    torch.testing.assert_close(_compile(fn, counting)(bias, a, b), fn(bias, a, b))
    assert sum(counting.counts) == 1, counting.counts
