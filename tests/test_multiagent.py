"""Multi-agent nets and mixers: shapes, hand values, properties, TorchRL parity, vmap, compile."""

from __future__ import annotations

import itertools

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from funcrl import tree
from funcrl.multiagent import (
    MultiAgentConvNet,
    MultiAgentMLP,
    QMixer,
    VDNMixer,
    qmix_mix,
    vdn_mix,
)
from funcrl.testing import assert_trees_all_close

COMBOS = list(itertools.product([False, True], [False, True]))  # (centralized, share_params)


# --- helpers: funcrl params -> TorchRL's flat names ------------------------------------------------


def _seq_layout(p):
    """``{"layers": [...]}`` -> ``{"0.weight", "0.bias", "2.weight", ...}`` (layer, activation)."""
    out = {}
    for i, layer in enumerate(p["layers"]):
        for name, t in layer.items():
            out[f"{2 * i}.{name}"] = t
    return out


def _qmixer_layout(p):
    out = {
        f"{k}.{n}": t for k in ("hyper_w_1", "hyper_w_final", "hyper_b_1") for n, t in p[k].items()
    }
    out.update({f"V.{k}": t for k, t in _seq_layout(p["V"]).items()})
    return out


def _load(td_params, flat, prefix=()):
    """Copies ``flat`` (dotted names) into a TensorDict of params in place."""
    with torch.no_grad():
        for k, v in flat.items():
            target = td_params.get((*prefix, *k.split(".")))
            assert target.shape == v.shape, (k, target.shape, v.shape)
            target.data.copy_(v)


# --- MultiAgentMLP ---------------------------------------------------------------------------------


@pytest.mark.parametrize("centralized,share_params", COMBOS)
def test_mlp_shapes_and_param_layout(centralized, share_params):
    net = MultiAgentMLP(3, 2, 4, centralized=centralized, share_params=share_params, depth=2)
    p = net.init(0)
    n_in = 12 if centralized else 3
    lead = () if share_params else (4,)
    assert [tuple(layer["weight"].shape) for layer in p["layers"]] == [
        (*lead, 32, n_in),
        (*lead, 32, 32),
        (*lead, 2, 32),
    ]
    for batch in [(), (5,), (2, 3)]:
        assert net(p, torch.randn(*batch, 4, 3)).shape == (*batch, 4, 2)


def test_mlp_agents_initialised_independently():
    net = MultiAgentMLP(3, 2, 4, centralized=False, share_params=False, depth=1, num_cells=8)
    p = net.init(0)
    w = p["layers"][0]["weight"]
    for i, j in itertools.combinations(range(4), 2):
        assert not torch.equal(w[i], w[j])
    assert_trees_all_close(net.init(0), p)  # a seed reproduces
    assert not torch.equal(net.init(1)["layers"][0]["weight"], w)
    # Same distribution as a single MLP: U(-1/sqrt(3), 1/sqrt(3)).
    assert w.abs().max() <= 3**-0.5


def test_mlp_per_agent_hand_computed():
    # depth 0: one linear map per agent, identity activation irrelevant.
    net = MultiAgentMLP(1, 1, 2, centralized=False, share_params=False, depth=0)
    p = {
        "layers": [
            {"weight": torch.tensor([[[2.0]], [[-3.0]]]), "bias": torch.tensor([[1.0], [0.5]])}
        ]
    }
    x = torch.tensor([[[1.0], [2.0]]])  # agent 0 sees 1, agent 1 sees 2
    torch.testing.assert_close(net(p, x), torch.tensor([[[3.0], [-5.5]]]))
    central = MultiAgentMLP(1, 1, 2, centralized=True, share_params=True, depth=0)
    pc = {"layers": [{"weight": torch.tensor([[1.0, 10.0]]), "bias": torch.tensor([0.0])}]}
    torch.testing.assert_close(central(pc, x), torch.tensor([[[21.0], [21.0]]]))


def test_mlp_centralized_properties():
    x = torch.randn(5, 3, 4)
    shared = MultiAgentMLP(4, 2, 3, centralized=True, share_params=True, depth=1, num_cells=8)
    y = shared(shared.init(0), x)
    torch.testing.assert_close(y[:, 0], y[:, 1])
    torch.testing.assert_close(y[:, 0], y[:, 2])
    indep = MultiAgentMLP(4, 2, 3, centralized=True, share_params=False, depth=1, num_cells=8)
    p = indep.init(0)
    y = indep(p, x)
    assert not torch.allclose(y[:, 0], y[:, 1])
    # Each agent sees everyone: changing agent 2's input changes agent 0's output...
    x2 = x.clone()
    x2[:, 2] += 1.0
    assert not torch.allclose(indep(p, x2)[:, 0], y[:, 0])
    # ...which a decentralized net never does.
    local = MultiAgentMLP(4, 2, 3, centralized=False, share_params=False, depth=1, num_cells=8)
    pl = local.init(0)
    torch.testing.assert_close(local(pl, x2)[:, 0], local(pl, x)[:, 0])


def test_mlp_several_inputs_are_concatenated():
    net = MultiAgentMLP(5, 1, 2, centralized=True, share_params=False, depth=1, num_cells=8)
    p = net.init(0)
    obs, act = torch.randn(7, 2, 3), torch.randn(7, 2, 2)
    torch.testing.assert_close(net(p, obs, act), net(p, torch.cat([obs, act], -1)))


@given(perm=st.permutations(range(4)), seed=st.integers(0, 2**16))
def test_shared_decentralized_is_permutation_equivariant(perm, seed):
    perm = torch.tensor(perm)
    net = MultiAgentMLP(3, 2, 4, centralized=False, share_params=True, depth=1, num_cells=8)
    p = net.init(seed)
    x = torch.randn(5, 4, 3, generator=torch.Generator().manual_seed(seed))
    torch.testing.assert_close(net(p, x[:, perm]), net(p, x)[:, perm])
    # Unshared params: permuting the agents' params with their inputs permutes the outputs.
    ind = MultiAgentMLP(3, 2, 4, centralized=False, share_params=False, depth=1, num_cells=8)
    pi = ind.init(seed)
    pperm = tree.map(lambda t: t[perm], pi)
    torch.testing.assert_close(ind(pperm, x[:, perm]), ind(pi, x)[:, perm])


def test_mlp_errors():
    net = MultiAgentMLP(3, 2, 4, centralized=False, share_params=False, depth=1)
    p = net.init(0)
    with pytest.raises(
        ValueError, match=r"input x has shape \(5, 3, 3\), expected \[\.\.\., 4, \*\]"
    ):
        net(p, torch.randn(5, 3, 3))
    with pytest.raises(
        ValueError, match=r"input x has shape \(5, 4, 2\), expected \[\.\.\., 4, 3\]"
    ):
        net(p, torch.randn(5, 4, 2))
    with pytest.raises(
        ValueError,
        match=r"params\['layers'\]\[0\]\['weight'\]: expected shape \(4, 32, 12\), got \(3,",
    ):
        MultiAgentMLP(3, 2, 4, centralized=True, share_params=False, depth=1)(
            tree.map(lambda t: t[:3], net.init(0)), torch.randn(5, 4, 3)
        )
    with pytest.raises(ValueError, match="n_agents must be positive"):
        MultiAgentMLP(3, 2, 0, centralized=False, share_params=False)
    with pytest.raises(ValueError, match="num_cells"):
        MultiAgentMLP(3, 2, 2, centralized=False, share_params=False, depth=2, num_cells=(4,))


def test_mlp_dropout_differs_per_agent_only_in_training():
    net = MultiAgentMLP(3, 2, 2, centralized=True, share_params=False, depth=1, dropout=0.5)
    p = tree.map(lambda t: t[:1].expand_as(t).clone(), net.init(0))  # identical agents
    x = torch.randn(4, 2, 3)
    y = net(p, x)
    torch.testing.assert_close(y[:, 0], y[:, 1])
    torch.manual_seed(0)
    yt = net(p, x, train=True)
    assert not torch.allclose(yt[:, 0], yt[:, 1])  # randomness="different" over agents


# --- MultiAgentConvNet -----------------------------------------------------------------------------


@pytest.mark.parametrize("centralized,share_params", COMBOS)
def test_convnet_shapes(centralized, share_params):
    net = MultiAgentConvNet(3, centralized, share_params, in_features=2, num_cells=(4, 5))
    p = net.init(0)
    c_in = 6 if centralized else 2
    lead = () if share_params else (3,)
    assert p["layers"][0]["weight"].shape == (*lead, 4, c_in, 5, 5)  # TorchRL's kernel 5
    x = torch.randn(2, 4, 3, 2, 13, 13)  # 13 -> 5 -> 1 with stride 2
    assert net(p, x).shape == (2, 4, 3, 5)
    assert net(p, x[0, 0]).shape == (3, 5)  # no batch dims
    y = net(p, x)
    if centralized and share_params:
        torch.testing.assert_close(y[..., 0, :], y[..., 2, :])
    else:
        assert not torch.allclose(y[..., 0, :], y[..., 2, :])


def test_convnet_errors():
    net = MultiAgentConvNet(3, False, False, in_features=2, num_cells=(4,))
    p = net.init(0)
    with pytest.raises(
        ValueError, match=r"MultiAgentConvNet\(.*\): input x has shape \(2, 4, 2, 9, 9\)"
    ):
        net(p, torch.randn(2, 4, 2, 9, 9))
    with pytest.raises(ValueError, match=r"expected \[\.\.\., 3, 2, \*, \*\]"):
        net(p, torch.randn(2, 3, 1, 9, 9))


# --- mixers ----------------------------------------------------------------------------------------


def test_vdn_hand_computed():
    q = torch.tensor([[[1.0], [2.0], [-0.5]], [[0.0], [0.0], [4.0]]])
    mixer = VDNMixer(3)
    assert mixer.init(0) == {}
    torch.testing.assert_close(mixer({}, q), torch.tensor([[2.5], [4.0]]))
    torch.testing.assert_close(vdn_mix(q), torch.tensor([[2.5], [4.0]]))
    with pytest.raises(ValueError, match="takes no state"):
        mixer({}, q, torch.zeros(2, 1))
    with pytest.raises(ValueError, match="n_agents=3"):
        mixer({}, q[:, :2])


def test_qmix_mix_hand_computed():
    # Two agents, embed 2; |w1| and |w_final| are used, so negative entries count positively.
    q = torch.tensor([[[1.0], [2.0]]])
    w1 = torch.tensor([[[1.0, -2.0], [0.5, 1.0]]])  # [B, n, e]
    b1 = torch.tensor([[0.0, -10.0]])
    w_final = torch.tensor([[-3.0, 1.0]])
    v = torch.tensor([[0.25]])
    # hidden = elu([1*1 + 2*0.5 + 0, 1*2 + 2*1 - 10]) = [2, elu(-6)]
    h = torch.tensor([2.0, torch.expm1(torch.tensor(-6.0)).item()])
    expected = 3.0 * h[0] + 1.0 * h[1] + 0.25
    torch.testing.assert_close(qmix_mix(q, w1, b1, w_final, v), expected.reshape(1, 1))


def test_qmixer_hand_computed_from_params():
    mixer = QMixer(state_shape=(1,), mixing_embed_dim=1, n_agents=2)
    lin = lambda w, b: {"weight": torch.tensor(w), "bias": torch.tensor(b)}  # noqa: E731
    p = {
        "hyper_w_1": lin([[1.0], [-2.0]], [0.0, 0.0]),  # w1 = |s * [1, -2]|
        "hyper_w_final": lin([[0.0]], [-0.5]),  # |w_final| = 0.5
        "hyper_b_1": lin([[0.0]], [1.0]),  # b1 = 1
        "V": {"layers": [lin([[1.0]], [0.0]), lin([[2.0]], [3.0])]},  # V(s) = 2 relu(s) + 3
    }
    q = torch.tensor([[[1.0], [1.0]]])
    s = torch.tensor([[2.0]])
    # w1 = [2, 4]; hidden = elu(2 + 4 + 1) = 7; Q_tot = 0.5 * 7 + (2 * 2 + 3) = 10.5
    torch.testing.assert_close(mixer(p, q, s), torch.tensor([[10.5]]))


def test_qmixer_shapes_and_errors():
    mixer = QMixer(state_shape=(3, 2), mixing_embed_dim=4, n_agents=3)
    p = mixer.init(0)
    assert p["hyper_w_1"]["weight"].shape == (12, 6)
    assert p["V"]["layers"][1]["weight"].shape == (1, 4)
    q, s = torch.randn(2, 5, 3, 1), torch.randn(2, 5, 3, 2)
    assert mixer(p, q, s).shape == (2, 5, 1)
    assert mixer(p, q[0, 0], s[0, 0]).shape == (1,)
    with pytest.raises(ValueError, match="state must be"):
        mixer(p, q, s[:, :4])
    with pytest.raises(ValueError, match="state must be"):
        mixer(p, q, None)
    with pytest.raises(ValueError, match=r"n_agents=3, 1\]"):
        mixer(p, q[..., :2, :], s)


@given(
    seed=st.integers(0, 2**16),
    agent=st.integers(0, 3),
    delta=st.floats(0.0, 10.0),
    scale=st.floats(0.1, 100.0),
)
def test_qmixer_monotone_in_each_agent(seed, agent, delta, scale):
    mixer = QMixer(state_shape=(5,), mixing_embed_dim=8, n_agents=4)
    p = mixer.init(seed, dtype=torch.float64)
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(6, 4, 1, generator=gen, dtype=torch.float64) * scale
    s = torch.randn(6, 5, generator=gen, dtype=torch.float64)
    q2 = q.clone()
    q2[:, agent] += delta
    assert (mixer(p, q2, s) >= mixer(p, q, s) - 1e-9).all()
    # The gradient dQ_tot/dQ_i is non-negative everywhere.
    grad = torch.func.grad(lambda x: mixer(p, x, s).sum())(q)
    assert (grad >= 0).all()


# --- TorchRL parity --------------------------------------------------------------------------------


@pytest.mark.parametrize("centralized,share_params", COMBOS)
def test_mlp_matches_torchrl(centralized, share_params):
    pytest.importorskip("torchrl", reason="TorchRL parity needs torchrl")
    from torchrl.modules import MultiAgentMLP as TorchRLMultiAgentMLP

    kw = dict(centralized=centralized, share_params=share_params, depth=2, num_cells=[8, 6])
    net = MultiAgentMLP(3, 2, 4, activation=torch.nn.ReLU, **kw)
    ref = TorchRLMultiAgentMLP(3, 2, 4, activation_class=torch.nn.ReLU, **kw)
    p = net.init(3)
    _load(ref.params, _seq_layout(p))
    x = torch.randn(2, 5, 4, 3)
    torch.testing.assert_close(net(p, x), ref(x), rtol=1e-5, atol=1e-5)
    # Several inputs are concatenated by both.
    torch.testing.assert_close(net(p, x[..., :1], x[..., 1:]), ref(x[..., :1], x[..., 1:]))


@pytest.mark.parametrize("centralized,share_params", COMBOS)
def test_convnet_matches_torchrl(centralized, share_params):
    pytest.importorskip("torchrl", reason="TorchRL parity needs torchrl")
    from torchrl.modules import MultiAgentConvNet as TorchRLMultiAgentConvNet

    # TorchRL's defaults: 3 layers of 32 channels, kernel 5, stride 2, ELU, squashed output.
    net = MultiAgentConvNet(3, centralized, share_params, in_features=2)
    ref = TorchRLMultiAgentConvNet(3, centralized, share_params, in_features=2)
    p = net.init(1)
    _load(ref.params, _seq_layout(p))
    x = torch.randn(2, 3, 2, 29, 29)  # 29 -> 13 -> 5 -> 1
    torch.testing.assert_close(net(p, x), ref(x), rtol=1e-5, atol=1e-5)
    x2 = torch.randn(2, 2, 3, 2, 29, 29)  # two batch dims
    torch.testing.assert_close(net(p, x2), ref(x2), rtol=1e-5, atol=1e-5)


def test_mixers_match_torchrl():
    pytest.importorskip("torchrl", reason="TorchRL parity needs torchrl")
    from torchrl.modules.models.multiagent import QMixer as TorchRLQMixer
    from torchrl.modules.models.multiagent import VDNMixer as TorchRLVDNMixer

    mixer = QMixer(state_shape=(3, 2), mixing_embed_dim=8, n_agents=4)
    ref = TorchRLQMixer(state_shape=(3, 2), mixing_embed_dim=8, n_agents=4, device="cpu")
    p = mixer.init(5)
    ref.load_state_dict(_qmixer_layout(p))
    q, s = torch.randn(2, 5, 4, 1), torch.randn(2, 5, 3, 2)
    torch.testing.assert_close(mixer(p, q, s), ref(q, s), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(VDNMixer(4)({}, q), TorchRLVDNMixer(4, "cpu")(q))


# --- vmap and compile ------------------------------------------------------------------------------


@pytest.mark.parametrize("share_params", [False, True])
def test_vmap_over_seeds(share_params):
    net = MultiAgentMLP(3, 2, 4, centralized=False, share_params=share_params, depth=1, num_cells=8)
    seeds = tree.stack([net.init(s) for s in range(3)])
    x = torch.randn(5, 4, 3)
    out = torch.func.vmap(net, in_dims=(0, None))(seeds, x)  # vmap over vmap for unshared params
    expected = torch.stack([net(net.init(s), x) for s in range(3)])
    torch.testing.assert_close(out, expected)
    mixer = QMixer(state_shape=(5,), mixing_embed_dim=4, n_agents=4)
    mp = tree.stack([mixer.init(s) for s in range(3)])
    q, st_ = torch.randn(5, 4, 1), torch.randn(5, 5)
    torch.testing.assert_close(
        torch.func.vmap(mixer, in_dims=(0, None, None))(mp, q, st_),
        torch.stack([mixer(mixer.init(s), q, st_) for s in range(3)]),
    )


def test_compile_fullgraph():
    torch._dynamo.reset()
    net = MultiAgentMLP(3, 2, 4, centralized=False, share_params=False, depth=1, num_cells=8)
    mixer = QMixer(state_shape=(5,), mixing_embed_dim=4, n_agents=4)

    def q_tot(params, obs, state):
        q = net(params["net"], obs)
        return mixer(params["mixer"], q.max(-1, keepdim=True).values, state)

    params = {"net": net.init(0), "mixer": mixer.init(1)}
    obs, state = torch.randn(5, 4, 3), torch.randn(5, 5)
    compiled = torch.compile(q_tot, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(params, obs, state), q_tot(params, obs, state))
    explain = torch._dynamo.explain(q_tot)(params, obs, state)
    assert explain.graph_break_count == 0


# --- grouped batches with single-agent losses (MADDPG / MASAC) -------------------------------------


def _grouped_batch(n=3, d=4, a=2, batch=8, seed=0):
    from funcrl.record import Record

    g = torch.Generator().manual_seed(seed)
    rec = Record(
        {
            ("agents", "observation"): torch.randn(batch, n, d, generator=g),
            ("agents", "action"): torch.rand(batch, n, a, generator=g) * 2 - 1,
            ("next", "agents", "observation"): torch.randn(batch, n, d, generator=g),
            ("next", "agents", "reward"): torch.randn(batch, n, 1, generator=g),
            ("next", "done"): torch.rand(batch, 1, generator=g) < 0.3,
            "state": torch.randn(batch, 5, generator=g),
        },
        batch_ndim=1,
    )
    return rec.set(("next", "terminated"), rec["next", "done"].clone())


def test_group_view_moves_group_keys_and_expands_team_flags():
    from funcrl.multiagent import group_view

    batch = _grouped_batch()
    flat = group_view(batch)
    assert set(flat.keys(include_nested=True, leaves_only=True)) == {
        "observation",
        "action",
        "state",
        ("next", "observation"),
        ("next", "reward"),
        ("next", "done"),
        ("next", "terminated"),
    }
    assert flat.batch_ndim == 1
    torch.testing.assert_close(flat["observation"], batch["agents", "observation"])
    torch.testing.assert_close(flat["next", "reward"], batch["next", "agents", "reward"])
    assert flat["next", "terminated"].shape == (8, 3, 1)
    for i in range(3):
        assert torch.equal(flat["next", "terminated"][:, i], batch["next", "terminated"])
    with pytest.raises(KeyError, match="no group 'robots'"):
        group_view(batch, "robots")
    bad = batch.set(("next", "done"), torch.zeros(8, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"\[\*B, 1\]"):
        group_view(bad)


def _maddpg(n=3, d=4, a=2):
    from funcrl import ddpg

    actor = MultiAgentMLP(
        d,
        a,
        n,
        centralized=False,
        share_params=True,
        activate_last_layer=True,
        depth=1,
        num_cells=16,
    )
    critic = MultiAgentMLP(d + a, 1, n, centralized=True, share_params=True, depth=1, num_cells=16)
    return ddpg.Nets(actor=actor, value=critic)


def test_maddpg_centralized_critic_matches_torchrl():
    pytest.importorskip("torchrl", reason="TorchRL parity needs torchrl")
    import warnings

    from tensordict.nn import TensorDictModule
    from torchrl.modules import MultiAgentMLP as TorchRLMultiAgentMLP
    from torchrl.objectives import DDPGLoss

    from funcrl import ddpg
    from funcrl.multiagent import group_view
    from funcrl.specs import Bounded, Unbounded

    n, d, a = 3, 4, 2
    nets = _maddpg(n, d, a)
    params = ddpg.init(0, Unbounded(shape=(n, d)), Bounded(-1.0, 1.0, shape=(n, a)), nets=nets)
    params["target_value"] = tree.map(lambda t: t + 0.05, params["value"])
    batch = _grouped_batch(n, d, a)
    out = ddpg.loss(params, group_view(batch), nets=nets)

    ref_actor = TorchRLMultiAgentMLP(
        d,
        a,
        n,
        centralized=False,
        share_params=True,
        activate_last_layer=True,
        depth=1,
        num_cells=16,
    )
    ref_critic = TorchRLMultiAgentMLP(
        d + a, 1, n, centralized=True, share_params=True, depth=1, num_cells=16
    )
    actor = TensorDictModule(
        ref_actor, in_keys=[("agents", "observation")], out_keys=[("agents", "action")]
    )
    critic = TensorDictModule(
        ref_critic,
        in_keys=[("agents", "observation"), ("agents", "action")],
        out_keys=[("agents", "state_action_value")],
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = DDPGLoss(actor, critic, delay_value=True, delay_actor=False)
        ref.set_keys(
            state_action_value=("agents", "state_action_value"),
            reward=("agents", "reward"),
            done=("agents", "done"),
            terminated=("agents", "terminated"),
        )
        _load(ref.actor_network_params, _seq_layout(params["actor"]), ("module", "params"))
        _load(ref.value_network_params, _seq_layout(params["value"]), ("module", "params"))
        _load(
            ref.target_value_network_params,
            _seq_layout(params["target_value"]),
            ("module", "params"),
        )
        td = batch.to_tensordict()
        # TorchRL's MADDPG example broadcasts the team's done/terminated over the agents.
        for k in ("done", "terminated"):
            td.set(("next", "agents", k), td["next", k].unsqueeze(-1).expand(8, n, 1))
        expected = ref(td)
    for k in ("loss_actor", "loss_value"):
        torch.testing.assert_close(out[k], expected[k].detach(), rtol=1e-5, atol=1e-5)
    assert out["td_error"].shape == (8, n)


def test_masac_with_grouped_batch():
    from funcrl import sac
    from funcrl.multiagent import group_view
    from funcrl.specs import Bounded, Unbounded

    n, d, a = 3, 4, 2
    nets = sac.Nets(
        actor=MultiAgentMLP(d, 2 * a, n, centralized=False, share_params=False, depth=1),
        qvalue=MultiAgentMLP(d + a, 1, n, centralized=True, share_params=True, depth=1),
    )
    # Per-agent specs: the bounds [a] broadcast over the agents.
    params = sac.init(0, Unbounded(shape=(d,)), Bounded(-1.0, 1.0, shape=(a,)), nets=nets)
    flat = group_view(_grouped_batch(n, d, a))
    torch.manual_seed(0)

    def total(p):
        losses = sac.loss({**params, **p}, flat, nets=nets)
        return losses["loss_actor"] + losses["loss_qvalue"] + losses["loss_alpha"], losses

    trainable = {k: params[k] for k in ("actor", "qvalue", "log_alpha")}
    grads, losses = torch.func.grad(total, has_aux=True)(trainable)
    assert losses["td_error"].shape == (8, n)
    assert all(torch.isfinite(v).all() for v in losses.values())
    assert tree.global_norm(grads["actor"]) > 0 and tree.global_norm(grads["qvalue"]) > 0
    # The agents' actor params are separate (share_params=False): each gets its own gradient.
    g0 = grads["actor"]["layers"][0]["weight"]
    assert g0.shape[0] == n and not torch.allclose(g0[0], g0[1])


@pytest.mark.parametrize("centralized,share_params", COMBOS)
def test_from_torchrl_builds_multiagent_nets(centralized, share_params):
    from torchrl.modules import MultiAgentConvNet as TorchRLMultiAgentConvNet
    from torchrl.modules import MultiAgentMLP as TorchRLMultiAgentMLP

    from funcrl.nn import from_torchrl

    ref = TorchRLMultiAgentMLP(
        3, 2, 4, centralized=centralized, share_params=share_params, depth=2, num_cells=[8, 6],
        activation_class=torch.nn.ReLU,
    )  # fmt: skip
    net, params = from_torchrl(ref)
    assert isinstance(net, MultiAgentMLP) and net.share_params == share_params
    x = torch.randn(2, 5, 4, 3)
    torch.testing.assert_close(net(params, x), ref(x), rtol=1e-5, atol=1e-5)
    ref_conv = TorchRLMultiAgentConvNet(3, centralized, share_params, in_features=2)
    conv, conv_params = from_torchrl(ref_conv)
    assert isinstance(conv, MultiAgentConvNet)
    img = torch.randn(2, 3, 2, 29, 29)
    torch.testing.assert_close(conv(conv_params, img), ref_conv(img), rtol=1e-5, atol=1e-5)


def test_from_torchrl_builds_mixers():
    from torchrl.modules.models.multiagent import QMixer as TorchRLQMixer
    from torchrl.modules.models.multiagent import VDNMixer as TorchRLVDNMixer

    from funcrl.nn import from_torchrl

    ref = TorchRLQMixer(state_shape=(3, 2), mixing_embed_dim=8, n_agents=4, device="cpu")
    mixer, params = from_torchrl(ref)
    assert isinstance(mixer, QMixer)
    q, s = torch.randn(2, 5, 4, 1), torch.randn(2, 5, 3, 2)
    torch.testing.assert_close(mixer(params, q, s), ref(q, s), rtol=1e-5, atol=1e-5)
    vdn, vdn_params = from_torchrl(TorchRLVDNMixer(4, "cpu"))
    assert isinstance(vdn, VDNMixer) and vdn_params == {}
    torch.testing.assert_close(vdn(vdn_params, q), q.sum(-2))
