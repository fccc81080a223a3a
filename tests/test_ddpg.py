"""DDPG: equations by hand, TorchRL parity (losses, logs, gradients), compile, vmap."""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from funcrl import Record, ddpg, optim, specs, tree
from funcrl.testing import assert_trees_all_close
from funcrl.training import total_loss

os.environ.setdefault("RL_WARNINGS", "False")
B, D, A, HID = 16, 3, 2, (32, 32)
NETS = ddpg.Nets(num_cells=HID)
OBS = specs.Unbounded(shape=(D,))
ACT = specs.Bounded(-torch.ones(A), torch.ones(A), (A,))


def make_batch(*, seed=0, dtype=torch.float64, batch=(B,)):
    g = torch.Generator().manual_seed(seed)
    term = torch.rand(*batch, 1, generator=g) < 0.3
    trunc = torch.rand(*batch, 1, generator=g) < 0.3
    return Record(
        {
            "observation": torch.randn(*batch, D, generator=g, dtype=dtype),
            "action": torch.rand(*batch, A, generator=g, dtype=dtype) * 2 - 1,
            "next": {
                "observation": torch.randn(*batch, D, generator=g, dtype=dtype),
                "reward": torch.randn(*batch, 1, generator=g, dtype=dtype),
                "terminated": term,
                "truncated": trunc,
                "done": term | trunc,
            },
        },
        batch_ndim=len(batch),
    )


def perturbed(p, seed):
    g = torch.Generator().manual_seed(seed)
    return tree.map(lambda t: t + 0.1 * torch.randn(t.shape, generator=g, dtype=t.dtype), p)


# --- by hand -------------------------------------------------------------------------------------


def _linear_nets():
    # mu(s) = k * s (1-d); Q(s, a) = w_s * s + w_a * a: every value is a one-liner.
    return ddpg.Nets(
        actor=lambda p, s: p["k"] * s,
        value=lambda p, s, a: p["ws"] * s + p["wa"] * a,
    )


def _scalar_batch(terminated, truncated, r=1.0):
    return Record(
        {
            "observation": torch.tensor([[2.0]]),
            "action": torch.tensor([[0.5]]),
            "next": {
                "observation": torch.tensor([[1.0]]),
                "reward": torch.tensor([[r]]),
                "terminated": torch.tensor([[terminated]]),
                "truncated": torch.tensor([[truncated]]),
            },
        },
        batch_ndim=1,
    )


def test_losses_and_gradient_stops_by_hand():
    p = {
        "actor": {"k": torch.tensor(0.5)},
        "value": {"ws": torch.tensor(1.0), "wa": torch.tensor(2.0)},
        "target_value": {"ws": torch.tensor(0.5), "wa": torch.tensor(1.0)},
        "action_bounds": {"low": torch.tensor([-1.0]), "high": torch.tensor([1.0])},
    }
    cfg = ddpg.Config(gamma=0.5)
    nets = _linear_nets()
    out = ddpg.loss(p, _scalar_batch(False, False), config=cfg, nets=nets)
    # Q(s, a) = 2 + 1 = 3; a' = mu(s') = 0.5 (online actor: delay_actor=False);
    # Q'(s', a') = 0.5 + 0.5 = 1; y = 1 + 0.5 * 1 = 1.5; L_Q = 1.5^2; L_mu = -(2 + 2 * 1) = -4.
    assert out["loss_value"].item() == pytest.approx(2.25)
    assert out["loss_actor"].item() == pytest.approx(-4.0)
    assert out["td_error"].item() == pytest.approx(1.5)  # |Q - y|
    grads = torch.func.grad(
        lambda q: total_loss(ddpg.loss(q, _scalar_batch(False, False), config=cfg, nets=nets))
    )(p)
    # d L_mu / dk = -wa * s = -4; L_Q doesn't reach the actor (the next action is detached).
    assert grads["actor"]["k"].item() == pytest.approx(-4.0)
    # d L_Q / d(ws, wa) = 2 * (Q - y) * (s, a) = 3 * (2, 0.5); L_mu doesn't reach the critic.
    assert grads["value"]["ws"].item() == pytest.approx(6.0)
    assert grads["value"]["wa"].item() == pytest.approx(1.5)
    assert grads["target_value"]["ws"].item() == 0.0


@settings(max_examples=20, deadline=None)
@given(terminated=st.booleans(), truncated=st.booleans(), r=st.floats(-3, 3))
def test_only_terminated_stops_bootstrap(terminated, truncated, r):
    p = {
        "actor": {"k": torch.tensor(0.5)},
        "value": {"ws": torch.tensor(1.0), "wa": torch.tensor(2.0)},
        "target_value": {"ws": torch.tensor(0.5), "wa": torch.tensor(1.0)},
        "action_bounds": {"low": torch.tensor([-1.0]), "high": torch.tensor([1.0])},
    }
    out = ddpg.loss(
        p,
        _scalar_batch(terminated, truncated, r),
        config=ddpg.Config(gamma=0.5),
        nets=_linear_nets(),
    )
    assert out["target_value"].item() == pytest.approx(r + (0.0 if terminated else 0.5), abs=1e-6)


# --- TorchRL parity ------------------------------------------------------------------------------


def _seq(p, last=None):
    from torch import nn

    mods = []
    for i, layer in enumerate(p["layers"]):
        lin = nn.Linear(layer["weight"].shape[1], layer["weight"].shape[0], dtype=torch.float64)
        with torch.no_grad():
            lin.weight.copy_(layer["weight"])
            lin.bias.copy_(layer["bias"])
        mods += [lin] + ([nn.ReLU()] if i < len(p["layers"]) - 1 else [])
    return nn.Sequential(*mods, *([last] if last is not None else []))


class _QNet(torch.nn.Module):
    def __init__(self, seq):
        super().__init__()
        self.seq = seq

    def forward(self, obs, act):
        return self.seq(torch.cat([obs, act], -1))


def _load(td, p):
    for k in td.keys(True, True):
        td.get(k).data.copy_(p["layers"][int(k[-2]) // 2][k[-1]])


def _to_tree(td, grads, like):
    out = tree.zeros_like(like)
    for k, g in zip(td.keys(True, True), grads):
        out["layers"][int(k[-2]) // 2][k[-1]] = g
    return out


@pytest.mark.parametrize(
    "loss_function,delay_actor,delay_value",
    [("l2", False, True), ("smooth_l1", True, True), ("l1", True, False)],
)
def test_parity_with_torchrl(loss_function, delay_actor, delay_value):
    pytest.importorskip("torchrl", reason="TorchRL is the reference implementation")
    from torch import nn
    from torchrl.data import Bounded
    from torchrl.modules import Actor, ValueOperator
    from torchrl.objectives import DDPGLoss

    cfg = ddpg.Config(loss_function=loss_function, delay_actor=delay_actor, delay_value=delay_value)
    params = ddpg.init(0, OBS, ACT, cfg, NETS, dtype=torch.float64)
    for i, k in enumerate(("target_actor", "target_value")):
        if k in params:
            params[k] = perturbed(params[k], seed=i + 1)
    batch = make_batch()

    spec = Bounded(
        -torch.ones(A, dtype=torch.float64),
        torch.ones(A, dtype=torch.float64),
        (A,),
        dtype=torch.float64,
    )
    actor = Actor(_seq(params["actor"], nn.Tanh()), in_keys=["observation"], spec=spec)
    value = ValueOperator(_QNet(_seq(params["value"])), in_keys=["observation", "action"])
    ref = DDPGLoss(
        actor, value, loss_function=loss_function, delay_actor=delay_actor, delay_value=delay_value
    )
    if delay_actor:
        _load(ref.target_actor_network_params, params["target_actor"])
    if delay_value:
        _load(ref.target_value_network_params, params["target_value"])
    ref_out = ref(batch.to_tensordict())
    a_td, v_td = ref.actor_network_params, ref.value_network_params
    a_leaves, v_leaves = list(a_td.values(True, True)), list(v_td.values(True, True))
    g = torch.autograd.grad(ref_out["loss_actor"] + ref_out["loss_value"], a_leaves + v_leaves)
    expected = {
        "actor": _to_tree(a_td, g[: len(a_leaves)], params["actor"]),
        "value": _to_tree(v_td, g[len(a_leaves) :], params["value"]),
    }

    def f(p):
        out = ddpg.loss({**params, **p}, batch, config=cfg, nets=NETS)
        return total_loss(out), out

    grads, out = torch.func.grad(f, has_aux=True)(
        {"actor": params["actor"], "value": params["value"]}
    )
    for k in (
        "loss_actor",
        "loss_value",
        "pred_value",
        "target_value",
        "pred_value_max",
        "target_value_max",
    ):
        torch.testing.assert_close(out[k], ref_out[k].detach(), rtol=1e-5, atol=1e-5, msg=k)
    # TorchRL's td_error is the squared error; funcrl's is its absolute value (the priority).
    torch.testing.assert_close(
        out["td_error"] ** 2, ref_out["td_error"].detach(), rtol=1e-5, atol=1e-5
    )
    assert_trees_all_close(grads, expected, rtol=1e-5, atol=1e-5)


# --- errors --------------------------------------------------------------------------------------


def test_errors():
    with pytest.raises(ValueError, match="loss_function"):
        ddpg.Config(loss_function="mse")
    with pytest.raises(ValueError, match="reduction"):
        ddpg.Config(reduction="max")
    wide = specs.Bounded(-2 * torch.ones(A), 2 * torch.ones(A), (A,))
    with pytest.raises(ValueError, match=r"default actor is tanh"):
        ddpg.init(0, OBS, wide, nets=NETS)
    params = ddpg.init(0, OBS, ACT, nets=NETS)
    assert set(params) == {"actor", "value", "target_value", "action_bounds"}
    batch = make_batch(dtype=torch.float32)
    with pytest.raises(ValueError, match="terminated"):
        ddpg.loss(
            params,
            batch.set(("next", "terminated"), torch.zeros(B, 2, dtype=torch.bool)),
            nets=NETS,
        )
    with pytest.raises(KeyError, match="observation"):
        ddpg.loss(params, batch.exclude("observation"), nets=NETS)


# --- compile and vmap ----------------------------------------------------------------------------


def _setup(seed):
    cfg = ddpg.Config(delay_actor=True)
    params = ddpg.init(seed, OBS, ACT, cfg, NETS)
    opt = {"actor": optim.adam(1e-3), "value": optim.adam(1e-3)}
    return params, ddpg.trainer(opt, config=cfg, nets=NETS, tau=0.05)


def test_step_compiles_fullgraph_without_recompiles():
    from torch._dynamo.testing import CompileCounterWithBackend

    torch._dynamo.reset()
    params, train = _setup(0)
    state = train.init(params)
    counter = CompileCounterWithBackend("aot_eager")
    step = torch.compile(train.step, backend=counter, fullgraph=True)
    eager_params, eager_state = params, state
    for i in range(20):
        batch = make_batch(seed=i, dtype=torch.float32)
        params, state, _ = step(params, state, batch)
        eager_params, eager_state, _ = train.step(eager_params, eager_state, batch)
    assert counter.frame_count == 1, f"recompiled: {counter.frame_count} frames"
    assert_trees_all_close(params, eager_params, rtol=1e-4, atol=1e-5)


def test_step_vmaps_over_seeds():
    runs = [_setup(s) for s in range(3)]
    train = runs[0][1]
    ps = [p for p, _ in runs]
    states = [train.init(p) for p in ps]
    batches = [make_batch(seed=10 + s, dtype=torch.float32) for s in range(3)]
    vp, _, vm = torch.func.vmap(train.step, randomness="different")(
        tree.stack(ps), tree.stack(states), Record.stack(batches)
    )
    for s in range(3):
        p1, _, m1 = train.step(ps[s], states[s], batches[s])
        assert_trees_all_close(tree.map(lambda t, s=s: t[s], vp), p1, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(vm["loss_value"][s], m1["loss_value"])
