"""A2C: TorchRL 0.14 parity in float64 with weights copied (values and gradients) for each option
that changes the math, the objective by hand, and the trainer."""

from __future__ import annotations

import functools

import pytest
import torch

from funcrl import a2c, optim
from funcrl.objectives import on_policy
from funcrl.record import Record
from tests.test_ppo import (
    F64,
    OBS,
    H,
    N,
    action_spec,
    assert_close,
    exact_coefficients,
    funcrl_grads,
    make_rollout,
    td_from_record,
    torchrl_actor,
    torchrl_critic,
    torchrl_grads,
)

CASES = [
    ("tanh_normal", a2c.Config()),
    ("tanh_normal", a2c.Config(samples_mc_entropy=2, loss_critic_type="l2")),
    ("normal", a2c.Config(clip_value=0.05, critic_coeff=0.5)),
    ("normal", a2c.Config(entropy_coeff=0.0, loss_critic_type="l1")),
    ("categorical", a2c.Config(gamma=0.9, lmbda=0.7)),
    ("masked_categorical", a2c.Config(entropy_bonus=False, clip_value=0.1)),
    ("categorical", a2c.Config(value_estimator="td_lambda")),
]


def a2c_ref(p, nets, cfg):
    from torchrl.objectives import A2CLoss, ValueEstimators

    ref = A2CLoss(
        torchrl_actor(p, nets),
        torchrl_critic(p),
        entropy_bonus=cfg.entropy_bonus,
        samples_mc_entropy=cfg.samples_mc_entropy,
        entropy_coeff=cfg.entropy_coeff,
        critic_coeff=cfg.critic_coeff,
        loss_critic_type=cfg.loss_critic_type,
        clip_value=cfg.clip_value,
    )
    kind = {"gae": ValueEstimators.GAE, "td_lambda": ValueEstimators.TDLambda}[cfg.value_estimator]
    ref.make_value_estimator(kind, gamma=cfg.gamma, lmbda=cfg.lmbda)
    return exact_coefficients(ref, cfg)


@pytest.mark.torchrl
@pytest.mark.parametrize(
    "distribution,cfg", CASES, ids=[f"{d}-{i}" for i, (d, _) in enumerate(CASES)]
)
def test_a2c_parity_with_torchrl(distribution, cfg):
    pytest.importorskip("torchrl")
    nets = a2c.Nets(distribution=distribution, num_cells=(H, H))
    p = a2c.init(0, OBS, action_spec(distribution), cfg, nets, dtype=F64)
    batch = make_rollout(p, nets)
    g, out = funcrl_grads(functools.partial(a2c.loss, config=cfg, nets=nets), p, batch, seed=3)
    ref = a2c_ref(p, nets, cfg)
    torch.manual_seed(3)
    td = ref(td_from_record(batch))
    sum(v for k, v in td.items() if k.startswith("loss_")).backward()
    assert set(td.keys()) - {"value_clip_fraction"} <= set(out)
    for k in td.keys():
        torch.testing.assert_close(out[k], td[k], rtol=1e-7, atol=1e-9, msg=k)
    assert_close(g, torchrl_grads(ref), rtol=1e-7, atol=1e-9)


def test_a2c_objective_by_hand():
    # With advantages given, L = -mean(log pi(a|s) A): check it against the policy's log-probs.
    nets = a2c.Nets(distribution="categorical", num_cells=(H,))
    cfg = a2c.Config(entropy_bonus=False)
    p = a2c.init(0, OBS, N, cfg, nets, dtype=F64)
    batch = make_rollout(p, nets)
    adv = torch.linspace(-1, 1, batch.batch_size.numel(), dtype=F64).reshape(*batch.batch_size, 1)
    batch = on_policy.advantages(p, batch, config=cfg, nets=nets).set("advantage", adv)
    lp = on_policy.policy(p, batch["observation"], nets=nets).log_prob(batch["action"])
    out = a2c.loss(p, batch, config=cfg, nets=nets)
    torch.testing.assert_close(out["loss_objective"], -(lp * adv.squeeze(-1)).mean())


def test_a2c_trainer_one_step_on_the_whole_rollout():
    nets = a2c.Nets(distribution="normal", num_cells=(H,))
    p = a2c.init(0, OBS, action_spec("normal"), a2c.Config(), nets)
    train = a2c.trainer(optim.sgd(0.1), nets=nets)
    rollout = make_rollout(p, nets, dtype=torch.float32)
    state = train.init(p)
    p1, s1, m = train.step(p, state, rollout)
    # One SGD step: params move by -lr * grad of the loss on the whole rollout.
    g, _ = funcrl_grads(functools.partial(a2c.loss, nets=nets), p, rollout, seed=0)
    want = p["critic"]["layers"][0]["weight"] - 0.1 * g["critic"]["layers"][0]["weight"]
    torch.testing.assert_close(p1["critic"]["layers"][0]["weight"], want)
    assert int(s1.step) == 1 and isinstance(rollout, Record)
