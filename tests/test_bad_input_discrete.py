"""Bad input to the discrete family (DQN, C51, discrete SAC, QMIX): every error names the function
and the argument or batch key, with the expected against the actual shape, dtype or range."""

from __future__ import annotations

import pytest
import torch
from test_protocol_discrete import CASES, multi_agent_batch, single_agent_batch

from funcrl import Record, c51, discrete_sac, dqn, qmix, specs
from funcrl.objectives import discrete

B = 6
BY_NAME = {c.name: c for c in CASES}
ONE_HOT = ["dqn", "c51", "discrete_sac", "qmix"]
CATEGORICAL = ["dqn-double-categorical-masked", "discrete_sac-categorical", "vdn-categorical"]
ALL = ONE_HOT + CATEGORICAL


def owner(case) -> str:
    return case.module.__name__.rsplit(".", 1)[-1] + ".loss"


def setup(name):
    case = BY_NAME[name]
    return case, case.init(0), case.make_batch(0, B)


# --- the batch itself ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_batch_structure(name):
    case, params, batch = setup(name)
    who = owner(case)
    with pytest.raises(TypeError, match=rf"{who}: batch must be a funcrl.Record, got dict"):
        case.loss(params, batch.to_dict())
    with pytest.raises(ValueError, match=rf"{who}: batch has no batch dims"):
        case.loss(params, batch[0])
    with pytest.raises(ValueError, match=rf"{who}: batch is empty"):
        case.loss(params, batch[:0])


@pytest.mark.parametrize("name", ALL)
def test_float64_batch_with_float32_params(name):
    case, params, batch = setup(name)
    wide = batch.apply(lambda t: t.double() if t.is_floating_point() else t)
    with pytest.raises(TypeError, match=rf"{owner(case)}: batch\['observation'\] is torch.float64"):
        case.loss(params, wide)


@pytest.mark.parametrize("name", ALL)
def test_missing_params_key(name):
    case, params, batch = setup(name)
    first = next(iter(params))
    with pytest.raises(KeyError, match=rf"{owner(case)}: params lack \['{first}'\]"):
        case.loss({k: v for k, v in params.items() if k != first}, batch)


@pytest.mark.parametrize("name", ALL)
def test_reward_and_terminated_shapes(name):
    case, params, batch = setup(name)
    who = owner(case)
    flat_reward = batch.set(("next", "reward"), batch["next", "reward"][..., 0])
    with pytest.raises(
        ValueError, match=rf"{who}: batch\[\('next', 'reward'\)\] has shape \({B},\)"
    ):
        case.loss(params, flat_reward)
    two = batch.set(("next", "terminated"), batch["next", "terminated"].expand(B, 2))
    with pytest.raises(ValueError, match=rf"{who}: batch\[\('next', 'terminated'\)\] has shape"):
        case.loss(params, two)
    with pytest.raises(KeyError, match=rf"{who}: batch has no key .*terminated"):
        case.loss(params, batch.exclude(("next", "terminated")))


@pytest.mark.parametrize("name", ALL)
def test_next_observation_shape(name):
    case, params, batch = setup(name)
    obs = batch["next", "observation"]
    bad = batch.set(("next", "observation"), torch.cat([obs, obs[..., :1]], -1))
    with pytest.raises(ValueError, match=rf"{owner(case)}: batch\[\('next', 'observation'\)\]"):
        case.loss(params, bad)


@pytest.mark.parametrize("name", ALL)
def test_priority_weight_shape_and_dtype(name):
    case, params, batch = setup(name)
    who = owner(case)
    with pytest.raises(
        ValueError, match=rf"{who}: batch\['priority_weight'\] has shape \({B}, 1\)"
    ):
        case.loss(params, batch.set("priority_weight", torch.ones(B, 1)))
    with pytest.raises(TypeError, match=rf"{who}: batch\['priority_weight'\] is torch.float64"):
        case.loss(params, batch.set("priority_weight", torch.ones(B, dtype=torch.float64)))


# --- actions -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ONE_HOT)
def test_one_hot_action_shape_and_values(name):
    case, params, batch = setup(name)
    who, a = owner(case), batch["action"]
    with pytest.raises(ValueError, match=rf"{who}: batch\['action'\] has shape .*expected"):
        case.loss(params, batch.set("action", a.argmax(-1)))  # [B] instead of [B, n]
    zero = a.clone()
    zero[0] = 0
    with pytest.raises(ValueError, match=rf"{who}: batch\['action'\] has rows with 0..1 ones"):
        case.loss(params, batch.set("action", zero))
    two = a.clone()
    two[0] = 2 * two[0]
    with pytest.raises(ValueError, match=rf"{who}: batch\['action'\] has entries other than 0"):
        case.loss(params, batch.set("action", two))
    both = a.clone()
    both[0] = 1
    with pytest.raises(ValueError, match=rf"{who}: batch\['action'\] has rows with 1..4 ones"):
        case.loss(params, batch.set("action", both))
    # Integer, bool and float one-hots are the same action.
    ref = case.loss(params, batch)["td_error"]
    for dtype in (torch.float32, torch.bool, torch.int32):
        torch.testing.assert_close(
            case.loss(params, batch.set("action", a.to(dtype)))["td_error"], ref
        )


@pytest.mark.parametrize("name", CATEGORICAL)
def test_categorical_action_range_and_dtype(name):
    case, params, batch = setup(name)
    who, a = owner(case), batch["action"]
    high = a.clone()
    high.view(-1)[0] = 4
    with pytest.raises(
        ValueError, match=rf"{who}: batch\['action'\] has indices in \[0, 4\], expected \[0, 3\]"
    ):
        case.loss(params, batch.set("action", high))
    low = a.clone()
    low.view(-1)[0] = -1
    with pytest.raises(ValueError, match=rf"{who}: batch\['action'\] has indices in \[-1, "):
        case.loss(params, batch.set("action", low))
    # Float indices are rejected whatever their values (the same rule eager and compiled).
    with pytest.raises(TypeError, match=rf"{who}: batch\['action'\] is torch.float32"):
        case.loss(params, batch.set("action", a.float()))
    with pytest.raises(TypeError, match=rf"{who}: batch\['action'\] is torch.float32"):
        case.loss(params, batch.set("action", a.float() + 0.5))
    with pytest.raises(ValueError, match=rf"{who}: batch\['action'\] has shape"):
        case.loss(params, batch.set("action", a.unsqueeze(-1).expand(*a.shape, 2)))
    # [*B] and [*B, 1] are the same action.
    torch.testing.assert_close(
        case.loss(params, batch.set("action", a.unsqueeze(-1)))["td_error"],
        case.loss(params, batch)["td_error"],
    )


def test_binary_and_mult_one_hot_actions():
    cfg = dqn.Config(action_space="binary")
    params = dqn.init(0, 3, specs.Binary(4), cfg)
    batch = single_agent_batch()(0, B).set("action", torch.ones(B, 4))
    dqn.loss(params, batch, config=cfg)
    with pytest.raises(ValueError, match=r"dqn.loss: batch\['action'\] has entries other than 0"):
        dqn.loss(params, batch.set("action", torch.full((B, 4), 0.5)), config=cfg)
    cfg = dqn.Config(action_space=specs.MultiOneHot([2, 2]))
    params = dqn.init(0, 3, specs.MultiOneHot([2, 2]), cfg)
    good = torch.tensor([[1, 0, 0, 1]]).expand(B, 4)
    dqn.loss(params, batch.set("action", good), config=cfg)
    with pytest.raises(ValueError, match=r"dqn.loss: batch\['action'\] has rows .* in group 1"):
        dqn.loss(params, batch.set("action", torch.tensor([[1, 0, 1, 1]]).expand(B, 4)), config=cfg)


def test_qmix_action_and_reward_keys_are_named():
    cfg = qmix.Config()  # TorchRL's grouped keys
    case = BY_NAME["qmix"]
    params = case.init(0)
    flat = case.make_batch(0, B)
    batch = Record(
        {
            ("agents", "observation"): flat["observation"],
            ("agents", "action"): flat["action"][..., :3],
            "state": flat["state"],
            "next": {
                "agents": {"observation": flat["next", "observation"]},
                "state": flat["next", "state"],
                "reward": flat["next", "reward"],
                "terminated": flat["next", "terminated"],
            },
        },
        batch_ndim=1,
    )
    with pytest.raises(ValueError, match=r"qmix.loss: batch\[\('agents', 'action'\)\] has shape"):
        qmix.loss(params, batch, config=cfg, nets=case.nts)
    per_agent = flat.set(("next", "reward"), torch.zeros(B, 2, 1))
    with pytest.raises(ValueError, match=r"qmix.loss: batch\[\('next', 'reward'\)\].*team reward"):
        qmix.loss(params, per_agent, config=case.cfg, nets=case.nts)


# --- masks ---------------------------------------------------------------------------------------


def test_masks():
    case, params, batch = setup("dqn-double-categorical-masked")
    m = batch["action_mask"]
    with pytest.raises(TypeError, match=r"dqn.loss: the action mask must be bool, got torch.int64"):
        case.loss(params, batch.set("action_mask", m.long()))
    with pytest.raises(ValueError, match=r"dqn.loss: batch\['action_mask'\] has shape \(6, 3\)"):
        case.loss(params, batch.set("action_mask", m[..., :3]))
    obs = batch["observation"]
    with pytest.raises(ValueError, match=r"dqn.act: config.action_mask_key='action_mask' is set"):
        dqn.act(params, obs, config=case.cfg, nets=case.nts, key=None)
    with pytest.raises(ValueError, match=r"dqn.act: the action mask has shape \(6, 3\)"):
        dqn.act(params, obs, config=case.cfg, nets=case.nts, action_mask=m[..., :3])
    with pytest.raises(ValueError, match="mask_action_values: the action mask has shape"):
        discrete.mask_action_values(torch.zeros(2, 3), torch.ones(2, 4, dtype=torch.bool))


# --- act -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_act_mode_and_observation(name):
    case, params, batch = setup(name)
    act_owner = owner(case).replace(".loss", ".act")
    obs = batch["observation"]
    with pytest.raises(
        ValueError,
        match=rf"{act_owner}: mode must be one of \('random', 'deterministic'\), got 'greedy'",
    ):
        case.act(params, obs, "greedy")
    with pytest.raises(
        TypeError,
        match=rf"{act_owner}: observation is torch.float64 but the params are torch.float32",
    ):
        case.act(params, obs.double(), "deterministic")
    with pytest.raises(
        TypeError, match=rf"{act_owner}: observation must be a tensor \[\*B, o\], got list"
    ):
        case.act(params, obs.tolist(), "deterministic")


def test_epsilon_range():
    case, params, batch = setup("dqn")
    with pytest.raises(ValueError, match=r"dqn.act: epsilon must be in \[0, 1\], got 1.5"):
        dqn.act(params, batch["observation"], nets=case.nts, epsilon=1.5)


# --- configs and init ----------------------------------------------------------------------------


@pytest.mark.parametrize("module", [dqn, c51, discrete_sac, qmix])
def test_config_values(module):
    name = module.__name__.rsplit(".", 1)[-1]
    with pytest.raises(ValueError, match=rf"{name}.Config: use_prioritized_weights must be one of"):
        module.Config(use_prioritized_weights="yes")
    with pytest.raises(ValueError, match=rf"{name}.Config: value_estimator must be"):
        module.Config(value_estimator="gae")
    if module is not c51:
        with pytest.raises(ValueError, match=rf"{name}.Config: lmbda must be in \[0, 1\], got 1.5"):
            module.Config(value_estimator="td_lambda", lmbda=1.5)


def test_c51_has_td0_only():
    with pytest.raises(ValueError, match=r"c51.Config: value_estimator must be 'td0'"):
        c51.Config(value_estimator="td_lambda")


def test_action_space_names():
    with pytest.raises(ValueError, match=r"dqn.Config: action_space must be one of"):
        dqn.Config(action_space="discrete")
    with pytest.raises(
        ValueError,
        match=r"discrete_sac.Config: action_space must be one of \('one_hot', 'categorical'\)",
    ):
        discrete_sac.Config(action_space="binary")
    with pytest.raises(
        ValueError,
        match=r"dqn.init: action_spec is a Categorical \('categorical'\) but config.action_space is 'one_hot'",
    ):
        dqn.init(0, 3, specs.Categorical(4))


@pytest.mark.parametrize("name", ["dqn", "c51", "discrete_sac"])
def test_init_rejects_plain_functions_and_bad_seeds(name):
    case = BY_NAME[name]
    field = "actor" if case.module is discrete_sac else "value"
    bad = case.module.Nets(**{field: lambda p, x: x})
    with pytest.raises(TypeError, match=rf"{name}.init: nets.{field} must be a funcrl net"):
        case.module.init(0, case.observation_spec, case.action_spec, config=case.cfg, nets=bad)
    with pytest.raises(ValueError, match=rf"{name}.init: .*seed must be an int64 tensor"):
        case.init(torch.zeros(3))
    with pytest.raises(TypeError, match=rf"{name}.init: seed must be an int or a torch.Generator"):
        case.init("0")


def test_default_net_params_must_be_mlp_params():
    case, params, batch = setup("dqn")
    with pytest.raises(TypeError, match=r"dqn.loss: params\['value'\] are not the default MLP's"):
        case.loss(
            {"value": {"w": torch.zeros(4, 3)}, "target_value": {"w": torch.zeros(4, 3)}}, batch
        )


def test_multi_agent_batch_maker_is_valid():
    # The bad-input cases above start from valid batches.
    assert multi_agent_batch()(0, 2).batch_size == (2,)


@pytest.mark.parametrize("name", ALL)
def test_params_of_other_nets(name):
    """Params built for other nets (another width) raise naming the function and the params key."""
    case, params, batch = setup(name)
    import dataclasses

    wide = dataclasses.replace(case.nts, num_cells=(24,))
    if case.module is dqn and case.nts.value is not None:
        wide = dataclasses.replace(wide, value=None)
    other = case.module.init(
        0, case.observation_spec, case.action_spec, config=case.cfg, nets=wide
    ) if case.module is not qmix else qmix.init(
        0, case.observation_spec, case.action_spec, config=case.cfg,
        nets=dataclasses.replace(wide, local_value=None),
    )  # fmt: skip
    key = next(iter(params))
    with pytest.raises(ValueError, match=rf"{owner(case)}: params\['{key}'\].*do not belong"):
        case.loss({**params, key: other[key]}, batch)
