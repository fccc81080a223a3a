"""TD3+BC: the actor's equation by hand, TorchRL 0.14 parity (float64, values and gradients)."""

from __future__ import annotations

import warnings

import pytest
import torch

import funcrl
from funcrl import optim, td3_bc, tree
from funcrl.record import Record

OBS, ACT, B = 3, 2, 6
SMALL = td3_bc.Nets(num_cells=(8, 8))


def make_batch(seed: int = 0, b: int = B, dtype=torch.float32) -> Record:
    g = torch.Generator().manual_seed(seed)
    term = torch.zeros(b, 1, dtype=torch.bool)
    term[1] = True
    return Record(
        {
            "observation": torch.randn(b, OBS, generator=g).to(dtype),
            "action": (torch.rand(b, ACT, generator=g) * 2 - 1).to(dtype),
            ("next", "observation"): torch.randn(b, OBS, generator=g).to(dtype),
            ("next", "reward"): torch.randn(b, 1, generator=g).to(dtype),
            ("next", "terminated"): term,
            ("next", "done"): term,
        },
        batch_ndim=1,
    )


def test_actor_loss_by_hand():
    """Zero nets with biases: mu(s) = tanh(0.5) and Q(s, a) = -2 everywhere."""
    cfg = td3_bc.Config(alpha=3.0)
    params = tree.map(torch.zeros_like, td3_bc.init(0, OBS, ACT, cfg, SMALL))
    params["action_bounds"] = {"low": -torch.ones(ACT), "high": torch.ones(ACT)}
    params["actor"]["layers"][-1]["bias"] += 0.5
    params["qvalue"]["layers"][-1]["bias"] -= 2.0
    batch = make_batch()
    out = td3_bc.loss(params, batch, config=cfg, nets=SMALL, key=funcrl.random.key(0))
    mu = torch.tanh(torch.tensor(0.5))
    bc = ((mu - batch["action"]) ** 2).mean()
    lmbd = 3.0 / 2.0
    torch.testing.assert_close(out["bc_loss"], bc)
    torch.testing.assert_close(out["lmbd"], torch.tensor(lmbd))
    torch.testing.assert_close(out["loss_actor"], -lmbd * -2.0 + bc)
    # reduction="none": the scalar bc term is added to every sample's Q term.
    none = td3_bc.loss(
        params, batch, config=td3_bc.Config(alpha=3.0, reduction="none"), nets=SMALL,
        key=funcrl.random.key(0),
    )  # fmt: skip
    torch.testing.assert_close(none["loss_actor"], torch.full((B,), lmbd * 2.0) + bc)


def test_priority_weights_weight_the_actor_but_not_lambda():
    params = td3_bc.init(0, OBS, ACT, nets=SMALL)
    batch = make_batch()
    w = torch.linspace(0.5, 2.0, B)
    key = funcrl.random.key(0)
    plain = td3_bc.loss(params, batch, nets=SMALL, key=key)
    out = td3_bc.loss(params, batch.set("priority_weight", w), nets=SMALL, key=key)
    torch.testing.assert_close(out["lmbd"], plain["lmbd"])
    q = out["state_action_value_actor"]
    torch.testing.assert_close(
        out["loss_actor"], ((-out["lmbd"] * q + out["bc_loss"]) * w).sum() / w.sum()
    )


# --- TorchRL parity -------------------------------------------------------------------------------


def torchrl_td3_bc(num_q, delay, noise):
    from tensordict.nn import TensorDictModule
    from torchrl.data import Bounded
    from torchrl.modules import MLP, ValueOperator
    from torchrl.objectives import TD3BCLoss, ValueEstimators

    torch.manual_seed(0)
    spec = Bounded(-torch.ones(ACT), torch.ones(ACT), (ACT,))
    body = torch.nn.Sequential(
        MLP(in_features=OBS, out_features=ACT, num_cells=[8, 8]), torch.nn.Tanh()
    )
    actor = TensorDictModule(body, in_keys=["observation"], out_keys=["action"])
    q = ValueOperator(
        MLP(in_features=OBS + ACT, out_features=1, num_cells=[8, 8]),
        in_keys=["observation", "action"],
    )
    m = TD3BCLoss(
        actor, q, action_spec=spec, num_qvalue_nets=num_q, alpha=1.7, policy_noise=noise,
        loss_function="l2", delay_actor=delay, delay_qvalue=delay,
    )  # fmt: skip
    m.make_value_estimator(ValueEstimators.TD0, gamma=0.9)
    with torch.no_grad():
        if delay:
            m.target_qvalue_network_params.apply_(lambda x: x.add_(0.05))
            m.target_actor_network_params.apply_(lambda x: x.add_(0.3))
    return m


def _grads(module, td, inner, flat):
    from funcrl.objectives.actor_critic import read_torchrl

    gtd = td.detach().clone()
    for key, g in zip(list(td.keys(True, True)), flat):
        gtd.set(key, g)
    return read_torchrl(module, gtd, inner)[1]


@pytest.mark.torchrl
@pytest.mark.parametrize("num_q,delay,noise", [(2, True, 0.2), (3, False, 0.8)])
def test_parity_with_torchrl(num_q, delay, noise):
    pytest.importorskip("torchrl")
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    warnings.filterwarnings("ignore", message="No target network updater")
    try:
        m = torchrl_td3_bc(num_q, delay, noise)
        config, nets, params = td3_bc.from_torchrl(m)
        assert config.alpha == 1.7 and config.num_qvalue_nets == num_q
        batch = make_batch(dtype=torch.float64)
        torch.manual_seed(5)
        td = batch.to_tensordict()
        ref = m(td)
        a_leaves = list(m.actor_network_params.values(True, True))
        q_leaves = list(m.qvalue_network_params.values(True, True))
        flat = torch.autograd.grad(ref["loss_actor"] + ref["loss_qvalue"], a_leaves + q_leaves)
        grads_ref = {
            "actor": _grads(
                m.actor_network, m.actor_network_params, m.actor_network.module[0],
                flat[: len(a_leaves)],
            ),
            "qvalue": _grads(
                m.qvalue_network, m.qvalue_network_params, m.qvalue_network.module,
                flat[len(a_leaves) :],
            ),
        }  # fmt: skip

        def total(p):
            out = td3_bc.loss({**params, **p}, batch, config=config, nets=nets)
            return out["loss_actor"] + out["loss_qvalue"], out

        torch.manual_seed(5)  # the global-RNG path draws TorchRL's noise
        grads, out = torch.func.grad(total, has_aux=True)(
            {"actor": params["actor"], "qvalue": params["qvalue"]}
        )
        for k in (
            "loss_actor", "loss_qvalue", "bc_loss", "lmbd", "pred_value",
            "state_action_value_actor", "next_state_value", "target_value",
        ):  # fmt: skip
            torch.testing.assert_close(out[k], ref[k].detach(), rtol=1e-7, atol=1e-9, msg=k)
        torch.testing.assert_close(out["td_error"], td["td_error"].sqrt())
        torch.testing.assert_close(tree.leaves(grads), tree.leaves(grads_ref), rtol=1e-7, atol=1e-9)
    finally:
        torch.set_default_dtype(old)


def test_trainer_delays_the_actor():
    train = td3_bc.trainer(optim.adam(1e-2), nets=SMALL, policy_delay=2)
    params = td3_bc.init(0, OBS, ACT, nets=SMALL)
    state = train.init(params)
    p1, state, _ = train.step(params, state, make_batch(), funcrl.random.key(0))
    p2, state, _ = train.step(p1, state, make_batch(1), funcrl.random.key(1))
    assert not torch.equal(
        p1["qvalue"]["layers"][0]["weight"], params["qvalue"]["layers"][0]["weight"]
    )
    moved = [
        not torch.equal(p["actor"]["layers"][0]["weight"], params["actor"]["layers"][0]["weight"])
        for p in (p1, p2)
    ]
    assert moved == [True, True] or moved == [False, True]
