"""Bad input to the offline objectives: every error names the function and the argument or key."""

from __future__ import annotations

import pytest
import torch

from funcrl import bc, cql, discrete_cql, discrete_iql, dt, iql, online_dt, specs, td3_bc
from funcrl.nn import DTConfig
from funcrl.record import Record

OBS, ACT, B = 3, 2, 4
SMALL = {"num_cells": (8,)}


def batch(over=None) -> Record:
    entries = {
        "observation": torch.randn(B, OBS),
        "action": torch.rand(B, ACT) * 2 - 1,
        ("next", "observation"): torch.randn(B, OBS),
        ("next", "reward"): torch.randn(B, 1),
        ("next", "terminated"): torch.zeros(B, 1, dtype=torch.bool),
        ("next", "done"): torch.zeros(B, 1, dtype=torch.bool),
    }
    entries.update(over or {})
    return Record(entries, batch_ndim=1)


MODULES = [(iql, "iql"), (td3_bc, "td3_bc"), (cql, "cql")]


@pytest.mark.parametrize(
    "field,value,match",
    [
        ("expectile", 1.0, r"iql\.Config: expectile must be in \(0, 1\), got 1\.0"),
        ("expectile", 0.0, r"iql\.Config: expectile"),
        ("expectile", True, r"iql\.Config: expectile"),
        ("temperature", -1.0, r"iql\.Config: temperature must be >= 0, got -1\.0"),
        ("num_qvalue_nets", 0, r"iql\.Config: num_qvalue_nets must be >= 1, got 0"),
        ("gamma", 1.5, r"iql\.Config: gamma must be in \[0, 1\]"),
        ("loss_function", "huber", r"iql\.Config: loss_function"),
        ("value_estimator", "gae", r"iql\.Config: value_estimator"),
    ],
)
def test_iql_config(field, value, match):
    with pytest.raises(ValueError, match=match):
        iql.Config(**{field: value})


@pytest.mark.parametrize(
    "field,value,match",
    [
        ("alpha", -0.1, r"td3_bc\.Config: alpha must be >= 0, got -0\.1"),
        ("policy_noise", -0.1, r"td3_bc\.Config: policy_noise"),
        ("num_qvalue_nets", 0, r"td3_bc\.Config: num_qvalue_nets must be >= 1, got 0"),
        ("reduction", "max", r"td3_bc\.Config: reduction"),
    ],
)
def test_td3_bc_config(field, value, match):
    with pytest.raises(ValueError, match=match):
        td3_bc.Config(**{field: value})


@pytest.mark.parametrize("module,name", MODULES)
def test_missing_params(module, name):
    params = module.init(0, OBS, ACT, nets=module.Nets(**SMALL))
    del params["qvalue"]
    with pytest.raises(KeyError, match=rf"{name}\.loss: params lack \['qvalue'\]"):
        module.loss(params, batch(), nets=module.Nets(**SMALL))


@pytest.mark.parametrize("module,name", MODULES)
@pytest.mark.parametrize(
    "key,value,exc,match",
    [
        ("action", torch.rand(B, ACT + 1), ValueError, r"'action'.*\(3,\)|action"),
        ("observation", torch.randn(B, OBS, dtype=torch.float64), TypeError, r"observation"),
        (("next", "reward"), torch.randn(B), ValueError, r"reward"),
        (("next", "observation"), torch.randn(B, OBS + 1), ValueError, r"next.*observation"),
        (("next", "terminated"), torch.zeros(B, 2, dtype=torch.bool), ValueError, r"terminated"),
    ],
)
def test_batch_entries(module, name, key, value, exc, match):
    nets = module.Nets(**SMALL)
    params = module.init(0, OBS, ACT, nets=nets)
    with pytest.raises(exc, match=rf"{name}\.loss.*{match}|{match}.*{name}\.loss"):
        module.loss(params, batch({key: value}), nets=nets)


@pytest.mark.parametrize("module,name", MODULES)
def test_priority_weight_shape(module, name):
    nets = module.Nets(**SMALL)
    params = module.init(0, OBS, ACT, nets=nets)
    bad = batch().set("priority_weight", torch.ones(B, 1))
    with pytest.raises(ValueError, match=rf"{name}\.loss: batch\['priority_weight'\] has shape"):
        module.loss(params, bad, nets=nets)


def test_td3_bc_noise_shape():
    nets = td3_bc.Nets(**SMALL)
    params = td3_bc.init(0, OBS, ACT, nets=nets)
    with pytest.raises(ValueError, match=r"td3_bc\.loss: noise has shape \(4, 1\).*\(4, 2\)"):
        td3_bc.loss(params, batch(), nets=nets, noise=torch.zeros(B, 1))


def test_iql_unbounded_action_spec():
    with pytest.raises(ValueError, match=r"iql\.init: action_spec"):
        iql.init(0, OBS, specs.Unbounded(shape=(ACT,)), nets=iql.Nets(**SMALL))


def test_iql_bare_function_net():
    with pytest.raises(TypeError, match=r"iql\.init: Nets\.value must be a funcrl net"):
        iql.init(0, OBS, ACT, nets=iql.Nets(value=lambda p, x: x))


@pytest.mark.parametrize("module,name", MODULES)
def test_act_mode_and_observation(module, name):
    nets = module.Nets(**SMALL)
    params = module.init(0, OBS, ACT, nets=nets)
    with pytest.raises(ValueError, match=rf"{name}\.act: mode must be one of"):
        module.act(params, torch.randn(B, OBS), nets=nets, mode="greedy")
    with pytest.raises(TypeError, match=rf"{name}\.act: observation is torch\.float64"):
        module.act(params, torch.randn(B, OBS, dtype=torch.float64), nets=nets)


def test_td3_bc_init_names_itself():
    with pytest.raises(ValueError, match=r"td3_bc\.init: the default actor is tanh"):
        td3_bc.init(0, OBS, specs.Bounded(-2.0, 2.0, shape=(ACT,)))


@pytest.mark.parametrize(
    "field,value,match",
    [
        ("num_random", 0, r"cql\.Config: num_random must be an int >= 1, got 0"),
        ("num_random", 2.5, r"cql\.Config: num_random must be an int >= 1, got 2\.5"),
        ("num_qvalue_nets", True, r"cql\.Config: num_qvalue_nets"),
        ("temperature", 0.0, r"cql\.Config: temperature must be > 0, got 0\.0"),
        ("min_q_weight", -1.0, r"cql\.Config: min_q_weight must be >= 0, got -1\.0"),
        ("lagrange_thresh", float("inf"), r"cql\.Config: lagrange_thresh must be finite"),
        ("alpha_init", 0.0, r"cql\.Config: alpha_init must be > 0"),
        ("target_entropy", "max", r"cql\.Config: target_entropy must be 'auto' or a number"),
        ("lmbda", 2.0, r"cql\.Config: lmbda must be in \[0, 1\]"),
    ],
)
def test_cql_config(field, value, match):
    with pytest.raises(ValueError, match=match):
        cql.Config(**{field: value})


def test_cql_lagrange_needs_log_alpha_prime():
    cfg = cql.Config(with_lagrange=True, num_random=2)
    nets = cql.Nets(**SMALL)
    params = cql.init(0, OBS, ACT, nets=nets)  # built without the Lagrange multiplier
    with pytest.raises(KeyError, match=r"cql\.loss: params lack \['log_alpha_prime'\]"):
        cql.loss(params, batch(), config=cfg, nets=nets)


@pytest.mark.parametrize(
    "field,value,match",
    [
        ("loss_function", "huber", r"bc\.Config: loss_function must be one of"),
        ("reduction", "max", r"bc\.Config: reduction must be one of"),
        ("use_prioritized_weights", "yes", r"bc\.Config: use_prioritized_weights"),
    ],
)
def test_bc_config(field, value, match):
    with pytest.raises(ValueError, match=match):
        bc.Config(**{field: value})


@pytest.mark.parametrize("cfg", [bc.Config(), bc.Config(loss_function="l2")])
def test_bc_batch(cfg):
    nets = bc.Nets(**SMALL)
    params = bc.init(0, OBS, ACT, cfg, nets)
    with pytest.raises(ValueError, match=r"bc\.loss: batch\['action'\] has shape \(4, 3\)"):
        bc.loss(params, batch({"action": torch.rand(B, ACT + 1)}), config=cfg, nets=nets)
    with pytest.raises(TypeError, match=r"bc\.loss: batch\['observation'\]"):
        bad = batch({"observation": torch.randn(B, OBS, dtype=torch.float64)})
        bc.loss(params, bad, config=cfg, nets=nets)
    with pytest.raises(ValueError, match=r"bc\.loss: batch\['priority_weight'\] has shape"):
        bc.loss(params, batch().set("priority_weight", torch.ones(B, 1)), config=cfg, nets=nets)
    with pytest.raises(ValueError, match=r"bc\.loss: .*batch"):
        bc.loss(params, batch()[0], config=cfg, nets=nets)


def test_bc_deterministic_default_actor_needs_unit_box():
    with pytest.raises(ValueError, match=r"bc\.init: the default actor is tanh"):
        bc.init(0, OBS, specs.Bounded(-2.0, 2.0, shape=(ACT,)), bc.Config(loss_function="l1"))


TINY = DTConfig(n_embd=8, n_layer=1, n_head=1, n_inner=8, n_positions=9)
SEQ = [(dt, "dt", dt.Nets(transformer_config=TINY)),
       (online_dt, "online_dt", online_dt.Nets(transformer_config=TINY))]  # fmt: skip


def segments(over=None) -> Record:
    entries = {
        "observation": torch.randn(B, 3, OBS),
        "action": torch.rand(B, 3, ACT) * 2 - 1,
        "return_to_go": torch.randn(B, 3, 1),
    }
    entries.update(over or {})
    return Record(entries, batch_ndim=2)


@pytest.mark.parametrize("module,name,nets", SEQ)
@pytest.mark.parametrize(
    "key,value,exc,match",
    [
        (
            "return_to_go",
            torch.randn(B, 3),
            ValueError,
            r"batch\['return_to_go'\] has shape \(4, 3\)",
        ),
        (
            "action",
            torch.rand(B, 3, 1, ACT),
            ValueError,
            r"batch\['action'\] has shape \(4, 3, 1, 2\), expected \(4, 3, 2\)",
        ),
        ("action", torch.rand(B, 3, ACT + 1), ValueError, r"batch\['action'\] has shape"),
        ("observation", torch.randn(B, 3, OBS).double(), TypeError, r"batch\['observation'\]"),
    ],
)
def test_sequence_batches(module, name, nets, key, value, exc, match):
    params = module.init(0, OBS, ACT, nets=nets)
    with pytest.raises(exc, match=rf"{name}\.loss: {match}"):
        module.loss(params, segments({key: value}), nets=nets)


@pytest.mark.parametrize("module,name,nets", SEQ)
def test_sequence_act_context(module, name, nets):
    params = module.init(0, OBS, ACT, nets=nets)
    obs, a, rtg = torch.randn(B, 3, OBS), torch.zeros(B, 3, ACT), torch.zeros(B, 3, 1)
    with pytest.raises(TypeError, match=rf"{name}\.act: action must be a tensor \[\*B, T, 2\]"):
        module.act(params, obs, nets=nets, return_to_go=rtg)
    with pytest.raises(ValueError, match=rf"{name}\.act: return_to_go has shape \(4, 2, 1\)"):
        module.act(params, obs, nets=nets, action=a, return_to_go=rtg[:, :2])
    with pytest.raises(TypeError, match=rf"{name}\.act: action is torch\.float64"):
        module.act(params, obs, nets=nets, action=a.double(), return_to_go=rtg)
    with pytest.raises(ValueError, match=rf"{name}\.act: observation must be a context"):
        module.act(params, obs[0, 0], nets=nets, action=a[0, 0], return_to_go=rtg[0, 0])


@pytest.mark.parametrize(
    "cls,field,value,match",
    [
        (dt.Config, "loss_function", "huber", r"dt\.Config: loss_function"),
        (dt.Config, "use_prioritized_weights", 1, r"dt\.Config: use_prioritized_weights"),
        (online_dt.Config, "samples_mc_entropy", 0, r"online_dt\.Config: samples_mc_entropy"),
        (online_dt.Config, "alpha_init", -1.0, r"online_dt\.Config: alpha_init must be > 0"),
        (online_dt.Config, "reduction", "max", r"online_dt\.Config: reduction"),
    ],
)
def test_sequence_configs(cls, field, value, match):
    with pytest.raises(ValueError, match=match):
        cls(**{field: value})


# --- discrete IQL and CQL ------------------------------------------------------------------------

N = 4
DISCRETE = [(discrete_iql, "discrete_iql"), (discrete_cql, "discrete_cql")]


def discrete_batch(over=None, space="one_hot") -> Record:
    idx = torch.tensor([0, 1, 2, 3])
    b = batch({"action": idx if space == "categorical" else torch.nn.functional.one_hot(idx, N)})
    for k, v in (over or {}).items():
        b = b.set(k, v)
    return b


def discrete_setup(module, space="one_hot", **cfg):
    config = module.Config(action_space=space, **cfg)
    nets = module.Nets(**SMALL)
    spec = specs.Categorical(N) if space == "categorical" else specs.OneHot(N)
    return config, nets, module.init(0, OBS, spec, config, nets)


@pytest.mark.parametrize(
    "module,field,value,match",
    [
        (discrete_iql, "action_space", "binary", r"discrete_iql\.Config: action_space must be one"),
        (discrete_iql, "action_space", "multi", r"discrete_iql\.Config: action_space must be one"),
        (discrete_iql, "expectile", 1.0, r"discrete_iql\.Config: expectile must be in \(0, 1\)"),
        (discrete_iql, "temperature", -1.0, r"discrete_iql\.Config: temperature must be >= 0"),
        (discrete_iql, "num_qvalue_nets", 0, r"discrete_iql\.Config: num_qvalue_nets must be >= 1"),
        (discrete_iql, "value_estimator", "gae", r"discrete_iql\.Config: value_estimator"),
        (discrete_cql, "action_space", "mult_one_hot", r"discrete_cql\.Config: action_space"),
        (discrete_cql, "loss_function", "huber", r"discrete_cql\.Config: loss_function"),
        (discrete_cql, "gamma", 1.5, r"discrete_cql\.Config: gamma must be in \[0, 1\], got 1\.5"),
        (discrete_cql, "reduction", "max", r"discrete_cql\.Config: reduction"),
        (discrete_cql, "lmbda", 2.0, r"discrete_cql\.Config: lmbda must be in \[0, 1\]"),
        (discrete_cql, "use_prioritized_weights", "yes", r"discrete_cql\.Config: use_prioritized"),
    ],
)
def test_discrete_configs(module, field, value, match):
    with pytest.raises(ValueError, match=match):
        module.Config(**{field: value})


@pytest.mark.parametrize("module,name", DISCRETE)
def test_discrete_init_spec_mismatch(module, name):
    with pytest.raises(ValueError, match=rf"{name}\.init: action_spec is a Categorical.*one_hot"):
        module.init(0, OBS, specs.Categorical(N), nets=module.Nets(**SMALL))
    with pytest.raises(TypeError, match=rf"{name}\.init: action_spec must be a discrete spec"):
        module.init(0, OBS, specs.Unbounded(shape=(2,)), nets=module.Nets(**SMALL))


@pytest.mark.parametrize("module,name", DISCRETE)
def test_discrete_missing_params(module, name):
    config, nets, params = discrete_setup(module)
    key = "qvalue" if module is discrete_iql else "target_value"
    del params[key]
    with pytest.raises(KeyError, match=rf"{name}\.loss: params lack \['{key}'\]"):
        module.loss(params, discrete_batch(), config=config, nets=nets)


@pytest.mark.parametrize("module,name", DISCRETE)
@pytest.mark.parametrize(
    "space,key,value,exc,match",
    [
        ("categorical", "action", torch.tensor([0, 1, 2, 4]), ValueError, r"indices in \[0, 4\]"),
        ("categorical", "action", torch.tensor([0.0, 1, 2, 3]), TypeError, r"integer indices"),
        ("categorical", "action", torch.zeros(B, 2).long(), ValueError, r"'action'\] has shape"),
        ("one_hot", "action", torch.ones(B, N).long(), ValueError, r"exactly one"),
        ("one_hot", "action", torch.eye(N)[:, :3].long(), ValueError, r"'action'\] has shape"),
        ("one_hot", "observation", torch.randn(B, OBS).double(), TypeError, r"observation"),
        ("one_hot", ("next", "observation"), torch.randn(B, OBS + 1), ValueError, r"next"),
        ("one_hot", ("next", "reward"), torch.randn(B), ValueError, r"reward"),
        ("one_hot", ("next", "terminated"), torch.zeros(B, 2).bool(), ValueError, r"terminated"),
        ("one_hot", "priority_weight", torch.ones(B, 1), ValueError, r"priority_weight"),
    ],
)
def test_discrete_batch_entries(module, name, space, key, value, exc, match):
    config, nets, params = discrete_setup(module, space)
    bad = discrete_batch({key: value}, space)
    with pytest.raises(exc, match=rf"{name}\.loss.*{match}"):
        module.loss(params, bad, config=config, nets=nets)


def test_discrete_cql_action_masks():
    config, nets, params = discrete_setup(discrete_cql, action_mask_key="action_mask")
    with pytest.raises(KeyError, match=r"discrete_cql\.loss.*action_mask"):
        discrete_cql.loss(params, discrete_batch(), config=config, nets=nets)
    masks = {"action_mask": torch.ones(B, N).bool(), ("next", "action_mask"): torch.ones(B, N)}
    with pytest.raises(TypeError, match=r"discrete_cql\.loss: the action mask must be bool"):
        discrete_cql.loss(params, discrete_batch(masks), config=config, nets=nets)
    masks[("next", "action_mask")] = torch.ones(B, N + 1).bool()
    with pytest.raises(ValueError, match=r"discrete_cql\.loss: batch\[\('next', 'action_mask'\)\]"):
        discrete_cql.loss(params, discrete_batch(masks), config=config, nets=nets)
    with pytest.raises(ValueError, match=r"discrete_cql\.act: config\.action_mask_key"):
        discrete_cql.act(params, torch.randn(B, OBS), config=config, nets=nets)


@pytest.mark.parametrize("module,name", DISCRETE)
def test_discrete_act(module, name):
    config, nets, params = discrete_setup(module)
    with pytest.raises(ValueError, match=rf"{name}\.act: mode must be one of"):
        module.act(params, torch.randn(B, OBS), config=config, nets=nets, mode="greedy")
    with pytest.raises(TypeError, match=rf"{name}\.act: observation is torch\.float64"):
        module.act(params, torch.randn(B, OBS).double(), config=config, nets=nets)
    with pytest.raises(TypeError, match=rf"{name}\.act: the action mask must be bool"):
        module.act(
            params, torch.randn(B, OBS), config=config, nets=nets, action_mask=torch.ones(B, N)
        )
    with pytest.raises(ValueError, match=rf"{name}\.act: the action mask has shape \(4, 3\)"):
        mask = torch.ones(B, N - 1).bool()
        module.act(params, torch.randn(B, OBS), config=config, nets=nets, action_mask=mask)


@pytest.mark.parametrize("module,name", DISCRETE)
def test_discrete_bare_function_net(module, name):
    field = "actor" if module is discrete_iql else "value"
    nets = module.Nets(**{field: lambda p, x: x})
    with pytest.raises(TypeError, match=rf"{name}\.init: nets\.{field} must be a funcrl net"):
        module.init(0, OBS, specs.OneHot(N), nets=nets)


# --- interop -------------------------------------------------------------------------------------


@pytest.mark.parametrize("module,name,key", [(iql, "iql", "value"), (cql, "cql", "actor")])
def test_to_torchrl_needs_default_mlp_params_without_observation_dim(module, name, key):
    pytest.importorskip("torchrl")
    nets = module.Nets(**SMALL)
    params = module.init(0, OBS, ACT, nets=nets)
    params[key] = {"w": torch.zeros(3)}
    with pytest.raises(
        TypeError, match=rf"{name}\.to_torchrl: params\['{key}'\] are not the default"
    ):
        module.to_torchrl(module.Config(), nets, params)


def test_discrete_iql_from_torchrl_names_the_network_keys():
    pytest.importorskip("torchrl")
    import warnings

    from tensordict.nn import TensorDictModule

    warnings.filterwarnings("ignore")
    config, nets, params = discrete_setup(discrete_iql)
    m = discrete_iql.to_torchrl(config, nets, params)
    m.value_network = TensorDictModule(torch.nn.Linear(OBS, 1), ["obs"], ["state_value"])
    with pytest.raises(TypeError, match=r"discrete_iql\.from_torchrl: the value network's in_keys"):
        discrete_iql.from_torchrl(m)
