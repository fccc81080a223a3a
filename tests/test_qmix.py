"""QMIX / VDN loss: hand values, gradients, TorchRL parity, training step, vmap, compile."""

from __future__ import annotations

import functools
import sys

import pytest
import torch

from funcrl import optim, qmix, tree
from funcrl.multiagent import MultiAgentMLP, QMixer, VDNMixer
from funcrl.nn import MLP
from funcrl.record import Record
from funcrl.specs import Categorical, OneHot, Unbounded
from funcrl.testing import assert_trees_all_close

N_AGENTS, D_OBS, N_ACT, STATE = 3, 4, 5, (2, 3)


def make_batch(batch=(7,), action_space="one_hot", seed=0, state=True):
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, N_ACT, (*batch, N_AGENTS), generator=g)
    action = torch.nn.functional.one_hot(idx, N_ACT) if action_space == "one_hot" else idx
    data = {
        ("agents", "observation"): torch.randn(*batch, N_AGENTS, D_OBS, generator=g),
        ("agents", "action"): action,
        ("next", "agents", "observation"): torch.randn(*batch, N_AGENTS, D_OBS, generator=g),
        ("next", "reward"): torch.randn(*batch, 1, generator=g),
        ("next", "done"): torch.rand(*batch, 1, generator=g) < 0.3,
    }
    data[("next", "terminated")] = data[("next", "done")].clone()
    if state:
        data["state"] = torch.randn(*batch, *STATE, generator=g)
        data[("next", "state")] = torch.randn(*batch, *STATE, generator=g)
    return Record(data, batch_ndim=len(batch))


def specs():
    return (
        Unbounded(shape=(N_AGENTS, D_OBS)),
        OneHot(N_ACT, shape=(N_AGENTS, N_ACT)),
        Unbounded(shape=STATE),
    )


def perturbed_targets(params, scale=0.05, seed=1):
    """Targets that differ from the online params, so the test sees which set is used."""
    g = torch.Generator().manual_seed(seed)
    out = dict(params)
    for k in ("local_value", "mixer"):
        out[f"target_{k}"] = tree.map(
            lambda t: t + scale * torch.randn(t.shape, generator=g), params[k]
        )
    return out


# --- init ------------------------------------------------------------------------------------------


def test_init_default_nets():
    params = qmix.init(0, *specs())
    assert set(params) == {"local_value", "mixer", "target_local_value", "target_mixer"}
    assert params["local_value"]["layers"][0]["weight"].shape == (256, D_OBS)
    assert params["local_value"]["layers"][-1]["weight"].shape == (N_ACT, 256)
    assert params["mixer"]["hyper_w_1"]["weight"].shape == (32 * N_AGENTS, 6)
    assert tree.allclose(params["target_mixer"], params["mixer"])
    assert params["target_mixer"] is not params["mixer"]
    no_target = qmix.init(0, *specs(), config=qmix.Config(delay_value=False))
    assert set(no_target) == {"local_value", "mixer"}
    with pytest.raises(ValueError, match="needs state_spec"):
        qmix.init(0, *specs()[:2])
    vdn = qmix.init(0, *specs()[:2], nets=qmix.Nets(mixer=VDNMixer(N_AGENTS)))
    assert vdn["mixer"] == {}
    with pytest.raises(ValueError, match=r"\[n_agents, d\]"):
        qmix.init(0, Unbounded(shape=(D_OBS,)), specs()[1], specs()[2])


# --- hand-computed ---------------------------------------------------------------------------------


def test_vdn_loss_hand_computed():
    # Two agents, one feature, two actions; local Q(o) = [o, -o] (a linear net, no hidden layer).
    local = MLP(1, 2, depth=0)
    lp = {"layers": [{"weight": torch.tensor([[1.0], [-1.0]]), "bias": torch.zeros(2)}]}
    params = {"local_value": lp, "mixer": {}, "target_local_value": tree.map(lambda t: 2 * t, lp)}
    params["target_mixer"] = {}
    batch = Record(
        {
            ("agents", "observation"): torch.tensor([[[1.0], [-2.0]]]),
            ("agents", "action"): torch.tensor([[0, 0]]),  # Q = 1 and -2: Q_tot = -1
            ("next", "agents", "observation"): torch.tensor([[[3.0], [-1.0]]]),
            ("next", "reward"): torch.tensor([[0.5]]),
            ("next", "terminated"): torch.tensor([[False]]),
        },
        batch_ndim=1,
    )
    cfg = qmix.Config(action_space="categorical", gamma=0.5)
    nets = qmix.Nets(local_value=local, mixer=VDNMixer(2))
    out = qmix.loss(params, batch, config=cfg, nets=nets)
    # Target net Q' = 2 [o, -o]: max over actions = 2|o| = 6 and 2; y = 0.5 + 0.5 * 8 = 4.5
    torch.testing.assert_close(out["loss"], torch.tensor((-1.0 - 4.5) ** 2))
    torch.testing.assert_close(out["td_error"], torch.tensor([abs(-1.0 - 4.5)]))
    # Terminated: no bootstrap; y = 0.5. l1 distance.
    done = batch.set(("next", "terminated"), torch.tensor([[True]]))
    cfg_l1 = qmix.Config(action_space="categorical", gamma=0.5, loss_function="l1")
    out = qmix.loss(params, done, config=cfg_l1, nets=nets)
    torch.testing.assert_close(out["loss"], torch.tensor(1.5))
    # Double DQN: online Q(o') = [o', -o'] picks actions 0 (o'=3) and 1 (o'=-1); the target
    # evaluates them: 2 * 3 + 2 * 1 = 8, the same here; make the nets disagree instead.
    params_dd = dict(params, target_local_value=tree.map(lambda t: -t, lp))
    cfg_dd = qmix.Config(action_space="categorical", gamma=0.5, double_dqn=True)
    out = qmix.loss(params_dd, batch, config=cfg_dd, nets=nets)
    # Target Q' = [-o, o] at the online picks: -3 and -1 -> y = 0.5 + 0.5 * (-4) = -1.5
    torch.testing.assert_close(out["loss"], torch.tensor((-1.0 + 1.5) ** 2))
    cfg_plain = qmix.Config(action_space="categorical", gamma=0.5)
    out = qmix.loss(params_dd, batch, config=cfg_plain, nets=nets)
    # Plain max over the target: max(-3, 3) + max(1, -1) = 4 -> y = 2.5
    torch.testing.assert_close(out["loss"], torch.tensor((-1.0 - 2.5) ** 2))


def test_action_mask_excludes_actions_from_the_max():
    local = MLP(1, 2, depth=0)
    lp = {"layers": [{"weight": torch.tensor([[1.0], [-1.0]]), "bias": torch.zeros(2)}]}
    params = {"local_value": lp, "mixer": {}}
    mask = torch.tensor([[[True, True], [True, False]]])
    batch = Record(
        {
            ("agents", "observation"): torch.tensor([[[1.0], [-2.0]]]),
            ("agents", "action"): torch.tensor([[0, 0]]),
            ("agents", "mask"): mask,
            ("next", "agents", "observation"): torch.tensor([[[3.0], [-1.0]]]),
            ("next", "agents", "mask"): mask,
            ("next", "reward"): torch.tensor([[0.0]]),
            ("next", "terminated"): torch.tensor([[False]]),
        },
        batch_ndim=1,
    )
    cfg = qmix.Config(
        action_space="categorical",
        gamma=1.0,
        delay_value=False,
        action_mask_key=("agents", "mask"),
    )
    out = qmix.loss(params, batch, config=cfg, nets=qmix.Nets(local_value=local, mixer=VDNMixer(2)))
    # Agent 1 may only take action 0 (Q = o' = -1): y = 3 + (-1) = 2; Q_tot = 1 - 2 = -1.
    torch.testing.assert_close(out["loss"], torch.tensor(9.0))


# --- gradients -------------------------------------------------------------------------------------


def test_gradients_reach_online_nets_only():
    nets = qmix.Nets(num_cells=(16,))
    params = perturbed_targets(qmix.init(0, *specs(), nets=nets))
    batch = make_batch()
    grads = torch.func.grad(lambda p: qmix.loss(p, batch, nets=nets)["loss"])(params)
    for k in ("local_value", "mixer"):
        assert tree.global_norm(grads[k]) > 0
    for k in ("target_local_value", "target_mixer"):
        assert tree.global_norm(grads[k]) == 0
    # Without target nets the bootstrap uses the online nets, gradient-stopped: the same gradient
    # as with targets that are detached copies of the online params.
    online = {k: params[k] for k in ("local_value", "mixer")}
    no_target = qmix.Config(delay_value=False)
    g_online = torch.func.grad(lambda p: qmix.loss(p, batch, config=no_target, nets=nets)["loss"])(
        online
    )

    def with_copies(p):
        copies = {"target_local_value": p["local_value"], "target_mixer": p["mixer"]}
        return qmix.loss({**p, **tree.detach(copies)}, batch, nets=nets)["loss"]

    assert_trees_all_close(g_online, torch.func.grad(with_copies)(online))


# --- errors ----------------------------------------------------------------------------------------


def test_errors_name_the_key_and_shape():
    nets = qmix.Nets(num_cells=(8,))
    params = qmix.init(0, *specs(), nets=nets)
    batch = make_batch()
    per_agent = batch.set(("next", "reward"), torch.zeros(7, N_AGENTS, 1))
    with pytest.raises(ValueError, match="team reward"):
        qmix.loss(params, per_agent, nets=nets)
    with pytest.raises(KeyError, match="state"):
        qmix.loss(params, batch.exclude("state"), nets=nets)
    with pytest.raises(ValueError, match=r"\('agents', 'action'\)"):
        qmix.loss(params, batch.set(("agents", "action"), torch.zeros(7, N_AGENTS, 2)), nets=nets)
    with pytest.raises(ValueError, match="double_dqn=True requires delay_value"):
        qmix.Config(double_dqn=True, delay_value=False)
    with pytest.raises(ValueError, match="loss_function"):
        qmix.Config(loss_function="huber")
    # VDN reads no state: a batch without one is fine.
    vdn = qmix.Nets(num_cells=(8,), mixer=VDNMixer(N_AGENTS))
    p = qmix.init(0, *specs()[:2], nets=vdn)
    assert qmix.loss(p, make_batch(state=False), nets=vdn)["loss"].shape == ()


# --- TorchRL parity --------------------------------------------------------------------------------


def _seq_layout(p):
    """``{"layers": [...]}`` -> TorchRL's ``{"0.weight", "0.bias", "2.weight", ...}``."""
    return {f"{2 * i}.{n}": t for i, layer in enumerate(p["layers"]) for n, t in layer.items()}


def _qmixer_layout(p):
    out = {
        f"{k}.{n}": t for k in ("hyper_w_1", "hyper_w_final", "hyper_b_1") for n, t in p[k].items()
    }
    out.update({f"V.{k}": t for k, t in _seq_layout(p["V"]).items()})
    return out


def _load(td_params, flat, prefix=()):
    """Copies ``flat`` (dotted names) into a TensorDict of params, in place."""
    with torch.no_grad():
        for k, v in flat.items():
            target = td_params.get((*prefix, *k.split(".")))
            assert target.shape == v.shape, (k, target.shape, v.shape)
            target.data.copy_(v)


def _torchrl_loss(local_kw, mixer, action_space, delay_value):
    from tensordict.nn import TensorDictModule
    from torchrl.modules import MultiAgentMLP as TorchRLMultiAgentMLP
    from torchrl.modules import QValueModule, SafeSequential
    from torchrl.objectives.multiagent import QMixerLoss

    local = TorchRLMultiAgentMLP(**local_kw)
    module = TensorDictModule(
        local, in_keys=[("agents", "observation")], out_keys=[("agents", "action_value")]
    )
    value_module = QValueModule(
        action_value_key=("agents", "action_value"),
        out_keys=[
            ("agents", "action"),
            ("agents", "action_value"),
            ("agents", "chosen_action_value"),
        ],
        action_space=action_space,
    )
    in_keys = [("agents", "chosen_action_value")] + (["state"] if mixer.needs_state else [])
    mixer_module = TensorDictModule(mixer, in_keys=in_keys, out_keys=["chosen_action_value"])
    return QMixerLoss(
        SafeSequential(module, value_module),
        mixer_module,
        action_space=action_space,
        delay_value=delay_value,
    )


@pytest.mark.filterwarnings("ignore:No target network updater")
@pytest.mark.parametrize(
    "share_params,mixer_kind,action_space,delay_value",
    [
        (True, "qmix", "one_hot", True),
        (False, "qmix", "categorical", True),
        (False, "vdn", "one_hot", True),
        (True, "qmix", "categorical", False),
    ],
)
def test_loss_matches_torchrl(share_params, mixer_kind, action_space, delay_value):
    pytest.importorskip("torchrl", reason="TorchRL parity needs torchrl")
    import warnings

    from torchrl.modules.models.multiagent import QMixer as TorchRLQMixer
    from torchrl.modules.models.multiagent import VDNMixer as TorchRLVDNMixer

    kw = dict(
        n_agent_inputs=D_OBS,
        n_agent_outputs=N_ACT,
        n_agents=N_AGENTS,
        centralized=False,
        share_params=share_params,
        depth=2,
        num_cells=8,
    )
    local = MultiAgentMLP(activation="relu", **kw)
    if mixer_kind == "qmix":
        mixer = QMixer(STATE, 6, N_AGENTS)
        ref_mixer = TorchRLQMixer(STATE, 6, N_AGENTS, device="cpu")
        mixer_layout = _qmixer_layout
    else:
        mixer, ref_mixer, mixer_layout = VDNMixer(N_AGENTS), TorchRLVDNMixer(N_AGENTS, "cpu"), dict
    nets = qmix.Nets(local_value=local, mixer=mixer)
    cfg = qmix.Config(action_space=action_space, delay_value=delay_value)
    obs_spec = Unbounded(shape=(N_AGENTS, D_OBS))
    act_spec = Categorical(N_ACT, shape=(N_AGENTS,))
    params = qmix.init(0, obs_spec, act_spec, Unbounded(shape=STATE), config=cfg, nets=nets)
    if delay_value:
        params = perturbed_targets(params)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = _torchrl_loss(
            dict(activation_class=torch.nn.ReLU, **kw),
            ref_mixer,
            action_space.replace("_", "-"),
            delay_value,
        )
    local_prefix = ("module", "0", "module", "params")
    _load(ref.local_value_network_params, _seq_layout(params["local_value"]), local_prefix)
    _load(ref.mixer_network_params, mixer_layout(params["mixer"]), ("module",))
    if delay_value:
        _load(
            ref.target_local_value_network_params,
            _seq_layout(params["target_local_value"]),
            local_prefix,
        )
        _load(ref.target_mixer_network_params, mixer_layout(params["target_mixer"]), ("module",))

    batch = make_batch(batch=(4, 6), action_space=action_space, seed=3)
    if mixer_kind == "vdn":
        batch = batch.exclude("state").exclude(("next", "state"))
    td = batch.to_tensordict()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = ref(td)
    out = qmix.loss(params, batch, config=cfg, nets=nets)
    torch.testing.assert_close(out["loss"], expected["loss"].detach(), rtol=1e-5, atol=1e-5)
    # TorchRL writes (Q_tot - y)^2 as [*B, 1]; funcrl returns |Q_tot - y| as [*B].
    torch.testing.assert_close(
        out["td_error"], td["td_error"].squeeze(-1).sqrt(), rtol=1e-5, atol=1e-5
    )


# --- training step, vmap, compile ------------------------------------------------------------------


@pytest.mark.parametrize("mixer", ["qmix", "vdn"])
def test_trainer_step(mixer):
    nets = qmix.Nets(num_cells=(16,), mixing_embed_dim=8)
    if mixer == "vdn":
        nets = qmix.Nets(num_cells=(16,), mixer=VDNMixer(N_AGENTS))
    params = qmix.init(0, *specs(), nets=nets)
    batch = make_batch(state=mixer == "qmix")
    train = qmix.trainer(optim.adam(1e-2), nets=nets, tau=0.5)
    state = train.init(params)
    first = None
    for _ in range(30):
        params, state, metrics = train.step(params, state, batch)
        first = metrics["loss"] if first is None else first
    assert metrics["loss"] < first  # fits a fixed batch
    assert not tree.allclose(params["target_local_value"], params["local_value"])
    assert int(state.step) == 30


def test_loss_vmap_over_seeds_and_compile():
    nets = qmix.Nets(num_cells=(8,), mixing_embed_dim=4)
    batch = make_batch()
    stacked = tree.stack([qmix.init(s, *specs(), nets=nets) for s in range(3)])
    loss_fn = functools.partial(qmix.loss, nets=nets)
    out = torch.func.vmap(loss_fn, in_dims=(0, None))(stacked, batch)
    for s in range(3):
        ref = loss_fn(qmix.init(s, *specs(), nets=nets), batch)
        torch.testing.assert_close(out["loss"][s], ref["loss"])
    # Per-agent params (MultiAgentMLP, itself a vmap) inside a vmap over seeds.
    ma = qmix.Nets(
        local_value=MultiAgentMLP(D_OBS, N_ACT, N_AGENTS, centralized=False, share_params=False),
        mixing_embed_dim=4,
    )
    stacked = tree.stack([qmix.init(s, *specs(), nets=ma) for s in range(2)])
    out = torch.func.vmap(functools.partial(qmix.loss, nets=ma), in_dims=(0, None))(stacked, batch)
    ref = qmix.loss(qmix.init(1, *specs(), nets=ma), batch, nets=ma)
    torch.testing.assert_close(out["loss"][1], ref["loss"])

    torch._dynamo.reset()
    params = qmix.init(0, *specs(), nets=ma)
    compiled = torch.compile(
        functools.partial(qmix.loss, nets=ma), fullgraph=True, backend="aot_eager"
    )
    torch.testing.assert_close(
        compiled(params, batch)["loss"], qmix.loss(params, batch, nets=ma)["loss"]
    )


@pytest.mark.slow
def test_vmas_example_smoke(tmp_path, monkeypatch):
    pytest.importorskip("vmas", reason="the VMAS example needs `pip install vmas`")
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).parent.parent / "examples" / "multiagent.py"
    spec = importlib.util.spec_from_file_location("multiagent_example", path)
    example = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "multiagent_example", example)  # dataclasses look it up
    spec.loader.exec_module(example)
    summary = example.main(
        [
            "--total-steps", "640", "--num-envs", "16", "--max-steps", "10",
            "--learning-starts", "160", "--batch-size", "32", "--eval-envs", "4",
            "--eval-every", "320", "--num-cells", "16", "--no-progress", "--out", str(tmp_path),
        ]
    )  # fmt: skip
    assert set(summary) >= {"random_return", "qmix_return", "vdn_return"}
    assert (tmp_path / "curve.png").exists() and (tmp_path / "qmix" / "log.csv").exists()
