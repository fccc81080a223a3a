"""Exploration modules, actors, planners and init with explicit keys (funcrl.random)."""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.testing import CompileCounter

from funcrl import Record
from funcrl import random as R
from funcrl.distributions import TanhNormal
from funcrl.modules.actors import ProbabilisticActor
from funcrl.modules.exploration import (
    AdditiveGaussian,
    ConsistentDropout,
    EGreedy,
    OrnsteinUhlenbeck,
    random_action,
)
from funcrl.modules.planners import CEMConfig, MPPIConfig, cem_plan, mppi_plan
from funcrl.nn.core import make_generator
from funcrl.specs import Binary, Bounded, Categorical, MultiCategorical, MultiOneHot, OneHot


@pytest.fixture(autouse=True)
def _plain_ops(monkeypatch):
    # The draws here are small; the plain-op path avoids paying the generator kernel's one-time
    # compile in this test process (test_random.py checks both paths give the same bits).
    monkeypatch.setattr(R, "FUSED_MIN_NUMEL", 2**62)


def _rec(n: int = 6) -> Record:
    g = torch.Generator().manual_seed(0)
    return Record(
        {
            "action": torch.rand(n, 2, generator=g) * 2 - 1,
            "loc": torch.randn(n, 2, generator=g),
            "scale": torch.rand(n, 2, generator=g) + 0.2,
            "obs": torch.randn(n, 3, generator=g),
        },
        batch_ndim=1,
    )


MODULES = {
    "AdditiveGaussian": lambda: AdditiveGaussian(Bounded(-1.0, 1.0, shape=(2,)), sigma_init=0.5),
    "OrnsteinUhlenbeck": lambda: OrnsteinUhlenbeck(Bounded(-1.0, 1.0, shape=(2,))),
    "EGreedy": lambda: EGreedy(Bounded(-1.0, 1.0, shape=(2,)), eps_init=0.5, eps_end=0.5),
    "ConsistentDropout": lambda: ConsistentDropout(0.3, in_keys="obs"),
    "ProbabilisticActor": lambda: ProbabilisticActor(
        None, ["loc", "scale"], distribution_class=TanhNormal, return_log_prob=True
    ),
}


def _call(name: str, rec: Record, key: torch.Tensor | None, mod=None) -> Record:
    mod = MODULES[name]() if mod is None else mod
    # ProbabilisticActor's default interaction is deterministic (TorchRL's); sample here.
    how = {"interaction": "random"} if name == "ProbabilisticActor" else {}
    return mod(mod.init(), rec, key=key, **how)


def _out(name: str, rec: Record) -> torch.Tensor:
    return rec["obs"] if name == "ConsistentDropout" else rec["action"]


@pytest.mark.parametrize("name", sorted(MODULES))
def test_same_key_same_output_and_global_rng_untouched(name):
    rec = _rec()
    k1, k2 = R.split(R.key(0))
    state = torch.random.get_rng_state()
    a, b = _out(name, _call(name, rec, k1)), _out(name, _call(name, rec, k1))
    assert torch.equal(state, torch.random.get_rng_state())
    assert torch.equal(a, b)
    assert not torch.equal(a, _out(name, _call(name, rec, k2)))


@pytest.mark.parametrize("name", sorted(MODULES))
def test_key_none_keeps_global_rng_path(name):
    rec = _rec()
    torch.manual_seed(3)
    a = _out(name, _call(name, rec, None))
    torch.manual_seed(3)
    assert torch.equal(a, _out(name, _call(name, rec, None)))


@pytest.mark.parametrize("name", sorted(MODULES))
def test_vmap_over_keys_equals_loop(name):
    rec = _rec()
    keys = R.split(R.key(1), 3)

    def f(k):
        return _out(name, _call(name, rec, k))

    batched = torch.func.vmap(f)(keys)
    for i in range(3):
        assert torch.equal(batched[i], f(keys[i]))


@pytest.mark.parametrize("name", ["AdditiveGaussian", "EGreedy", "ProbabilisticActor"])
def test_compile_fullgraph_with_key_input(name):
    rec = _rec()
    counter = CompileCounter()
    mod = MODULES[name]()  # built outside: spec construction reads bound values on the host

    @torch.compile(backend=counter, fullgraph=True)
    def f(k):
        return _out(name, _call(name, rec, k, mod))

    a, b = f(R.key(0)), f(R.key(1))
    assert counter.frame_count == 1
    assert torch.equal(a, _out(name, _call(name, rec, R.key(0))))
    assert not torch.equal(a, b)


def test_additive_gaussian_noise_is_funcrl_normal():
    mod = AdditiveGaussian(None, sigma_init=0.5, sigma_end=0.5, mean=0.1, std=2.0)
    rec = _rec()
    k = R.key(7)
    out = mod(mod.init(), rec, key=k)["action"]
    expected = rec["action"] + (0.1 + 2.0 * R.normal(k, (6, 2))) * 0.5
    assert torch.equal(out, expected)


def test_consistent_dropout_mask_law():
    mod = ConsistentDropout(0.25, in_keys="obs")
    mask = mod.make_mask(torch.ones(200, 100), key=R.key(2))
    assert set(mask.unique().tolist()) == {0.0, torch.tensor(1 / 0.75).item()}
    assert abs((mask == 0).double().mean().item() - 0.25) < 0.01


@pytest.mark.parametrize(
    "spec, mask",
    [
        (Categorical(5), torch.tensor([False, True, False, True, False])),
        (OneHot(5), torch.tensor([False, True, False, True, False])),
        (MultiOneHot([2, 3]), torch.tensor([True, False, False, True, True])),
        (MultiCategorical([2, 4]), None),
        (Binary(3), None),
        (Bounded(-2.0, -1.0, shape=(2,)), None),
        (Bounded(0, 3, shape=(2,), dtype=torch.int64), None),
    ],
)
def test_random_action_from_key_stays_in_spec(spec, mask):
    k = R.key(4)
    a = random_action(spec, torch.Size([300]), mask, key=k)
    assert a.shape == (300, *spec.shape) and a.dtype == spec.dtype
    assert torch.equal(a, random_action(spec, torch.Size([300]), mask, key=k))
    assert torch.equal(spec.project(a), a)
    if isinstance(spec, Categorical):
        assert set(a.tolist()) == {1, 3}
    if isinstance(spec, OneHot):
        assert (a.sum(-1) == 1).all() and (a[:, [0, 2, 4]] == 0).all()
    if isinstance(spec, MultiOneHot):
        assert (a[:, 0] == 1).all() and (a[:, 2] == 0).all()


def test_random_action_key_errors():
    inf = Bounded(-float("inf"), 1.0, shape=(2,))
    with pytest.raises(ValueError, match=r"random_action: drawing from a key needs finite"):
        random_action(inf, torch.Size([2]), key=R.key(0))
    with pytest.raises(ValueError, match=r"random_action: mask must be a bool tensor of shape"):
        random_action(Categorical(3), torch.Size([2]), torch.ones(3), key=R.key(0))
    with pytest.raises(ValueError, match=r"random_action: action masks are not supported"):
        random_action(Binary(3), torch.Size([2]), torch.ones(3, dtype=torch.bool), key=R.key(0))


def _quadratic(params, target, action):
    return target, -(action - target).square().sum(-1)


@pytest.mark.parametrize("plan", [cem_plan, mppi_plan])
def test_planners_with_keys(plan):
    targets = torch.tensor([[0.5, -0.3], [-0.8, 0.2]])
    cls = CEMConfig if plan is cem_plan else MPPIConfig
    cfg = cls(planning_horizon=2, optim_steps=4, num_candidates=64, top_k=8, action_shape=(2,))

    def f(k):
        return plan(_quadratic, {}, targets, cfg, batch_ndim=1, key=k)

    a = f(R.key(0))
    assert torch.equal(a, f(R.key(0)))
    assert not torch.equal(a, f(R.key(1)))
    torch.testing.assert_close(a, targets, atol=0.15, rtol=0)
    keys = R.split(R.key(2), 2)
    batched = torch.func.vmap(f)(keys)
    assert torch.equal(batched[1], f(keys[1]))


def test_make_generator_from_key():
    assert make_generator(R.key(5)).initial_seed() == 5  # key(s) and s give the same weights
    k = R.split(R.key(0))[1]
    k0, k1 = k.tolist()
    assert make_generator(k).initial_seed() == (k0 << 32) | k1
    with pytest.raises(ValueError, match=r"funcrl\.nn\.make_generator: seed must be an int64"):
        make_generator(torch.zeros(3, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"funcrl\.nn\.make_generator: seed words must be in"):
        make_generator(torch.tensor([0, -1]))
