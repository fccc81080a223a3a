"""Decision Transformer objectives (``dt``: DTLoss, ``online_dt``: OnlineDTLoss): equations by hand,
TorchRL 0.14 parity (float64, values and gradients), training the real ``DTActor``."""

from __future__ import annotations

import math

import pytest
import torch

import funcrl
from funcrl import dt, online_dt, optim, tree
from funcrl.nn import MLP, Concat, DTConfig
from funcrl.record import Record

OBS, ACT, B, T = 3, 2, 4, 5
TINY = DTConfig(n_embd=16, n_layer=1, n_head=2, n_inner=32, n_positions=3 * T)
DT_NETS = dt.Nets(transformer_config=TINY)
ODT_NETS = online_dt.Nets(transformer_config=TINY)


def make_batch(seed=0, dtype=torch.float32) -> Record:
    g = torch.Generator().manual_seed(seed)
    return Record(
        {
            "observation": torch.randn(B, T, OBS, generator=g).to(dtype),
            "action": (torch.rand(B, T, ACT, generator=g) * 1.8 - 0.9).to(dtype),
            "return_to_go": torch.randn(B, T, 1, generator=g).to(dtype),
        },
        batch_ndim=2,
    )


def test_dt_loss_by_hand():
    """A Concat(MLP) actor with zero weights and bias 0.5: every prediction is tanh(0.5)."""
    nets = dt.Nets(actor=Concat(MLP(OBS + ACT + 1, ACT, num_cells=(4,))))
    params = tree.map(torch.zeros_like, dt.init(0, OBS, ACT, nets=nets))
    params["action_bounds"] = {"low": -torch.ones(ACT), "high": torch.ones(ACT)}
    params["actor"]["layers"][-1]["bias"] += 0.5
    batch = make_batch()
    out = dt.loss(params, batch, nets=nets)
    d = torch.tanh(torch.tensor(0.5)) - batch["action"]
    torch.testing.assert_close(out["loss"], (d**2).mean())
    torch.testing.assert_close(out["td_error"], d.abs().mean(-1))
    w = torch.rand(B, T)
    weighted = dt.loss(params, batch.set("priority_weight", w), nets=nets)
    torch.testing.assert_close(weighted["loss"], ((d**2).mean(-1) * w).sum() / w.sum())


def _constant_gaussian_net():
    """A funcrl net ``-> (loc=0, scale=1)`` with one dummy parameter."""
    import dataclasses

    @dataclasses.dataclass(frozen=True)
    class ConstantGaussian:
        act_dim: int

        def init(self, seed=0, *, device=None, dtype=torch.float32):
            return {"w": torch.zeros((), device=device, dtype=dtype)}

        def __call__(self, params, observation, action, return_to_go, **kwargs):
            loc = torch.zeros_like(action) + params["w"]
            return loc, torch.ones_like(action)

    return ConstantGaussian


_ConstantGaussian = _constant_gaussian_net()


def test_online_dt_loss_by_hand():
    """Constant policy N(0, 1) before tanh: log-likelihood and alpha's loss by hand."""
    nets = online_dt.Nets(actor=_ConstantGaussian(ACT))
    cfg = online_dt.Config(alpha_init=0.5, target_entropy=-1.0, samples_mc_entropy=3)
    params = online_dt.init(0, OBS, ACT, cfg, nets)
    batch = make_batch()
    out = online_dt.loss(params, batch, config=cfg, nets=nets, key=funcrl.random.key(0))
    a = batch["action"]
    u = torch.atanh(a)
    lp = (-0.5 * u**2 - 0.5 * math.log(2 * math.pi) - torch.log1p(-(a**2))).sum(-1)
    torch.testing.assert_close(out["loss_log_likelihood"], -lp.mean(), rtol=1e-5, atol=1e-5)
    h = out["entropy"]
    torch.testing.assert_close(out["loss_alpha"], 0.5 * (h + 1.0), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out["loss_entropy"], -0.5 * h, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out["alpha"], torch.tensor(0.5))


# --- TorchRL parity -------------------------------------------------------------------------------


class _Cat(torch.nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, observation, action, return_to_go):
        return self.inner(torch.cat([observation, action, return_to_go], -1))


def _torchrl_grads(m, out_loss, inner):
    from funcrl.objectives.actor_critic import read_torchrl

    td = m.actor_network_params
    flat = torch.autograd.grad(out_loss, list(td.values(True, True)))
    gtd = td.detach().clone()
    for k, g in zip(list(td.keys(True, True)), flat):
        gtd.set(k, g)
    return read_torchrl(m.actor_network, gtd, inner)[1]


@pytest.mark.torchrl
@pytest.mark.parametrize("loss_function", ["l2", "smooth_l1"])
def test_dt_parity_with_torchrl(loss_function):
    pytest.importorskip("torchrl")
    from tensordict.nn import TensorDictModule
    from torchrl.modules import MLP as TorchRLMLP
    from torchrl.modules import ProbabilisticActor, TanhDelta
    from torchrl.objectives import DTLoss

    from funcrl.nn import to_module

    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        net = Concat(MLP(OBS + ACT + 1, ACT, num_cells=(8,)))
        nets = dt.Nets(actor=net)
        params = dt.init(0, OBS, funcrl.specs.Bounded(-2.0, 3.0, shape=(ACT,)), nets=nets)
        params = tree.map(lambda x: x.double(), params)
        inner = TorchRLMLP(in_features=OBS + ACT + 1, out_features=ACT, num_cells=[8])
        to_module(params["actor"], inner)
        actor = ProbabilisticActor(
            TensorDictModule(
                _Cat(inner), in_keys=["observation", "action", "return_to_go"], out_keys=["param"]
            ),
            in_keys=["param"],
            distribution_class=TanhDelta,
            distribution_kwargs={"low": -2.0 * torch.ones(ACT), "high": 3.0 * torch.ones(ACT)},
        )
        m = DTLoss(actor, loss_function=loss_function)
        batch = make_batch(dtype=torch.float64)
        ref = m(batch.to_tensordict())
        expected = _torchrl_grads(m, ref["loss"], inner)
        cfg = dt.Config(loss_function=loss_function)

        def f(p):
            out = dt.loss({**params, "actor": p}, batch, config=cfg, nets=nets)
            return out["loss"], out

        grads, out = torch.func.grad(f, has_aux=True)(params["actor"])
        torch.testing.assert_close(out["loss"], ref["loss"].detach(), rtol=1e-7, atol=1e-9)
        torch.testing.assert_close(tree.leaves(grads), tree.leaves(expected), rtol=1e-7, atol=1e-9)
    finally:
        torch.set_default_dtype(old)


class _Split(torch.nn.Module):
    def __init__(self, mean, logstd):
        super().__init__()
        self.mean, self.logstd = mean, logstd

    def forward(self, observation, action, return_to_go):
        x = torch.cat([observation, action, return_to_go], -1)
        return self.mean(x), self.logstd(x).exp()


@pytest.mark.torchrl
@pytest.mark.parametrize(
    "cfg", [{}, {"samples_mc_entropy": 3, "min_alpha": 0.9, "alpha_init": 0.5}]
)
def test_online_dt_parity_with_torchrl(cfg):
    pytest.importorskip("torchrl")
    import dataclasses

    from tensordict.nn import TensorDictModule
    from torchrl.data import Bounded
    from torchrl.modules import ProbabilisticActor, TanhNormal
    from torchrl.objectives import OnlineDTLoss

    from funcrl.nn import to_module

    @dataclasses.dataclass(frozen=True)
    class Heads:
        """(obs, action, rtg) -> (loc, exp(log_std)) from two linear heads."""

        def init(self, seed=0, *, device=None, dtype=torch.float32):
            g = torch.Generator().manual_seed(0)
            return {
                "mean": MLP(OBS + ACT + 1, ACT, num_cells=()).init(g, dtype=dtype),
                "logstd": MLP(OBS + ACT + 1, ACT, num_cells=()).init(g, dtype=dtype),
            }

        def __call__(self, params, observation, action, return_to_go, **kwargs):
            x = torch.cat([observation, action, return_to_go], -1)
            lin = MLP(OBS + ACT + 1, ACT, num_cells=())
            return lin(params["mean"], x), lin(params["logstd"], x).exp()

    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        config = online_dt.Config(**cfg)
        nets = online_dt.Nets(actor=Heads())
        params = online_dt.init(0, OBS, ACT, config, nets, dtype=torch.float64)
        mean, logstd = torch.nn.Linear(OBS + ACT + 1, ACT), torch.nn.Linear(OBS + ACT + 1, ACT)
        to_module(params["actor"]["mean"], torch.nn.Sequential(mean))
        to_module(params["actor"]["logstd"], torch.nn.Sequential(logstd))
        spec = Bounded(-torch.ones(ACT), torch.ones(ACT), (ACT,))
        actor = ProbabilisticActor(
            TensorDictModule(
                _Split(mean, logstd),
                in_keys=["observation", "action", "return_to_go"],
                out_keys=["loc", "scale"],
            ),
            in_keys=["loc", "scale"],
            spec=spec,
            distribution_class=TanhNormal,
            distribution_kwargs={"low": spec.space.low, "high": spec.space.high},
        )
        m = OnlineDTLoss(actor, **cfg)
        batch = make_batch(dtype=torch.float64)
        torch.manual_seed(3)
        ref = m(batch.to_tensordict())
        total_ref = ref["loss_log_likelihood"] + ref["loss_entropy"] + ref["loss_alpha"]
        leaves = [mean.weight, mean.bias, logstd.weight, logstd.bias]
        flat = torch.autograd.grad(total_ref, leaves + [m.log_alpha])

        def f(p):
            out = online_dt.loss({**params, **p}, batch, config=config, nets=nets)
            return funcrl.training.total_loss(out), out

        torch.manual_seed(3)
        grads, out = torch.func.grad(f, has_aux=True)(
            {"actor": params["actor"], "log_alpha": params["log_alpha"]}
        )
        for k in ("loss_log_likelihood", "loss_entropy", "loss_alpha", "alpha", "entropy"):
            torch.testing.assert_close(out[k], ref[k].detach(), rtol=1e-7, atol=1e-9, msg=k)
        got = [
            grads["actor"]["mean"]["layers"][0]["weight"],
            grads["actor"]["mean"]["layers"][0]["bias"],
            grads["actor"]["logstd"]["layers"][0]["weight"],
            grads["actor"]["logstd"]["layers"][0]["bias"],
            grads["log_alpha"],
        ]
        torch.testing.assert_close(got, list(flat), rtol=1e-7, atol=1e-9)
    finally:
        torch.set_default_dtype(old)


# --- the real transformer -------------------------------------------------------------------------


def test_dt_trains_its_transformer_and_acts_over_a_context():
    train = dt.trainer(optim.adam(3e-3), nets=DT_NETS)
    params = dt.init(0, OBS, ACT, nets=DT_NETS)
    state = train.init(params)
    batch = make_batch()
    first = dt.loss(params, batch, nets=DT_NETS)["loss"]
    for _ in range(60):
        params, state, m = train.step(params, state, batch)
    assert float(m["loss"]) < 0.5 * float(first)
    a = dt.act(
        params, batch["observation"], nets=DT_NETS, mode="deterministic",
        action=batch["action"], return_to_go=batch["return_to_go"],
    )  # fmt: skip
    assert a.shape == (B, T, ACT)


def test_online_dt_step_moves_actor_and_alpha():
    train = online_dt.trainer(optim.adam(1e-2), nets=ODT_NETS)
    params = online_dt.init(0, OBS, ACT, nets=ODT_NETS)
    state = train.init(params)
    new, _, m = train.step(params, state, make_batch(), funcrl.random.key(0))
    assert not torch.equal(new["log_alpha"], params["log_alpha"])
    assert {"loss_log_likelihood", "loss_entropy", "loss_alpha", "alpha", "entropy"} <= set(m)
