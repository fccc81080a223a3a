"""SAC v1/v2: equations by hand, TorchRL 0.14 parity (values and every gradient, same RNG draws),
alpha clamps, terminated vs truncated, and the generic step under torch.compile and vmap.

The helpers at the top are shared with the other off-policy objective tests (imported from here).
"""

from __future__ import annotations

import functools
import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import funcrl
from funcrl import optim, sac, tree
from funcrl.objectives import actor_critic
from funcrl.record import Record

OBS, ACT, B, H = 3, 2, 8, 16


# -- shared helpers --------------------------------------------------------------------------------


def make_batch(b=B, obs=OBS, act=ACT, *, seed=0, terminated=None, truncated=None, action=None):
    g = torch.Generator().manual_seed(seed)
    term = torch.zeros(b, 1, dtype=torch.bool) if terminated is None else terminated
    trunc = torch.zeros(b, 1, dtype=torch.bool) if truncated is None else truncated
    if action is None:
        action = torch.rand(b, act, generator=g) * 2 - 1
    return Record(
        {
            "observation": torch.randn(b, obs, generator=g),
            "action": action,
            ("next", "observation"): torch.randn(b, obs, generator=g),
            ("next", "reward"): torch.randn(b, 1, generator=g),
            ("next", "terminated"): term,
            ("next", "truncated"): trunc,
            ("next", "done"): term | trunc,
        },
        batch_ndim=1,
    )


def td_from_record(batch):
    from tensordict import TensorDict

    td = TensorDict({}, batch_size=batch.batch_size)
    for k in batch.keys(include_nested=True, leaves_only=True):
        td.set(k, batch[k].clone())
    return td


def mlp_to_torch(p, act=torch.nn.ReLU):
    """A torch.nn.Sequential with the same weights as a funcrl MLP's params (ReLU between)."""
    layers = []
    for i, lp in enumerate(p["layers"]):
        lin = torch.nn.Linear(lp["weight"].shape[1], lp["weight"].shape[0])
        with torch.no_grad():
            lin.weight.copy_(lp["weight"])
            lin.bias.copy_(lp["bias"])
        layers.append(lin)
        if i < len(p["layers"]) - 1:
            layers.append(act())
    return CatSequential(*layers)


class CatSequential(torch.nn.Sequential):
    """An ``nn.Sequential`` whose inputs are concatenated first (TorchRL's MLP does the same)."""

    def forward(self, *xs):
        return super().forward(torch.cat(xs, -1))


def seq_grads(tdp, prefix=()):
    """Gradients of a TorchRL params TensorDict of an ``nn.Sequential`` MLP, in funcrl's layout
    (``{"layers": [{"weight", "bias"}...]}``); works for stacked ensembles too."""
    sub = tdp
    for k in prefix:
        sub = sub[k]
    idx = sorted(int(k) for k in sub.keys())
    return {
        "layers": [
            {"weight": sub[str(i)]["weight"].grad, "bias": sub[str(i)]["bias"].grad} for i in idx
        ]
    }


def assert_close(a, b, rtol=1e-4, atol=1e-5):
    la, lb = tree.leaves(a), tree.leaves(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb):
        assert x.shape == y.shape, (x.shape, y.shape)
        torch.testing.assert_close(x, y, rtol=rtol, atol=atol)


def grads_of(loss_fn, params, keys, batch, seed):
    def total(p):
        torch.manual_seed(seed)
        out = loss_fn({**params, **p}, batch)
        return funcrl.training.total_loss(out), out

    return torch.func.grad(total, has_aux=True)({k: params[k] for k in keys})


def check_compiled_and_vmapped(
    loss_fn, params, batch, trainable, targets, steps=20, samples=True, has_state=False
):
    """The generic step: fullgraph compile (zero breaks, one graph, no recompiles over ``steps``)
    then vmap over 3 seeds with randomness="different"."""
    train = funcrl.update(
        loss_fn, optim.adam(1e-3), trainable=trainable, targets=targets, has_state=has_state
    )
    state = train.init(params)
    # fullgraph=True raises on any graph break; the counter sees every (re)compilation. The
    # "eager" backend checks what Dynamo captures without paying for Inductor's codegen.
    torch._dynamo.reset()
    from torch._dynamo.testing import CompileCounter

    cnt = CompileCounter()
    step = torch.compile(train.step, backend=cnt, fullgraph=True)
    p, s = params, state
    for _ in range(steps):
        p, s, metrics = step(p, s, batch)
    assert cnt.frame_count == 1, f"recompiled: {cnt.frame_count} frames"
    for v in metrics.values():
        assert torch.isfinite(v).all()
    assert int(s.step) == steps
    torch._dynamo.reset()
    # vmap over a leading seed dim of params, optimizer state and batch.
    seeds = 3
    ps = tree.stack([params] * seeds)
    ss = tree.stack([state] * seeds)
    bs = Record.stack([batch] * seeds)
    out_p, out_s, m = torch.func.vmap(train.step, randomness="different")(ps, ss, bs)
    assert tree.leaves(out_p)[0].shape[0] == seeds
    for v in m.values():
        assert v.shape[0] == seeds and torch.isfinite(v).all()
    if samples:
        # randomness="different": each seed draws its own noise, so the actor losses differ.
        assert not torch.allclose(m["loss_actor"][0], m["loss_actor"][1])
    return out_p


# -- equations -------------------------------------------------------------------------------------


def test_equations_by_hand():
    q = torch.tensor([[1.0, 2.0], [3.0, 0.0]])
    lp = torch.tensor([0.5, -1.0])
    assert torch.equal(
        sac.soft_value(q, lp, torch.tensor(2.0)), torch.tensor([[0.0, 4.0], [2.0, 2.0]])
    )
    y = sac.td0_target(
        torch.tensor([1.0, 1.0]), torch.tensor([False, True]), torch.tensor([10.0, 10.0]), 0.5
    )
    assert torch.equal(y, torch.tensor([6.0, 1.0]))
    assert torch.equal(
        sac.actor_objective(torch.tensor(0.5), lp, torch.tensor([1.0, 1.0])),
        torch.tensor([-0.75, -1.5]),
    )
    la = torch.tensor(math.log(2.0))
    torch.testing.assert_close(sac.temperature_loss(la, lp, -2.0), -la * torch.tensor([-1.5, -3.0]))
    x = torch.tensor([1.0, 3.0])
    assert sac.reduce(x, "mean") == 2.0 and sac.reduce(x, "sum") == 4.0
    assert sac.reduce(x, "mean", torch.tensor([1.0, 3.0])) == 2.5
    assert torch.equal(sac.reduce(x, "none"), x)


def test_config_validation():
    with pytest.raises(ValueError, match="min_alpha=2.0 > max_alpha=1.0"):
        sac.Config(min_alpha=2.0, max_alpha=1.0)
    with pytest.raises(ValueError, match="max_alpha"):
        sac.Config(max_alpha=0.0)
    with pytest.raises(ValueError, match="loss_function"):
        sac.Config(loss_function="huber")
    with pytest.raises(ValueError, match="version"):
        sac.Config(version=3)
    with pytest.raises(ValueError, match="reduction"):
        sac.Config(reduction="max")
    with pytest.raises(ValueError, match="alpha_init"):
        sac.Config(alpha_init=0.0)


def test_init_keys_and_defaults():
    p = sac.init(0, OBS, ACT)
    assert set(p) == {"actor", "qvalue", "target_qvalue", "log_alpha", "action_bounds"}
    assert len(p["actor"]["layers"]) == 3 and p["actor"]["layers"][0]["weight"].shape == (256, OBS)
    assert p["qvalue"]["layers"][0]["weight"].shape == (2, 256, OBS + ACT)
    assert float(p["log_alpha"]) == 0.0
    assert tree.allclose(p["qvalue"], p["target_qvalue"])
    p1 = sac.init(0, OBS, ACT, sac.Config(version=1, delay_actor=True))
    assert {"value", "target_value", "target_actor"} <= set(p1)
    out = sac.loss(sac.init(1, OBS, ACT), make_batch())
    assert set(out) == {"loss_actor", "loss_qvalue", "loss_alpha", "alpha", "entropy", "td_error"}
    assert all(out[k].shape == () for k in out if k != "td_error")


def test_bad_inputs_raise():
    p = sac.init(0, OBS, ACT, nets=sac.Nets(num_cells=(H,)))
    nets = sac.Nets(num_cells=(H,))
    bad = make_batch().set(("next", "reward"), torch.zeros(B))
    with pytest.raises(ValueError, match="reward"):
        sac.loss(p, bad, nets=nets)
    with pytest.raises(KeyError, match="target_qvalue"):
        sac.loss({k: v for k, v in p.items() if k != "target_qvalue"}, make_batch(), nets=nets)
    with pytest.raises(ValueError, match="divisible"):
        cfg = sac.Config(version=1, num_qvalue_nets=3)
        sac.loss(sac.init(0, OBS, ACT, cfg, nets), make_batch(), config=cfg, nets=nets)


# -- gradient routing ------------------------------------------------------------------------------


def test_gradients_are_routed():
    nets = sac.Nets(num_cells=(H,))
    p = sac.init(0, OBS, ACT, nets=nets)
    batch = make_batch()
    f = functools.partial(sac.loss, nets=nets)
    keys = ("actor", "qvalue", "log_alpha", "target_qvalue", "action_bounds")

    def part(name):
        def g(q):
            torch.manual_seed(0)
            return f({**p, **q}, batch)[name]

        return torch.func.grad(g)({k: p[k] for k in keys})

    ga, gq, gal = part("loss_actor"), part("loss_qvalue"), part("loss_alpha")
    zero = lambda t: all(bool((x == 0).all()) for x in tree.leaves(t))  # noqa: E731
    assert zero(ga["qvalue"]) and zero(ga["log_alpha"]) and zero(ga["target_qvalue"])
    assert not zero(ga["actor"])
    assert zero(gq["actor"]) and zero(gq["log_alpha"]) and zero(gq["target_qvalue"])
    assert not zero(gq["qvalue"])
    assert zero(gal["actor"]) and zero(gal["qvalue"]) and not zero(gal["log_alpha"])
    for g in (ga, gq, gal):
        assert zero(g["action_bounds"])


# -- alpha clamps, fixed alpha, terminated vs truncated --------------------------------------------


@given(
    log_alpha=st.floats(-5, 5),
    bound=st.floats(0.05, 20.0),
    side=st.sampled_from(["min", "max"]),
)
def test_alpha_clamp_one_sided(log_alpha, bound, side):
    cfg = sac.Config(min_alpha=bound) if side == "min" else sac.Config(max_alpha=bound)
    la = torch.tensor(log_alpha, requires_grad=True)
    clamped_la, alpha = actor_critic.temperature(la, cfg)
    want = max(math.exp(log_alpha), bound) if side == "min" else min(math.exp(log_alpha), bound)
    assert math.isclose(float(alpha), want, rel_tol=1e-5)
    assert not alpha.requires_grad
    # Straight-through: the gradient is TorchRL's (identity), whichever side is active.
    (g,) = torch.autograd.grad(clamped_la * 3.0, la)
    assert float(g) == 3.0
    projected = sac.project({"log_alpha": la.detach()}, config=cfg)["log_alpha"]
    assert math.isclose(math.exp(float(projected)), want, rel_tol=1e-5)


@given(alpha_init=st.floats(0.01, 10.0))
def test_fixed_alpha_has_no_gradient(alpha_init):
    nets = sac.Nets(num_cells=(8,))
    cfg = sac.Config(fixed_alpha=True, alpha_init=alpha_init)
    p = sac.init(0, OBS, ACT, cfg, nets)
    g, out = grads_of(
        functools.partial(sac.loss, config=cfg, nets=nets), p, ("log_alpha",), make_batch(), 0
    )
    assert float(g["log_alpha"]) == 0.0
    assert math.isclose(float(out["alpha"]), alpha_init, rel_tol=1e-5)


@given(flags=st.lists(st.sampled_from(["none", "terminated", "truncated"]), min_size=B, max_size=B))
def test_terminated_vs_truncated(flags):
    """Only terminated rows lose the bootstrap: compare to gamma=0 (no bootstrap anywhere)."""
    nets = sac.Nets(num_cells=(8,))
    term = torch.tensor([[f == "terminated"] for f in flags])
    trunc = torch.tensor([[f == "truncated"] for f in flags])
    batch = make_batch(terminated=term, truncated=trunc)
    p = sac.init(0, OBS, ACT, nets=nets)
    cfg = sac.Config(reduction="none", loss_function="l2")
    torch.manual_seed(0)
    td = sac.loss(p, batch, config=cfg, nets=nets)["td_error"]
    torch.manual_seed(0)
    td0 = sac.loss(p, batch, config=dataclasses_replace(cfg, gamma=0.0), nets=nets)["td_error"]
    t = term.squeeze(-1)
    torch.testing.assert_close(td[t], td0[t])
    assert not torch.isclose(td[~t], td0[~t]).any()


def dataclasses_replace(cfg, **kw):
    import dataclasses

    return dataclasses.replace(cfg, **kw)


# -- TorchRL parity --------------------------------------------------------------------------------


def _torchrl_actor(actor_params, low, high):
    from tensordict.nn import TensorDictModule
    from torchrl.data import Bounded
    from torchrl.modules import ProbabilisticActor, TanhNormal
    from torchrl.modules.distributions import NormalParamExtractor

    net = torch.nn.Sequential(mlp_to_torch(actor_params), NormalParamExtractor())
    module = TensorDictModule(net, in_keys=["observation"], out_keys=["loc", "scale"])
    spec = Bounded(low, high, (ACT,))
    return ProbabilisticActor(
        module, in_keys=["loc", "scale"], spec=spec, distribution_class=TanhNormal,
        distribution_kwargs={"low": low, "high": high},
    )  # fmt: skip


def _torchrl_qvalues(qparams, n):
    from torchrl.modules import ValueOperator

    mods = []
    for i in range(n):
        member = tree.map(lambda x, i=i: x[i], qparams)
        mods.append(ValueOperator(mlp_to_torch(member), in_keys=["observation", "action"]))
    return mods


@pytest.mark.torchrl
@pytest.mark.parametrize("version", [2, 1])
@pytest.mark.parametrize("loss_function", ["smooth_l1", "l2"])
def test_parity_with_torchrl(version, loss_function):
    torchrl = pytest.importorskip("torchrl", reason="parity needs torchrl")
    from torchrl.modules import ValueOperator
    from torchrl.objectives import SACLoss

    del torchrl
    nets = sac.Nets(num_cells=(H, H))
    cfg = sac.Config(
        version=version, loss_function=loss_function, alpha_init=0.7, min_alpha=0.5,
        max_alpha=2.0, gamma=0.9,
    )  # fmt: skip
    low, high = torch.tensor([-2.0, -1.0]), torch.tensor([1.0, 3.0])

    class Spec:
        shape = (ACT,)

    Spec.low, Spec.high = low, high
    p = sac.init(3, OBS, Spec, cfg, nets)
    # Make the targets differ from the online nets so that routing is visible.
    p["target_qvalue"] = tree.map(lambda x: x + 0.05, p["target_qvalue"])
    if version == 1:
        p["target_value"] = tree.map(lambda x: x - 0.05, p["target_value"])
    term = torch.zeros(B, 1, dtype=torch.bool)
    term[1] = True
    trunc = torch.zeros(B, 1, dtype=torch.bool)
    trunc[2] = True
    batch = make_batch(
        terminated=term, truncated=trunc, action=torch.rand(B, ACT) * (high - low) + low
    )
    keys = ["actor", "qvalue", "log_alpha"] + (["value"] if version == 1 else [])
    g, out = grads_of(functools.partial(sac.loss, config=cfg, nets=nets), p, keys, batch, seed=11)

    value = None
    if version == 1:
        value = ValueOperator(mlp_to_torch(p["value"]), in_keys=["observation"])
    ref = SACLoss(
        _torchrl_actor(p["actor"], low, high), _torchrl_qvalues(p["qvalue"], 2), value,
        loss_function=loss_function, alpha_init=0.7, min_alpha=0.5, max_alpha=2.0,
    )  # fmt: skip
    ref.make_value_estimator(gamma=0.9)
    with torch.no_grad():
        for i, lp in enumerate(p["target_qvalue"]["layers"]):
            ref.target_qvalue_network_params["module", str(2 * i), "weight"].copy_(lp["weight"])
            ref.target_qvalue_network_params["module", str(2 * i), "bias"].copy_(lp["bias"])
        if version == 1:
            for i, lp in enumerate(p["target_value"]["layers"]):
                ref.target_value_network_params["module", str(2 * i), "weight"].copy_(lp["weight"])
                ref.target_value_network_params["module", str(2 * i), "bias"].copy_(lp["bias"])
    torch.manual_seed(11)
    td = ref(td_from_record(batch))
    total = sum(v for k, v in td.items() if k.startswith("loss_"))
    total.backward()
    for k in ["loss_actor", "loss_qvalue", "loss_alpha", "alpha", "entropy"] + (
        ["loss_value"] if version == 1 else []
    ):
        torch.testing.assert_close(out[k], td[k], rtol=1e-5, atol=1e-6, msg=k)
    assert_close(g["actor"], seq_grads(ref.actor_network_params, ("module", "0", "module", "0")))
    assert_close(g["qvalue"], seq_grads(ref.qvalue_network_params, ("module",)))
    torch.testing.assert_close(g["log_alpha"], ref.log_alpha.grad)
    if version == 1:
        assert_close(g["value"], seq_grads(ref.value_network_params, ("module",)))


# -- compile and vmap ------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [2, 1])
def test_update_step_compiles_and_vmaps(version):
    nets = sac.Nets(num_cells=(32, 32))
    cfg = sac.Config(version=version, min_alpha=0.1)
    p = sac.init(0, OBS, ACT, cfg, nets)
    trainable = ("actor", "qvalue", "log_alpha") + (("value",) if version == 1 else ())
    targets = {"target_qvalue": "qvalue"} | ({"target_value": "value"} if version == 1 else {})
    batch = make_batch(16, seed=1)
    check_compiled_and_vmapped(
        functools.partial(sac.loss, config=cfg, nets=nets), p, batch, trainable, targets
    )


# -- value estimators ------------------------------------------------------------------------------


def make_trajectories(b=4, t=5, *, seed=0, low=-1.0, high=1.0, dtype=torch.float64):
    """``[b, t]`` trajectories (TorchRL's layout for ``make_value_estimator``): a trajectory end
    (done) mid-window, one of them terminated."""
    g = torch.Generator().manual_seed(seed)
    done = torch.zeros(b, t, 1, dtype=torch.bool)
    done[0, 2] = done[1, 1] = done[2, 3] = True
    term = torch.zeros_like(done)
    term[0, 2] = True
    return Record(
        {
            "observation": torch.randn(b, t, OBS, generator=g, dtype=dtype),
            "action": (torch.rand(b, t, ACT, generator=g, dtype=dtype) * (high - low) + low),
            ("next", "observation"): torch.randn(b, t, OBS, generator=g, dtype=dtype),
            ("next", "reward"): torch.randn(b, t, 1, generator=g, dtype=dtype),
            ("next", "terminated"): term,
            ("next", "truncated"): done & ~term,
            ("next", "done"): done,
        },
        batch_ndim=2,
    )


@pytest.mark.torchrl
@pytest.mark.parametrize("estimator", ["td1", "td_lambda"])
def test_value_estimator_parity_with_torchrl(estimator):
    """TD(1) and TD(lambda) targets over [B, T] trajectories equal TorchRL's
    ``make_value_estimator(ValueEstimators.TD1 | TDLambda)`` (losses, |td| and gradients)."""
    pytest.importorskip("torchrl", reason="parity needs torchrl")
    from torchrl.objectives import SACLoss, ValueEstimators

    nets = sac.Nets(num_cells=(H, H))
    cfg = sac.Config(gamma=0.9, value_estimator=estimator, lmbda=0.7, loss_function="l2")
    low, high = -torch.ones(ACT, dtype=torch.float64), torch.ones(ACT, dtype=torch.float64)
    p = sac.init(3, OBS, ACT, cfg, nets, dtype=torch.float64)
    p["target_qvalue"] = tree.map(lambda x: x + 0.05, p["target_qvalue"])
    # mlp_to_torch copies through float32 Linears: start from float32-representable weights.
    p = tree.map(lambda x: x.float().double(), p)
    batch = make_trajectories()
    keys = ["actor", "qvalue", "log_alpha"]
    g, out = grads_of(functools.partial(sac.loss, config=cfg, nets=nets), p, keys, batch, seed=2)

    actor = _torchrl_actor(p["actor"], low, high).double()
    qvalues = [q.double() for q in _torchrl_qvalues(p["qvalue"], 2)]
    ref = SACLoss(actor, qvalues, loss_function="l2")
    if estimator == "td1":
        ref.make_value_estimator(ValueEstimators.TD1, gamma=0.9)
    else:
        ref.make_value_estimator(ValueEstimators.TDLambda, gamma=0.9, lmbda=0.7)
    with torch.no_grad():
        for i, lp in enumerate(p["target_qvalue"]["layers"]):
            ref.target_qvalue_network_params["module", str(2 * i), "weight"].copy_(lp["weight"])
            ref.target_qvalue_network_params["module", str(2 * i), "bias"].copy_(lp["bias"])
    torch.manual_seed(2)
    td = td_from_record(batch)
    ref_out = ref(td)
    sum(v for k, v in ref_out.items() if k.startswith("loss_")).backward()
    # float64 on both sides; TorchRL's TD(0) path already differs from funcrl's by ~1e-8 relative
    # in float64 (a float32 constant on its side), so 1e-6 is the tolerance, far below the O(1)
    # differences a wrong recursion, reset or bootstrap would make.
    tol = {"rtol": 1e-6, "atol": 1e-7}
    for k in ["loss_actor", "loss_qvalue", "loss_alpha", "entropy"]:
        torch.testing.assert_close(out[k], ref_out[k], **tol, msg=k)
    # TorchRL writes max_i |Q_i - y| into its input: the same absolute TD error.
    torch.testing.assert_close(out["td_error"], td["td_error"], **tol)
    ga = seq_grads(ref.actor_network_params, ("module", "0", "module", "0"))
    assert_close(g["actor"], ga, **tol)
    assert_close(g["qvalue"], seq_grads(ref.qvalue_network_params, ("module",)), **tol)


def test_td_lambda_by_hand_and_its_limits():
    """lmbda=0 is TD(0) on every step; TD(1) sums rewards to the trajectory end and bootstraps
    there; a terminated step never bootstraps."""
    nets = sac.Nets(num_cells=(8,))
    p = sac.init(0, OBS, ACT, nets=nets, dtype=torch.float64)
    batch = make_trajectories()
    key = funcrl.random.key(0)

    def target(**kw):
        cfg = sac.Config(gamma=0.5, reduction="none", **kw)
        return sac.loss(p, batch, config=cfg, nets=nets, key=key)["td_error"]

    torch.testing.assert_close(target(value_estimator="td_lambda", lmbda=0.0), target())
    torch.testing.assert_close(
        target(value_estimator="td_lambda", lmbda=1.0), target(value_estimator="td1")
    )
    assert not torch.allclose(target(value_estimator="td1"), target())


# -- nets, act -------------------------------------------------------------------------------------


def test_custom_nets_just_work_and_foreign_params_raise():
    """A LayerNorm/tanh MLP actor and a TorchModule critic over (observation, action) train as
    the defaults do; params built for other nets are refused by the nets themselves."""

    class Critic(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.body = torch.nn.Sequential(
                torch.nn.Linear(OBS + ACT, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1)
            )

        def forward(self, observation, action):
            return self.body(torch.cat([observation, action], -1))

    nets = sac.Nets(
        actor=funcrl.nn.MLP(OBS, 2 * ACT, num_cells=(8,), norm="layer", activation="tanh"),
        qvalue=funcrl.nn.TorchModule(Critic()),
    )
    p = sac.init(0, OBS, ACT, nets=nets)
    out = sac.loss(p, make_batch(), nets=nets, key=funcrl.random.key(0))
    assert torch.isfinite(out["loss_qvalue"]) and out["td_error"].shape == (B,)
    with pytest.raises(ValueError, match=r"params\['layers'\]: expected 3 entries, got 2"):
        sac.loss(sac.init(0, OBS, ACT, nets=sac.Nets(num_cells=(8,))), make_batch())


def test_act_by_hand():
    """Deterministic: the TanhNormal's tanh(loc) mapped to the bounds; random: the key's draw."""
    nets = sac.Nets(num_cells=(8,))

    class Spec:
        shape, low, high = (ACT,), torch.tensor([-2.0, 0.0]), torch.tensor([2.0, 1.0])

    p = sac.init(0, OBS, Spec, nets=nets)
    obs = torch.randn(5, OBS)
    loc, _ = funcrl.distributions.NormalParamExtractor()(nets_actor(nets, p, obs))
    expected = Spec.low + (Spec.high - Spec.low) / 2 * (torch.tanh(loc) + 1)
    det = sac.act(p, obs, nets=nets, mode="deterministic")
    torch.testing.assert_close(det, expected)
    key = funcrl.random.key(4)
    a = sac.act(p, obs, nets=nets, key=key)
    assert torch.equal(a, sac.act(p, obs, nets=nets, key=key)) and not torch.equal(a, det)
    assert ((a >= Spec.low) & (a <= Spec.high)).all() and not a.requires_grad


def nets_actor(nets, p, obs):
    return actor_critic.resolve(nets, OBS, ACT).actor(p["actor"], obs)
