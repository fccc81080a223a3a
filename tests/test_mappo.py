"""Multi-agent PPO (MAPPO / IPPO) through funcrl's single-agent PPO: TorchRL 0.14 parity in float64
with weights copied (``MAPPOLoss``, ``IPPOLoss``, and ``ClipPPOLoss`` / ``KLPENPPOLoss`` /
``PPOLoss`` on the ``("agents", ...)`` keys, every loss value and every gradient), multi-agent GAE
against ``MultiAgentGAE``, per-agent independence of the advantages, the critic's information
structure, and the trainer on a grouped rollout.
"""

from __future__ import annotations

import functools
import itertools
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import funcrl
from funcrl import optim, ppo, tree
from funcrl.distributions import NormalParamExtractor
from funcrl.multiagent import MultiAgentMLP, group_view, ppo_config, ppo_nets
from funcrl.objectives import on_policy
from funcrl.record import Record
from funcrl.specs import Unbounded
from tests.test_ppo import exact_coefficients, funcrl_grads, perturbed

F64 = torch.float64
NA, D, A, E, T, NACT = 3, 4, 2, 2, 5, 4
LOW = torch.tensor([[-1.0, -2.0], [-1.0, -1.0], [-0.5, -1.5]], dtype=F64)
HIGH = torch.tensor([[1.0, 2.0], [0.5, 1.0], [1.5, 0.5]], dtype=F64)
COMBOS = list(itertools.product([True, False], repeat=2))  # (centralized_critic, share_params)


class BoxSpec:
    shape = (NA, A)
    low, high = LOW, HIGH


class DiscreteSpec:
    shape = (NA,)
    n = NACT


OBS_SPEC = Unbounded(shape=(NA, D))


def make_nets(centralized=True, share=True, discrete=False):
    spec = DiscreteSpec if discrete else BoxSpec
    return ppo_nets(
        OBS_SPEC, spec, centralized_critic=centralized, share_params=share, depth=2, num_cells=8
    )


def grouped_rollout(params, nets, *, seed=0, team=False, dtype=F64):
    """An ``[E, T]`` rollout in TorchRL's VMAS layout from a perturbed copy of ``params``: per-agent
    entries under ``"agents"``, per-agent rewards (``team=True``: one team reward ``[E, T, 1]`` at
    the top), team done/terminated flags ``[E, T, 1]`` with a termination and a truncation."""
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(E, T, NA, D, generator=g, dtype=dtype)
    torch.manual_seed(seed)
    entries = on_policy.explore(perturbed(params, 0.3, seed + 1), obs, nets=nets)
    term = torch.zeros(E, T, 1, dtype=torch.bool)
    trunc = torch.zeros(E, T, 1, dtype=torch.bool)
    term[0, 2] = True
    trunc[1, 3] = True
    data = {
        ("agents", "observation"): obs,
        **{("agents", k): v for k, v in entries.items()},
        ("next", "agents", "observation"): torch.randn(E, T, NA, D, generator=g, dtype=dtype),
        ("next", "terminated"): term,
        ("next", "truncated"): trunc,
        ("next", "done"): term | trunc,
    }
    if team:
        data["next", "reward"] = torch.randn(E, T, 1, generator=g, dtype=dtype)
    else:
        data["next", "agents", "reward"] = torch.randn(E, T, NA, 1, generator=g, dtype=dtype)
    return Record(data, batch_ndim=2)


# -- TorchRL side ----------------------------------------------------------------------------------


class ParamExtractor(torch.nn.Module):
    # funcrl's float64 extractor: tensordict's biased softplus computes its bias in float32.
    def __init__(self, nets):
        super().__init__()
        self.extract = NormalParamExtractor(nets.scale_mapping, nets.scale_lb)

    def forward(self, x):
        return self.extract(x)


def _torchrl_mlp(net: MultiAgentMLP, p):
    from torchrl.modules import MultiAgentMLP as TMultiAgentMLP

    m = TMultiAgentMLP(
        net.n_agent_inputs,
        net.n_agent_outputs,
        net.n_agents,
        centralized=net.centralized,
        share_params=net.share_params,
        depth=net.depth,
        num_cells=net.num_cells,
        activation_class=torch.nn.Tanh,
    ).double()
    flat = {
        f"{2 * i}.{name}": t for i, layer in enumerate(p["layers"]) for name, t in layer.items()
    }
    with torch.no_grad():
        for k, v in flat.items():
            target = m.params.get(tuple(k.split(".")))
            assert target.shape == v.shape, (k, target.shape, v.shape)
            target.data.copy_(v)
    return m


def _mlp_grads(td_params, prefix, like):
    layers = [dict(layer) for layer in like["layers"]]
    for i, layer in enumerate(like["layers"]):
        for name in layer:
            layers[i][name] = td_params.get((*prefix, str(2 * i), name)).grad
    return {"layers": layers}


def torchrl_modules(p, nets):
    from tensordict.nn import TensorDictModule
    from torchrl.modules import ProbabilisticActor, TanhNormal, ValueOperator

    actor_mlp = _torchrl_mlp(nets.actor, p["actor"])
    if nets.discrete:
        module = TensorDictModule(
            actor_mlp, in_keys=[("agents", "observation")], out_keys=[("agents", "logits")]
        )
        in_keys, cls, kw = [("agents", "logits")], torch.distributions.Categorical, {}
    else:
        module = TensorDictModule(
            torch.nn.Sequential(actor_mlp, ParamExtractor(nets)),
            in_keys=[("agents", "observation")],
            out_keys=[("agents", "loc"), ("agents", "scale")],
        )
        in_keys, cls, kw = [("agents", "loc"), ("agents", "scale")], TanhNormal, {}
        kw = {"low": LOW, "high": HIGH}
    actor = ProbabilisticActor(
        module,
        in_keys=in_keys,
        out_keys=[("agents", "action")],
        distribution_class=cls,
        distribution_kwargs=kw,
        return_log_prob=True,
        log_prob_key=("agents", "action_log_prob"),
    ).double()
    critic = ValueOperator(
        _torchrl_mlp(nets.critic, p["critic"]),
        in_keys=[("agents", "observation")],
        out_keys=[("agents", "state_value")],
    ).double()
    return actor, critic


KEYS = dict(
    action=("agents", "action"),
    sample_log_prob=("agents", "action_log_prob"),
    value=("agents", "state_value"),
    reward=("agents", "reward"),
    done=("agents", "done"),
    terminated=("agents", "terminated"),
)


def torchrl_loss(p, nets, cfg: ppo.Config, kind: str):
    """``kind``: ``"mappo"`` / ``"ippo"`` (TorchRL's multi-agent losses) or ``"ppo"`` (the
    single-agent class of ``cfg.variant`` on the agents' keys, as TorchRL's MAPPO example)."""
    from torchrl.objectives import ClipPPOLoss, KLPENPPOLoss, PPOLoss, ValueEstimators
    from torchrl.objectives.multiagent import IPPOLoss, MAPPOLoss

    actor, critic = torchrl_modules(p, nets)
    common = dict(
        entropy_bonus=cfg.entropy_bonus,
        samples_mc_entropy=cfg.samples_mc_entropy,
        entropy_coeff=cfg.entropy_coeff,
        critic_coeff=cfg.critic_coeff,
        loss_critic_type=cfg.loss_critic_type,
        normalize_advantage=cfg.normalize_advantage,
        normalize_advantage_exclude_dims=cfg.normalize_advantage_exclude_dims,
        clip_value=cfg.clip_value,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if kind in ("mappo", "ippo"):
            cls = MAPPOLoss if kind == "mappo" else IPPOLoss
            ref = cls(actor, critic, clip_epsilon=cfg.clip_epsilon, **common)
        elif cfg.variant == "clip":
            ref = ClipPPOLoss(actor, critic, clip_epsilon=cfg.clip_epsilon, **common)
        elif cfg.variant == "kl":
            ref = KLPENPPOLoss(
                actor, critic, dtarg=cfg.dtarg, beta=cfg.beta, increment=cfg.increment,
                decrement=cfg.decrement, **common,
            )  # fmt: skip
        else:
            ref = PPOLoss(actor, critic, **common)
        ref.set_keys(**KEYS)
        est = ValueEstimators.MAGAE if kind in ("mappo", "ippo") else ValueEstimators.GAE
        ref.make_value_estimator(est, gamma=cfg.gamma, lmbda=cfg.lmbda)
    return exact_coefficients(ref, cfg)


def torchrl_td(rollout):
    """TorchRL's ``DoneTransform``: the team flags broadcast over the agents under
    ``("next", "agents")``; a team reward too."""
    td = rollout.to_tensordict()
    for k in ("done", "terminated", "truncated", "reward"):
        if ("next", k) in td.keys(True) and ("next", "agents", k) not in td.keys(True):
            td.set(("next", "agents", k), td["next", k].unsqueeze(-2).expand(E, T, NA, 1).clone())
    return td


def torchrl_grads(ref, p):
    actor_prefix = ("module", "0", "module", "0", "params")
    if "logits" in str(ref.actor_network.out_keys):
        actor_prefix = ("module", "0", "module", "params")
    return {
        "actor": _mlp_grads(ref.actor_network_params, actor_prefix, p["actor"]),
        "critic": _mlp_grads(ref.critic_network_params, ("module", "params"), p["critic"]),
    }


def _sum_losses(td):
    return sum(v for k, v in td.items() if k.startswith("loss_"))


CASES = [
    # (kind, centralized, share, discrete, config)
    *[("mappo" if c else "ippo", c, s, False, ppo_config()) for c, s in COMBOS],
    # TorchRL's MAPPO example: ClipPPOLoss on the agents' keys, its settings.
    (
        "ppo",
        True,
        True,
        False,
        ppo_config(entropy_coeff=1e-4, normalize_advantage=False, lmbda=0.9),
    ),
    ("ppo", False, False, False, ppo_config(clip_value=0.1, loss_critic_type="l2")),
    ("ppo", True, False, False, ppo_config(samples_mc_entropy=3, clip_epsilon=(0.1, 0.3))),
    ("ppo", True, True, False, ppo_config(variant="kl", normalize_advantage=False)),
    ("ppo", False, True, False, ppo_config(variant="plain", critic_coeff=0.5)),
    ("mappo", True, True, True, ppo_config()),
    ("ppo", False, False, True, ppo_config(variant="kl", beta=0.3, dtarg=1e-6)),
]


@pytest.mark.torchrl
@pytest.mark.parametrize(
    "kind,centralized,share,discrete,cfg",
    CASES,
    ids=[f"{c[0]}-{'cent' if c[1] else 'local'}-{'shared' if c[2] else 'indep'}-{i}"
         for i, c in enumerate(CASES)],
)  # fmt: skip
def test_multiagent_ppo_parity_with_torchrl(kind, centralized, share, discrete, cfg):
    pytest.importorskip("torchrl")
    nets = make_nets(centralized, share, discrete)
    spec = DiscreteSpec if discrete else BoxSpec
    p = ppo.init(0, OBS_SPEC, spec, cfg, nets, dtype=F64)
    rollout = grouped_rollout(p, nets)
    loss_fn = functools.partial(ppo.loss, config=cfg, nets=nets)
    g, out = funcrl_grads(loss_fn, p, group_view(rollout), seed=5)
    ref = torchrl_loss(p, nets, cfg, kind)
    torch.manual_seed(5)
    td = ref(torchrl_td(rollout))
    keys = [k for k in td.keys() if k in out]
    assert {"loss_objective", "loss_critic", "kl_approx"} <= set(keys)
    if cfg.entropy_bonus:
        assert "loss_entropy" in keys
    for k in keys:
        torch.testing.assert_close(out[k], td[k].reshape(out[k].shape), rtol=1e-7, atol=1e-9, msg=k)
    if cfg.variant == "kl":
        torch.testing.assert_close(out["kl_beta"], ref.beta)
        # TorchRL adapts beta in place before its backward (see tests/test_ppo.py): compare the
        # gradients with the adaptation switched off on its side.
        ref = torchrl_loss(p, nets, cfg, kind)
        ref.increment, ref.decrement = 1.0, 1.0
        torch.manual_seed(5)
        td = ref(torchrl_td(rollout))
    _sum_losses(td).backward()
    torch.testing.assert_close(g, torchrl_grads(ref, p), rtol=1e-7, atol=1e-9)


@pytest.mark.torchrl
@pytest.mark.parametrize("team", [False, True], ids=["agent-reward", "team-reward"])
def test_multiagent_gae_matches_torchrl(team):
    """``on_policy.advantages`` on the group view == TorchRL's ``MultiAgentGAE`` on the grouped
    rollout (which broadcasts a team reward / done over the agents itself)."""
    pytest.importorskip("torchrl")
    nets = make_nets(True, False)
    cfg = ppo_config(gamma=0.95, lmbda=0.9)
    p = ppo.init(0, OBS_SPEC, BoxSpec, cfg, nets, dtype=F64)
    rollout = grouped_rollout(p, nets, team=team)
    ref = torchrl_loss(p, nets, cfg, "mappo")
    td = rollout.to_tensordict()
    if not team:
        td = torchrl_td(rollout)  # per-agent reward: done/terminated under the group too
    else:
        ref.set_keys(reward="reward", done="done", terminated="terminated")
    ref.value_estimator(td, params=ref.critic_network_params.detach())
    got = on_policy.advantages(p, group_view(rollout), config=cfg, nets=nets)
    assert got["advantage"].shape == (E, T, NA, 1)
    for k, ref_k in (("advantage", "advantage"), ("value_target", "value_target")):
        torch.testing.assert_close(got[k], td[ref_k], rtol=1e-10, atol=1e-12, msg=k)
    torch.testing.assert_close(got["state_value"], td["agents", "state_value"])


# -- the agent dim is independent -------------------------------------------------------------------


@settings(max_examples=10, deadline=None)
@given(
    gamma=st.floats(0.5, 1.0),
    lmbda=st.floats(0.0, 1.0),
    time_major=st.booleans(),
)
def test_each_agents_advantage_is_its_own_single_agent_gae(gamma, lmbda, time_major):
    """IPPO with shared params: agent ``i``'s advantages are single-agent GAE on agent ``i``'s
    slice of the rollout, with the same MLP as a single-agent critic (so the time dim is never
    confused with the agent dim), in both layouts."""
    nets = make_nets(False, True)
    cfg = ppo_config(gamma=gamma, lmbda=lmbda, time_dim=0 if time_major else -1)
    p = ppo.init(0, OBS_SPEC, BoxSpec, cfg, nets, dtype=F64)
    rollout = group_view(grouped_rollout(p, nets))
    if time_major:
        rollout = rollout.apply(lambda x: x.transpose(0, 1), batch_ndim=2)
    got = on_policy.advantages(p, rollout, config=cfg, nets=nets)
    single = ppo.Nets(actor=nets.actor.net, critic=nets.critic.net)
    for i in range(NA):
        agent = rollout.apply(lambda x, i=i: x.select(2, i) if x.dim() > 3 else x[:, :, 0])
        agent = agent.update(
            {k: rollout[k][:, :, i] for k in (("next", "reward"), ("next", "done"),
                                                ("next", "terminated"))}
        )  # fmt: skip
        want = on_policy.advantages(p, agent, config=cfg, nets=single)
        torch.testing.assert_close(got["advantage"][:, :, i], want["advantage"])
        torch.testing.assert_close(got["value_target"][:, :, i], want["value_target"])


def test_normalized_advantage_is_per_agent_by_hand():
    # exclude_dims=(-2,) keeps agents apart: agent 0's A = (1, 3) -> (-1, 1)/sqrt(2) ... per agent.
    adv = torch.tensor([[[1.0], [10.0]], [[3.0], [30.0]]], dtype=F64)  # [B=2, n=2, 1]
    got = on_policy.normalize_advantage(adv, (-2,))
    s = 2**0.5  # unbiased std of (1, 3) is sqrt(2); of (10, 30) is 10 sqrt(2)
    want = torch.tensor([[[-1 / s], [-1 / s]], [[1 / s], [1 / s]]], dtype=F64)
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize("centralized", [True, False])
def test_only_the_mappo_critic_sees_the_other_agents(centralized):
    nets = make_nets(centralized, share=False)
    p = ppo.init(0, OBS_SPEC, BoxSpec, nets=nets, dtype=F64)
    obs = torch.randn(NA, D, dtype=F64)
    jac = torch.func.jacrev(lambda o: on_policy.state_value(p, o, nets=nets).squeeze(-1))(obs)
    off = jac[~torch.eye(NA, dtype=torch.bool)]  # dV_i / do_j, i != j
    assert (off.abs().sum() > 0) == centralized
    # The actor is decentralised either way.
    jac_pi = torch.func.jacrev(lambda o: nets.actor(p["actor"], o))(obs)  # [n, 2a, n, d]
    for i, j in itertools.product(range(NA), repeat=2):
        assert (jac_pi[i, :, j].abs().sum() > 0) == (i == j)


@pytest.mark.parametrize("centralized,share", COMBOS)
def test_ppo_nets_layout(centralized, share):
    nets = make_nets(centralized, share)
    assert isinstance(nets, ppo.Nets) and nets.agent_shape == (NA,)
    assert nets.distribution == "tanh_normal"
    assert (nets.actor.n_agent_inputs, nets.actor.n_agent_outputs) == (D, 2 * A)
    assert not nets.actor.centralized and nets.critic.centralized == centralized
    assert nets.actor.share_params == nets.critic.share_params == share
    p = ppo.init(0, OBS_SPEC, BoxSpec, nets=nets)
    w = p["critic"]["layers"][0]["weight"]
    assert w.shape == ((NA,) if not share else ()) + (8, D * (NA if centralized else 1))
    torch.testing.assert_close(p["action_bounds"]["low"], LOW.float())
    discrete = make_nets(centralized, share, discrete=True)
    assert discrete.distribution == "categorical" and discrete.actor.n_agent_outputs == NACT
    assert ppo.Nets().agent_shape == ()


def test_mappo_config_is_torchrls_mappoloss_defaults():
    cfg = ppo_config()
    assert (cfg.variant, cfg.entropy_coeff, cfg.normalize_advantage) == ("clip", 0.01, True)
    assert cfg.normalize_advantage_exclude_dims == (-2,)
    assert ppo_config(entropy_coeff=0.0).entropy_coeff == 0.0


# -- training ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("discrete", [False, True])
def test_trainer_step_on_a_grouped_rollout(discrete):
    nets = make_nets(True, False, discrete)
    spec = DiscreteSpec if discrete else BoxSpec
    cfg = ppo_config()
    p = ppo.init(0, OBS_SPEC, spec, cfg, nets)
    rollout = group_view(grouped_rollout(p, nets, dtype=torch.float32))
    train = ppo.trainer(optim.adam(1e-2), config=cfg, nets=nets, epochs=2, num_minibatches=2)
    state = train.init(p)
    new, state, metrics = train.step(p, state, rollout, funcrl.random.key(0))
    assert int(state.step) == 1
    for k in ("loss_objective", "loss_critic", "loss_entropy"):
        assert metrics[k].shape == () and torch.isfinite(metrics[k])
    # Every agent's own actor and critic moved (independent params: a leading agent dim).
    for name in ("actor", "critic"):
        delta = new[name]["layers"][0]["weight"] - p[name]["layers"][0]["weight"]
        assert delta.shape[0] == NA and bool((delta.flatten(1).abs().sum(1) > 0).all())
    # The loss on the rollout after the step reads the same keys (nothing was consumed).
    ppo.loss(new, rollout, config=cfg, nets=nets)
    assert tree.structure(new) == tree.structure(p)
