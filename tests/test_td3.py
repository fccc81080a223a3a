"""TD3: target smoothing bounds, hand values, TorchRL parity (noise fixed), delayed actor,
compile, vmap."""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import funcrl
from funcrl import Record, optim, specs, td3, tree
from funcrl.testing import assert_trees_all_close
from funcrl.training import total_loss

os.environ.setdefault("RL_WARNINGS", "False")
B, D, A, HID = 16, 3, 2, (32, 32)
NETS = td3.Nets(num_cells=HID)
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


# --- the equations -------------------------------------------------------------------------------


@settings(max_examples=50, deadline=None)
@given(
    sigma=st.floats(0, 3),
    clip=st.floats(0, 2),
    low=st.floats(-3, 0),
    width=st.floats(0, 4),
    seed=st.integers(0, 1000),
)
def test_target_smoothing_bounds(sigma, clip, low, width, seed):
    g = torch.Generator().manual_seed(seed)
    lo = torch.full((3,), low, dtype=torch.float64)
    hi = lo + width
    mu = lo + width * torch.rand(8, 3, generator=g, dtype=torch.float64)  # the actor is in bounds
    eps = 3 * torch.randn(8, 3, generator=g, dtype=torch.float64)
    a = td3.target_policy_smoothing(mu, eps, sigma, clip, lo, hi)
    assert ((a >= lo) & (a <= hi)).all()
    assert ((a - mu).abs() <= clip + 1e-12).all()  # the noise never moves an action past c
    inside = ((mu + sigma * eps).abs() < 1e9) & ((sigma * eps).abs() <= clip)
    inside &= (mu + sigma * eps >= lo) & (mu + sigma * eps <= hi)
    torch.testing.assert_close(a[inside], (mu + sigma * eps)[inside])


def test_clipped_double_q_and_loss_by_hand():
    torch.testing.assert_close(
        td3.clipped_double_q(torch.tensor([[[1.0], [5.0]], [[2.0], [-1.0]]])),
        torch.tensor([[1.0], [-1.0]]),
    )
    # mu(s) = k s; Q_i(s, a) = w_i * (s + a): scalar everything.
    nets = td3.Nets(actor=lambda p, s: p["k"] * s, qvalue=lambda p, s, a: p["w"] * (s + a))
    params = {
        "actor": {"k": torch.tensor(0.5)},
        "qvalue": {"w": torch.tensor([1.0, 2.0])},
        "target_actor": {"k": torch.tensor(1.0)},
        "target_qvalue": {"w": torch.tensor([3.0, 0.5])},
        "action_bounds": {"low": torch.tensor([-1.0]), "high": torch.tensor([1.0])},
    }
    batch = Record(
        {
            "observation": torch.tensor([[2.0]]),
            "action": torch.tensor([[0.5]]),
            "next": {
                "observation": torch.tensor([[0.8]]),
                "reward": torch.tensor([[1.0]]),
                "terminated": torch.tensor([[False]]),
            },
        },
        batch_ndim=1,
    )
    cfg = td3.Config(gamma=0.5, policy_noise=1.0, noise_clip=0.5, loss_function="l2")
    out = td3.loss(params, batch, config=cfg, nets=nets, noise=torch.tensor([[2.0]]))
    # a' = clip(0.8 + clip(2, -.5, .5), -1, 1) = 1; Q' = (3 * 1.8, 0.5 * 1.8) -> min 0.9;
    # y = 1 + 0.5 * 0.9 = 1.45; Q(s, a) = (2.5, 5); L_Q = 1.05^2 + 3.55^2; L_mu = -1 * (2 + 1).
    assert out["next_state_value"].item() == pytest.approx(0.9)
    assert out["target_value"].item() == pytest.approx(1.45)
    assert out["loss_qvalue"].item() == pytest.approx(1.05**2 + 3.55**2)
    assert out["loss_actor"].item() == pytest.approx(-3.0)
    grads = torch.func.grad(
        lambda p: total_loss(td3.loss(p, batch, config=cfg, nets=nets, noise=torch.tensor([[2.0]])))
    )(params)
    # Only Q_1 drives the actor: d(-w_1 (s + k s))/dk = -w_1 s = -2.
    assert grads["actor"]["k"].item() == pytest.approx(-2.0)
    torch.testing.assert_close(grads["qvalue"]["w"], torch.tensor([2 * 1.05 * 2.5, 2 * 3.55 * 2.5]))
    assert grads["target_actor"]["k"].item() == 0.0
    assert (grads["target_qvalue"]["w"] == 0).all()


@settings(max_examples=20, deadline=None)
@given(terminated=st.booleans(), truncated=st.booleans(), r=st.floats(-3, 3))
def test_only_terminated_stops_bootstrap(terminated, truncated, r):
    nets = td3.Nets(actor=lambda p, s: p["k"] * s, qvalue=lambda p, s, a: p["w"] * (s + a))
    params = {
        "actor": {"k": torch.tensor(0.5)},
        "qvalue": {"w": torch.tensor([1.0, 2.0])},
        "action_bounds": {"low": torch.tensor([-1.0]), "high": torch.tensor([1.0])},
    }
    batch = Record(
        {
            "observation": torch.tensor([[1.0]]),
            "action": torch.tensor([[0.0]]),
            "next": {
                "observation": torch.tensor([[1.0]]),
                "reward": torch.tensor([[r]]),
                "terminated": torch.tensor([[terminated]]),
                "truncated": torch.tensor([[truncated]]),
            },
        },
        batch_ndim=1,
    )
    cfg = td3.Config(gamma=0.5, delay_actor=False, delay_qvalue=False)
    out = td3.loss(params, batch, config=cfg, nets=nets, noise=torch.zeros(1, 1))
    # a' = 0.5; min_i Q_i(s', a') = 1.5
    assert out["target_value"].item() == pytest.approx(r + (0.0 if terminated else 0.75), abs=1e-6)


# --- TorchRL parity ------------------------------------------------------------------------------


def _seq(p, last=None):
    from torch import nn

    mods = []
    for i, layer in enumerate(p["layers"]):
        lin = nn.Linear(layer["weight"].shape[-1], layer["weight"].shape[-2], dtype=torch.float64)
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
    "loss_function,delay_actor,delay_qvalue,num_q,noise",
    [
        ("smooth_l1", True, True, 2, 0.2),
        ("l2", True, True, 3, 0.6),  # large noise: the clamp to the bounds is active
        ("l1", False, False, 2, 0.2),
    ],
)
def test_parity_with_torchrl(loss_function, delay_actor, delay_qvalue, num_q, noise):
    pytest.importorskip("torchrl", reason="TorchRL is the reference implementation")
    from torch import nn
    from torchrl.data import Bounded
    from torchrl.modules import Actor, ValueOperator
    from torchrl.objectives import TD3Loss

    cfg = td3.Config(
        policy_noise=noise,
        noise_clip=0.5,
        loss_function=loss_function,
        delay_actor=delay_actor,
        delay_qvalue=delay_qvalue,
        num_qvalue_nets=num_q,
    )
    params = td3.init(0, OBS, ACT, cfg, NETS, dtype=torch.float64)
    g = torch.Generator().manual_seed(1)
    for k in ("target_actor", "target_qvalue"):
        if k in params:
            params[k] = tree.map(
                lambda t: t + 0.1 * torch.randn(t.shape, generator=g, dtype=t.dtype), params[k]
            )
    # Push the actor towards its bounds so that the smoothed action gets clamped.
    params["actor"]["layers"][-1]["bias"] = params["actor"]["layers"][-1]["bias"] + 1.5
    batch = make_batch()

    spec = Bounded(
        -torch.ones(A, dtype=torch.float64),
        torch.ones(A, dtype=torch.float64),
        (A,),
        dtype=torch.float64,
    )
    actor = Actor(_seq(params["actor"], nn.Tanh()), in_keys=["observation"], spec=spec)
    qvalue = ValueOperator(
        _QNet(_seq(tree.map(lambda t: t[0], params["qvalue"]))), in_keys=["observation", "action"]
    )
    ref = TD3Loss(
        actor,
        qvalue,
        action_spec=spec,
        num_qvalue_nets=num_q,
        policy_noise=noise,
        noise_clip=0.5,
        loss_function=loss_function,
        delay_actor=delay_actor,
        delay_qvalue=delay_qvalue,
    )
    _load(ref.actor_network_params, params["actor"])
    _load(ref.qvalue_network_params, params["qvalue"])
    if delay_actor:
        _load(ref.target_actor_network_params, params["target_actor"])
    if delay_qvalue:
        _load(ref.target_qvalue_network_params, params["target_qvalue"])
    torch.manual_seed(7)
    td = batch.to_tensordict()
    ref_out = ref(td)
    # TorchRL writes the priority into its input: the squared error; funcrl's is its absolute value.
    ref_out["td_error"] = td["td_error"].sqrt()
    a_td, q_td = ref.actor_network_params, ref.qvalue_network_params
    a_leaves, q_leaves = list(a_td.values(True, True)), list(q_td.values(True, True))
    grads_ref = torch.autograd.grad(
        ref_out["loss_actor"] + ref_out["loss_qvalue"], a_leaves + q_leaves
    )
    expected = {
        "actor": _to_tree(a_td, grads_ref[: len(a_leaves)], params["actor"]),
        "qvalue": _to_tree(q_td, grads_ref[len(a_leaves) :], params["qvalue"]),
    }

    torch.manual_seed(7)
    eps = torch.randn_like(batch["action"])

    def f(p, noise=None):
        out = td3.loss({**params, **p}, batch, config=cfg, nets=NETS, noise=noise)
        return total_loss(out), out

    trainable = {"actor": params["actor"], "qvalue": params["qvalue"]}
    grads, out = torch.func.grad(f, has_aux=True)(trainable, eps)
    for k in (
        "loss_actor",
        "loss_qvalue",
        "pred_value",
        "state_action_value_actor",
        "next_state_value",
        "target_value",
        "td_error",
    ):
        torch.testing.assert_close(out[k], ref_out[k].detach(), rtol=1e-5, atol=1e-5, msg=k)
    assert_trees_all_close(grads, expected, rtol=1e-5, atol=1e-5)
    # The global-RNG path draws the same noise as TorchRL under the same seed.
    torch.manual_seed(7)
    torch.testing.assert_close(f(trainable)[1]["loss_qvalue"], ref_out["loss_qvalue"].detach())


# --- init, errors, delayed actor -----------------------------------------------------------------


def test_init_and_errors():
    params = td3.init(0, OBS, ACT, nets=NETS)
    assert set(params) == {
        "actor",
        "qvalue",
        "target_actor",
        "target_qvalue",
        "action_bounds",
    }
    w = params["qvalue"]["layers"][0]["weight"]
    assert w.shape == (2, HID[0], D + A) and not torch.equal(w[0], w[1])  # independent critics
    assert_trees_all_close(params["target_qvalue"], params["qvalue"])
    with pytest.raises(ValueError, match="num_qvalue_nets"):
        td3.Config(num_qvalue_nets=0)
    with pytest.raises(ValueError, match="policy_noise"):
        td3.Config(policy_noise=-1.0)
    with pytest.raises(ValueError, match="td3.init: action_spec Unbounded has no low/high"):
        td3.init(0, OBS, specs.Unbounded(shape=(A,)), nets=NETS)
    batch = make_batch(dtype=torch.float32)
    with pytest.raises(ValueError, match="noise has shape"):
        td3.loss(params, batch, nets=NETS, noise=torch.zeros(B, A + 1))
    with pytest.raises(ValueError, match="reward"):
        td3.loss(params, batch.set(("next", "reward"), torch.zeros(B, 2)), nets=NETS)


def _setup(seed, delay=2):
    params = td3.init(seed, OBS, ACT, nets=NETS)
    opt = {"actor": optim.adam(1e-3), "qvalue": optim.adam(1e-3)}
    return params, td3.trainer(opt, nets=NETS, policy_delay=delay, tau=0.05)


def test_delayed_actor_and_target_updates():
    params, train = _setup(0, delay=3)
    state = train.init(params)
    for i in range(6):
        new, state, _ = train.step(params, state, make_batch(seed=i, dtype=torch.float32))
        due = i % 3 == 0
        moved = not tree.allclose(new["actor"], params["actor"], rtol=0, atol=0)
        target_moved = not tree.allclose(
            new["target_actor"], params["target_actor"], rtol=0, atol=0
        )
        assert moved == due and target_moved == due, i
        assert not tree.allclose(new["qvalue"], params["qvalue"], rtol=0, atol=0)  # every step
        params = new


# --- compile and vmap ----------------------------------------------------------------------------


def test_step_compiles_fullgraph_without_recompiles():
    from torch._dynamo.testing import CompileCounterWithBackend

    torch._dynamo.reset()
    params, train = _setup(0)
    state = train.init(params)
    counter = CompileCounterWithBackend("aot_eager")
    step = torch.compile(train.step, backend=counter, fullgraph=True)
    for i in range(20):
        params, state, metrics = step(params, state, make_batch(seed=i, dtype=torch.float32))
    assert counter.frame_count == 1, f"recompiled: {counter.frame_count} frames"
    assert int(state.step) == 20
    assert all(torch.isfinite(v).all() for v in metrics.values())


def test_step_vmaps_over_seeds_with_different_noise():
    runs = [_setup(s) for s in range(3)]
    train = runs[0][1]
    ps = [p for p, _ in runs]
    states = [train.init(p) for p in ps]
    batches = [make_batch(seed=10 + s, dtype=torch.float32) for s in range(3)]
    v_step = torch.func.vmap(train.step, randomness="different")
    stacked = (tree.stack(ps), tree.stack(states), Record.stack(batches))
    vp, vs, vm = v_step(*stacked)
    assert vm["loss_qvalue"].shape == (3,) and vm["pred_value"].shape == (3, 2, B)
    # Same data in every member: "different" randomness draws different target noise.
    same = (tree.stack([ps[0]] * 3), tree.stack([states[0]] * 3), Record.stack([batches[0]] * 3))
    _, _, m_same = v_step(*same)
    assert not torch.allclose(m_same["target_value"][0], m_same["target_value"][1])
    # Without noise the vmapped step equals the per-seed steps.
    quiet = td3.trainer(
        {"actor": optim.adam(1e-3), "qvalue": optim.adam(1e-3)},
        config=td3.Config(policy_noise=0.0),
        nets=NETS,
        tau=0.05,
    )
    vp, _, _ = torch.func.vmap(quiet.step, randomness="different")(*stacked)
    for s in range(3):
        p1, _, _ = quiet.step(ps[s], states[s], batches[s])
        assert_trees_all_close(tree.map(lambda t, s=s: t[s], vp), p1, rtol=1e-5, atol=1e-6)


def test_act_adds_clipped_noise_scaled_to_the_box():

    wide = specs.Bounded(-2.0, 2.0, shape=(A,))
    nets = td3.Nets(actor=funcrl.nn.TanhBounded(funcrl.nn.MLP(D, A, num_cells=HID), -2.0, 2.0))
    params = td3.init(0, D, wide, nets=nets)
    obs = torch.randn(6, D)
    mu = td3.act(params, obs, nets=nets, mode="deterministic")
    key = funcrl.random.key(1)
    eps = funcrl.random.normal(key, mu.shape, mu.dtype)
    # sigma = noise_scale * (high - low) / 2 = 0.5 * 2 = 1.
    expected = torch.clamp(mu + eps, -2.0, 2.0)
    torch.testing.assert_close(td3.act(params, obs, nets=nets, key=key, noise_scale=0.5), expected)
    assert torch.equal(td3.act(params, obs, nets=nets, key=key, noise_scale=0.0), mu)
