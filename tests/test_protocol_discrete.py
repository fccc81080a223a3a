"""The discrete family (DQN, C51, discrete SAC, QMIX/VDN) through the whole objective protocol."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from protocol_harness import ALL_CHECKS, Case

from funcrl import Record, c51, discrete_sac, dqn, qmix, specs
from funcrl.multiagent import QMixer, VDNMixer
from funcrl.nn import MLP

OBS, N, AGENTS, STATE = 3, 4, 2, (5,)


def _actions(g: torch.Generator, lead: tuple[int, ...], space: str) -> torch.Tensor:
    idx = torch.randint(0, N, lead, generator=g)
    return idx if space == "categorical" else torch.nn.functional.one_hot(idx, N)


def single_agent_batch(space: str = "one_hot", mask: bool = False):
    def make(seed: int, batch_size: int) -> Record:
        g = torch.Generator().manual_seed(seed)
        lead = (batch_size,)
        term = torch.rand(*lead, 1, generator=g) < 0.3
        data = {
            "observation": torch.randn(*lead, OBS, generator=g),
            "action": _actions(g, lead, space),
            ("next", "observation"): torch.randn(*lead, OBS, generator=g),
            ("next", "reward"): torch.randn(*lead, 1, generator=g),
            ("next", "terminated"): term,
            ("next", "done"): term | (torch.rand(*lead, 1, generator=g) < 0.2),
        }
        if mask:
            m = torch.rand(*lead, N, generator=g) < 0.6
            a = data["action"]
            m |= a.bool() if space != "categorical" else torch.nn.functional.one_hot(a, N).bool()
            data["action_mask"] = m
            nm = torch.rand(*lead, N, generator=g) < 0.6
            nm[..., 0] = True
            data[("next", "action_mask")] = nm
        return Record(data, batch_ndim=1)

    return make


def multi_agent_batch(space: str = "one_hot"):
    def make(seed: int, batch_size: int) -> Record:
        g = torch.Generator().manual_seed(seed)
        lead = (batch_size,)
        term = torch.rand(*lead, 1, generator=g) < 0.3
        return Record(
            {
                "observation": torch.randn(*lead, AGENTS, OBS, generator=g),
                "action": _actions(g, (*lead, AGENTS), space),
                "state": torch.randn(*lead, *STATE, generator=g),
                ("next", "observation"): torch.randn(*lead, AGENTS, OBS, generator=g),
                ("next", "state"): torch.randn(*lead, *STATE, generator=g),
                ("next", "reward"): torch.randn(*lead, 1, generator=g),
                ("next", "terminated"): term,
                ("next", "done"): term,
            },
            batch_ndim=1,
        )

    return make


OBS_SPEC = specs.Unbounded(shape=(OBS,))
SMALL = (16,)
_QMIX_KEYS = {"observation_key": "observation", "action_key": "action"}

CASES = [
    Case(
        "dqn",
        dqn,
        OBS_SPEC,
        specs.OneHot(N),
        single_agent_batch(),
        nets=dqn.Nets(num_cells=SMALL),
        stochastic_loss=False,
    ),
    Case(
        "dqn-double-categorical-masked",
        dqn,
        OBS_SPEC,
        specs.Categorical(N),
        single_agent_batch("categorical", mask=True),
        config=dqn.Config(
            action_space="categorical", double_dqn=True, action_mask_key="action_mask"
        ),
        nets=dqn.Nets(value=MLP(OBS, N, num_cells=SMALL, norm="layer", activation="tanh")),
        stochastic_loss=False,
        act_kwargs=(
            ("action_mask", single_agent_batch("categorical", mask=True)(0, 8)["action_mask"]),
            ("epsilon", 0.5),
        ),
    ),
    Case(
        "c51",
        c51,
        OBS_SPEC,
        specs.OneHot(N),
        single_agent_batch(),
        config=c51.Config(num_atoms=11),
        nets=c51.Nets(num_cells=SMALL),
        stochastic_loss=False,
    ),
    Case(
        "discrete_sac",
        discrete_sac,
        OBS_SPEC,
        specs.OneHot(N),
        single_agent_batch(),
        nets=discrete_sac.Nets(num_cells=SMALL),
        stochastic_loss=False,
    ),
    Case(
        "discrete_sac-categorical",
        discrete_sac,
        OBS_SPEC,
        specs.Categorical(N),
        single_agent_batch("categorical"),
        config=discrete_sac.Config(action_space="categorical", min_alpha=0.1, max_alpha=2.0),
        nets=discrete_sac.Nets(num_cells=SMALL),
        stochastic_loss=False,
    ),
    Case(
        "qmix",
        qmix,
        specs.Unbounded(shape=(AGENTS, OBS)),
        specs.OneHot(N, shape=(AGENTS, N)),
        multi_agent_batch(),
        config=qmix.Config(**_QMIX_KEYS),
        nets=qmix.Nets(num_cells=SMALL, mixer=QMixer(STATE, 8, AGENTS)),
        stochastic_loss=False,
    ),
    Case(
        "vdn-categorical",
        qmix,
        specs.Unbounded(shape=(AGENTS, OBS)),
        specs.Categorical(N, shape=(AGENTS,)),
        multi_agent_batch("categorical"),
        config=qmix.Config(action_space="categorical", **_QMIX_KEYS),
        nets=qmix.Nets(num_cells=SMALL, mixer=VDNMixer(AGENTS)),
        stochastic_loss=False,
    ),
]


# Compiling a step takes 5-13 s on a loaded CPU: every objective compiles in the default run, its
# config variants (the same code under other static branches) only with -m slow.
VARIANTS = ("dqn-double-categorical-masked", "discrete_sac-categorical", "vdn-categorical")
PARAMS = [
    pytest.param(
        case,
        check,
        id=f"{case.name}-{check.__name__}",
        marks=[pytest.mark.slow]
        if case.name in VARIANTS and check.__name__ == "check_trainer_compiled"
        else [],
    )
    for case in CASES
    for check in ALL_CHECKS
]


@pytest.mark.parametrize("case,check", PARAMS)
def test_protocol(case: Case, check) -> None:
    check(case)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_value_estimators_run(case: Case) -> None:
    """TD(1) and TD(lambda) over a [B, T] batch: finite losses, td_error [B, T]."""
    if case.module is c51:
        pytest.skip("C51 has TD(0) only (as TorchRL)")
    params = case.init(0)
    rows = [case.make_batch(s, 5) for s in range(3)]
    batch = Record.stack(rows, dim=0)  # [3, 5]: 3 trajectories of 5 steps
    for est in ("td1", "td_lambda"):
        cfg = dataclasses.replace(case.cfg, value_estimator=est)
        out = case.module.loss(params, batch, config=cfg, nets=case.nts)
        assert out["td_error"].shape == (3, 5)
        assert all(torch.isfinite(v) for k, v in out.items() if k.startswith("loss"))
