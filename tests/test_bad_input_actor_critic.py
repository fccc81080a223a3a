"""Bad input to the actor-critic family (SAC, REDQ, CrossQ, TD3, DDPG): every error names the
function and the argument or key, with the expected against the actual shape, dtype or range."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import funcrl
from funcrl import crossq, ddpg, redq, sac, specs, td3
from funcrl.objectives import actor_critic
from funcrl.record import Record

OBS, ACT, B = 3, 2, 4
SMALL = {"num_cells": (8,)}
NETS = {
    "sac": sac.Nets(**SMALL),
    "redq": redq.Nets(**SMALL),
    "crossq": crossq.Nets(actor=crossq.RenormMLP((8,)), qvalue=crossq.RenormMLP((8,))),
    "td3": td3.Nets(**SMALL),
    "ddpg": ddpg.Nets(**SMALL),
}
MODULES = {"sac": sac, "redq": redq, "crossq": crossq, "td3": td3, "ddpg": ddpg}
CONFIGS = {"redq": redq.Config(num_qvalue_nets=3)}
NAMES = list(MODULES)


def batch(b=B, dtype=torch.float32, time=None) -> Record:
    lead = (b,) if time is None else (b, time)
    g = torch.Generator().manual_seed(0)
    done = torch.zeros(*lead, 1, dtype=torch.bool)
    return Record(
        {
            "observation": torch.randn(*lead, OBS, generator=g, dtype=dtype),
            "action": torch.rand(*lead, ACT, generator=g, dtype=dtype) * 2 - 1,
            ("next", "observation"): torch.randn(*lead, OBS, generator=g, dtype=dtype),
            ("next", "reward"): torch.randn(*lead, 1, generator=g, dtype=dtype),
            ("next", "terminated"): done,
            ("next", "done"): done,
        },
        batch_ndim=len(lead),
    )


def setup(name, **config):
    module = MODULES[name]
    cfg = dataclasses.replace(CONFIGS.get(name, module.Config()), **config)
    params = module.init(0, OBS, ACT, cfg, NETS[name])
    return module, cfg, params


def loss(name, params, b, **config):
    module = MODULES[name]
    cfg = dataclasses.replace(CONFIGS.get(name, module.Config()), **config)
    return module.loss(params, b, config=cfg, nets=NETS[name], key=funcrl.random.key(0))


# -- batch structure -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_batch_structure(name):
    _, _, p = setup(name)
    with pytest.raises(TypeError, match=rf"{name}.loss: batch must be a funcrl.Record, got dict"):
        loss(name, p, dict(batch().items()))
    with pytest.raises(ValueError, match=rf"{name}.loss: batch has no batch dims"):
        loss(name, p, batch()[0])
    with pytest.raises(ValueError, match=rf"{name}.loss: batch is empty"):
        loss(name, p, batch(0))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(
    "key", ["observation", "action", ("next", "observation"), ("next", "reward")]
)
def test_float64_entry_with_float32_params_names_the_key(name, key):
    _, _, p = setup(name)
    b = batch()
    b = b.set(key, b[key].double())
    with pytest.raises(
        TypeError,
        match=rf"{name}.loss: batch\[{key!r}\] is torch.float64".replace("(", r"\(").replace(
            ")", r"\)"
        ),
    ):
        loss(name, p, b)


@pytest.mark.parametrize("name", NAMES)
def test_shapes_name_the_key(name):
    _, _, p = setup(name)
    b = batch()
    with pytest.raises(
        ValueError,
        match=rf"{name}.loss: batch\['action'\] has shape \({B},\), expected \[\*batch, {ACT}\]",
    ):
        loss(name, p, b.set("action", torch.zeros(B)))
    with pytest.raises(
        ValueError,
        match=rf"{name}.loss: batch\['action'\] has shape \({B}, 3\), expected \[\*batch, {ACT}\]",
    ):
        loss(name, p, b.set("action", torch.zeros(B, 3)))
    with pytest.raises(
        ValueError, match=rf"{name}.loss: batch\[\('next', 'reward'\)\] has shape \({B},\)"
    ):
        loss(name, p, b.set(("next", "reward"), torch.zeros(B)))
    with pytest.raises(
        ValueError, match=rf"{name}.loss: batch\[\('next', 'terminated'\)\] has shape \({B}, 2\)"
    ):
        loss(name, p, b.set(("next", "terminated"), torch.zeros(B, 2, dtype=torch.bool)))
    with pytest.raises(
        ValueError, match=rf"{name}.loss: batch\[\('next', 'observation'\)\] has shape \({B}, 5\)"
    ):
        loss(name, p, b.set(("next", "observation"), torch.zeros(B, 5)))
    with pytest.raises(KeyError, match=rf"{name}.loss: batch has no key .+observation"):
        loss(name, p, b.exclude("observation"))


@pytest.mark.parametrize("name", NAMES)
def test_priority_weight_shape_and_dtype(name):
    _, _, p = setup(name)
    b = batch()
    with pytest.raises(
        ValueError,
        match=rf"{name}.loss: batch\['priority_weight'\] has shape \({B}, 1\), expected \({B},\)",
    ):
        loss(name, p, b.set("priority_weight", torch.ones(B, 1)))
    with pytest.raises(
        TypeError, match=rf"{name}.loss: batch\['priority_weight'\] is torch.float64"
    ):
        loss(name, p, b.set("priority_weight", torch.ones(B, dtype=torch.float64)))


@pytest.mark.parametrize("name", NAMES)
def test_trajectory_estimators_need_done(name):
    _, _, p = setup(name, value_estimator="td_lambda")
    b = batch(time=3).exclude(("next", "done"))
    with pytest.raises(KeyError, match=rf"{name}.loss: batch has no key \(.+next.+, .+done.+\)"):
        loss(name, p, b, value_estimator="td_lambda")


# -- params ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_missing_params_name_the_loss_and_the_key(name):
    _, _, p = setup(name)
    target = {"sac": "target_qvalue", "redq": "target_qvalue", "crossq": "batch_stats",
              "td3": "target_actor", "ddpg": "target_value"}[name]  # fmt: skip
    for missing in ("actor", "action_bounds", target):
        with pytest.raises(KeyError, match=rf"{name}.loss: params lack \['{missing}'\]"):
            loss(name, {k: v for k, v in p.items() if k != missing}, batch())
    with pytest.raises(TypeError, match=rf"{name}.loss: params must be a dict, got list"):
        loss(name, [p], batch())


# -- act -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_act_errors(name):
    module, cfg, p = setup(name)
    obs = torch.zeros(B, OBS)

    def act(o, **kw):
        return module.act(p, o, config=cfg, nets=NETS[name], **kw)

    with pytest.raises(
        ValueError,
        match=rf"{name}.act: mode must be one of \('random', 'deterministic'\), got 'greedy'",
    ):
        act(obs, mode="greedy")
    with pytest.raises(
        TypeError,
        match=rf"{name}.act: observation is torch.float64 but the params are torch.float32",
    ):
        act(obs.double())
    with pytest.raises(
        ValueError, match=rf"{name}.act: observation must be a tensor \[\*B, o\], got shape \(\)"
    ):
        act(torch.tensor(1.0))
    with pytest.raises(KeyError, match=rf"{name}.act: params lack \['action_bounds'\]"):
        module.act({k: v for k, v in p.items() if k != "action_bounds"}, obs, nets=NETS[name])


# -- configs and init ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_config_errors(name):
    cls = MODULES[name].Config
    with pytest.raises(
        ValueError,
        match=rf"{name}.Config: value_estimator must be one of \('td0', 'td1', 'td_lambda'\), got 'gae'",
    ):
        cls(value_estimator="gae")
    with pytest.raises(ValueError, match=rf"{name}.Config: lmbda must be in \[0, 1\], got 1.5"):
        cls(lmbda=1.5)
    with pytest.raises(
        ValueError,
        match=rf"{name}.Config: use_prioritized_weights must be one of \('auto', True, False\), got 'yes'",
    ):
        cls(use_prioritized_weights="yes")
    with pytest.raises(ValueError, match=rf"{name}.Config: gamma must be in \[0, 1\], got 1.5"):
        cls(gamma=1.5)
    with pytest.raises(ValueError, match=rf"{name}.Config: reduction must be one of"):
        cls(reduction="max")


@pytest.mark.parametrize("name", NAMES)
def test_init_errors(name):
    module = MODULES[name]
    nets = NETS[name]
    with pytest.raises(
        ValueError, match=rf"{name}.init: action_spec Unbounded has no low/high bounds"
    ):
        module.init(0, OBS, specs.Unbounded(shape=(ACT,)), nets=nets)
    inf = specs.Bounded(-float("inf"), float("inf"), shape=(ACT,))
    with pytest.raises(ValueError, match=rf"{name}.init: action_spec bounds must be finite"):
        module.init(0, OBS, inf, nets=nets)
    with pytest.raises(
        ValueError, match=r"make_generator: seed must be an int64 tensor of shape \[2\]"
    ):
        module.init(torch.zeros(3), OBS, ACT, nets=nets)


@pytest.mark.parametrize("name", ["sac", "redq", "td3", "ddpg"])
def test_nets_must_be_funcrl_nets(name):
    module = MODULES[name]
    with pytest.raises(TypeError, match=rf"{name}.init: Nets.actor must be a funcrl net"):
        module.init(0, OBS, ACT, nets=module.Nets(actor=lambda p, x: x))


@pytest.mark.parametrize("name", ["td3", "ddpg"])
def test_default_tanh_actor_only_fits_the_unit_box(name):
    wide = specs.Bounded(-2.0, 2.0, shape=(ACT,))
    with pytest.raises(
        ValueError,
        match=rf"{name}.init: the default actor is tanh\(MLP\) with actions in \[-1, 1\]",
    ):
        MODULES[name].init(0, OBS, wide, nets=NETS[name])


def test_td3_noise_shape():
    _, _, p = setup("td3")
    with pytest.raises(ValueError, match=r"td3.loss: noise has shape \(4, 3\), expected \(4, 2\)"):
        td3.loss(p, batch(), nets=NETS["td3"], noise=torch.zeros(B, 3))


def test_auto_target_entropy_reads_the_feature_dims():
    """``"auto"`` is -a for a [B, a] action and for [B, T, a] trajectories, never -B a."""
    action = torch.zeros(5, 7, ACT)
    assert actor_critic.auto_entropy("auto", action, 2) == -ACT
    assert actor_critic.auto_entropy("auto", action[0], 1) == -ACT
