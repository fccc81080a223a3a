"""Smoke tests of the off-policy example scripts other than SAC; slow tests train to thresholds.

The fast tests run each script (TD3, DDPG, DQN, C51, REDQ, CrossQ, discrete SAC) for a few hundred
steps with tiny networks (eager, no compile) and check what it writes -- log.csv, curve.png,
checkpoint.pt, result.json -- plus the pieces each script adds to the shared loop: actions inside
the box, the epsilon-greedy schedule driven by the environment step (also across ``--resume``).

The slow tests (``pytest -m slow tests/test_examples_algos.py``) train each script with its
defaults on 3 seeds and require the median deterministic evaluation (10 episodes) to reach the
threshold of the "Training for real" issue.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import statistics
import sys

import pytest
import torch

from funcrl import checkpoint
from funcrl import random as fr

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "examples")


def _load(name: str):
    """Imports ``examples/<name>.py`` under a private module name (no clash with ``funcrl.<name>``)."""
    spec = importlib.util.spec_from_file_location(
        f"_example_{name}", os.path.join(EXAMPLES, f"{name}.py")
    )
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses resolve string annotations through sys.modules
    spec.loader.exec_module(mod)
    return mod


COMMON = [
    "--batch-size", "32", "--learning-starts", "100", "--eval-episodes", "2",
    "--eval-every", "200", "--checkpoint-every", "200", "--no-compile", "--no-progress",
    "--threads", "1",
]  # fmt: skip
TINY = {
    "td3": ["--num-cells", "16", "16"],
    "ddpg": ["--num-cells", "16", "16"],
    "dqn": ["--num-cells", "16", "16"],
    "c51": ["--num-cells", "16", "16", "--num-atoms", "11"],
    "redq": ["--num-cells", "16", "16", "--num-qvalue-nets", "3"],
    "crossq": ["--num-cells", "16", "16", "--critic-cells", "16", "16"],
    "discrete_sac": ["--num-cells", "16", "16"],
}
PENDULUM = {"td3", "ddpg", "redq", "crossq"}
# The metric each script logs with every training episode.
METRIC = {
    "td3": "loss_qvalue",
    "ddpg": "loss_value",
    "dqn": "loss",
    "c51": "loss",
    "redq": "loss_qvalue",
    "crossq": "loss_qvalue",
    "discrete_sac": "loss_qvalue",
}


def _rows(path):
    with open(path) as fh:
        return list(csv.DictReader(fh))


@pytest.mark.parametrize("name", sorted(TINY))
def test_script_runs_and_writes_outputs(name, tmp_path, capsys):
    mod = _load(name)
    out = str(tmp_path / name)
    res = mod.main([*COMMON, *TINY[name], "--total-steps", "300", "--out", out, "--seed", "1"])
    for f in ("log.csv", "curve.png", "checkpoint.pt", "result.json"):
        assert os.path.getsize(os.path.join(out, f)) > 0, f
    ups = res["config"]["updates_per_step"]
    assert res["steps"] == 300
    # Updates accumulate from learning_starts on at the script's update-to-data ratio.
    assert res["updates"] == int((300 - 100 + 1) * ups)
    assert len(res["eval_returns"]) == 2
    if name in PENDULUM:
        assert all(-2000 < r <= 0 for r in res["eval_returns"])
    else:
        assert all(1 <= r <= 500 for r in res["eval_returns"])
    printed = capsys.readouterr().out
    assert "final deterministic evaluation over 2 episodes" in printed
    rows = _rows(os.path.join(out, "log.csv"))
    assert [int(r["step"]) for r in rows if r["eval_return"]] == [200, 300]
    episodes = [r for r in rows if r["episode_return"]]
    assert episodes, "no training episode was logged"
    late = [r for r in episodes if int(r["step"]) > 100]
    assert late and all(r[METRIC[name]] for r in late), "training metrics missing from the CSV"
    with open(os.path.join(out, "result.json")) as fh:
        assert json.load(fh)["eval_return"] == pytest.approx(res["eval_return"])
    ck = checkpoint.load(os.path.join(out, "checkpoint.pt")).tree
    assert ck["step"] == 300


def _pendulum_specs():
    from funcrl.envs import VecEnv

    env = VecEnv("Pendulum-v1", 1)
    specs = env.observation_spec, env.action_spec
    env.close()
    return specs


@pytest.mark.parametrize("name", ["td3", "ddpg"])
def test_deterministic_actors_stay_in_the_box_and_explore(name):
    mod = _load(name)
    cfg = mod.Config(num_cells=(16, 16), compile=False, exploration_noise=0.1)
    obs_spec, act_spec = _pendulum_specs()
    agent = mod.make_agent(cfg, obs_spec, act_spec)
    torch.manual_seed(0)
    # Large inputs saturate the tanh: the actor must reach, not exceed, Pendulum's [-2, 2].
    obs = 100 * torch.randn(512, 3)
    a = agent.act(agent.params, obs)
    assert a.shape == (512, 1)
    assert float(a.abs().max()) <= 2.0 and float(a.abs().max()) > 1.9
    noisy = agent.explore(agent.params, obs, fr.key(1))
    assert noisy.shape == (512, 1) and float(noisy.abs().max()) <= 2.0
    # The noise std is exploration_noise x the half-width: 0.1 x 2 = 0.2 (no clipping near 0).
    small = torch.randn(4096, 3) * 0.01
    clean = agent.act(agent.params, small)
    assert float(clean.abs().max()) < 1.0
    diff = agent.explore(agent.params, small, fr.key(2)) - clean
    assert float(diff.std()) == pytest.approx(0.2, rel=0.1)


@pytest.mark.parametrize("name", ["dqn", "c51"])
def test_epsilon_greedy_follows_the_environment_step(name):
    mod = _load(name)
    from funcrl.envs import VecEnv

    env = VecEnv("CartPole-v1", 1)
    cfg = mod.Config(
        num_cells=(16, 16), compile=False, eps_init=1.0, eps_end=0.0, total_steps=1000,
        exploration_fraction=0.5,
    )  # fmt: skip
    agent = mod.make_agent(cfg, env.observation_spec, env.action_spec)
    env.close()
    assert agent.explore_uses_step
    torch.manual_seed(0)
    obs = torch.randn(4000, 4)
    greedy = agent.act(agent.params, obs)
    # eps = 1 at step 0: uniform actions, half of them differ from the greedy one.
    start = agent.explore(agent.params, obs, 0, fr.key(0))
    assert 0.4 < float((start != greedy).float().mean()) < 0.6
    # eps = 0.5 half-way through the annealing (step 250 of 500): a quarter differ.
    mid = agent.explore(agent.params, obs, 250, fr.key(1))
    assert 0.2 < float((mid != greedy).float().mean()) < 0.3
    # eps = 0 once annealed: greedy.
    assert torch.equal(agent.explore(agent.params, obs, 500, fr.key(2)), greedy)


def test_dqn_resume_continues_updates_and_schedule(tmp_path):
    mod = _load("dqn")
    out = str(tmp_path / "run")
    args = [*COMMON, *TINY["dqn"], "--out", out, "--updates-per-step", "1", "--eps-end", "0.0"]
    first = mod.main([*args, "--total-steps", "200", "--exploration-fraction", "0.5"])
    assert first["updates"] == 101
    steps_seen = []
    real_make_agent = mod.make_agent

    def spying_make_agent(*a, **kw):
        agent = real_make_agent(*a, **kw)

        def explore(params, observation, step, key):
            steps_seen.append(step)
            return agent.explore(params, observation, step, key)

        return agent._replace(explore=explore)

    mod.make_agent = spying_make_agent
    res = mod.main([*args, "--total-steps", "300", "--exploration-fraction", "0.5", "--resume"])
    assert res["steps"] == 300 and res["updates"] == 201
    # The schedule resumes at the checkpoint's step, not at 0.
    assert steps_seen[0] == 200 and steps_seen[-1] == 299
    rows = _rows(os.path.join(out, "log.csv"))
    assert [int(r["step"]) for r in rows if r["eval_return"]] == [200, 300]


# ------------------------------------------------------------------------------ learning (slow)

# (script, env, steps, threshold): the table; each script's defaults are its settings.
THRESHOLDS = {
    "td3": ("Pendulum-v1", 20_000, -250.0),
    "ddpg": ("Pendulum-v1", 20_000, -300.0),
    "redq": ("Pendulum-v1", 10_000, -250.0),
    "crossq": ("Pendulum-v1", 15_000, -250.0),
    "dqn": ("CartPole-v1", 50_000, 400.0),
    "c51": ("CartPole-v1", 100_000, 400.0),
    "discrete_sac": ("CartPole-v1", 100_000, 300.0),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(THRESHOLDS))
def test_learns_to_threshold(name, tmp_path):
    env, steps, threshold = THRESHOLDS[name]
    mod = _load(name)
    returns = []
    for seed in range(3):
        out = str(tmp_path / f"seed{seed}")
        argv = ["--env", env, "--total-steps", str(steps), "--seed", str(seed), "--out", out]
        res = mod.main([*argv, "--eval-episodes", "10", "--eval-every", "0", "--no-progress"])
        returns.append(res["eval_return"])
    assert statistics.median(returns) >= threshold, (name, returns)


@pytest.mark.parametrize(
    ("name", "backend"), [("sac", "inductor"), *[(n, "eager") for n in ["sac", *TINY]]]
)
def test_jit_update_step_traces_once_and_trains(name, backend, monkeypatch):
    # --jit hands each script's whole update (sample + loss + grads + Adam + targets) to
    # funcrl.jit: make_fx must trace it, and later calls must reuse that one trace. The eager
    # backend runs the traced graph without Inductor (the tracing is what differs per script;
    # one Inductor case keeps CI's compile time down).
    import functools

    from funcrl import buffers, tree
    from funcrl.envs import VecEnv
    from funcrl.jit import Jitted, jit

    mod = _load(name)
    offpolicy = sys.modules["_offpolicy"]
    monkeypatch.setattr(offpolicy, "funcrl_jit", functools.partial(jit, backend=backend))
    cells = {"num_cells": (16, 16)}
    if name == "crossq":
        cells["critic_cells"] = (16, 16)
    cfg = mod.Config(batch_size=32, compile=False, jit=True, **cells)  # --jit wins
    env = VecEnv("Pendulum-v1" if name in PENDULUM | {"sac"} else "CartPole-v1", 2)
    torch.manual_seed(0)
    env.reset(seed=0)
    gen = torch.Generator().manual_seed(0)
    transition, _ = env.step(env.random_action(generator=gen))
    buf = buffers.init(256, transition[0])
    for _ in range(40):
        buffers.add_(buf, transition)
        transition, _ = env.step(env.random_action(generator=gen))
    agent = mod.make_agent(cfg, env.observation_spec, env.action_spec)
    env.close()
    assert isinstance(agent.update, Jitted)
    params, opt_state = agent.params, agent.opt_state
    for t in range(3):  # a new key per step is a new input, not a new trace
        key = fr.fold_in(fr.key(0), t)
        params, opt_state, metrics = agent.update(params, opt_state, buf, key)
    assert len(agent.update.cache) == 1
    assert all(bool(torch.isfinite(x).all()) for x in tree.leaves(params))
    assert all(bool(torch.isfinite(torch.as_tensor(v)).all()) for v in metrics.values())
    assert not tree.allclose(params, agent.params)
