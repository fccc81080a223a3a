"""The offline objectives (IQL, TD3+BC, CQL, BC, the Decision Transformers and the discrete IQL
and CQL) through the objective protocol."""

from __future__ import annotations

import pytest
import torch
from protocol_harness import ALL_CHECKS, Case

import funcrl
import funcrl.random  # noqa: F401 - funcrl.random.key in the harness
from funcrl import bc, cql, discrete_cql, discrete_iql, dt, iql, online_dt, specs, td3_bc
from funcrl.nn import DTConfig
from funcrl.record import Record

OBS, ACT = 3, 2


def make_batch(seed: int, b: int, *, time: int | None = None) -> Record:
    """``b`` dataset transitions (or ``[b, time]`` trajectories), actions inside ``(-1, 1)``."""
    g = torch.Generator().manual_seed(seed)
    lead = (b,) if time is None else (b, time)
    done = torch.rand(*lead, 1, generator=g) < 0.2
    return Record(
        {
            "observation": torch.randn(*lead, OBS, generator=g),
            "action": torch.rand(*lead, ACT, generator=g) * 1.8 - 0.9,
            ("next", "observation"): torch.randn(*lead, OBS, generator=g),
            ("next", "reward"): torch.randn(*lead, 1, generator=g),
            ("next", "terminated"): done & (torch.rand(*lead, 1, generator=g) < 0.5),
            ("next", "done"): done,
        },
        batch_ndim=len(lead),
    )


def make_trajectories(seed: int, b: int) -> Record:
    return make_batch(seed, b, time=3)


def make_segments(seed: int, b: int) -> Record:
    """``b`` trajectory segments of 4 steps for the Decision Transformers."""
    g = torch.Generator().manual_seed(seed)
    return Record(
        {
            "observation": torch.randn(b, 4, OBS, generator=g),
            "action": torch.rand(b, 4, ACT, generator=g) * 1.8 - 0.9,
            "return_to_go": torch.randn(b, 4, 1, generator=g),
        },
        batch_ndim=2,
    )


# ``act`` of a Decision Transformer reads a context: the harness acts on make_segments(0, 8).
_CONTEXT = make_segments(0, 8)
DT_ACT = (("action", _CONTEXT["action"]), ("return_to_go", _CONTEXT["return_to_go"]))
TINY = DTConfig(n_embd=16, n_layer=1, n_head=2, n_inner=32, n_positions=12)


def discrete_batch(space: str = "one_hot", *, time: int | None = None, mask: bool = False):
    """A maker of ``b`` dataset transitions (or ``[b, time]`` trajectories) with ``N`` discrete
    actions, one-hot or indices, with action masks that allow the data's action."""

    def make(seed: int, b: int) -> Record:
        batch = make_batch(seed, b, time=time)
        g = torch.Generator().manual_seed(seed + 1000)
        lead = tuple(batch.batch_size)
        idx = torch.randint(0, N, lead, generator=g)
        hot = torch.nn.functional.one_hot(idx, N)
        batch = batch.set("action", idx if space == "categorical" else hot)
        if mask:
            batch = batch.set("action_mask", (torch.rand(*lead, N, generator=g) < 0.5) | hot.bool())
            nxt = torch.rand(*lead, N, generator=g) < 0.5
            nxt[..., 0] = True
            batch = batch.set(("next", "action_mask"), nxt)
        return batch

    return make


N = 4
_MASK = discrete_batch("categorical", mask=True)(0, 8)["action_mask"]
OBS_SPEC = specs.Unbounded(shape=(OBS,))
ACT_SPEC = specs.Bounded(-1.0, 1.0, shape=(ACT,))
SMALL = {"num_cells": (16, 16)}

CASES = [
    Case("iql", iql, OBS_SPEC, ACT_SPEC, make_batch, nets=iql.Nets(**SMALL), stochastic_loss=False),
    Case(
        "iql_td_lambda",
        iql,
        OBS_SPEC,
        ACT_SPEC,
        make_trajectories,
        config=iql.Config(value_estimator="td_lambda", expectile=0.7, temperature=3.0),
        nets=iql.Nets(**SMALL),
        stochastic_loss=False,
    ),
    Case("td3_bc", td3_bc, OBS_SPEC, ACT_SPEC, make_batch, nets=td3_bc.Nets(**SMALL)),
    Case(
        "cql",
        cql,
        OBS_SPEC,
        ACT_SPEC,
        make_batch,
        config=cql.Config(num_random=3),
        nets=cql.Nets(**SMALL),
    ),
    Case(
        "cql_lagrange_max_q",
        cql,
        OBS_SPEC,
        ACT_SPEC,
        make_trajectories,
        config=cql.Config(
            num_random=2, with_lagrange=True, max_q_backup=True, value_estimator="td1"
        ),
        nets=cql.Nets(**SMALL),
    ),
    Case(
        "bc_nll", bc, OBS_SPEC, ACT_SPEC, make_batch, nets=bc.Nets(**SMALL), stochastic_loss=False
    ),
    Case(
        "bc_l2",
        bc,
        OBS_SPEC,
        ACT_SPEC,
        make_batch,
        config=bc.Config(loss_function="l2"),
        nets=bc.Nets(**SMALL),
        stochastic_loss=False,
    ),
    Case(
        "dt",
        dt,
        OBS_SPEC,
        ACT_SPEC,
        make_segments,
        nets=dt.Nets(transformer_config=TINY),
        stochastic_loss=False,
        act_kwargs=DT_ACT,
    ),
    Case(
        "online_dt",
        online_dt,
        OBS_SPEC,
        ACT_SPEC,
        make_segments,
        config=online_dt.Config(samples_mc_entropy=2),
        nets=online_dt.Nets(transformer_config=TINY),
        act_kwargs=DT_ACT,
    ),
    Case(
        "discrete_iql",
        discrete_iql,
        OBS_SPEC,
        specs.OneHot(N),
        discrete_batch(),
        nets=discrete_iql.Nets(**SMALL),
        stochastic_loss=False,
    ),
    Case(
        "discrete_iql_categorical_td_lambda",
        discrete_iql,
        OBS_SPEC,
        specs.Categorical(N),
        discrete_batch("categorical", time=3),
        config=discrete_iql.Config(
            action_space="categorical", value_estimator="td_lambda", num_qvalue_nets=3
        ),
        nets=discrete_iql.Nets(**SMALL),
        stochastic_loss=False,
    ),
    Case(
        "discrete_cql",
        discrete_cql,
        OBS_SPEC,
        specs.OneHot(N),
        discrete_batch(),
        nets=discrete_cql.Nets(**SMALL),
        stochastic_loss=False,
    ),
    Case(
        "discrete_cql_categorical_masked",
        discrete_cql,
        OBS_SPEC,
        specs.Categorical(N),
        discrete_batch("categorical", mask=True),
        config=discrete_cql.Config(action_space="categorical", action_mask_key="action_mask"),
        nets=discrete_cql.Nets(**SMALL),
        stochastic_loss=False,
        act_kwargs=(("action_mask", _MASK), ("epsilon", 0.5)),
    ),
]


@pytest.mark.parametrize("check", ALL_CHECKS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_protocol(case: Case, check) -> None:
    check(case)


def test_registered():
    for name in ("iql", "discrete_iql", "td3_bc", "cql", "discrete_cql", "bc", "dt", "online_dt"):
        assert name in funcrl.objectives.OBJECTIVES
        assert getattr(funcrl, name) is getattr(funcrl.objectives, name)
