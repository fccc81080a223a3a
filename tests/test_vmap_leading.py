"""funcrl._vmap.vmap_leading: torch.func.vmap's results over leading dims, eagerly, compiled,
nested and differentiated. What it is for, its cheaper trace, is measured by
bench/trace_cost.py, not timed here."""

from __future__ import annotations

from typing import NamedTuple

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import funcrl
from funcrl import tree
from funcrl._vmap import vmap_leading


class Pair(NamedTuple):
    a: torch.Tensor
    b: dict


def _f(state, x):
    # Mixed ops: a reduction, a matrix product, an output that does not depend on the batch.
    w = state.b["w"]
    h = torch.tanh(x @ w + state.a)
    return Pair(state.a + h.sum(), {"w": w * 2.0, "n": [h.mean(), torch.ones(())]}), h


def _inputs(batch: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    state = Pair(torch.randn(batch, 3, generator=g), {"w": torch.randn(batch, 4, 3, generator=g)})
    return state, torch.randn(batch, 2, 4, generator=g)


def _equal(a, b):
    la, lb = tree.leaves(a), tree.leaves(b)
    assert tree.structure(a) == tree.structure(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb):
        assert x.shape == y.shape and x.dtype == y.dtype
        torch.testing.assert_close(x, y, rtol=0, atol=0)


@settings(max_examples=25, deadline=None)
@given(batch=st.integers(1, 5), seed=st.integers(0, 2**16))
def test_equals_torch_func_vmap(batch, seed):
    args = _inputs(batch, seed)
    _equal(vmap_leading(_f)(*args), torch.func.vmap(_f)(*args))


def test_outputs_that_ignore_the_batch_are_expanded():
    out = vmap_leading(lambda x: (x * 2, torch.zeros(3)))(torch.ones(4, 2))
    assert out[1].shape == (4, 3)


def test_compiled_nested_and_differentiated():
    args = _inputs(3)
    want = torch.func.vmap(_f)(*args)
    compiled = torch.compile(vmap_leading(_f), backend="eager", fullgraph=True)
    _equal(compiled(*args), want)
    # Inside another vmap (an outer batch of 2) and under grad, as torch.func.vmap.
    outer = tree.map(lambda x: torch.stack([x, x + 1]), args)
    _equal(
        torch.func.vmap(vmap_leading(_f))(*outer),
        torch.func.vmap(torch.func.vmap(_f))(*outer),
    )

    def loss(fn, w):
        state = Pair(args[0].a, {"w": w})
        return fn(_f)(state, args[1])[1].square().sum()

    g1 = torch.func.grad(lambda w: loss(vmap_leading, w))(args[0].b["w"])
    g2 = torch.func.grad(lambda w: loss(torch.func.vmap, w))(args[0].b["w"])
    torch.testing.assert_close(g1, g2, rtol=0, atol=0)


def test_randomness_error_as_vmap():
    with pytest.raises(RuntimeError, match="randomness"):
        vmap_leading(lambda x: x + torch.rand(()))(torch.ones(3))
    out = vmap_leading(lambda x: x + torch.rand(()), randomness="different")(torch.zeros(3))
    assert out.shape == (3,)


def test_seeded_iteration_uses_it_and_matches_torch_func_vmap():
    # The pure PPO iteration vmapped both ways: the same numbers.
    from funcrl.envs import pure
    from funcrl.pure_train import PPOTrainConfig, make_train, seeded_iteration

    cfg = PPOTrainConfig(
        total_timesteps=2 * 8, num_envs=2, num_steps=8, update_epochs=1, num_minibatches=2
    )
    algo = make_train(cfg, pure.make("CartPole-v1"))
    keys = funcrl.random.split(funcrl.random.key(0), 2)
    state = tree.map(lambda *xs: torch.stack(xs), *[algo.init(k) for k in keys])
    step_keys = funcrl.random.split(funcrl.random.key(1), 2)
    got = seeded_iteration(algo, compile=False)(state, step_keys)
    want = torch.func.vmap(algo.iteration, randomness="error")(state, step_keys)
    _equal(got, want)
