"""The on-policy objectives (PPO, A2C, REINFORCE) through the objective protocol's checks.

A batch here is a rollout: ``make_batch(seed, B)`` is one trajectory of ``B`` steps (the time dim
is the only batch dim, TorchRL's layout for ``time_dim=-1``), so the harness's batch sizes work
unchanged. Two harness checks do not apply as written, and have on-policy variants below:

* ``check_priority``: TorchRL's on-policy losses do not read ``priority_weight`` (a rollout is
  not sampled by priority), and neither do funcrl's: the variant checks it is ignored.
* ``check_trainer_compiled`` traces PPO's 4 x 4 unrolled minibatches (~45 s per case), so it runs
  under ``@pytest.mark.slow`` (a 1 x 1 compiled step is in the fast tests of test_ppo.py).
* ``check_key`` with a stochastic loss: only a policy without a closed-form entropy (TanhNormal)
  draws in the loss; the discrete and normal cases are deterministic (``stochastic_loss=False``).
"""

from __future__ import annotations

import inspect

import pytest
import torch

from funcrl import a2c, ppo, reinforce
from funcrl.objectives import on_policy
from funcrl.record import Record
from tests import protocol_harness as harness

pytest.importorskip("funcrl.random", reason="the protocol's key checks need funcrl.random")

OBS, ACT, N = 3, 2, 4


def _keyed_sampling() -> bool:
    """Whether the distributions take ``key=`` yet (it lands from another branch)."""
    from funcrl.distributions import Categorical

    return "key" in inspect.signature(Categorical.sample).parameters


def _keyed_init() -> bool:
    """Whether ``init`` takes a funcrl.random key as its seed yet (``nn.make_generator``)."""
    import funcrl
    from funcrl.nn import make_generator

    try:
        make_generator(funcrl.random.key(0))
    except TypeError:
        return False
    return True


def _skip_until_keys(case, check=None) -> None:
    draws = check is harness.check_act or (check is not harness.check_init and case.stochastic_loss)
    if draws and not _keyed_sampling():
        pytest.skip("needs distributions' sample(..., key=), which lands from another branch")
    if check is harness.check_init and not _keyed_init():
        pytest.skip("needs nn.make_generator(funcrl.random key), which lands from another branch")


class BoxSpec:
    shape = (ACT,)
    low, high = -torch.ones(ACT), torch.ones(ACT)


def rollout_maker(module, config, nets, action_spec):
    def make_batch(seed: int, b: int) -> Record:
        g = torch.Generator().manual_seed(seed)
        params = module.init(seed + 100, OBS, action_spec, config, nets)
        obs = torch.randn(b, OBS, generator=g)
        mask = None
        if nets.distribution == "masked_categorical":
            mask = torch.rand(b, N, generator=g) > 0.5
            mask[:, 0] = True
        torch.manual_seed(seed)
        entries = on_policy.explore(params, obs, nets=nets, mask=mask)
        done = torch.zeros(b, 1, dtype=torch.bool)
        done[b // 2] = True
        data = {
            "observation": obs,
            **entries,
            ("next", "observation"): torch.randn(b, OBS, generator=g),
            ("next", "reward"): torch.randn(b, 1, generator=g),
            ("next", "terminated"): done,
            ("next", "done"): done,
        }
        if mask is not None:
            data["action_mask"] = mask
        return Record(data, batch_ndim=1)

    return make_batch


def case(name, module, distribution, config=None, stochastic=False):
    nets = module.Nets(distribution=distribution, num_cells=(16,))
    config = module.Config() if config is None else config
    spec = N if distribution in ("categorical", "masked_categorical") else BoxSpec
    mask_kw = ()
    return harness.Case(
        name=name,
        module=module,
        observation_spec=OBS,
        action_spec=spec,
        make_batch=rollout_maker(module, config, nets, spec),
        config=config,
        nets=nets,
        stochastic_loss=stochastic,
        act_kwargs=mask_kw,
    )


CASES = [
    case("ppo-categorical", ppo, "categorical"),
    case("ppo-kl-normal", ppo, "normal", ppo.Config(variant="kl")),
    case("ppo-tanh", ppo, "tanh_normal", stochastic=True),
    case("a2c-categorical", a2c, "categorical"),
    case("a2c-normal", a2c, "normal"),
    case("reinforce-categorical", reinforce, "categorical"),
    case("reinforce-delay", reinforce, "normal", reinforce.Config(delay_value=True)),
]


# -- multi-agent (MAPPO): ppo on a grouped rollout with MultiAgentMLP nets --------------------------

MA_N, MA_OBS = 3, 3


def mappo_case(name, centralized, share):
    """A ``[B]`` trajectory of ``MA_N`` agents in TorchRL's grouped layout, group-viewed: the
    per-agent entries ``[B, n_agents, ...]`` at the top-level keys the loss reads."""
    from funcrl.multiagent import group_view, ppo_config, ppo_nets
    from funcrl.specs import Bounded, Unbounded

    obs_spec = Unbounded(shape=(MA_N, MA_OBS))
    act_spec = Bounded(-1.0, 1.0, shape=(MA_N, ACT))
    nets = ppo_nets(
        obs_spec, act_spec, centralized_critic=centralized, share_params=share, num_cells=16
    )
    config = ppo_config()

    def make_batch(seed: int, b: int) -> Record:
        g = torch.Generator().manual_seed(seed)
        params = ppo.init(seed + 100, obs_spec, act_spec, config, nets)
        obs = torch.randn(b, MA_N, MA_OBS, generator=g)
        torch.manual_seed(seed)
        entries = on_policy.explore(params, obs, nets=nets)
        done = torch.zeros(b, 1, dtype=torch.bool)
        done[b // 2] = True
        grouped = {
            ("agents", "observation"): obs,
            **{("agents", k): v for k, v in entries.items()},
            ("next", "agents", "observation"): torch.randn(b, MA_N, MA_OBS, generator=g),
            ("next", "agents", "reward"): torch.randn(b, MA_N, 1, generator=g),
            ("next", "terminated"): done,
            ("next", "done"): done,
        }
        return group_view(Record(grouped, batch_ndim=1))

    return harness.Case(
        name=name,
        module=ppo,
        observation_spec=obs_spec,
        action_spec=act_spec,
        make_batch=make_batch,
        config=config,
        nets=nets,
        stochastic_loss=True,
    )


MA_CASES = [mappo_case("mappo-shared", True, True), mappo_case("ippo-independent", False, False)]
# check_loss wants td_error [*B]; a multi-agent td_error is per agent, [*B, n_agents] (as
# MADDPG's): the variant below checks that instead.
MA_APPLICABLE = (
    harness.check_names,
    harness.check_init,
    harness.check_key,
    harness.check_rank0_batch,
    harness.check_act,
    harness.check_trainer_vmapped,
)


@pytest.mark.parametrize("check", MA_APPLICABLE, ids=lambda c: c.__name__)
@pytest.mark.parametrize("case", MA_CASES, ids=lambda c: c.name)
def test_protocol_multiagent(case, check):
    _skip_until_keys(case, check)
    check(case)


@pytest.mark.parametrize("case", MA_CASES, ids=lambda c: c.name)
def test_multiagent_loss_terms_and_per_agent_td_error(case):
    import funcrl

    _skip_until_keys(case)
    params, batch = case.init(0), case.make_batch(0, 8)
    losses = case.loss(params, batch, key=funcrl.random.key(0))
    for k in ("loss_objective", "loss_critic", "loss_entropy"):
        assert losses[k].shape == () and torch.isfinite(losses[k]), k
    td = losses["td_error"]
    assert td.shape == (8, MA_N) and not td.requires_grad and bool((td >= 0).all())


# The compiled-trainer check traces 4 epochs x 4 minibatches of gradients (~45 s): slow tests.
SLOW = (harness.check_trainer_compiled,)
APPLICABLE = [c for c in harness.ALL_CHECKS if c is not harness.check_priority and c not in SLOW]


@pytest.mark.parametrize("check", APPLICABLE, ids=lambda c: c.__name__)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_protocol(case, check):
    _skip_until_keys(case, check)
    check(case)


@pytest.mark.slow
@pytest.mark.parametrize("check", SLOW, ids=lambda c: c.__name__)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_protocol_slow(case, check):
    _skip_until_keys(case, check)
    check(case)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_priority_weight_is_ignored(case):
    import funcrl

    _skip_until_keys(case)
    params, batch = case.init(0), case.make_batch(0, 8)
    key = funcrl.random.key(0)
    plain = case.loss(params, batch, key=key)
    weighted = case.loss(params, batch.set("priority_weight", torch.rand(8)), key=key)
    for k in plain:
        torch.testing.assert_close(plain[k], weighted[k])


def test_masked_policy_acts_within_its_mask():
    import funcrl

    if not _keyed_sampling():
        pytest.skip("needs distributions' sample(..., key=), which lands from another branch")
    nets = ppo.Nets(distribution="masked_categorical", num_cells=(16,))
    params = ppo.init(0, OBS, N, nets=nets)
    obs = torch.randn(64, OBS)
    mask = torch.zeros(64, N, dtype=torch.bool)
    mask[:, 2] = True
    mask[::2, 3] = True
    for mode in ("random", "deterministic"):
        a = ppo.act(params, obs, nets=nets, mode=mode, key=funcrl.random.key(0), mask=mask)
        assert bool(mask.gather(-1, a.unsqueeze(-1)).all())


@pytest.mark.slow
@pytest.mark.parametrize("case", MA_CASES, ids=lambda c: c.name)
def test_protocol_multiagent_trainer_compiled(case):
    _skip_until_keys(case, harness.check_trainer_compiled)
    harness.check_trainer_compiled(case)
