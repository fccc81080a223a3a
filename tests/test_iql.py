"""IQL: equations by hand, TorchRL 0.14 parity (float64, values and gradients), trainer."""

from __future__ import annotations

import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import funcrl
from funcrl import iql, optim, tree
from funcrl.objectives.offline import advantage_weights, expectile_loss
from funcrl.record import Record

OBS, ACT, B = 3, 2, 6
SMALL = iql.Nets(num_cells=(8, 8))


def make_batch(seed: int = 0, b: int = B, dtype=torch.float32) -> Record:
    g = torch.Generator().manual_seed(seed)
    term = torch.zeros(b, 1, dtype=torch.bool)
    term[1] = True
    return Record(
        {
            "observation": torch.randn(b, OBS, generator=g).to(dtype),
            "action": (torch.rand(b, ACT, generator=g) * 1.8 - 0.9).to(dtype),
            ("next", "observation"): torch.randn(b, OBS, generator=g).to(dtype),
            ("next", "reward"): torch.randn(b, 1, generator=g).to(dtype),
            ("next", "terminated"): term,
            ("next", "done"): term,
        },
        batch_ndim=1,
    )


def test_expectile_loss_by_hand():
    u = torch.tensor([2.0, -2.0, 0.0])
    torch.testing.assert_close(expectile_loss(u, 0.7), torch.tensor([0.7 * 4, 0.3 * 4, 0.0]))
    torch.testing.assert_close(expectile_loss(u, 0.5), 0.5 * u**2)


@settings(max_examples=30, deadline=None)
@given(st.floats(0.01, 0.99), st.lists(st.floats(-10, 10), min_size=1, max_size=8))
def test_expectile_is_asymmetric_and_nonnegative(tau, xs):
    u = torch.tensor(xs, dtype=torch.float64)
    got = expectile_loss(u, tau)
    assert bool((got >= 0).all())
    torch.testing.assert_close(expectile_loss(-u, 1 - tau), got)


def test_advantage_weights_clamped_at_100():
    a = torch.tensor([0.0, 1.0, 10.0])
    torch.testing.assert_close(advantage_weights(a, 2.0), torch.tensor([1.0, torch.e**2, 100.0]))


def test_loss_by_hand():
    """Linear nets: V(s) = 0, Q(s, a) = 1 and Q'(s, a) = 3 for every input."""
    cfg = iql.Config(num_qvalue_nets=1, expectile=0.7, temperature=0.5, gamma=0.5)
    params = iql.init(0, OBS, ACT, cfg, SMALL)
    params = tree.map(torch.zeros_like, params)
    params["action_bounds"] = {"low": -torch.ones(ACT), "high": torch.ones(ACT)}
    params["qvalue"]["layers"][-1]["bias"] += 1.0
    params["target_qvalue"]["layers"][-1]["bias"] += 3.0
    batch = make_batch()
    out = iql.loss(params, batch, config=cfg, nets=SMALL)
    r = batch["next", "reward"].squeeze(-1)
    y = r  # V(s') = 0
    torch.testing.assert_close(out["loss_qvalue"], torch.nn.functional.smooth_l1_loss(1 + 0 * y, y))
    torch.testing.assert_close(out["loss_value"], torch.tensor(0.7 * 9.0))
    # Actor: the zero net's TanhNormal; every weight is exp(0.5 * (3 - 0)).
    from funcrl.objectives.actor_critic import tanh_normal

    lp = tanh_normal(torch.zeros(B, 2 * ACT), -torch.ones(ACT), torch.ones(ACT), SMALL).log_prob(
        batch["action"]
    )
    torch.testing.assert_close(out["loss_actor"], -(torch.exp(torch.tensor(1.5)) * lp).mean())
    torch.testing.assert_close(out["entropy"], -lp.mean())
    torch.testing.assert_close(out["td_error"], (1 - y).abs())


def test_only_terminated_stops_bootstrap():
    cfg = iql.Config(num_qvalue_nets=1, gamma=1.0)
    params = iql.init(0, OBS, ACT, cfg, SMALL)
    params["value"] = tree.map(torch.zeros_like, params["value"])
    params["value"]["layers"][-1]["bias"] += 5.0
    batch = make_batch()
    batch = batch.set(("next", "done"), torch.ones(B, 1, dtype=torch.bool))  # truncated too
    out = iql.loss(params, batch, config=cfg, nets=SMALL)
    q = out["td_error"]  # |Q - y|; y = r + 5 except row 1 (terminated)
    qs = iql.loss(params, batch.set(("next", "reward"), torch.zeros(B, 1)), config=cfg, nets=SMALL)
    assert not torch.allclose(q, qs["td_error"])
    y = batch["next", "reward"].squeeze(-1) + 5.0 * (~batch["next", "terminated"].squeeze(-1))
    from funcrl.objectives.actor_critic import ensemble_q, resolve

    nets = resolve(SMALL, OBS, ACT)
    pred = ensemble_q(nets.qvalue, params["qvalue"], batch["observation"], batch["action"])[0]
    torch.testing.assert_close(q, (pred - y).abs().detach())


# --- TorchRL parity -------------------------------------------------------------------------------


def torchrl_iql(num_q: int, estimator: str):
    from tensordict.nn import NormalParamExtractor, TensorDictModule
    from torchrl.data import Bounded
    from torchrl.modules import MLP, ProbabilisticActor, TanhNormal, ValueOperator
    from torchrl.objectives import IQLLoss, ValueEstimators

    torch.manual_seed(0)
    spec = Bounded(-2.0 * torch.ones(ACT), 3.0 * torch.ones(ACT), (ACT,))
    body = torch.nn.Sequential(
        MLP(in_features=OBS, out_features=2 * ACT, num_cells=[8, 8]), NormalParamExtractor()
    )
    actor = ProbabilisticActor(
        TensorDictModule(body, in_keys=["observation"], out_keys=["loc", "scale"]),
        in_keys=["loc", "scale"],
        spec=spec,
        distribution_class=TanhNormal,
        distribution_kwargs={"low": spec.space.low, "high": spec.space.high},
    )
    q = ValueOperator(
        MLP(in_features=OBS + ACT, out_features=1, num_cells=[8, 8]),
        in_keys=["observation", "action"],
    )
    v = ValueOperator(MLP(in_features=OBS, out_features=1, num_cells=[8]), in_keys=["observation"])
    m = IQLLoss(
        actor, q, v, num_qvalue_nets=num_q, temperature=3.0, expectile=0.7, loss_function="l2"
    )
    if estimator == "td_lambda":
        m.make_value_estimator(ValueEstimators.TDLambda, gamma=0.9, lmbda=0.8)
    else:
        m.make_value_estimator(ValueEstimators.TD0, gamma=0.9)
    with torch.no_grad():  # the targets differ from the online critics, so that routing shows
        m.target_qvalue_network_params.apply_(lambda x: x.add_(0.05))
    return m


def torchrl_grads(m, out, names):
    """``{name: grads}`` of the summed loss terms in the funcrl layout of each network."""
    from funcrl.objectives.actor_critic import read_torchrl

    total = out["loss_actor"] + out["loss_qvalue"] + out["loss_value"]
    tds = {
        "actor": (m.actor_network, m.actor_network_params, m.actor_network.module[0].module[0]),
        "qvalue": (m.qvalue_network, m.qvalue_network_params, m.qvalue_network.module),
        "value": (m.value_network, m.value_network_params, m.value_network.module),
    }
    leaves = {k: list(tds[k][1].values(True, True)) for k in names}
    flat = torch.autograd.grad(total, [x for k in names for x in leaves[k]])
    grads, i = {}, 0
    for k in names:
        module, td, inner = tds[k]
        gtd = td.detach().clone()
        for key, g in zip(list(td.keys(True, True)), flat[i : i + len(leaves[k])]):
            gtd.set(key, g)
        i += len(leaves[k])
        grads[k] = read_torchrl(module, gtd, inner)[1]
    return grads


@pytest.mark.torchrl
@pytest.mark.parametrize("num_q,estimator", [(2, "td0"), (3, "td_lambda")])
def test_parity_with_torchrl(num_q, estimator):
    pytest.importorskip("torchrl")
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    warnings.filterwarnings("ignore", message="No target network updater")
    try:
        m = torchrl_iql(num_q, estimator)
        config, nets, params = iql.from_torchrl(m)
        assert config.expectile == 0.7 and config.temperature == 3.0
        assert config.num_qvalue_nets == num_q and config.value_estimator == estimator
        g = torch.Generator().manual_seed(0)
        batch = make_batch(dtype=torch.float64)
        batch = batch.set("action", torch.rand(B, ACT, generator=g, dtype=torch.float64) * 5 - 2)
        td = batch.to_tensordict()
        ref = m(td)
        grads_ref = torchrl_grads(m, ref, ("actor", "qvalue", "value"))

        def total(p):
            out = iql.loss({**params, **p}, batch, config=config, nets=nets)
            return out["loss_actor"] + out["loss_qvalue"] + out["loss_value"], out

        trainable = {k: params[k] for k in ("actor", "qvalue", "value")}
        grads, out = torch.func.grad(total, has_aux=True)(trainable)
        for k in ("loss_actor", "loss_qvalue", "loss_value", "entropy"):
            torch.testing.assert_close(out[k], ref[k].detach(), rtol=1e-7, atol=1e-9, msg=k)
        # TorchRL writes the squared TD error as the priority; funcrl's is its absolute value.
        torch.testing.assert_close(out["td_error"], td["td_error"].sqrt())
        torch.testing.assert_close(tree.leaves(grads), tree.leaves(grads_ref), rtol=1e-7, atol=1e-9)
    finally:
        torch.set_default_dtype(old)


# --- trainer, act ---------------------------------------------------------------------------------


def test_trainer_moves_every_net_and_polyaks_the_target():
    train = iql.trainer(optim.adam(1e-2), nets=SMALL, tau=0.5)
    params = iql.init(0, OBS, ACT, nets=SMALL)
    state = train.init(params)
    new, state, metrics = train.step(params, state, make_batch(), funcrl.random.key(0))
    for k in ("actor", "qvalue", "value"):
        assert not torch.equal(tree.leaves(new[k])[0], tree.leaves(params[k])[0]), k
    expected = tree.map(lambda t, o: 0.5 * t + 0.5 * o, params["target_qvalue"], new["qvalue"])
    torch.testing.assert_close(tree.leaves(new["target_qvalue"]), tree.leaves(expected))
    assert {"loss_actor", "loss_qvalue", "loss_value", "entropy"} <= set(metrics)


def test_act_deterministic_is_the_policy_mode_inside_bounds():
    params = iql.init(0, OBS, funcrl.specs.Bounded(-2.0, 3.0, shape=(ACT,)), nets=SMALL)
    obs = torch.randn(5, OBS)
    a = iql.act(params, obs, nets=SMALL, mode="deterministic")
    assert a.shape == (5, ACT) and bool((a > -2).all()) and bool((a < 3).all())
    r = iql.act(params, obs, nets=SMALL, key=funcrl.random.key(0))
    assert not torch.equal(a, r)


def test_iql_losses_by_hand():
    from funcrl.objectives.offline import iql_losses

    cfg = iql.Config(expectile=0.7, temperature=2.0, loss_function="l2")
    min_q = torch.tensor([1.0, 0.0])
    v = torch.tensor([0.5, 1.0], requires_grad=True)
    qs = torch.tensor([[2.0, 0.0], [1.0, 1.0]], requires_grad=True)  # [N=2, B=2]
    y = torch.tensor([1.0, 0.5])
    log_prob = torch.tensor([-1.0, -2.0], requires_grad=True)
    out = iql_losses(min_q, v, qs, y, log_prob, cfg, None)
    # Value: u = (0.5, -1): 0.7 * 0.25 and 0.3 * 1 -> mean 0.2375.
    torch.testing.assert_close(out["loss_value"], torch.tensor(0.2375))
    # Critics: per sample sum_i (q_i - y)^2 = (1 + 0, 0.25 + 0.25) -> mean 0.75.
    torch.testing.assert_close(out["loss_qvalue"], torch.tensor(0.75))
    # Actor: w = exp(2 u) = (e, e^-2), loss -w log pi = (e, 2 e^-2) -> mean.
    e = torch.tensor(1.0).exp()
    torch.testing.assert_close(out["loss_actor"], (e + 2 * e.pow(-2)) / 2)
    torch.testing.assert_close(out["entropy"], torch.tensor(1.5))
    torch.testing.assert_close(out["td_error"], torch.tensor([1.0, 0.5]))
    # The advantage weights are gradient-stopped: the actor loss does not reach V.
    (g,) = torch.autograd.grad(out["loss_actor"], v, allow_unused=True)
    assert g is None
