"""Whole-loss interop with TorchRL 0.14: ``from_torchrl(loss_module) -> (config, nets, params)``
and ``to_torchrl(config, nets, params) -> loss_module``; the funcrl loss on converted params
equals the TorchRL loss under the same seed, in float64, both directions."""

from __future__ import annotations

import warnings

import pytest
import torch

import funcrl
from funcrl import crossq, ddpg, redq, sac, td3, tree
from funcrl.record import Record

pytest.importorskip("torchrl", reason="interop needs torchrl")
pytestmark = pytest.mark.torchrl

OBS, ACT, B = 3, 2, 6
TOL = {"rtol": 1e-6, "atol": 1e-7}  # float64; TorchRL keeps a float32 constant or two


@pytest.fixture(autouse=True)
def _float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    warnings.filterwarnings("ignore", message="No target network updater")
    yield
    torch.set_default_dtype(old)


def batch(seed=0, low=-1.0, high=1.0) -> Record:
    g = torch.Generator().manual_seed(seed)
    term = torch.zeros(B, 1, dtype=torch.bool)
    term[1] = True
    return Record(
        {
            "observation": torch.randn(B, OBS, generator=g),
            "action": torch.rand(B, ACT, generator=g) * (high - low) + low,
            ("next", "observation"): torch.randn(B, OBS, generator=g),
            ("next", "reward"): torch.randn(B, 1, generator=g),
            ("next", "terminated"): term,
            ("next", "truncated"): torch.zeros_like(term),
            ("next", "done"): term,
        },
        batch_ndim=1,
    )


def to_td(b: Record):
    from tensordict import TensorDict

    td = TensorDict({}, batch_size=b.batch_size)
    for k in b.keys(include_nested=True, leaves_only=True):
        td.set(k, b[k].clone())
    return td


def compare(funcrl_loss, torchrl_module, b, keys, seed=3):
    torch.manual_seed(seed)
    ours = funcrl_loss(b)
    torch.manual_seed(seed)
    td = to_td(b)
    ref = torchrl_module(td)
    for k in keys:
        torch.testing.assert_close(ours[k], ref[k].detach(), **TOL, msg=k)
    return ours, td


def torchrl_sac(version: int):
    from tensordict.nn import NormalParamExtractor, TensorDictModule
    from torchrl.data import Bounded
    from torchrl.modules import MLP, ProbabilisticActor, TanhNormal, ValueOperator
    from torchrl.objectives import SACLoss, ValueEstimators

    torch.manual_seed(0)
    spec = Bounded(-2.0 * torch.ones(ACT), 3.0 * torch.ones(ACT), (ACT,))
    body = torch.nn.Sequential(
        MLP(in_features=OBS, out_features=2 * ACT, num_cells=[8, 8]), NormalParamExtractor()
    )
    actor = ProbabilisticActor(
        TensorDictModule(body, in_keys=["observation"], out_keys=["loc", "scale"]),
        in_keys=["loc", "scale"],
        spec=spec,
        distribution_class=TanhNormal,
        distribution_kwargs={"low": spec.space.low, "high": spec.space.high},
    )
    q = ValueOperator(
        MLP(
            in_features=OBS + ACT, out_features=1, num_cells=[8, 8], activation_class=torch.nn.ReLU
        ),
        in_keys=["observation", "action"],
    )
    value = None
    if version == 1:
        value = ValueOperator(
            MLP(in_features=OBS, out_features=1, num_cells=[8]), in_keys=["observation"]
        )
    m = SACLoss(
        actor, q, value, num_qvalue_nets=3, alpha_init=0.7, min_alpha=0.2, loss_function="l2"
    )
    m.make_value_estimator(ValueEstimators.TDLambda, gamma=0.9, lmbda=0.8)
    with torch.no_grad():  # targets differ from the online nets, so that routing shows
        m.target_qvalue_network_params.apply_(lambda x: x.add_(0.05))
        if version == 1:
            m.target_value_network_params.apply_(lambda x: x.sub_(0.05))
    return m


@pytest.mark.parametrize("version", [2, 1])
def test_sac_from_torchrl(version):
    m = torchrl_sac(version)
    config, nets, params = sac.from_torchrl(m)
    assert config.version == version and config.num_qvalue_nets == 3
    assert config.value_estimator == "td_lambda" and config.lmbda == 0.8 and config.gamma == 0.9
    assert params["qvalue"]["layers"][0]["weight"].shape == (3, 8, OBS + ACT)
    assert torch.equal(params["action_bounds"]["high"], torch.full((ACT,), 3.0))
    b = batch(low=-2.0, high=3.0)
    # TD(lambda) over a [B] batch: one trajectory of B steps (TorchRL's time dim is the last).
    keys = ["loss_actor", "loss_qvalue", "loss_alpha", "alpha", "entropy"]
    keys += ["loss_value"] if version == 1 else []
    compare(lambda x: sac.loss(params, x, config=config, nets=nets), m, b, keys)


@pytest.mark.parametrize("version", [2, 1])
def test_sac_to_torchrl(version):
    config = sac.Config(
        version=version, num_qvalue_nets=2, alpha_init=0.5, gamma=0.8, loss_function="l2",
        value_estimator="td1", delay_actor=version == 1,
    )  # fmt: skip
    nets = sac.Nets(num_cells=(8, 8))
    params = sac.init(1, OBS, ACT, config, nets, dtype=torch.float64)
    params["target_qvalue"] = tree.map(lambda x: x + 0.05, params["target_qvalue"])
    m = sac.to_torchrl(config, nets, params)  # observation size read from the params
    keys = ["loss_actor", "loss_qvalue", "loss_alpha", "alpha", "entropy"]
    keys += ["loss_value"] if version == 1 else []
    compare(lambda x: sac.loss(params, x, config=config, nets=nets), m, batch(), keys)
    # And back: the round trip gives the same params.
    _, _, again = sac.from_torchrl(m)
    for k in params:
        torch.testing.assert_close(tree.leaves(again[k]), tree.leaves(params[k]), msg=k)


def torchrl_deterministic(kind: str):
    from tensordict.nn import TensorDictModule
    from torchrl.data import Bounded
    from torchrl.modules import MLP, ValueOperator
    from torchrl.objectives import DDPGLoss, TD3Loss, ValueEstimators

    torch.manual_seed(0)
    actor = TensorDictModule(
        torch.nn.Sequential(MLP(in_features=OBS, out_features=ACT, num_cells=[8]), torch.nn.Tanh()),
        in_keys=["observation"],
        out_keys=["action"],
    )
    q = ValueOperator(
        MLP(in_features=OBS + ACT, out_features=1, num_cells=[8, 8]),
        in_keys=["observation", "action"],
    )
    if kind == "td3":
        spec = Bounded(-torch.ones(ACT), torch.ones(ACT), (ACT,))
        m = TD3Loss(actor, q, action_spec=spec, num_qvalue_nets=3, policy_noise=0.3, noise_clip=0.4)
        m.make_value_estimator(ValueEstimators.TD1, gamma=0.9)
        targets = (m.target_qvalue_network_params, m.target_actor_network_params)
    else:
        m = DDPGLoss(actor, q, delay_actor=True, loss_function="smooth_l1")
        m.make_value_estimator(ValueEstimators.TDLambda, gamma=0.9, lmbda=0.6)
        targets = (m.target_value_network_params, m.target_actor_network_params)
    with torch.no_grad():
        for t in targets:
            t.apply_(lambda x: x.add_(0.05))
    return m


KEYS = {
    "td3": ["loss_actor", "loss_qvalue", "pred_value", "target_value", "next_state_value"],
    "ddpg": ["loss_actor", "loss_value", "pred_value", "target_value", "target_value_max"],
}
MODULES = {"td3": td3, "ddpg": ddpg}


@pytest.mark.parametrize("kind", ["td3", "ddpg"])
def test_deterministic_from_torchrl(kind):
    module = MODULES[kind]
    m = torchrl_deterministic(kind)
    config, nets, params = module.from_torchrl(m)
    assert isinstance(nets.actor, funcrl.nn.TanhBounded)
    ours, td = compare(
        lambda x: module.loss(params, x, config=config, nets=nets), m, batch(), KEYS[kind]
    )
    # TorchRL's priority is the squared TD error; funcrl's the absolute one.
    torch.testing.assert_close(ours["td_error"] ** 2, td["td_error"], **TOL)


@pytest.mark.parametrize("kind", ["td3", "ddpg"])
def test_deterministic_to_torchrl(kind):
    module = MODULES[kind]
    extra = {"delay_actor": True} if kind == "ddpg" else {}
    config = module.Config(gamma=0.8, value_estimator="td_lambda", lmbda=0.5, **extra)
    nets = module.Nets(num_cells=(8,))
    params = module.init(2, OBS, ACT, config, nets, dtype=torch.float64)
    params = {
        k: tree.map(lambda x: x + 0.03, v) if k.startswith("target_") else v
        for k, v in params.items()
    }
    m = module.to_torchrl(config, nets, params)  # observation size read from the params
    compare(lambda x: module.loss(params, x, config=config, nets=nets), m, batch(), KEYS[kind])
    _, _, again = module.from_torchrl(m)
    for k in params:
        torch.testing.assert_close(tree.leaves(again[k]), tree.leaves(params[k]), msg=k)


def test_redq_both_directions(monkeypatch):
    """REDQ equals TorchRL once the subset is drawn TorchRL's way (randperm, see funcrl.redq)."""
    monkeypatch.setattr(
        redq, "sample_subset", lambda n, k, device=None: torch.randperm(n)[:k].sort()[0]
    )
    config = redq.Config(num_qvalue_nets=4, sub_sample_len=2, gamma=0.9, alpha_init=0.6)
    nets = redq.Nets(num_cells=(8,))
    params = redq.init(0, OBS, ACT, config, nets, dtype=torch.float64)
    params["target_qvalue"] = tree.map(lambda x: x + 0.05, params["target_qvalue"])
    m = redq.to_torchrl(config, nets, params)  # observation size read from the params
    keys = ["loss_actor", "loss_qvalue", "loss_alpha", "alpha", "entropy", "target_value"]
    compare(lambda x: redq.loss(params, x, config=config, nets=nets), m, batch(), keys)
    config2, nets2, again = redq.from_torchrl(m)
    assert config2.num_qvalue_nets == 4 and config2.sub_sample_len == 2
    for k in params:
        torch.testing.assert_close(tree.leaves(again[k]), tree.leaves(params[k]), msg=k)
    compare(lambda x: redq.loss(again, x, config=config2, nets=nets2), m, batch(1), keys)


def test_crossq_both_directions():
    """CrossQ with BatchRenorm nets: losses and the new running statistics equal TorchRL's."""
    config = crossq.Config(gamma=0.9, alpha_init=0.6, loss_function="l2")
    nets = crossq.Nets(
        actor=crossq.RenormMLP((8, 8), warmup_steps=0),
        qvalue=crossq.RenormMLP((8, 8), warmup_steps=0),
    )
    params = crossq.init(0, OBS, ACT, config, nets, dtype=torch.float64)
    m = crossq.to_torchrl(config, nets, params)
    b = batch()
    torch.manual_seed(3)
    ours, new = crossq.loss_and_state(params, b, config=config, nets=nets)
    torch.manual_seed(3)
    ref = m(to_td(b))
    for k in ["loss_actor", "loss_qvalue", "loss_alpha", "alpha", "entropy"]:
        torch.testing.assert_close(ours[k], ref[k].detach(), **TOL, msg=k)
    # TorchRL moved its running statistics in place: reading them back gives funcrl's new ones
    # (the step counters aside: funcrl's stops at max(warmup_steps, 1), TorchRL's keeps counting;
    # see funcrl.nn.batch_renorm).
    _, _, moved = crossq.from_torchrl(m)

    def stats(s):
        return [
            {k: v for k, v in layer.items() if k != "steps"} for layer in s["actor"] + s["qvalue"]
        ]

    torch.testing.assert_close(
        tree.leaves(stats(moved["batch_stats"])), tree.leaves(stats(new["batch_stats"])), **TOL
    )
    m2 = crossq.to_torchrl(config, nets, params)
    config2, nets2, again = crossq.from_torchrl(m2)
    assert nets2 == nets and config2.num_qvalue_nets == 2
    for k in params:
        torch.testing.assert_close(tree.leaves(again[k]), tree.leaves(params[k]), msg=k)
