"""REINFORCE: TorchRL 0.14 parity in float64 with weights copied (values and gradients), the
delayed value net, and the trainer's Polyak target."""

from __future__ import annotations

import functools

import pytest
import torch

from funcrl import optim, reinforce, tree
from tests.test_ppo import (
    F64,
    OBS,
    H,
    action_spec,
    assert_close,
    exact_coefficients,
    funcrl_grads,
    make_rollout,
    mlp_to_torch,
    td_from_record,
    torchrl_actor,
    torchrl_critic,
    torchrl_grads,
)

CASES = [
    ("tanh_normal", reinforce.Config()),
    ("normal", reinforce.Config(loss_critic_type="l2", clip_value=0.05)),
    ("categorical", reinforce.Config(gamma=0.9, lmbda=0.5, loss_critic_type="l1")),
    ("masked_categorical", reinforce.Config()),
    ("normal", reinforce.Config(delay_value=True)),
]


def reinforce_ref(p, nets, cfg):
    from torchrl.objectives import ReinforceLoss

    ref = ReinforceLoss(
        torchrl_actor(p, nets),
        torchrl_critic(p),
        delay_value=cfg.delay_value,
        loss_critic_type=cfg.loss_critic_type,
        clip_value=cfg.clip_value,
    )
    ref.make_value_estimator(gamma=cfg.gamma, lmbda=cfg.lmbda)
    if cfg.delay_value:
        target = mlp_to_torch(p["target_critic"])
        with torch.no_grad():
            for i, lin in enumerate(m for m in target if isinstance(m, torch.nn.Linear)):
                ref.target_critic_network_params["module", str(2 * i), "weight"].copy_(lin.weight)
                ref.target_critic_network_params["module", str(2 * i), "bias"].copy_(lin.bias)
    return exact_coefficients(ref, cfg)


@pytest.mark.torchrl
@pytest.mark.parametrize(
    "distribution,cfg", CASES, ids=[f"{d}-{i}" for i, (d, _) in enumerate(CASES)]
)
def test_reinforce_parity_with_torchrl(distribution, cfg):
    pytest.importorskip("torchrl")
    nets = reinforce.Nets(distribution=distribution, num_cells=(H, H))
    p = reinforce.init(0, OBS, action_spec(distribution), cfg, nets, dtype=F64)
    if cfg.delay_value:
        # A target that differs from the online critic makes the routing visible.
        p["target_critic"] = tree.map(lambda x: x + 0.1, p["target_critic"])
    batch = make_rollout(p, nets)
    loss_fn = functools.partial(reinforce.loss, config=cfg, nets=nets)
    g, out = funcrl_grads(loss_fn, p, batch, seed=2)
    ref = reinforce_ref(p, nets, cfg)
    td = ref(td_from_record(batch))
    sum(v for k, v in td.items() if k.startswith("loss_")).backward()
    assert {"loss_actor", "loss_value"} <= set(td.keys())
    for k in td.keys():
        torch.testing.assert_close(out[k], td[k], rtol=1e-7, atol=1e-9, msg=k)
    assert_close(g, torchrl_grads(ref), rtol=1e-7, atol=1e-9)


def test_delay_value_reads_the_target_critic():
    nets = reinforce.Nets(distribution="normal", num_cells=(H,))
    cfg = reinforce.Config(delay_value=True)
    p = reinforce.init(0, OBS, action_spec("normal"), cfg, nets, dtype=F64)
    batch = make_rollout(p, nets)
    a = reinforce.loss(p, batch, config=cfg, nets=nets)
    moved = {**p, "target_critic": tree.map(lambda x: x + 0.1, p["target_critic"])}
    b = reinforce.loss(moved, batch, config=cfg, nets=nets)
    assert not torch.allclose(a["loss_actor"], b["loss_actor"])
    # Without delay_value the target critic is not read at all.
    plain = reinforce.Config()
    c = reinforce.loss(p, batch, config=plain, nets=nets)
    d = reinforce.loss(moved, batch, config=plain, nets=nets)
    torch.testing.assert_close(c["loss_actor"], d["loss_actor"])


def test_trainer_polyak_averages_the_target_critic():
    nets = reinforce.Nets(distribution="categorical", num_cells=(H,))
    cfg = reinforce.Config(delay_value=True)
    p = reinforce.init(0, OBS, 4, cfg, nets)
    train = reinforce.trainer(optim.adam(1e-2), config=cfg, nets=nets, tau=0.25)
    p1, _, _ = train.step(p, train.init(p), make_rollout(p, nets, dtype=torch.float32))
    want = tree.map(lambda t, o: 0.75 * t + 0.25 * o, p["target_critic"], p1["critic"])
    assert_close(p1["target_critic"], want, rtol=1e-6, atol=1e-7)
