"""C51 (DistributionalDQNLoss): projection properties, hand values, TorchRL parity, compile, vmap."""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from funcrl import Record, c51, optim, specs, tree
from funcrl.testing import assert_trees_all_close

os.environ.setdefault("RL_WARNINGS", "False")
B, D, N_ACT, HID = 16, 3, 4, (32, 32)
NETS = c51.Nets(num_cells=HID)


def make_batch(space, *, seed=0, dtype=torch.float64, batch=(B,), reward_scale=3.0):
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, N_ACT, batch, generator=g)
    term = torch.rand(*batch, 1, generator=g) < 0.3
    return Record(
        {
            "observation": torch.randn(*batch, D, generator=g, dtype=dtype),
            "action": idx if space == "categorical" else torch.nn.functional.one_hot(idx, N_ACT),
            "next": {
                "observation": torch.randn(*batch, D, generator=g, dtype=dtype),
                "reward": reward_scale * torch.randn(*batch, 1, generator=g, dtype=dtype),
                "terminated": term,
                "done": term,
                "truncated": torch.zeros_like(term),
            },
        },
        batch_ndim=len(batch),
    )


# --- the projection ------------------------------------------------------------------------------


def _floor_ceil_reference(atoms, probs, v_min, v_max, n):
    # The paper's algorithm with the l == u fix, as a loop over 1-d atoms (independent code).
    delta = (v_max - v_min) / (n - 1)
    m = torch.zeros(n, dtype=atoms.dtype)
    b = (atoms.clamp(v_min, v_max) - v_min) / delta
    for bi, pi in zip(b.tolist(), probs):
        lo, up = int(torch.tensor(bi).floor()), int(torch.tensor(bi).ceil())
        if lo == up:
            m[lo] += pi
        else:
            m[lo] += pi * (up - bi)
            m[up] += pi * (bi - lo)
    return m


@st.composite
def distributions(draw):
    n = draw(st.integers(2, 11))
    k = draw(st.integers(1, 8))
    v_min = draw(st.floats(-20, 0, allow_nan=False))
    v_max = v_min + draw(st.floats(0.5, 30))
    atoms = draw(st.lists(st.floats(v_min - 10, v_max + 10), min_size=k, max_size=k))
    w = draw(st.lists(st.floats(0.01, 1.0), min_size=k, max_size=k))
    probs = torch.tensor(w, dtype=torch.float64)
    return torch.tensor(atoms, dtype=torch.float64), probs / probs.sum(), v_min, v_max, n


@settings(max_examples=60, deadline=None)
@given(distributions())
def test_projection_preserves_mass_and_matches_floor_ceil(d):
    atoms, probs, v_min, v_max, n = d
    m = c51.project(atoms, probs, v_min, v_max, n)
    assert (m >= 0).all()
    torch.testing.assert_close(m.sum(-1), torch.tensor(1.0, dtype=torch.float64))
    torch.testing.assert_close(m, _floor_ceil_reference(atoms, probs, v_min, v_max, n))


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(2, 51), v_min=st.floats(-20, 0), width=st.floats(1, 40), seed=st.integers(0, 99)
)
def test_exact_atoms_map_to_themselves(n, v_min, width, seed):
    z = torch.linspace(v_min, v_min + width, n, dtype=torch.float64)
    p = torch.rand(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) + 0.01
    p = p / p.sum()
    torch.testing.assert_close(c51.project(z, p, v_min, v_min + width, n), p)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(2, 21), shift=st.floats(0, 100), seed=st.integers(0, 99))
def test_out_of_support_clamps_to_the_edges(n, shift, seed):
    p = torch.rand(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) + 0.01
    p = p / p.sum()
    z = torch.linspace(-1, 1, n, dtype=torch.float64)
    above = c51.project(z + 2 + shift, p, -1.0, 1.0, n)
    below = c51.project(z - 2 - shift, p, -1.0, 1.0, n)
    expected_top = torch.zeros(n, dtype=torch.float64)
    expected_top[-1] = 1.0
    torch.testing.assert_close(above, expected_top)
    torch.testing.assert_close(below, expected_top.flip(0))


def test_projection_by_hand():
    # support {0, 1, 2}; an atom at 0.25 with mass 1 splits 0.75 / 0.25; one at 2 stays at 2.
    m = c51.project(torch.tensor([0.25, 2.0]), torch.tensor([0.5, 0.5]), 0.0, 2.0, 3)
    torch.testing.assert_close(m, torch.tensor([0.375, 0.125, 0.5]))


def test_bellman_atoms_terminated_vs_truncated():
    z = torch.tensor([-1.0, 0.0, 1.0])
    r = torch.tensor([[0.5]])
    torch.testing.assert_close(
        c51.bellman_atoms(r, torch.tensor([[False]]), 0.5, z), torch.tensor([[0.0, 0.5, 1.0]])
    )
    torch.testing.assert_close(
        c51.bellman_atoms(r, torch.tensor([[True]]), 0.5, z), torch.tensor([[0.5, 0.5, 0.5]])
    )


def test_loss_by_hand():
    # Two atoms {0, 1}; logits independent of the state: p(s, a) = softmax over atoms.
    cfg = c51.Config(gamma=1.0, v_min=0.0, v_max=1.0, num_atoms=2)
    logits = torch.tensor([[0.0, 1.0], [0.0, -1.0]])  # [atoms, actions]
    nets = c51.Nets(value=lambda p, x: p["l"].expand(*x.shape[:-1], 2, 2))
    params = {"value": {"l": logits}, "target_value": {"l": logits}}
    batch = Record(
        {
            "observation": torch.zeros(1, 1),
            "action": torch.tensor([0]),
            "next": {
                "observation": torch.zeros(1, 1),
                "reward": torch.tensor([[0.25]]),
                "terminated": torch.tensor([[True]]),
            },
        },
        batch_ndim=1,
    )
    out = c51.loss(
        params, batch, config=dataclasses_replace(cfg, action_space="categorical"), nets=nets
    )
    # Terminated: Tz = 0.25 for both atoms -> m = [0.75, 0.25]; log p(s, a=0) = log [0.5, 0.5].
    assert out["loss"].item() == pytest.approx(-torch.log(torch.tensor(0.5)).item())


def dataclasses_replace(cfg, **kw):
    import dataclasses

    return dataclasses.replace(cfg, **kw)


# --- TorchRL parity ------------------------------------------------------------------------------


def _torch_net(p, atoms):
    from torch import nn

    mods = []
    for i, layer in enumerate(p["layers"]):
        lin = nn.Linear(layer["weight"].shape[1], layer["weight"].shape[0], dtype=torch.float64)
        with torch.no_grad():
            lin.weight.copy_(layer["weight"])
            lin.bias.copy_(layer["bias"])
        mods += [lin] + ([nn.ReLU()] if i < len(p["layers"]) - 1 else [])
    return nn.Sequential(*mods, nn.Unflatten(-1, (atoms, N_ACT)))


def _key_to_layer(k):
    return int(k[-2]) // 2, k[-1]


@pytest.mark.parametrize(
    "space,delay,gamma",
    [("one_hot", True, 0.9), ("categorical", True, 0.99), ("one_hot", False, 0.7)],
)
def test_parity_with_torchrl(space, delay, gamma):
    pytest.importorskip("torchrl", reason="TorchRL is the reference implementation")
    from torchrl.data import Categorical, OneHot
    from torchrl.modules import DistributionalQValueActor
    from torchrl.objectives import DistributionalDQNLoss

    cfg = c51.Config(
        gamma=gamma, delay_value=delay, v_min=-3.0, v_max=3.0, num_atoms=11, action_space=space
    )
    spec = specs.OneHot(N_ACT) if space == "one_hot" else specs.Categorical(N_ACT)
    params = c51.init(0, specs.Unbounded(shape=(D,)), spec, cfg, NETS, dtype=torch.float64)
    if delay:
        g = torch.Generator().manual_seed(1)
        params["target_value"] = tree.map(
            lambda t: t + 0.2 * torch.randn(t.shape, generator=g, dtype=t.dtype),
            params["target_value"],
        )
    batch = make_batch(space)  # rewards of scale 3 push some Tz outside [-3, 3]
    tr_spec = OneHot(N_ACT) if space == "one_hot" else Categorical(N_ACT)
    actor = DistributionalQValueActor(
        _torch_net(params["value"], 11),
        in_keys=["observation"],
        spec=tr_spec,
        support=torch.linspace(-3.0, 3.0, 11, dtype=torch.float64),
    )
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # TorchRL builds its projection in the default dtype
    try:
        ref = DistributionalDQNLoss(actor, gamma=gamma, delay_value=delay)
        if delay:
            for k in ref.target_value_network_params.keys(True, True):
                if k[-1] in ("weight", "bias"):
                    i, name = _key_to_layer(k)
                    ref.target_value_network_params.get(k).data.copy_(
                        params["target_value"]["layers"][i][name]
                    )
        td = batch.to_tensordict()
        ref_out = ref(td)
    finally:
        torch.set_default_dtype(default)
    keys = [k for k in ref.value_network_params.keys(True, True) if k[-1] in ("weight", "bias")]
    ref_grads = torch.autograd.grad(
        ref_out["loss"], [ref.value_network_params.get(k) for k in keys]
    )
    expected = tree.zeros_like(params["value"])
    for k, g in zip(keys, ref_grads):
        i, name = _key_to_layer(k)
        expected["layers"][i][name] = g

    def f(v):
        out = c51.loss({**params, "value": v}, batch, config=cfg, nets=NETS)
        return out["loss"], out

    grads, out = torch.func.grad(f, has_aux=True)(params["value"])
    torch.testing.assert_close(out["loss"], ref_out["loss"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out["td_error"], td["td_error"].squeeze(-1), rtol=1e-5, atol=1e-5)
    assert_trees_all_close(grads, expected, rtol=1e-5, atol=1e-5)


# --- errors --------------------------------------------------------------------------------------


def test_errors():
    with pytest.raises(ValueError, match="num_atoms"):
        c51.Config(num_atoms=1)
    with pytest.raises(ValueError, match="v_min must be < v_max"):
        c51.Config(v_min=1.0, v_max=1.0)
    with pytest.raises(ValueError, match="'one_hot' or 'categorical'"):
        c51.Config(action_space="binary")
    with pytest.raises(ValueError, match="atoms"):
        c51.project(torch.zeros(3), torch.zeros(2), 0.0, 1.0, 3)
    cfg = c51.Config(num_atoms=5)
    params = c51.init(0, specs.Unbounded(shape=(D,)), specs.OneHot(N_ACT), cfg, NETS)
    batch = make_batch("one_hot", dtype=torch.float32)
    with pytest.raises(ValueError, match="nets.value returned shape"):
        c51.loss(params, batch, config=c51.Config(num_atoms=7), nets=NETS)
    with pytest.raises(ValueError, match=r"batch\['action'\]"):
        c51.loss(params, batch.set("action", batch["action"][:, :2]), config=cfg, nets=NETS)


def test_any_batch_dims_and_nstep():
    cfg = c51.Config(num_atoms=5, delay_value=False)
    params = c51.init(0, specs.Unbounded(shape=(D,)), specs.OneHot(N_ACT), cfg, NETS)
    assert set(params) == {"value"}
    batch = make_batch("one_hot", dtype=torch.float32, batch=(2, 3))
    out = c51.loss(params, batch, config=cfg, nets=NETS)
    assert out["loss"].shape == () and out["td_error"].shape == (2, 3)
    steps = torch.full((2, 3, 1), 3)
    three = c51.loss(params, batch.set("steps_to_next_obs", steps), config=cfg, nets=NETS)
    cubed = c51.loss(
        params, batch, config=c51.Config(num_atoms=5, delay_value=False, gamma=0.99**3), nets=NETS
    )
    torch.testing.assert_close(three["loss"], cubed["loss"])


# --- compile and vmap ----------------------------------------------------------------------------


def _setup(seed):
    cfg = c51.Config(num_atoms=11, v_min=-5.0, v_max=5.0)
    params = c51.init(seed, specs.Unbounded(shape=(D,)), specs.OneHot(N_ACT), cfg, NETS)
    return params, c51.trainer(optim.adam(1e-3), config=cfg, nets=NETS, tau=0.05)


def test_step_compiles_fullgraph_without_recompiles():
    from torch._dynamo.testing import CompileCounterWithBackend

    torch._dynamo.reset()
    params, train = _setup(0)
    state = train.init(params)
    counter = CompileCounterWithBackend("aot_eager")
    step = torch.compile(train.step, backend=counter, fullgraph=True)
    eager_params, eager_state = params, state
    for i in range(20):
        batch = make_batch("one_hot", seed=i, dtype=torch.float32)
        params, state, metrics = step(params, state, batch)
        eager_params, eager_state, _ = train.step(eager_params, eager_state, batch)
    assert counter.frame_count == 1, f"recompiled: {counter.frame_count} frames"
    assert_trees_all_close(params, eager_params, rtol=1e-4, atol=1e-5)


def test_step_vmaps_over_seeds():
    runs = [_setup(s) for s in range(3)]
    train = runs[0][1]
    ps = [p for p, _ in runs]
    states = [train.init(p) for p in ps]
    batches = [make_batch("one_hot", seed=10 + s, dtype=torch.float32) for s in range(3)]
    vp, _, vm = torch.func.vmap(train.step, randomness="different")(
        tree.stack(ps), tree.stack(states), Record.stack(batches)
    )
    for s in range(3):
        p1, _, m1 = train.step(ps[s], states[s], batches[s])
        assert_trees_all_close(tree.map(lambda t, s=s: t[s], vp), p1, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(vm["loss"][s], m1["loss"])
