"""Whole-loss interop of the offline objectives with TorchRL 0.14: ``to_torchrl(config, nets,
params)`` and ``from_torchrl(loss_module)``; the funcrl loss on converted params equals the TorchRL
loss (float64, the same batch and ``torch.manual_seed``) in both directions."""

from __future__ import annotations

import dataclasses
import os
import warnings

import pytest
import torch

from funcrl import Record, bc, cql, discrete_cql, discrete_iql, iql, specs, td3_bc, tree

pytest.importorskip("torchrl", reason="TorchRL is the reference implementation")
os.environ.setdefault("RL_WARNINGS", "False")
pytestmark = pytest.mark.filterwarnings("ignore")

OBS, ACT, N, B = 3, 2, 4, 8
SMALL = {"num_cells": (8, 8)}
BOX = specs.Bounded(-2.0, 3.0, shape=(ACT,))


def _perturb(p, seed=1, scale=0.1):
    g = torch.Generator().manual_seed(seed)
    return tree.map(lambda t: t + scale * torch.randn(t.shape, generator=g, dtype=t.dtype), p)


def batch(action="box", lead=(B,)) -> Record:
    g = torch.Generator().manual_seed(0)
    term = torch.rand(*lead, 1, generator=g) < 0.3
    idx = torch.randint(0, N, lead, generator=g)
    actions = {
        "box": torch.rand(*lead, ACT, generator=g, dtype=torch.float64) * 4.8 - 1.9,
        "unit": torch.rand(*lead, ACT, generator=g, dtype=torch.float64) * 1.8 - 0.9,
        "one_hot": torch.nn.functional.one_hot(idx, N),
        "categorical": idx,
    }
    return Record(
        {
            "observation": torch.randn(*lead, OBS, generator=g, dtype=torch.float64),
            "action": actions[action],
            ("next", "observation"): torch.randn(*lead, OBS, generator=g, dtype=torch.float64),
            ("next", "reward"): torch.randn(*lead, 1, generator=g, dtype=torch.float64),
            ("next", "terminated"): term,
            ("next", "done"): term | (torch.rand(*lead, 1, generator=g) < 0.2),
        },
        batch_ndim=len(lead),
    )


def round_trip(module, cfg, nets, params, data, keys, seed=0, adjust=None, **resolved):
    """Both directions: ``to_torchrl`` equals funcrl, and ``from_torchrl`` of it gives back the
    config (with the ``resolved`` fields TorchRL keeps as numbers), the params and the same
    losses. ``adjust`` maps a key to what funcrl computes from TorchRL's value where the two
    differ on purpose."""
    torch.manual_seed(seed)
    ours = module.loss(params, data, config=cfg, nets=nets)
    ref_module = module.to_torchrl(cfg, nets, params)  # funcrl -> TorchRL
    torch.manual_seed(seed)
    ref = ref_module(data.to_tensordict())
    for k in keys:
        expected = ref[k].detach()
        if adjust and k in adjust:
            expected = adjust[k](expected)
        torch.testing.assert_close(ours[k], expected, msg=k)

    cfg2, nets2, params2 = module.from_torchrl(ref_module)  # TorchRL -> funcrl
    assert cfg2 == dataclasses.replace(cfg, **resolved)
    assert tree.structure(params2) == tree.structure(params)
    assert tree.allclose(params2, params)
    torch.manual_seed(seed)
    back = module.loss(params2, data, config=cfg2, nets=nets2)
    for k in keys:
        torch.testing.assert_close(back[k], ours[k], msg=k)


@pytest.fixture(autouse=True)
def float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    warnings.filterwarnings("ignore", message="No target network updater")
    yield
    torch.set_default_dtype(old)


# --- continuous ----------------------------------------------------------------------------------

IQL_CONFIGS = [
    iql.Config(expectile=0.75, temperature=3.0, gamma=0.5, loss_function="l2"),
    iql.Config(num_qvalue_nets=1, value_estimator="td_lambda", gamma=0.5, lmbda=0.75),
]


@pytest.mark.parametrize("cfg", IQL_CONFIGS, ids=["td0", "one-critic-td_lambda"])
def test_iql_round_trips(cfg):
    nets = iql.Nets(**SMALL)
    params = iql.init(0, OBS, BOX, cfg, nets, dtype=torch.float64)
    params["target_qvalue"] = _perturb(params["target_qvalue"])
    lead = (B,) if cfg.value_estimator == "td0" else (2, 4)
    keys = ("loss_actor", "loss_qvalue", "loss_value", "entropy")
    round_trip(iql, cfg, nets, params, batch("box", lead), keys)


CQL_CONFIGS = [
    cql.Config(num_random=3, gamma=0.5, temperature=2.0, min_q_weight=0.5),
    cql.Config(
        num_random=2,
        with_lagrange=True,
        lagrange_thresh=5.0,
        max_q_backup=True,
        deterministic_backup=False,
        fixed_alpha=True,
        alpha_init=0.5,
        gamma=0.5,
    ),
]


@pytest.mark.parametrize("cfg", CQL_CONFIGS, ids=["default", "lagrange-max_q"])
def test_cql_round_trips(cfg):
    # TorchRL draws CQL's uniform actions on [-1, 1] whatever the box: compare on that box.
    nets = cql.Nets(**SMALL)
    unit = specs.Bounded(-1.0, 1.0, shape=(ACT,))
    params = cql.init(0, OBS, unit, cfg, nets, dtype=torch.float64)
    params["target_qvalue"] = _perturb(params["target_qvalue"])
    params["log_alpha"] = torch.tensor(-0.5)
    if cfg.with_lagrange:
        params["log_alpha_prime"] = torch.tensor(0.25)
    keys = ["loss_actor", "loss_actor_bc", "loss_qvalue", "loss_cql", "loss_alpha", "alpha"]
    keys += ["loss_alpha_prime"] if cfg.with_lagrange else []
    adjust = None
    if cfg.with_lagrange:
        # The paper's alpha' (gap - tau) per critic; TorchRL leaves the penalty unscaled.
        alpha_prime = params["log_alpha_prime"].exp()
        adjust = {"loss_cql": lambda v: alpha_prime * (v - 2 * cfg.lagrange_thresh)}
    # TorchRL resolves the "auto" target entropy to -dim(action).
    round_trip(
        cql, cfg, nets, params, batch("unit"), keys, seed=5, adjust=adjust,
        target_entropy=-float(ACT),
    )  # fmt: skip


@pytest.mark.parametrize("delay_actor", [True, False])
def test_td3_bc_round_trips(delay_actor):
    cfg = td3_bc.Config(alpha=2.0, gamma=0.5, delay_actor=delay_actor, policy_noise=0.25)
    nets = td3_bc.Nets(**SMALL)
    unit = specs.Bounded(-1.0, 1.0, shape=(ACT,))
    params = td3_bc.init(0, OBS, unit, cfg, nets, dtype=torch.float64)
    params["target_qvalue"] = _perturb(params["target_qvalue"])
    if delay_actor:
        params["target_actor"] = _perturb(params["target_actor"], seed=2)
    round_trip(td3_bc, cfg, nets, params, batch("unit"), ("loss_actor", "loss_qvalue"), seed=3)


@pytest.mark.parametrize("loss_function", [None, "l2", "smooth_l1"])
def test_bc_round_trips(loss_function):
    cfg = bc.Config(loss_function=loss_function)
    nets = bc.Nets(**SMALL)
    box = BOX if loss_function is None else specs.Bounded(-1.0, 1.0, shape=(ACT,))
    params = bc.init(0, OBS, box, cfg, nets, dtype=torch.float64)
    data = batch("box" if loss_function is None else "unit")
    round_trip(bc, cfg, nets, params, data, ("loss_bc",))


# --- discrete ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cfg",
    [
        discrete_iql.Config(expectile=0.75, temperature=2.0, gamma=0.5),
        discrete_iql.Config(
            action_space="categorical", num_qvalue_nets=1, value_estimator="td1", gamma=0.5
        ),
    ],
    ids=["one_hot", "categorical-one-critic-td1"],
)
def test_discrete_iql_round_trips(cfg):
    nets = discrete_iql.Nets(**SMALL)
    spec = specs.Categorical(N) if cfg.action_space == "categorical" else specs.OneHot(N)
    params = discrete_iql.init(0, OBS, spec, cfg, nets, dtype=torch.float64)
    params["target_qvalue"] = _perturb(params["target_qvalue"])
    lead = (B,) if cfg.value_estimator == "td0" else (2, 4)
    keys = ("loss_actor", "loss_qvalue", "loss_value", "entropy")
    round_trip(discrete_iql, cfg, nets, params, batch(cfg.action_space, lead), keys)


@pytest.mark.parametrize(
    "cfg",
    [
        discrete_cql.Config(gamma=0.5),
        discrete_cql.Config(
            action_space="categorical", delay_value=False, loss_function="smooth_l1", gamma=0.5
        ),
        discrete_cql.Config(value_estimator="td_lambda", lmbda=0.75, gamma=0.5),
    ],
    ids=["one_hot", "categorical-no-target", "td_lambda"],
)
def test_discrete_cql_round_trips(cfg):
    # TorchRL 0.14 bootstraps from the online net (tests/test_discrete_cql.py): the target is a
    # copy here, as after init or a hard update, so both libraries compute the same loss.
    nets = discrete_cql.Nets(**SMALL)
    spec = specs.Categorical(N) if cfg.action_space == "categorical" else specs.OneHot(N)
    params = discrete_cql.init(0, OBS, spec, cfg, nets, dtype=torch.float64)
    lead = (B,) if cfg.value_estimator == "td0" else (2, 4)
    keys = ("loss_qvalue", "loss_cql", "pred_value", "target_value")
    round_trip(discrete_cql, cfg, nets, params, batch(cfg.action_space, lead), keys)


@pytest.mark.parametrize(
    "module,name,missing",
    [
        (iql, "iql", "value"),
        (cql, "cql", "log_alpha"),
        (td3_bc, "td3_bc", "target_actor"),
        (discrete_iql, "discrete_iql", "target_qvalue"),
        (discrete_cql, "discrete_cql", "target_value"),
    ],
)
def test_to_torchrl_names_missing_params(module, name, missing):
    spec = specs.OneHot(N) if name.startswith("discrete") else specs.Bounded(-1.0, 1.0, (ACT,))
    nets = module.Nets(**SMALL)
    params = module.init(0, OBS, spec, nets=nets)
    del params[missing]
    with pytest.raises(KeyError, match=rf"{name}\.to_torchrl: params lack \['{missing}'\]"):
        module.to_torchrl(module.Config(), nets, params)
