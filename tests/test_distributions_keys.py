"""Distributions with explicit keys: reproducible, key-dependent, vmappable, compilable."""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.testing import CompileCounter

from funcrl import distributions as D
from funcrl import random as R

RG = D.ReparamGradientStrategy


@pytest.fixture(autouse=True)
def _plain_ops(monkeypatch):
    # The draws here are small; the plain-op path avoids paying the generator kernel's one-time
    # compile in this test process (test_random.py checks both paths give the same bits).
    monkeypatch.setattr(R, "FUSED_MIN_NUMEL", 2**62)


def _make(name: str, p: dict[str, torch.Tensor]):
    mask = torch.tensor([[True, False, True, True], [False, True, True, False], [True] * 4])
    return {
        "TanhNormal": lambda: D.TanhNormal(p["loc"], p["scale"]),
        "IndependentNormal": lambda: D.IndependentNormal(p["loc"], p["scale"]),
        "TruncatedNormal": lambda: D.TruncatedNormal(p["loc"], p["scale"]),
        "Categorical": lambda: D.Categorical(logits=p["logits"]),
        "OneHotCategorical": lambda: D.OneHotCategorical(logits=p["logits"]),
        "OneHotRelaxed": lambda: D.OneHotCategorical(
            logits=p["logits"], grad_method=RG.RelaxedOneHot
        ),
        "MaskedCategorical": lambda: D.MaskedCategorical(logits=p["logits"], mask=mask),
        "MaskedOneHotCategorical": lambda: D.MaskedOneHotCategorical(logits=p["logits"], mask=mask),
        "Ordinal": lambda: D.Ordinal(p["logits"]),
        "OneHotOrdinal": lambda: D.OneHotOrdinal(p["logits"]),
    }[name]()


NAMES = [
    "TanhNormal",
    "IndependentNormal",
    "TruncatedNormal",
    "Categorical",
    "OneHotCategorical",
    "OneHotRelaxed",
    "MaskedCategorical",
    "MaskedOneHotCategorical",
    "Ordinal",
    "OneHotOrdinal",
]
CONTINUOUS = {"TanhNormal", "IndependentNormal", "TruncatedNormal"}


def _params() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "loc": torch.randn(3, 2, generator=g) * 0.5,
        "scale": torch.rand(3, 2, generator=g) + 0.3,
        "logits": torch.randn(3, 4, generator=g),
    }


def _draw(d, key, shape=(5,)):
    return d.rsample(shape, key=key) if d.has_rsample else d.sample(shape, key=key)


@pytest.mark.parametrize("name", NAMES)
def test_same_key_same_sample_different_key_different(name):
    d = _make(name, _params())
    k1, k2 = R.split(R.key(0))
    a, b = _draw(d, k1), _draw(d, k1)
    assert torch.equal(a, b)
    assert torch.equal(d.sample((5,), key=k1), d.sample((5,), key=k1))
    assert not torch.equal(a, _draw(d, k2))
    # A key never touches the global RNG.
    state = torch.random.get_rng_state()
    _draw(d, k1)
    assert torch.equal(state, torch.random.get_rng_state())
    assert torch.isfinite(d.log_prob(d.sample((5,), key=k1))).all() or "Masked" in name


@pytest.mark.parametrize("name", sorted(CONTINUOUS))
def test_reparameterised_with_key(name):
    p = {k: v.clone().requires_grad_(True) for k, v in _params().items()}
    d = _make(name, p)
    d.rsample((4,), key=R.key(1)).sum().backward()
    assert p["loc"].grad is not None and p["loc"].grad.abs().sum() > 0


def test_normal_eps_is_funcrl_normal():
    # IndependentNormal's key draw is exactly loc + scale * funcrl.random.normal(key).
    p = _params()
    k = R.key(3)
    got = D.IndependentNormal(p["loc"], p["scale"]).rsample((2,), key=k)
    assert torch.equal(got, p["loc"] + p["scale"] * R.normal(k, (2, 3, 2)))
    d = D.TanhNormal(p["loc"], p["scale"])
    a, lp = d.rsample_and_log_prob((2,), key=k)
    assert torch.equal(a, d.rsample((2,), key=k))
    torch.testing.assert_close(lp, d.log_prob(a), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", NAMES)
def test_vmap_over_keys_equals_loop(name):
    p = _params()
    keys = R.split(R.key(4), 3)

    def f(k):
        return _draw(_make(name, p), k, (2,))

    batched = torch.func.vmap(f)(keys)
    for i in range(3):
        assert torch.equal(batched[i], f(keys[i]))


@pytest.mark.parametrize("name", ["TanhNormal", "TruncatedNormal", "MaskedCategorical"])
def test_compile_fullgraph_key_input(name):
    p = _params()
    counter = CompileCounter()

    @torch.compile(backend=counter, fullgraph=True)
    def f(k):
        return _draw(_make(name, p), k, (2,))

    a, b = f(R.key(0)), f(R.key(1))
    assert counter.frame_count == 1
    assert torch.equal(a, _draw(_make(name, p), R.key(0), (2,)))
    assert not torch.equal(a, b)


def test_categorical_key_frequencies():
    probs = torch.tensor([0.1, 0.6, 0.3])
    s = D.Categorical(probs=probs).sample((20_000,), key=R.key(5))
    freq = torch.bincount(s, minlength=3).double() / s.numel()
    assert (freq - probs.double()).abs().max() < 0.017  # 5 standard errors


def test_deltas_accept_and_ignore_key():
    x = torch.randn(3, 2)
    assert torch.equal(D.Delta(x).sample((2,), key=R.key(0)), D.Delta(x).sample((2,)))
    t = D.TanhDelta(x)
    assert torch.equal(t.rsample(key=R.key(0)), t.rsample())


def test_bad_key_names_the_sampler():
    d = D.IndependentNormal(torch.zeros(2), torch.ones(2))
    with pytest.raises(ValueError, match=r"funcrl\.random\.normal: key must be an int64 tensor"):
        d.rsample(key=torch.zeros(3, dtype=torch.int64))
