"""The actor-critic family (SAC v1/v2, REDQ, CrossQ, TD3, DDPG) through the objective protocol."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from protocol_harness import ALL_CHECKS, Case

from funcrl import crossq, ddpg, optim, redq, sac, specs, td3
from funcrl.record import Record

OBS, ACT = 3, 2


def make_batch(seed: int, b: int, *, time: int | None = None) -> Record:
    """``b`` transitions (or ``[b, time]`` trajectories) with actions inside ``[-1, 1]``."""
    g = torch.Generator().manual_seed(seed)
    lead = (b,) if time is None else (b, time)
    done = torch.rand(*lead, 1, generator=g) < 0.2
    return Record(
        {
            "observation": torch.randn(*lead, OBS, generator=g),
            "action": torch.rand(*lead, ACT, generator=g) * 2 - 1,
            ("next", "observation"): torch.randn(*lead, OBS, generator=g),
            ("next", "reward"): torch.randn(*lead, 1, generator=g),
            ("next", "terminated"): done & (torch.rand(*lead, 1, generator=g) < 0.5),
            ("next", "done"): done,
        },
        batch_ndim=len(lead),
    )


def make_trajectories(seed: int, b: int) -> Record:
    return make_batch(seed, b, time=3)


OBS_SPEC = specs.Unbounded(shape=(OBS,))
ACT_SPEC = specs.Bounded(-1.0, 1.0, shape=(ACT,))
SMALL = {"num_cells": (16, 16)}


@dataclasses.dataclass(frozen=True)
class SGDCase(Case):
    """A case trained with SGD: CrossQ's Linear biases before a BatchRenorm get a gradient that
    is zero up to rounding (the norm removes the mean), and Adam scales that noise to a full
    ``lr`` step, so solo and vmapped steps would differ by ``lr`` for rounding reasons only."""

    def trainer(self):
        return self.module.trainer(optim.sgd(1e-2), config=self.cfg, nets=self.nts)


CASES = [
    Case("sac", sac, OBS_SPEC, ACT_SPEC, make_batch, nets=sac.Nets(**SMALL)),
    Case(
        "sac_v1",
        sac,
        OBS_SPEC,
        ACT_SPEC,
        make_batch,
        config=sac.Config(version=1, delay_actor=True),
        nets=sac.Nets(**SMALL),
    ),
    Case(
        "sac_td_lambda",
        sac,
        OBS_SPEC,
        ACT_SPEC,
        make_trajectories,
        config=sac.Config(value_estimator="td_lambda", lmbda=0.9),
        nets=sac.Nets(**SMALL),
    ),
    Case(
        "redq",
        redq,
        OBS_SPEC,
        ACT_SPEC,
        make_batch,
        config=redq.Config(num_qvalue_nets=4),
        nets=redq.Nets(**SMALL),
    ),
    SGDCase(
        "crossq",
        crossq,
        OBS_SPEC,
        ACT_SPEC,
        make_batch,
        nets=crossq.Nets(actor=crossq.RenormMLP((16, 16)), qvalue=crossq.RenormMLP((16, 16))),
    ),
    Case("td3", td3, OBS_SPEC, ACT_SPEC, make_batch, nets=td3.Nets(**SMALL)),
    Case(
        "td3_td1",
        td3,
        OBS_SPEC,
        ACT_SPEC,
        make_trajectories,
        config=td3.Config(value_estimator="td1"),
        nets=td3.Nets(**SMALL),
    ),
    Case(
        "ddpg",
        ddpg,
        OBS_SPEC,
        ACT_SPEC,
        make_batch,
        config=ddpg.Config(delay_actor=True),
        nets=ddpg.Nets(**SMALL),
        stochastic_loss=False,
    ),
]


# Config variants share their objective's step code: their compile check (10-20 s of Dynamo
# tracing each) runs with the slow tests; every objective's default case compiles in the fast run.
VARIANTS = {"sac_v1", "sac_td_lambda", "td3_td1"}
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


@pytest.mark.parametrize(("case", "check"), PARAMS)
def test_protocol(case: Case, check) -> None:
    check(case)
