"""Discrete IQL: the equations by hand, TorchRL 0.14 parity (values and gradients, float64),
compile and vmap of the trainer's step, acting."""

from __future__ import annotations

import math
import os
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import funcrl
from funcrl import Record, discrete_iql, optim, specs, tree
from funcrl.nn import MLP
from funcrl.testing import assert_trees_all_close

os.environ.setdefault("RL_WARNINGS", "False")
OBS, N, B = 3, 4, 8
NETS = discrete_iql.Nets(num_cells=(16,))


def make_batch(space="one_hot", seed=0, lead=(B,), dtype=torch.float32) -> Record:
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, N, lead, generator=g)
    term = torch.rand(*lead, 1, generator=g) < 0.3
    return Record(
        {
            "observation": torch.randn(*lead, OBS, generator=g, dtype=dtype),
            "action": idx if space == "categorical" else torch.nn.functional.one_hot(idx, N),
            ("next", "observation"): torch.randn(*lead, OBS, generator=g, dtype=dtype),
            ("next", "reward"): torch.randn(*lead, 1, generator=g, dtype=dtype),
            ("next", "terminated"): term,
            ("next", "done"): term | (torch.rand(*lead, 1, generator=g) < 0.2),
        },
        batch_ndim=len(lead),
    )


# --- the equations by hand -----------------------------------------------------------------------


def _constant(bias, stacked=False):
    """Linear-layer params whose output is ``bias`` whatever the observation."""
    bias = torch.as_tensor(bias, dtype=torch.float64)
    weight = torch.zeros(*bias.shape, OBS, dtype=torch.float64)
    return {"layers": [{"weight": weight, "bias": bias}]}


def test_loss_by_hand():
    # One-layer nets with zero weights: Q, V and the logits are their biases.
    nets = discrete_iql.Nets(num_cells=())
    cfg = discrete_iql.Config(expectile=0.7, temperature=2.0, gamma=0.9, loss_function="l2")
    logits = [0.0, 1.0, 2.0, 0.5]
    q = [[1.0, 2.0, 0.0, 0.0], [3.0, 1.5, 0.0, 0.0]]  # members; action 1 -> 2.0 and 1.5
    q_target = [[1.0, 0.4, 0.0, 0.0], [3.0, 0.6, 0.0, 0.0]]  # action 1 -> min 0.4
    v = 1.0
    params = {
        "actor": _constant(logits),
        "qvalue": _constant(q),
        "target_qvalue": _constant(q_target),
        "value": _constant([v]),
    }
    batch = Record(
        {
            "observation": torch.zeros(1, OBS, dtype=torch.float64),
            "action": torch.tensor([[0, 1, 0, 0]]),
            ("next", "observation"): torch.zeros(1, OBS, dtype=torch.float64),
            ("next", "reward"): torch.tensor([[0.5]], dtype=torch.float64),
            ("next", "terminated"): torch.tensor([[False]]),
            ("next", "done"): torch.tensor([[False]]),
        },
        batch_ndim=1,
    )
    out = discrete_iql.loss(params, batch, config=cfg, nets=nets)
    u = 0.4 - v  # min target Q minus V: negative, weight 1 - tau
    assert out["loss_value"].item() == pytest.approx(0.3 * u**2)
    y = 0.5 + 0.9 * v
    assert out["loss_qvalue"].item() == pytest.approx((2.0 - y) ** 2 + (1.5 - y) ** 2)
    log_prob = 1.0 - math.log(sum(math.exp(x) for x in logits))
    assert out["loss_actor"].item() == pytest.approx(-math.exp(2.0 * u) * log_prob)
    assert out["entropy"].item() == pytest.approx(-log_prob)
    assert out["td_error"].tolist() == pytest.approx([max(abs(2.0 - y), abs(1.5 - y))])


@settings(max_examples=20, deadline=None)
@given(terminated=st.booleans(), truncated=st.booleans(), r=st.floats(-5, 5))
def test_only_terminated_stops_bootstrap(terminated, truncated, r):
    nets = discrete_iql.Nets(num_cells=())
    params = {
        "actor": _constant([0.0] * N),
        "qvalue": _constant([[0.0] * N]),
        "target_qvalue": _constant([[0.0] * N]),
        "value": _constant([2.0]),
    }
    batch = Record(
        {
            "observation": torch.zeros(1, OBS, dtype=torch.float64),
            "action": torch.tensor([2]),
            ("next", "observation"): torch.zeros(1, OBS, dtype=torch.float64),
            ("next", "reward"): torch.tensor([[r]], dtype=torch.float64),
            ("next", "terminated"): torch.tensor([[terminated]]),
            ("next", "done"): torch.tensor([[terminated or truncated]]),
        },
        batch_ndim=1,
    )
    cfg = discrete_iql.Config(action_space="categorical", num_qvalue_nets=1, gamma=0.5)
    out = discrete_iql.loss(params, batch, config=cfg, nets=nets)
    y = r + (0.0 if terminated else 0.5 * 2.0)
    assert out["td_error"].item() == pytest.approx(abs(y))


def test_categorical_index_shapes_agree():
    cfg = discrete_iql.Config(action_space="categorical")
    params = discrete_iql.init(0, OBS, specs.Categorical(N), cfg, NETS)
    batch = make_batch("categorical")
    flat = discrete_iql.loss(params, batch, config=cfg, nets=NETS)
    col = discrete_iql.loss(
        params, batch.set("action", batch["action"].unsqueeze(-1)), config=cfg, nets=NETS
    )
    one_hot = discrete_iql.loss(params, make_batch("one_hot"), nets=NETS)
    for k in ("loss_actor", "loss_qvalue", "loss_value", "entropy"):
        torch.testing.assert_close(flat[k], col[k])
        torch.testing.assert_close(flat[k], one_hot[k])


# --- TorchRL parity ------------------------------------------------------------------------------


def torchrl_discrete_iql(space: str, num_q: int, estimator: str):
    from tensordict.nn import TensorDictModule
    from torch.distributions import Categorical as TorchCategorical
    from torchrl.data import Categorical, OneHot
    from torchrl.modules import MLP as TorchRLMLP
    from torchrl.modules import OneHotCategorical, ProbabilisticActor, ValueOperator
    from torchrl.objectives import DiscreteIQLLoss, ValueEstimators

    torch.manual_seed(0)
    spec = OneHot(N) if space == "one_hot" else Categorical(N)
    actor = ProbabilisticActor(
        TensorDictModule(
            TorchRLMLP(in_features=OBS, out_features=N, num_cells=[8, 8]),
            in_keys=["observation"],
            out_keys=["logits"],
        ),
        in_keys=["logits"],
        spec=spec,
        distribution_class=OneHotCategorical if space == "one_hot" else TorchCategorical,
    )
    q = TensorDictModule(
        TorchRLMLP(in_features=OBS, out_features=N, num_cells=[8]),
        in_keys=["observation"],
        out_keys=["state_action_value"],
    )
    v = ValueOperator(
        TorchRLMLP(in_features=OBS, out_features=1, num_cells=[8]), in_keys=["observation"]
    )
    m = DiscreteIQLLoss(
        actor,
        q,
        v,
        action_space=spec,
        num_qvalue_nets=num_q,
        temperature=3.0,
        expectile=0.7,
        loss_function="l2",
    )
    if estimator == "td_lambda":
        m.make_value_estimator(ValueEstimators.TDLambda, gamma=0.9, lmbda=0.8)
    else:
        m.make_value_estimator(ValueEstimators.TD0, gamma=0.9)
    with torch.no_grad():  # targets differ from the online critics, so that routing shows
        m.target_qvalue_network_params.apply_(lambda x: x.add_(0.05))
    return m


def torchrl_grads(m, total, nets):
    """``{name: grads}`` of ``total`` in the funcrl layout of each network."""
    from funcrl.objectives import discrete

    grads = {}
    for name in ("actor", "qvalue", "value"):
        wrapper, td = getattr(m, f"{name}_network"), getattr(m, f"{name}_network_params")
        leaves = list(td.values(True, True))
        flat = torch.autograd.grad(total, leaves, retain_graph=True)
        gtd = td.detach().clone()
        for key, g in zip(list(td.keys(True, True)), flat):
            gtd.set(key, g)
        inner = discrete.inner_module(wrapper, "test")
        grads[name] = discrete.read_params(gtd, wrapper, inner, getattr(nets, name))
    return grads


@pytest.mark.torchrl
@pytest.mark.parametrize(
    "space,num_q,estimator",
    [("one_hot", 2, "td0"), ("categorical", 3, "td_lambda"), ("categorical", 1, "td0")],
)
def test_parity_with_torchrl(space, num_q, estimator):
    pytest.importorskip("torchrl", reason="TorchRL is the reference implementation")
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    warnings.filterwarnings("ignore", message="No target network updater")
    try:
        m = torchrl_discrete_iql(space, num_q, estimator)
        config, nets, params = discrete_iql.from_torchrl(m)
        assert config.action_space == space and config.num_qvalue_nets == num_q
        assert (config.expectile, config.temperature) == (0.7, 3.0)
        assert config.value_estimator == estimator
        lead = (3, 4) if estimator == "td_lambda" else (B,)
        batch = make_batch(space, lead=lead, dtype=torch.float64)
        td = batch.to_tensordict()
        ref = m(td)
        total_ref = ref["loss_actor"] + ref["loss_qvalue"] + ref["loss_value"]
        grads_ref = torchrl_grads(m, total_ref, nets)
        if num_q == 1:  # TorchRL keeps one critic without the ensemble dim
            grads_ref["qvalue"] = tree.stack([grads_ref["qvalue"]])

        def total(p):
            out = discrete_iql.loss({**params, **p}, batch, config=config, nets=nets)
            return out["loss_actor"] + out["loss_qvalue"] + out["loss_value"], out

        trainable = {k: params[k] for k in ("actor", "qvalue", "value")}
        grads, out = torch.func.grad(total, has_aux=True)(trainable)
        for k in ("loss_actor", "loss_qvalue", "loss_value", "entropy"):
            torch.testing.assert_close(out[k], ref[k].detach(), msg=k)
        # TorchRL writes the squared TD error as the priority; funcrl's is its absolute value.
        torch.testing.assert_close(out["td_error"], td["td_error"].sqrt())
        assert_trees_all_close(grads, grads_ref, rtol=1e-7, atol=1e-9)
    finally:
        torch.set_default_dtype(old)


# --- trainer: compile and vmap -------------------------------------------------------------------


def test_step_compiles_fullgraph_without_recompiles():
    from torch._dynamo.testing import CompileCounterWithBackend

    torch._dynamo.reset()
    train = discrete_iql.trainer(optim.adam(1e-3), nets=NETS)
    params = discrete_iql.init(0, OBS, specs.OneHot(N), nets=NETS)
    state = train.init(params)
    counter = CompileCounterWithBackend("eager")
    step = torch.compile(train.step, backend=counter, fullgraph=True)
    eager_params, eager_state = params, state
    for i in range(4):
        batch = make_batch(seed=i)
        params, state, metrics = step(params, state, batch)
        eager_params, eager_state, _ = train.step(eager_params, eager_state, batch)
    assert counter.frame_count == 1, f"recompiled: {counter.frame_count} frames"
    assert_trees_all_close(params, eager_params, rtol=1e-4, atol=1e-5)
    assert not tree.allclose(params["target_qvalue"], params["qvalue"])  # Polyak, not a copy


def test_step_vmaps_over_seeds():
    cfg = discrete_iql.Config(action_space="categorical")
    train = discrete_iql.trainer(optim.adam(1e-3), config=cfg, nets=NETS)
    ps = [discrete_iql.init(s, OBS, specs.Categorical(N), cfg, NETS) for s in range(3)]
    states = [train.init(p) for p in ps]
    batches = [make_batch("categorical", seed=10 + s) for s in range(3)]
    vp, _, vm = torch.func.vmap(train.step, randomness="different")(
        tree.stack(ps), tree.stack(states), Record.stack(batches)
    )
    for s in range(3):
        p1, _, m1 = train.step(ps[s], states[s], batches[s])
        assert_trees_all_close(tree.map(lambda t, s=s: t[s], vp), p1, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(vm["loss_actor"][s], m1["loss_actor"])


# --- acting --------------------------------------------------------------------------------------


def test_act_modes_and_mask():
    nets = discrete_iql.Nets(actor=MLP(OBS, N, num_cells=(8,)), num_cells=(8,))
    params = discrete_iql.init(0, OBS, specs.OneHot(N), nets=nets)
    obs = torch.randn(64, OBS)
    logits = nets.actor(params["actor"], obs)
    det = discrete_iql.act(params, obs, nets=nets, mode="deterministic")
    assert torch.equal(det.argmax(-1), logits.argmax(-1)) and det.shape == (64, N)
    mask = torch.zeros(64, N, dtype=torch.bool)
    mask[:, 2] = True
    key = funcrl.random.key(0)
    drawn = discrete_iql.act(params, obs, nets=nets, key=key, action_mask=mask)
    assert bool((drawn.argmax(-1) == 2).all())
    cat = discrete_iql.Config(action_space="categorical")
    idx = discrete_iql.act(params, obs, config=cat, nets=nets, mode="deterministic")
    assert torch.equal(idx, logits.argmax(-1))
