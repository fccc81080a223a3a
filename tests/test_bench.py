"""Smoke tests of the benchmark scripts: each runs end to end in its --quick mode (no timing
assertions: the numbers of a shared CI machine mean nothing), and the floor does the same maths
as funcrl (its losses are finite and its updates move the params)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

pytest.importorskip("torchrl", reason="the benchmarks compare against TorchRL")


def test_update_step_quick():
    from bench import update_step

    out = update_step.main(["--quick"])
    runs = out["runs"]
    assert {(r["algo"], r["size"]) for r in runs} == {
        ("sac", "small"),
        ("td3", "small"),
        ("dqn", "small"),
    }
    for r in runs:
        for impl in ("funcrl", "torchrl", "floor"):
            res = r["results"][f"{impl}/eager"]
            assert "error" not in res, res
            assert res["per_step_s"]["median"] > 0
        assert r["ratios"]["torchrl_over_funcrl/eager"] > 0
    assert "| sac | small | eager |" in update_step.table(runs)


def test_vmap_seeds_quick():
    from bench import vmap_seeds

    out = vmap_seeds.main(["--quick"])
    res = out["results"]
    assert "error" not in res["vmap2/eager"], res["vmap2/eager"]
    assert res["vmap2/eager"]["seeds"] == 2
    assert res["vmap2/eager"]["per_agent_s"] > 0


def test_env_steps_quick():
    pytest.importorskip("gymnasium")
    from bench import env_steps

    out = env_steps.main(["--quick"])
    for name in ("funcrl", "torchrl"):
        res = out["results"][name]
        assert "error" not in res, res
        assert res["env_steps_per_s"]["median"] > 0


@pytest.mark.parametrize("algo", ["sac", "td3", "dqn"])
def test_floor_step_updates_params(algo):
    from bench import floor
    from bench.update_step import DQN_OBS, N_ACTIONS, make_data

    torch.manual_seed(0)
    d = make_data(algo, 8)
    n = d["next"]
    data = (d["obs"], d["act"], n["reward"], n["observation"], n["terminated"])
    if algo == "dqn":
        state, step = floor.make_dqn(DQN_OBS, N_ACTIONS, hidden=(16,))
    else:
        state, step = getattr(floor, f"make_{algo}")(17, 6, hidden=(16,))
    new, loss = step(state, data)
    assert torch.isfinite(loss)
    assert any(not torch.equal(a, b) for a, b in zip(state[0], new[0]))  # Adam moved the params
    assert any(not torch.equal(a, b) for a, b in zip(state[1], new[1]))  # Polyak moved the targets
    assert new[4] == 1


def test_run_all_tables_render(tmp_path):
    from bench import run_all

    assert run_all.tables(tmp_path) == "\n"  # no results yet: nothing to render, no crash
