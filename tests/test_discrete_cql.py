"""Discrete CQL: the equations by hand, TorchRL 0.14 parity (values and gradients, float64),
compile and vmap of the trainer's step, acting."""

from __future__ import annotations

import math
import os

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import funcrl
from funcrl import Record, discrete_cql, optim, specs, tree
from funcrl.testing import assert_trees_all_close

os.environ.setdefault("RL_WARNINGS", "False")
OBS, N, B = 3, 4, 8
NETS = discrete_cql.Nets(num_cells=(16,))


def make_batch(space="one_hot", seed=0, lead=(B,), dtype=torch.float32, mask=False) -> Record:
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, N, lead, generator=g)
    term = torch.rand(*lead, 1, generator=g) < 0.3
    data = {
        "observation": torch.randn(*lead, OBS, generator=g, dtype=dtype),
        "action": idx if space == "categorical" else torch.nn.functional.one_hot(idx, N),
        ("next", "observation"): torch.randn(*lead, OBS, generator=g, dtype=dtype),
        ("next", "reward"): torch.randn(*lead, 1, generator=g, dtype=dtype),
        ("next", "terminated"): term,
        ("next", "done"): term | (torch.rand(*lead, 1, generator=g) < 0.2),
    }
    if mask:
        m = torch.rand(*lead, N, generator=g) < 0.6
        data["action_mask"] = m | torch.nn.functional.one_hot(idx, N).bool()
        nm = torch.rand(*lead, N, generator=g) < 0.6
        nm[..., 0] = True
        data[("next", "action_mask")] = nm
    return Record(data, batch_ndim=len(lead))


# --- the equations by hand -----------------------------------------------------------------------


def _constant(bias):
    """Linear-layer params whose output is ``bias`` whatever the observation."""
    bias = torch.as_tensor(bias, dtype=torch.float64)
    return {
        "layers": [{"weight": torch.zeros(*bias.shape, OBS, dtype=torch.float64), "bias": bias}]
    }


def _one(action, reward=0.5, terminated=False, mask=None, next_mask=None):
    data = {
        "observation": torch.zeros(1, OBS, dtype=torch.float64),
        "action": torch.tensor([action]),
        ("next", "observation"): torch.zeros(1, OBS, dtype=torch.float64),
        ("next", "reward"): torch.tensor([[reward]], dtype=torch.float64),
        ("next", "terminated"): torch.tensor([[terminated]]),
        ("next", "done"): torch.tensor([[terminated]]),
    }
    if mask is not None:
        data["action_mask"] = torch.tensor([mask])
        data[("next", "action_mask")] = torch.tensor([next_mask])
    return Record(data, batch_ndim=1)


def test_loss_by_hand():
    nets = discrete_cql.Nets(num_cells=())
    q, q_target = [1.0, 2.0, 0.0, -1.0], [0.5, 3.0, 1.0, 0.0]
    params = {"value": _constant(q), "target_value": _constant(q_target)}
    cfg = discrete_cql.Config(action_space="categorical", gamma=0.9)
    out = discrete_cql.loss(params, _one(0), config=cfg, nets=nets)
    y = 0.5 + 0.9 * 3.0
    assert out["loss_qvalue"].item() == pytest.approx(0.5 * (1.0 - y) ** 2)
    lse = math.log(sum(math.exp(x) for x in q))
    assert out["loss_cql"].item() == pytest.approx(lse - 1.0)
    assert out["td_error"].tolist() == pytest.approx([abs(1.0 - y)])
    assert out["pred_value"].item() == pytest.approx(sum(q) / 4)
    assert out["target_value"].item() == pytest.approx(y)


def test_mask_leaves_actions_out_of_the_max_and_the_log_sum_exp():
    nets = discrete_cql.Nets(num_cells=())
    q, q_target = [1.0, 2.0, 0.0, -1.0], [0.5, 3.0, 1.0, 0.0]
    params = {"value": _constant(q), "target_value": _constant(q_target)}
    cfg = discrete_cql.Config(action_space="categorical", gamma=0.9, action_mask_key="action_mask")
    batch = _one(0, mask=[True, False, True, False], next_mask=[True, False, True, True])
    out = discrete_cql.loss(params, batch, config=cfg, nets=nets)
    y = 0.5 + 0.9 * 1.0  # action 1 is masked at s'
    assert out["target_value"].item() == pytest.approx(y)
    assert out["loss_cql"].item() == pytest.approx(math.log(math.exp(1.0) + math.exp(0.0)) - 1.0)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(-20, 20), min_size=N, max_size=N), st.integers(0, N - 1))
def test_conservative_penalty_is_nonnegative(q, a):
    q = torch.tensor(q, dtype=torch.float64)
    assert discrete_cql.conservative_penalty(q, q[a]).item() >= -1e-12


@settings(max_examples=20, deadline=None)
@given(terminated=st.booleans(), r=st.floats(-5, 5))
def test_only_terminated_stops_bootstrap(terminated, r):
    nets = discrete_cql.Nets(num_cells=())
    params = {"value": _constant([0.0] * N), "target_value": _constant([2.0, 1.0, 0.0, 0.0])}
    cfg = discrete_cql.Config(action_space="categorical", gamma=0.5)
    batch = _one(1, reward=r, terminated=terminated).set(("next", "done"), torch.tensor([[True]]))
    out = discrete_cql.loss(params, batch, config=cfg, nets=nets)
    assert out["target_value"].item() == pytest.approx(r + (0.0 if terminated else 1.0))


# --- TorchRL parity ------------------------------------------------------------------------------


def torchrl_discrete_cql(space, mask, delay_value, loss_function, estimator):
    from torchrl.data import Categorical, OneHot
    from torchrl.modules import MLP as TorchRLMLP
    from torchrl.modules import QValueActor
    from torchrl.objectives import DiscreteCQLLoss, ValueEstimators

    torch.manual_seed(0)
    spec = OneHot(N) if space == "one_hot" else Categorical(N)
    actor = QValueActor(
        TorchRLMLP(in_features=OBS, out_features=N, num_cells=[8, 8]),
        in_keys=["observation"],
        spec=spec,
        action_mask_key="action_mask" if mask else None,
    )
    m = DiscreteCQLLoss(
        actor, loss_function=loss_function, delay_value=delay_value, action_space=spec
    )
    if estimator == "td_lambda":
        m.make_value_estimator(ValueEstimators.TDLambda, gamma=0.9, lmbda=0.8)
    else:
        kind = ValueEstimators.TD1 if estimator == "td1" else ValueEstimators.TD0
        m.make_value_estimator(kind, gamma=0.9)
    return m


@pytest.mark.torchrl
@pytest.mark.parametrize(
    "space,mask,delay_value,loss_function,estimator",
    [
        ("one_hot", False, True, "l2", "td0"),
        ("categorical", True, True, "smooth_l1", "td0"),
        ("one_hot", True, False, "l1", "td_lambda"),
        ("categorical", False, False, "l2", "td1"),
    ],
)
def test_parity_with_torchrl(space, mask, delay_value, loss_function, estimator):
    pytest.importorskip("torchrl", reason="TorchRL is the reference implementation")
    from funcrl.objectives import discrete

    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        m = torchrl_discrete_cql(space, mask, delay_value, loss_function, estimator)
        config, nets, params = discrete_cql.from_torchrl(m)
        assert config.action_space == space and config.delay_value == delay_value
        assert config.value_estimator == estimator and config.loss_function == loss_function
        lead = (B,) if estimator == "td0" else (2, 4)
        batch = make_batch(space, lead=lead, dtype=torch.float64, mask=mask)
        td = batch.to_tensordict()
        ref = m(td)
        online = list(m.value_network_params.values(True, True))
        flat = torch.autograd.grad(ref["loss_qvalue"] + ref["loss_cql"], online)
        gtd = m.value_network_params.detach().clone()
        for key, g in zip(list(m.value_network_params.keys(True, True)), flat):
            gtd.set(key, g)
        inner = discrete.inner_module(m.value_network, "test")
        grads_ref = discrete.read_params(gtd, m.value_network, inner, nets.value)

        def total(v):
            out = discrete_cql.loss({**params, "value": v}, batch, config=config, nets=nets)
            return out["loss_qvalue"] + out["loss_cql"], out

        grads, out = torch.func.grad(total, has_aux=True)(params["value"])
        for k in ("loss_qvalue", "loss_cql", "target_value"):
            torch.testing.assert_close(out[k], ref[k].detach(), msg=k)
        if not mask:  # TorchRL averages the masked values (finfo.min); funcrl the raw ones
            torch.testing.assert_close(out["pred_value"], ref["pred_value"])
        # TorchRL writes (Q - y)^2 as [*B, 1]; funcrl returns |Q - y| as [*B].
        torch.testing.assert_close(out["td_error"], td["td_error"].squeeze(-1).sqrt())
        assert_trees_all_close(grads, grads_ref, rtol=1e-7, atol=1e-9)
    finally:
        torch.set_default_dtype(old)


@pytest.mark.torchrl
def test_torchrl_bootstraps_from_the_online_net_funcrl_from_the_target():
    """TorchRL 0.14's DiscreteCQLLoss ignores its target weights (see the module docstring):
    moving them changes funcrl's loss and not TorchRL's. If TorchRL fixes this, this test fails
    and the documented difference goes."""
    pytest.importorskip("torchrl", reason="TorchRL is the reference implementation")
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        m = torchrl_discrete_cql("one_hot", False, True, "l2", "td0")
        batch = make_batch(dtype=torch.float64)
        before = m(batch.to_tensordict())["loss_qvalue"].detach()
        with torch.no_grad():
            m.target_value_network_params.apply_(lambda x: x.add_(0.5))
        after = m(batch.to_tensordict())["loss_qvalue"].detach()
        torch.testing.assert_close(after, before)
        config, nets, params = discrete_cql.from_torchrl(m)
        ours = discrete_cql.loss(params, batch, config=config, nets=nets)["loss_qvalue"]
        assert not torch.allclose(ours, before)
        same = {**params, "target_value": params["value"]}
        torch.testing.assert_close(
            discrete_cql.loss(same, batch, config=config, nets=nets)["loss_qvalue"], before
        )
    finally:
        torch.set_default_dtype(old)


# --- trainer: compile and vmap -------------------------------------------------------------------


def test_step_compiles_fullgraph_without_recompiles():
    from torch._dynamo.testing import CompileCounterWithBackend

    torch._dynamo.reset()
    cfg = discrete_cql.Config(action_mask_key="action_mask")
    train = discrete_cql.trainer(optim.adam(1e-3), config=cfg, nets=NETS, hard_target_period=3)
    params = discrete_cql.init(0, OBS, specs.OneHot(N), cfg, NETS)
    state = train.init(params)
    counter = CompileCounterWithBackend("eager")
    step = torch.compile(train.step, backend=counter, fullgraph=True)
    eager_params, eager_state = params, state
    for i in range(3):
        batch = make_batch(seed=i, mask=True)
        params, state, _ = step(params, state, batch)
        eager_params, eager_state, _ = train.step(eager_params, eager_state, batch)
    assert counter.frame_count == 1, f"recompiled: {counter.frame_count} frames"
    assert_trees_all_close(params, eager_params, rtol=1e-4, atol=1e-5)
    assert_trees_all_close(params["target_value"], params["value"])  # copied at step 3


def test_step_vmaps_over_seeds():
    cfg = discrete_cql.Config(action_space="categorical")
    train = discrete_cql.trainer(optim.adam(1e-3), config=cfg, nets=NETS)
    ps = [discrete_cql.init(s, OBS, specs.Categorical(N), cfg, NETS) for s in range(3)]
    states = [train.init(p) for p in ps]
    batches = [make_batch("categorical", seed=10 + s) for s in range(3)]
    vp, _, vm = torch.func.vmap(train.step, randomness="different")(
        tree.stack(ps), tree.stack(states), Record.stack(batches)
    )
    for s in range(3):
        p1, _, m1 = train.step(ps[s], states[s], batches[s])
        assert_trees_all_close(tree.map(lambda t, s=s: t[s], vp), p1, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(vm["loss_cql"][s], m1["loss_cql"])


def test_trainer_lowers_the_unseen_actions():
    # Every transition takes action 0: CQL pushes the other actions' values below it.
    train = discrete_cql.trainer(optim.adam(1e-2), nets=NETS)
    params = discrete_cql.init(0, OBS, specs.OneHot(N), nets=NETS)
    state = train.init(params)
    batch = make_batch(seed=0).set("action", torch.nn.functional.one_hot(torch.zeros(B).long(), N))
    for _ in range(50):
        params, state, metrics = train.step(params, state, batch)
    q = NETS.resolve(OBS, N).value(params["value"], batch["observation"])
    assert bool((q.argmax(-1) == 0).all())


# --- acting --------------------------------------------------------------------------------------


def test_act_greedy_masked_and_epsilon():
    cfg = discrete_cql.Config(action_space="categorical")
    params = discrete_cql.init(0, OBS, specs.Categorical(N), cfg, NETS)
    obs = torch.randn(64, OBS)
    q = NETS.resolve(OBS, N).value(params["value"], obs)
    det = discrete_cql.act(params, obs, config=cfg, nets=NETS, mode="deterministic")
    assert torch.equal(det, q.argmax(-1))
    mask = torch.zeros(64, N, dtype=torch.bool)
    mask[:, 3] = True
    key = funcrl.random.key(0)
    drawn = discrete_cql.act(
        params, obs, config=cfg, nets=NETS, key=key, epsilon=1.0, action_mask=mask
    )
    assert bool((drawn == 3).all())
