"""Behaviour cloning: both variants by hand and against TorchRL 0.14's ``BCLoss`` (float64,
values and gradients)."""

from __future__ import annotations

import pytest
import torch

from funcrl import bc, optim, tree
from funcrl.record import Record

OBS, ACT, B = 3, 2, 5
SMALL = bc.Nets(num_cells=(8,))


def make_batch(seed=0, dtype=torch.float32) -> Record:
    g = torch.Generator().manual_seed(seed)
    return Record(
        {
            "observation": torch.randn(B, OBS, generator=g).to(dtype),
            "action": (torch.rand(B, ACT, generator=g) * 1.8 - 0.9).to(dtype),
        },
        batch_ndim=1,
    )


@pytest.mark.parametrize("name", ["l2", "mse", "l1", "smooth_l1"])
def test_elementwise_by_hand(name):
    cfg = bc.Config(loss_function=name)
    params = tree.map(torch.zeros_like, bc.init(0, OBS, ACT, cfg, SMALL))
    params["action_bounds"] = {"low": -torch.ones(ACT), "high": torch.ones(ACT)}
    params["actor"]["layers"][-1]["bias"] += 0.5  # mu(s) = tanh(0.5)
    batch = make_batch()
    out = bc.loss(params, batch, config=cfg, nets=SMALL)
    d = torch.tanh(torch.tensor(0.5)) - batch["action"]
    per = {"l2": d**2, "mse": d**2, "l1": d.abs()}.get(
        name, torch.where(d.abs() < 1, 0.5 * d**2, d.abs() - 0.5)
    )
    torch.testing.assert_close(out["loss_bc"], per.mean())
    torch.testing.assert_close(out["td_error"], d.abs().mean(-1))
    w = torch.arange(1.0, B + 1)
    weighted = bc.loss(params, batch.set("priority_weight", w), config=cfg, nets=SMALL)
    torch.testing.assert_close(weighted["loss_bc"], (per.mean(-1) * w).sum() / w.sum())
    none = bc.loss(params, batch, config=bc.Config(name, reduction="none"), nets=SMALL)
    torch.testing.assert_close(none["loss_bc"], per)


def test_nll_is_minus_log_prob():
    params = bc.init(0, OBS, ACT, nets=SMALL)
    batch = make_batch()
    out = bc.loss(params, batch, nets=SMALL)
    from funcrl.objectives.actor_critic import resolve, tanh_normal

    nets = resolve(SMALL, OBS, ACT)
    dist = tanh_normal(
        nets.actor(params["actor"], batch["observation"]), -torch.ones(ACT), torch.ones(ACT), nets
    )
    torch.testing.assert_close(out["loss_bc"], -dist.log_prob(batch["action"]).mean())


def test_training_clones_the_data():
    cfg = bc.Config(loss_function="l2")
    train = bc.trainer(optim.adam(1e-2), config=cfg, nets=SMALL)
    params = bc.init(0, OBS, ACT, cfg, SMALL)
    state = train.init(params)
    batch = make_batch()
    first = bc.loss(params, batch, config=cfg, nets=SMALL)["loss_bc"]
    for _ in range(200):
        params, state, m = train.step(params, state, batch)
    assert float(m["loss_bc"]) < 0.05 * float(first)
    a = bc.act(params, batch["observation"], config=cfg, nets=SMALL, mode="deterministic")
    torch.testing.assert_close(a, batch["action"], atol=0.25, rtol=0)


@pytest.mark.torchrl
@pytest.mark.parametrize("loss_function", [None, "l2", "smooth_l1"])
def test_parity_with_torchrl(loss_function):
    pytest.importorskip("torchrl")
    from tensordict.nn import NormalParamExtractor, TensorDictModule
    from torchrl.data import Bounded
    from torchrl.modules import MLP, ProbabilisticActor, TanhNormal
    from torchrl.objectives import BCLoss

    from funcrl.objectives.actor_critic import read_torchrl

    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        torch.manual_seed(0)
        if loss_function is None:
            spec = Bounded(-2.0 * torch.ones(ACT), 3.0 * torch.ones(ACT), (ACT,))
            body = torch.nn.Sequential(
                MLP(in_features=OBS, out_features=2 * ACT, num_cells=[8]), NormalParamExtractor()
            )
            actor = ProbabilisticActor(
                TensorDictModule(body, in_keys=["observation"], out_keys=["loc", "scale"]),
                in_keys=["loc", "scale"],
                spec=spec,
                distribution_class=TanhNormal,
                distribution_kwargs={"low": spec.space.low, "high": spec.space.high},
            )
            inner = body[0]
        else:
            inner = MLP(in_features=OBS, out_features=ACT, num_cells=[8])
            body = torch.nn.Sequential(inner, torch.nn.Tanh())
            actor = TensorDictModule(body, in_keys=["observation"], out_keys=["action"])
        m = BCLoss(actor, loss_function=loss_function)
        config, nets, params = bc.from_torchrl(m)
        batch = make_batch(dtype=torch.float64)
        ref = m(batch.to_tensordict())
        leaves = list(m.actor_network_params.values(True, True))
        flat = torch.autograd.grad(ref["loss_bc"], leaves)
        gtd = m.actor_network_params.detach().clone()
        for k, g in zip(list(m.actor_network_params.keys(True, True)), flat):
            gtd.set(k, g)
        expected = read_torchrl(m.actor_network, gtd, inner)[1]

        def f(p):
            out = bc.loss({**params, "actor": p}, batch, config=config, nets=nets)
            return out["loss_bc"], out

        grads, out = torch.func.grad(f, has_aux=True)(params["actor"])
        torch.testing.assert_close(out["loss_bc"], ref["loss_bc"].detach(), rtol=1e-7, atol=1e-9)
        torch.testing.assert_close(tree.leaves(grads), tree.leaves(expected), rtol=1e-7, atol=1e-9)
    finally:
        torch.set_default_dtype(old)
