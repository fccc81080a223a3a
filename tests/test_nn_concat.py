"""funcrl.nn.Concat: a net over several inputs concatenated on the last dim (a Q(s, a) critic)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from funcrl import testing
from funcrl.nn import MLP, Concat, Ensemble, Linear, TorchModule
from funcrl.nn.ensemble import vmap_members


def test_concat_hand_values():
    # Linear(3 -> 1) with weight [1, 2, 3] and bias 0.5 on cat([o], [a1, a2]).
    critic = Concat(Linear(3, 1))
    params = {"weight": torch.tensor([[1.0, 2.0, 3.0]]), "bias": torch.tensor([0.5])}
    obs, act = torch.tensor([[1.0], [0.0]]), torch.tensor([[1.0, 1.0], [2.0, -1.0]])
    # row 0: 1 + 2 + 3 + 0.5 = 6.5; row 1: 0 + 4 - 3 + 0.5 = 1.5
    testing.assert_trees_all_close(critic(params, obs, act), torch.tensor([[6.5], [1.5]]))


@given(st.integers(1, 4), st.integers(1, 3), st.integers(1, 3))
def test_concat_equals_manual_cat(batch, d_obs, d_act):
    mlp = MLP(d_obs + d_act, 1, num_cells=(8, 8), norm="layer", activation="relu")
    critic = Concat(mlp)
    params = critic.init(0)
    testing.assert_trees_all_close(params, mlp.init(0))
    obs, act = torch.randn(batch, d_obs), torch.randn(batch, d_act)
    testing.assert_trees_all_close(critic(params, obs, act), mlp(params, torch.cat([obs, act], -1)))


def test_concat_torch_module_critic():
    module = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1))
    critic = Concat(TorchModule(module))
    params = critic.init()
    obs, act = torch.randn(6, 3), torch.randn(6, 2)
    testing.assert_trees_all_close(critic(params, obs, act), module(torch.cat([obs, act], -1)))


def test_concat_vmap_and_compile():
    critic = Concat(MLP(5, 1, num_cells=(8,)))
    params = critic.init(0)
    obs, act = torch.randn(7, 4, 3), torch.randn(7, 4, 2)
    want = critic(params, obs, act)
    per_row = torch.func.vmap(critic, in_dims=(None, 0, 0))(params, obs, act)
    testing.assert_trees_all_close(per_row, want)
    torch._dynamo.reset()
    compiled = torch.compile(critic, fullgraph=True)
    testing.assert_trees_all_close(compiled(params, obs, act), want, atol=1e-6, rtol=1e-6)


def test_concat_ensemble_over_members():
    critic = Concat(MLP(5, 1, num_cells=(8,)))
    ens = Ensemble(critic, 3)
    params = ens.init(0)
    obs, act = torch.randn(4, 3), torch.randn(4, 2)
    q = vmap_members(critic, params, obs, act)
    testing.assert_shape(q, (3, 4, 1))
    for i in range(3):
        member = {"layers": [{k: v[i] for k, v in layer.items()} for layer in params["layers"]]}
        testing.assert_trees_all_close(q[i], critic(member, obs, act))
    testing.assert_trees_all_close(ens(params, obs, act), q)


def test_concat_errors():
    critic = Concat(MLP(5, 1, num_cells=(8,)))
    params = critic.init(0)
    with pytest.raises(TypeError, match=r"Concat\(net=MLP\(.*\)\): inputs\[1\] is torch.float64"):
        critic(params, torch.randn(2, 3), torch.randn(2, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"Concat\(.*\): inputs\[1\] has batch shape \(3,\)"):
        critic(params, torch.randn(2, 3), torch.randn(3, 2))
    with pytest.raises(ValueError, match=r"MLP\(in_features=5.*\): input x has shape \(2, 6\)"):
        critic(params, torch.randn(2, 3), torch.randn(2, 3))
    with pytest.raises(TypeError, match=r"Concat\(.*\): expected at least one input"):
        critic(params)
    with pytest.raises(TypeError, match="Concat: net must be a funcrl net"):
        Concat(torch.relu)
