"""Dropout draws its masks from ``key=`` (nets and the Decision Transformer losses)."""

from __future__ import annotations

import pytest
import torch

import funcrl
from funcrl import nn
from funcrl.nn.core import dropout


def test_dropout_by_hand_and_keys():
    x = torch.ones(4, 1000)
    k = funcrl.random.key(0)
    y = dropout(x, 0.25, train=True, key=k)
    keep = funcrl.random.bernoulli(k, 0.75, (4, 1000)).float()
    torch.testing.assert_close(y, keep / 0.75)
    assert torch.equal(y, dropout(x, 0.25, train=True, key=k))
    assert not torch.equal(y, dropout(x, 0.25, train=True, key=funcrl.random.key(1)))
    assert abs(float((y == 0).float().mean()) - 0.25) < 0.03
    assert torch.equal(dropout(x, 0.25, train=False, key=k), x)
    assert torch.equal(dropout(x, 0.0, train=True, key=k), x)


def test_mlp_dropout_from_key_vmaps_and_leaves_global_rng_alone():
    net = nn.MLP(3, 2, num_cells=(32, 32), dropout=0.5)
    params, x = net.init(0), torch.randn(8, 3)
    k = funcrl.random.key(2)
    before = torch.get_rng_state()
    a = net(params, x, train=True, key=k)
    assert torch.equal(torch.get_rng_state(), before)
    assert torch.equal(a, net(params, x, train=True, key=k))
    assert not torch.equal(a, net(params, x, train=True, key=funcrl.random.key(3)))
    assert torch.equal(net(params, x), net(params, x, key=k))  # eval: no dropout
    keys = funcrl.random.split(k, 3)
    batched = torch.func.vmap(lambda kk: net(params, x, train=True, key=kk))(keys)
    for i in range(3):
        torch.testing.assert_close(batched[i], net(params, x, train=True, key=keys[i]))


@pytest.mark.parametrize("name", ["dt", "online_dt"])
def test_dt_losses_draw_dropout_from_the_key(name):
    from test_protocol_offline import CASES

    case = next(c for c in CASES if c.module.__name__.endswith("." + name))
    import dataclasses

    case = dataclasses.replace(case, config=dataclasses.replace(case.cfg, dropout=True))
    params, batch = case.init(0), case.make_batch(0, 4)
    k = funcrl.random.key(5)
    a, b = case.loss(params, batch, key=k), case.loss(params, batch, key=k)
    c = case.loss(params, batch, key=funcrl.random.key(6))
    terms = [t for t in a if t == "loss" or t.startswith("loss_")]
    assert all(torch.equal(a[t], b[t]) for t in terms)
    assert any(not torch.equal(a[t], c[t]) for t in terms)
