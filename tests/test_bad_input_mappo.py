"""Bad input to multi-agent PPO (MAPPO / IPPO): every error names the function and the argument or
key, and says what was expected against what was given."""

from __future__ import annotations

import pytest
import torch

from funcrl import a2c, ppo
from funcrl.multiagent import MultiAgentMLP, group_view, ppo_nets
from funcrl.objectives import on_policy
from funcrl.specs import Bounded, Unbounded
from tests.test_mappo import NA, BoxSpec, DiscreteSpec, grouped_rollout, make_nets

OBS_SPEC = Unbounded(shape=(NA, 4))


def _setup(centralized=True, share=True):
    nets = make_nets(centralized, share)
    p = ppo.init(0, OBS_SPEC, BoxSpec, nets=nets)
    return p, nets, group_view(grouped_rollout(p, nets, dtype=torch.float32))


def _other_agents(x: torch.Tensor, n: int) -> torch.Tensor:
    """``x [E, T, NA, ...]`` with ``n`` agents instead (repeats agent 0 or drops the last)."""
    return torch.cat([x, x[:, :, :1].expand(*x.shape[:2], n - NA, *x.shape[3:])], 2)[:, :, :n]


# -- the batch ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [NA - 1, NA + 1])
@pytest.mark.parametrize(
    "key,match",
    [
        ("observation", r"ppo.loss: batch\['observation'\] has shape .*n_agents=3"),
        ("action", r"ppo.loss: batch\['action'\] has shape .*expected \(2, 5, 3, 2\)"),
        ("action_log_prob", r"ppo.loss: batch\['action_log_prob'\] has shape .*\(2, 5, 3\)"),
        (("next", "reward"), r"ppo.loss: batch\[\('next', 'reward'\)\] has shape .*\(2, 5, 3, 1\)"),
        (("next", "done"), r"ppo.loss: batch\[\('next', 'done'\)\] has shape"),
    ],
)
def test_loss_rejects_a_wrong_number_of_agents(key, match, n):
    p, nets, batch = _setup()
    with pytest.raises(ValueError, match=match):
        ppo.loss(p, batch.set(key, _other_agents(batch[key], n)), nets=nets)


def test_loss_rejects_observation_and_next_observation_disagreeing():
    p, nets, batch = _setup()
    nxt = _other_agents(batch["next", "observation"], NA + 1)
    with pytest.raises(ValueError, match=r"ppo.loss: batch\[\('next', 'observation'\)\]"):
        ppo.loss(p, batch.set(("next", "observation"), nxt), nets=nets)


def test_team_flags_are_not_broadcast_silently():
    """A grouped rollout not passed through group_view has team flags [E, T, 1]: an error naming
    the key, not a silent broadcast over the agents."""
    p, nets, _ = _setup()
    raw = grouped_rollout(p, nets, dtype=torch.float32, team=True)
    flat = raw.exclude("agents").update(
        {k: raw["agents", k] for k in ("observation", "action", "action_log_prob", "loc", "scale")}
    )
    flat = flat.set(("next", "observation"), raw["next", "agents", "observation"])
    flat = flat.exclude(("next", "agents"))
    with pytest.raises(ValueError, match=r"ppo.loss: batch\[\('next', 'reward'\)\].*n_agents"):
        ppo.loss(p, flat, nets=nets)


def test_advantage_without_agent_dim_is_rejected():
    p, nets, batch = _setup()
    batch = on_policy.advantages(p, batch, config=ppo.Config(), nets=nets)
    team_adv = batch["advantage"].mean(-2)  # [E, T, 1]
    with pytest.raises(ValueError, match=r"ppo.loss: batch\['advantage'\] has shape \(2, 5, 1\)"):
        ppo.loss(p, batch.set("advantage", team_adv), nets=nets)


def test_advantages_name_their_owner_and_key():
    p, nets, batch = _setup()
    bad = batch.set("observation", _other_agents(batch["observation"], NA + 1))
    with pytest.raises(ValueError, match=r"ppo.trainer: batch\['observation'\].*n_agents=3"):
        on_policy.advantages(p, bad, config=ppo.Config(), nets=nets, owner="ppo.trainer")


def test_discrete_action_with_agents_wrong():
    nets = make_nets(True, True, discrete=True)
    p = ppo.init(0, OBS_SPEC, DiscreteSpec, nets=nets)
    batch = group_view(grouped_rollout(p, nets, dtype=torch.float32))
    with pytest.raises(ValueError, match=r"ppo.loss: batch\['action'\] has shape \(2, 5\)"):
        ppo.loss(p, batch.set("action", batch["action"][..., 0]), nets=nets)


def test_a2c_reads_the_same_agent_checks():
    nets = a2c.Nets(actor=make_nets().actor, critic=make_nets().critic)
    p = a2c.init(0, OBS_SPEC, BoxSpec, nets=nets)
    batch = group_view(grouped_rollout(p, make_nets(), dtype=torch.float32))
    bad = batch.set("action", _other_agents(batch["action"], NA + 1))
    with pytest.raises(ValueError, match=r"a2c.loss: batch\['action'\]"):
        a2c.loss(p, bad, nets=nets)


# -- nets and specs -----------------------------------------------------------------------------------


def test_nets_for_different_agents_are_rejected():
    actor = MultiAgentMLP(4, 4, 3, centralized=False, share_params=True, depth=1, num_cells=8)
    critic = MultiAgentMLP(4, 1, 4, centralized=True, share_params=True, depth=1, num_cells=8)
    with pytest.raises(ValueError, match="on_policy.Nets: the actor has n_agents=3 but the critic"):
        ppo.Nets(actor=actor, critic=critic)


@pytest.mark.parametrize("which", ["observation_spec", "action_spec"])
def test_init_rejects_specs_for_other_agents(which):
    nets = make_nets()
    specs = {"observation_spec": OBS_SPEC, "action_spec": BoxSpec}
    specs[which] = Bounded(-1.0, 1.0, shape=(NA + 1, 2)) if which == "action_spec" else (
        Unbounded(shape=(NA + 1, 4))
    )  # fmt: skip
    with pytest.raises(ValueError, match=rf"ppo.init: {which} has shape \(4, .*n_agents=3"):
        ppo.init(0, specs["observation_spec"], specs["action_spec"], nets=nets)


def test_init_rejects_an_ungrouped_spec():
    with pytest.raises(ValueError, match=r"ppo.init: observation_spec has shape \(\).*n_agents=3"):
        ppo.init(0, 4, BoxSpec, nets=make_nets())


@pytest.mark.parametrize(
    "obs_spec,act_spec,kwargs,err,match",
    [
        (Unbounded(shape=(4,)), BoxSpec, {}, ValueError, "ppo_nets: observation_spec must have"),
        (
            Unbounded(shape=(NA + 1, 4)),
            BoxSpec,
            {},
            ValueError,
            "ppo_nets: observation_spec has n_agents=4 but action_spec has n_agents=3",
        ),
        (OBS_SPEC, BoxSpec, {"distribution": "categorical"}, TypeError, "ppo_nets: the categ"),
        (
            Unbounded(shape=(NA + 1, 4)),
            DiscreteSpec,
            {},
            ValueError,
            "ppo_nets: observation_spec has n_agents=4 but action_spec has n_agents=3",
        ),
        (Unbounded(shape=(4,)), DiscreteSpec, {}, ValueError, "ppo_nets: observation_spec must"),
        (OBS_SPEC, type("S", (), {"shape": (NA, 2), "n": 4}), {}, ValueError, "ppo_nets: a disc"),
        (
            OBS_SPEC,
            type("S", (), {"shape": (NA, 1), "n": 4}),
            {},
            ValueError,
            r"\[n_agents\] \(one",
        ),
        (OBS_SPEC, BoxSpec, {"distribution": "gamma"}, ValueError, "on_policy.Nets: distribution"),
    ],
)
def test_ppo_nets_rejects_bad_specs(obs_spec, act_spec, kwargs, err, match):
    with pytest.raises(err, match=match):
        ppo_nets(obs_spec, act_spec, **kwargs)
