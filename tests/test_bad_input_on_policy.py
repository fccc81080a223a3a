"""Bad input to the on-policy objectives (PPO, A2C, REINFORCE, on_policy): every error names the
function and the argument or key, and says what was expected against what was given."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from funcrl import a2c, optim, ppo, reinforce
from funcrl.objectives import on_policy
from funcrl.record import Record
from tests.test_ppo import OBS, BoxSpec, make_rollout

F32 = torch.float32


def _setup(distribution="categorical", cfg=None, module=ppo):
    nets = module.Nets(distribution=distribution, num_cells=(8,))
    cfg = module.Config() if cfg is None else cfg
    spec = 4 if distribution in ("categorical", "masked_categorical") else BoxSpec
    p = module.init(0, OBS, spec, cfg, nets)
    return p, make_rollout(p, nets, dtype=F32), cfg, nets


# -- configs ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"variant": "trpo"}, "ppo.Config: variant must be one of"),
        ({"clip_epsilon": 1.5}, r"ppo.Config: clip_epsilon must satisfy 0 <= eps_low < 1"),
        ({"clip_epsilon": (0.1, 0.2, 0.3)}, "ppo.Config: clip_epsilon must be a number or a pair"),
        ({"clip_epsilon": "0.2"}, "ppo.Config: clip_epsilon's eps_low must be a number"),
        ({"clip_value": True, "variant": "kl"}, "ppo.Config: clip_value=True.*variant='kl'"),
        ({"clip_value": True, "clip_epsilon": (0.1, 0.2)}, "ppo.Config: clip_value=True cannot"),
        ({"clip_value": -0.1}, "ppo.Config: clip_value must be > 0"),
        ({"increment": 0.5}, "ppo.Config: increment must be >= 1.0, got 0.5"),
        ({"decrement": 1.5}, r"ppo.Config: decrement must be in \(0, 1\], got 1.5"),
        ({"beta": -1.0}, "ppo.Config: beta must be >= 0"),
        ({"dtarg": 0.0}, "ppo.Config: dtarg must be > 0"),
        ({"samples_mc_kl": 0}, "ppo.Config: samples_mc_kl must be an int >= 1"),
        ({"samples_mc_entropy": 0}, "ppo.Config: samples_mc_entropy must be an int >= 1"),
        ({"gamma": 1.5}, r"ppo.Config: gamma must be in \[0, 1\], got 1.5"),
        ({"lmbda": -0.1}, r"ppo.Config: lmbda must be in \[0, 1\]"),
        ({"value_estimator": "vtrace"}, "ppo.Config: value_estimator must be one of"),
        ({"time_dim": 1}, r"ppo.Config: time_dim must be 0 \(rollout \[T, E\]\) or -1"),
        ({"loss_critic_type": "huber"}, "ppo.Config: loss_critic_type must be one of"),
        ({"reduction": "max"}, "ppo.Config: reduction must be one of"),
        ({"critic_coeff": -1.0}, "ppo.Config: critic_coeff must be >= 0"),
        ({"entropy_coeff": "0.01"}, "ppo.Config: entropy_coeff must be a number, got str"),
        ({"normalize_advantage_exclude_dims": [0]}, "ppo.Config: normalize_advantage_exclude"),
        ({"normalize_advantage_exclude_dims": (0, 0)}, "ppo.Config: .*repeats a dim"),
        ({"sample_log_prob_key": 3}, "ppo.Config: sample_log_prob_key must be a str or tuple"),
    ],
)
def test_ppo_config_rejects(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        ppo.Config(**kwargs)


@pytest.mark.parametrize("module", [a2c, reinforce])
def test_a2c_reinforce_config_reject(module):
    name = module.__name__.rsplit(".", 1)[-1]
    with pytest.raises(TypeError, match=f"{name}.Config: clip_value must be a number or None"):
        module.Config(clip_value=True)
    with pytest.raises(ValueError, match=f"{name}.Config: loss_critic_type must be one of"):
        module.Config(loss_critic_type="mse")


def test_nets_reject():
    with pytest.raises(ValueError, match="on_policy.Nets: distribution must be one of"):
        ppo.Nets(distribution="beta")
    with pytest.raises(TypeError, match="on_policy.Nets: trunk must be a funcrl net"):
        ppo.Nets(trunk=lambda p, x: x)


def test_init_rejects_trunk_without_out_features():
    class Trunk:
        def init(self, seed, device=None, dtype=None):
            return {}

        def __call__(self, p, x):
            return x

    with pytest.raises(TypeError, match="ppo.init: Nets.trunk needs an int out_features"):
        ppo.init(0, OBS, 4, nets=ppo.Nets(distribution="categorical", trunk=Trunk()))


# -- losses ----------------------------------------------------------------------------------------


LOSSES = [(ppo, "ppo.loss"), (a2c, "a2c.loss"), (reinforce, "reinforce.loss")]


@pytest.mark.parametrize("module,owner", LOSSES)
def test_loss_rejects_bad_batches(module, owner):
    p, batch, cfg, nets = _setup(module=module)

    def run(b, params=p):
        return module.loss(params, b, config=cfg, nets=nets)

    with pytest.raises(TypeError, match=f"{owner}: batch must be a funcrl.Record, got dict"):
        run(dict(batch.items()))
    with pytest.raises(ValueError, match=f"{owner}: batch has no batch dims"):
        run(batch[0, 0])
    with pytest.raises(KeyError, match=f"{owner}: params lack \\['critic'\\]"):
        run(batch, {k: v for k, v in p.items() if k != "critic"})
    with pytest.raises(KeyError, match=f"{owner}: batch has no key .*observation"):
        run(batch.exclude("observation"))
    with pytest.raises(TypeError, match=f"{owner}: batch\\['observation'\\] is torch.float64"):
        run(batch.set("observation", batch["observation"].double()))
    with pytest.raises(TypeError, match=f"{owner}: batch\\['action'\\] must be an integer index"):
        run(batch.set("action", batch["action"].float()))
    bad = batch.set("action", batch["action"].unsqueeze(-1))
    with pytest.raises(ValueError, match=rf"{owner}: batch\['action'\] has shape \(3, 6, 1\)"):
        run(bad)
    bad = batch.set(("next", "reward"), batch["next", "reward"].squeeze(-1))
    with pytest.raises(ValueError, match=rf"{owner}: batch\[\('next', 'reward'\)\] has shape"):
        run(bad)
    adv = on_policy.advantages(p, batch, config=cfg, nets=nets)
    with pytest.raises(ValueError, match=rf"{owner}: batch\['advantage'\] has shape \(3, 6\)"):
        run(adv.set("advantage", adv["advantage"].squeeze(-1)))
    with pytest.raises(ValueError, match=rf"{owner}: batch\['value_target'\] has shape \(3, 6\)"):
        run(adv.set("value_target", adv["value_target"].squeeze(-1)))


@pytest.mark.parametrize("module,owner", LOSSES)
def test_loss_rejects_a_continuous_action_of_the_wrong_size(module, owner):
    p, batch, cfg, nets = _setup("normal", module=module)
    with pytest.raises(ValueError, match=rf"{owner}: batch\['action'\] has shape \(3, 6, 3\), "):
        module.loss(p, batch.set("action", torch.zeros(3, 6, 3)), config=cfg, nets=nets)


def test_ppo_loss_rejects_bad_log_prob_and_missing_state():
    p, batch, cfg, nets = _setup()
    with pytest.raises(ValueError, match=r"ppo.loss: batch\['action_log_prob'\] has shape"):
        ppo.loss(p, batch.set("action_log_prob", batch["action_log_prob"][..., None]), nets=nets)
    with pytest.raises(KeyError, match="ppo.loss: batch has no key .*action_log_prob"):
        ppo.loss(p, batch.exclude("action_log_prob"), nets=nets)
    kl = ppo.Config(variant="kl")
    with pytest.raises(KeyError, match=r"ppo.loss: params lack \['kl_beta'\]"):
        ppo.loss(p, batch, config=kl, nets=nets)
    with pytest.raises(KeyError, match="ppo.loss: batch has no key .*logits"):
        ppo.loss({**p, "kl_beta": torch.tensor(1.0)}, batch.exclude("logits"), config=kl, nets=nets)
    clip = ppo.Config(clip_value=0.1)
    adv = on_policy.advantages(p, batch, config=clip, nets=nets).exclude("state_value")
    with pytest.raises(KeyError, match="ppo.loss: batch has no key .*state_value"):
        ppo.loss(p, adv, config=clip, nets=nets)


def test_masked_policy_needs_a_bool_mask_of_the_logits_shape():
    p, batch, cfg, nets = _setup("masked_categorical")
    with pytest.raises(KeyError, match="ppo.loss: batch has no key .*action_mask"):
        ppo.loss(p, batch.exclude("action_mask"), nets=nets)
    with pytest.raises(ValueError, match=r"on_policy.policy: action_mask must be bool \(3, 6, 4\)"):
        ppo.loss(p, batch.set("action_mask", batch["action_mask"].float()), nets=nets)
    with pytest.raises(KeyError, match="on_policy.policy: the masked_categorical policy needs"):
        on_policy.act(p, batch["observation"], nets=nets)


def test_advantages_reject():
    p, batch, cfg, nets = _setup()
    with pytest.raises(TypeError, match="advantages: rollout must be a funcrl.Record"):
        on_policy.advantages(p, {"observation": batch["observation"]}, config=cfg, nets=nets)
    with pytest.raises(ValueError, match="advantages: rollout has no batch dims"):
        on_policy.advantages(p, batch[0, 0], config=cfg, nets=nets)
    bad = batch.set(("next", "observation"), torch.zeros(3, 6, OBS + 1))
    with pytest.raises(ValueError, match=r"advantages: batch\[\('next', 'observation'\)\]"):
        on_policy.advantages(p, bad, config=cfg, nets=nets)
    bad = batch.set(("next", "done"), batch["next", "done"].squeeze(-1))
    with pytest.raises(ValueError, match=r"advantages: batch\[\('next', 'done'\)\] has shape"):
        on_policy.advantages(p, bad, config=cfg, nets=nets)


def test_small_functions_reject():
    with pytest.raises(ValueError, match="ppo.clipped_surrogate: log_weight .* and advantage"):
        ppo.clipped_surrogate(torch.zeros(4, 1), torch.zeros(4), ppo.clip_bounds(0.2))
    with pytest.raises(ValueError, match="normalize_advantage: exclude dim 3 is out of range"):
        on_policy.normalize_advantage(torch.zeros(4, 1), exclude_dims=(3,))
    p, batch, cfg, nets = _setup()
    with pytest.raises(ValueError, match="act: mode must be 'random' or 'deterministic'"):
        ppo.act(p, batch["observation"], nets=nets, mode="greedy")
    from funcrl.distributions import Categorical, IndependentNormal

    with pytest.raises(TypeError, match="kl_divergence: no closed form for KL\\(Categorical"):
        on_policy.kl_divergence(
            Categorical(logits=torch.zeros(2)), IndependentNormal(torch.zeros(2), 1.0)
        )


# -- the trainer -----------------------------------------------------------------------------------


def test_trainer_rejects():
    p, batch, cfg, nets = _setup()
    for name in ("epochs", "num_minibatches"):
        with pytest.raises(ValueError, match=f"on_policy.trainer: {name} must be an int >= 1"):
            ppo.trainer(optim.adam(1e-3), nets=nets, **{name: 0})
    train = ppo.trainer(optim.adam(1e-3), nets=nets, num_minibatches=4)
    with pytest.raises(KeyError, match=r"on_policy.trainer: params lack \[.critic.\]"):
        train.init({k: v for k, v in p.items() if k != "critic"})
    state = train.init(p)
    with pytest.raises(ValueError, match="on_policy.trainer.step: rollout must be a funcrl.Record"):
        train.step(p, state, dict(batch.items()))
    with pytest.raises(ValueError, match="18 samples do not split into num_minibatches=4"):
        train.step(p, state, batch)
    assert dataclasses.is_dataclass(cfg)
    assert isinstance(batch, Record)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"target_kl": 0.0}, "KLAdaptiveLR: target_kl must be finite and > 0, got 0.0"),
        ({"target_kl": float("inf")}, "KLAdaptiveLR: target_kl must be finite and > 0"),
        ({"factor": 1.0}, "KLAdaptiveLR: factor must be finite and > 1, got 1.0"),
        ({"min_lr": 0.0}, "KLAdaptiveLR: expected 0 < min_lr <= max_lr < inf, got min_lr=0.0"),
        ({"max_lr": 1e-6}, "KLAdaptiveLR: expected 0 < min_lr <= max_lr"),
        ({"learning_rate": 1.0}, r"KLAdaptiveLR: learning_rate must be in \[min_lr, max_lr\]"),
    ],
)
def test_kl_adaptive_lr_rejects(kwargs, match):
    args = {"learning_rate": 1e-3, "target_kl": 0.01, **kwargs}
    with pytest.raises(ValueError, match=match):
        on_policy.KLAdaptiveLR(**args)


def test_reward_scaling_rejects():
    with pytest.raises(ValueError, match=r"RewardScaling: gamma must be in \[0, 1\], got 2"):
        on_policy.RewardScaling(gamma=2)
    with pytest.raises(ValueError, match="RewardScaling: epsilon must be > 0"):
        on_policy.RewardScaling(epsilon=0.0)
    scaler = on_policy.RewardScaling()
    with pytest.raises(ValueError, match="RewardScaling.init: num_envs must be an int >= 1"):
        scaler.init(0)
    state = scaler.init(3)
    with pytest.raises(ValueError, match=r"RewardScaling: reward has shape \(3, 1\), expected"):
        scaler(state, torch.zeros(3, 1), torch.zeros(3, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"RewardScaling: terminated has shape \(2,\)"):
        scaler(state, torch.zeros(3), torch.zeros(2, dtype=torch.bool))


# -- the host loop's pieces ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args,match",
    [
        ((0, 4, 16), "on_policy.minibatch_draws: epochs must be an int >= 1, got 0"),
        ((2, 0, 16), "on_policy.minibatch_draws: num_minibatches must be an int >= 1, got 0"),
        ((2, 4, 0), "on_policy.minibatch_draws: n must be an int >= 1, got 0"),
        ((2.0, 4, 16), "on_policy.minibatch_draws: epochs must be an int >= 1, got 2.0"),
        ((True, 4, 16), "on_policy.minibatch_draws: epochs must be an int >= 1, got True"),
        ((2, 3, 16), "on_policy.minibatch_draws: n=16 samples do not split into"),
    ],
)
def test_minibatch_draws_rejects_bad_counts(args, match):
    from funcrl import random

    with pytest.raises(ValueError, match=match):
        on_policy.minibatch_draws(random.key(0), *args)


def test_minibatch_trainer_init_names_missing_params():
    p, _, cfg, nets = _setup()
    one = on_policy.minibatch_trainer(
        lambda params, mb, key=None: ppo.loss(params, mb, config=cfg, nets=nets), optim.adam(1e-3)
    )
    with pytest.raises(KeyError, match=r"on_policy.minibatch_trainer: params lack \[.critic.\]"):
        one.init({"actor": p["actor"]})
