"""Whole-loss interop of the discrete family with TorchRL 0.14: ``from_torchrl(loss_module)`` and
``to_torchrl(config, nets, params)``; the funcrl loss on converted params equals the TorchRL loss
(float64, the same batch) in both directions."""

from __future__ import annotations

import os

import pytest
import torch

from funcrl import Record, c51, discrete_sac, dqn, qmix, specs, tree
from funcrl.multiagent import QMixer, VDNMixer

pytest.importorskip("torchrl", reason="TorchRL is the reference implementation")
os.environ.setdefault("RL_WARNINGS", "False")

OBS, N, B, AGENTS, STATE = 3, 4, 8, 2, (5,)


def _perturb(p, seed=1, scale=0.1):
    g = torch.Generator().manual_seed(seed)
    return tree.map(lambda t: t + scale * torch.randn(t.shape, generator=g, dtype=t.dtype), p)


def batch(space="one_hot", lead=(B,), mask=False, agents=None):
    g = torch.Generator().manual_seed(0)
    per = (*lead, agents) if agents else lead
    idx = torch.randint(0, N, per, generator=g)
    obs_shape = (*per, OBS)
    term = torch.rand(*lead, 1, generator=g) < 0.3
    data = {
        "observation": torch.randn(*obs_shape, generator=g, dtype=torch.float64),
        "action": idx if space == "categorical" else torch.nn.functional.one_hot(idx, N),
        ("next", "observation"): torch.randn(*obs_shape, generator=g, dtype=torch.float64),
        ("next", "reward"): torch.randn(*lead, 1, generator=g, dtype=torch.float64),
        ("next", "terminated"): term,
        ("next", "done"): term | (torch.rand(*lead, 1, generator=g) < 0.2),
    }
    if mask:
        m = torch.rand(*lead, N, generator=g) < 0.6
        m |= torch.nn.functional.one_hot(idx, N).bool()
        data["action_mask"] = m
        nm = torch.rand(*lead, N, generator=g) < 0.6
        nm[..., 0] = True
        data[("next", "action_mask")] = nm
    if agents:
        data["state"] = torch.randn(*lead, *STATE, generator=g, dtype=torch.float64)
        data[("next", "state")] = torch.randn(*lead, *STATE, generator=g, dtype=torch.float64)
    return Record(data, batch_ndim=len(lead))


def assert_same(funcrl_out, ref_td, keys):
    for k in keys:
        torch.testing.assert_close(funcrl_out[k], ref_td[k], msg=k)


# --- DQN -----------------------------------------------------------------------------------------

DQN_CONFIGS = [
    dqn.Config(),
    dqn.Config(action_space="categorical", double_dqn=True, action_mask_key="action_mask"),
    dqn.Config(value_estimator="td_lambda", lmbda=0.7, gamma=0.9, loss_function="smooth_l1"),
]


@pytest.mark.parametrize("cfg", DQN_CONFIGS, ids=["plain", "double-masked", "td_lambda"])
def test_dqn_round_trips(cfg):
    nets = dqn.Nets(num_cells=(16, 16))
    spec = specs.Categorical(N) if cfg.action_space == "categorical" else specs.OneHot(N)
    params = dqn.init(0, OBS, spec, cfg, nets, dtype=torch.float64)
    params["target_value"] = _perturb(params["target_value"])
    lead = (3, 4) if cfg.value_estimator != "td0" else (B,)
    data = batch(cfg.action_space, lead, mask=cfg.action_mask_key is not None)
    ours = dqn.loss(params, data, config=cfg, nets=nets)

    ref = dqn.to_torchrl(cfg, nets, params)  # funcrl -> TorchRL
    td = data.to_tensordict()
    torch.testing.assert_close(ref(td)["loss"], ours["loss"])

    cfg2, nets2, params2 = dqn.from_torchrl(ref)  # TorchRL -> funcrl
    assert cfg2 == cfg
    assert tree.allclose(params2, params)
    torch.testing.assert_close(
        dqn.loss(params2, data, config=cfg2, nets=nets2)["loss"], ours["loss"]
    )


# --- C51 -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("space", ["one_hot", "categorical"])
def test_c51_round_trips(space):
    cfg = c51.Config(num_atoms=11, v_min=-3.0, v_max=3.0, gamma=0.9, action_space=space)
    nets = c51.Nets(num_cells=(16,))
    spec = specs.Categorical(N) if space == "categorical" else specs.OneHot(N)
    # TorchRL's C51 projects in float32 only (torch.zeros(batch, atoms)): compare in float32.
    params = c51.init(0, OBS, spec, cfg, nets)
    params["target_value"] = _perturb(params["target_value"])
    data = batch(space).apply(lambda t: t.float() if t.is_floating_point() else t)
    ours = c51.loss(params, data, config=cfg, nets=nets)

    ref = c51.to_torchrl(cfg, nets, params)
    td = data.to_tensordict()
    torch.testing.assert_close(ref(td)["loss"], ours["loss"])
    torch.testing.assert_close(td["td_error"].squeeze(-1), ours["td_error"])

    cfg2, nets2, params2 = c51.from_torchrl(ref)
    assert cfg2 == cfg
    assert tree.allclose(params2["target_value"], params["target_value"])
    out2 = c51.loss(params2, data, config=cfg2, nets=nets2)
    torch.testing.assert_close(out2["loss"], ours["loss"])


# --- discrete SAC --------------------------------------------------------------------------------


@pytest.mark.parametrize("space", ["one_hot", "categorical"])
def test_discrete_sac_round_trips(space):
    cfg = discrete_sac.Config(
        action_space=space, alpha_init=0.5, max_alpha=0.8, gamma=0.95, loss_function="l2"
    )
    nets = discrete_sac.Nets(num_cells=(16,))
    spec = specs.Categorical(N) if space == "categorical" else specs.OneHot(N)
    params = discrete_sac.init(0, OBS, spec, cfg, nets)
    params["target_qvalue"] = _perturb(params["target_qvalue"])
    params["log_alpha"] = torch.tensor(-0.9)
    data = batch(space).apply(lambda t: t.float() if t.is_floating_point() else t)
    ours = discrete_sac.loss(params, data, config=cfg, nets=nets)
    keys = ("loss_actor", "loss_qvalue", "loss_alpha", "alpha", "entropy")

    ref = discrete_sac.to_torchrl(cfg, nets, params)
    assert_same(ours, ref(data.to_tensordict()), keys)

    cfg2, nets2, params2 = discrete_sac.from_torchrl(ref)
    assert tree.allclose(params2, params)
    assert cfg2.target_entropy == pytest.approx(0.98 * torch.log(torch.tensor(4.0)).item())
    assert_same(ours, discrete_sac.loss(params2, data, config=cfg2, nets=nets2), keys)


# --- QMIX / VDN ----------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("mixer", ["qmix", "vdn"])
def test_qmix_round_trips(mixer):
    cfg = qmix.Config(observation_key=("agents", "observation"), action_key=("agents", "action"))
    mix = QMixer(STATE, 6, AGENTS) if mixer == "qmix" else VDNMixer(AGENTS)
    nets = qmix.Nets(num_cells=(16,), mixer=mix)
    obs_spec = specs.Unbounded(shape=(AGENTS, OBS))
    params = qmix.init(0, obs_spec, specs.OneHot(N, shape=(AGENTS, N)), config=cfg, nets=nets)
    params = {k: _perturb(v) if k.startswith("target_") else v for k, v in params.items()}
    flat = batch(agents=AGENTS).apply(lambda t: t.float() if t.is_floating_point() else t)
    data = flat.rename(
        {
            "observation": ("agents", "observation"),
            ("next", "observation"): ("next", "agents", "observation"),
            "action": ("agents", "action"),
        }
    )
    ours = qmix.loss(params, data, config=cfg, nets=nets)

    ref = qmix.to_torchrl(cfg, nets, params)
    td = data.to_tensordict()
    torch.testing.assert_close(ref(td)["loss"], ours["loss"])
    torch.testing.assert_close(td["td_error"].squeeze(-1).sqrt(), ours["td_error"])

    cfg2, nets2, params2 = qmix.from_torchrl(ref)
    assert cfg2 == cfg
    assert type(nets2.mixer) is type(mix)
    assert tree.allclose(params2, params)
    torch.testing.assert_close(
        qmix.loss(params2, data, config=cfg2, nets=nets2)["loss"], ours["loss"]
    )


@pytest.mark.parametrize("estimator", ["td1", "td_lambda"])
def test_discrete_sac_value_estimators_match_torchrl(estimator):
    cfg = discrete_sac.Config(value_estimator=estimator, lmbda=0.8, gamma=0.9, loss_function="l2")
    nets = discrete_sac.Nets(num_cells=(16,))
    params = discrete_sac.init(0, OBS, specs.OneHot(N), cfg, nets)
    params["target_qvalue"] = _perturb(params["target_qvalue"])
    data = batch(lead=(3, 5)).apply(lambda t: t.float() if t.is_floating_point() else t)
    ours = discrete_sac.loss(params, data, config=cfg, nets=nets)
    ref = discrete_sac.to_torchrl(cfg, nets, params)
    assert_same(ours, ref(data.to_tensordict()), ("loss_actor", "loss_qvalue", "loss_alpha"))
