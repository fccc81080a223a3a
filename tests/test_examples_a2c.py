"""examples/a2c.py (and the loop it shares with ppo.py, examples/_on_policy.py): a fast smoke run
(what it writes, its settings reaching the trainer, same seed same run), its bad-input errors and,
under ``@pytest.mark.slow``, rl-zoo's CartPole-v1 budget (5e5 steps)."""

from __future__ import annotations

import csv
import importlib
import json
import os
import sys

import pytest
import torch

from funcrl import envs, random, tree
from funcrl.objectives import on_policy
from funcrl.record import Record

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "examples"))

a2c_example = importlib.import_module("a2c")
ppo_example = importlib.import_module("ppo")
_on_policy = importlib.import_module("_on_policy")
_util = importlib.import_module("_util")

TINY = [
    "--num-envs", "2", "--num-cells", "16", "--eval-episodes", "2", "--eval-every", "40",
    "--checkpoint-every", "40", "--no-progress", "--threads", "1",
]  # fmt: skip


def test_smoke_cartpole(tmp_path):
    out = str(tmp_path / "run")
    result = a2c_example.main(["--total-steps", "100", "--out", out, *TINY])
    for f in ("log.csv", "curve.png", "checkpoint.pt", "result.json"):
        assert os.path.getsize(os.path.join(out, f)) > 0, f
    assert result["steps"] == 100  # 10 rollouts of 2 envs x 5 steps (SB3's n_steps)
    with open(os.path.join(out, "result.json")) as fh:
        saved = json.load(fh)
    assert saved["eval_return"] == pytest.approx(result["eval_return"])
    assert saved["config"]["learning_rate"] == 7e-4 and saved["config"]["lmbda"] == 1.0
    with open(os.path.join(out, "log.csv")) as fh:
        rows = list(csv.DictReader(fh))
    assert len([r for r in rows if r["eval_return"]]) == 3  # at 40, 80 and the final one
    ckpt = _util.load_checkpoint(os.path.join(out, "checkpoint.pt")).tree
    assert int(ckpt["updates"]) == 10  # one gradient step per rollout (1 epoch x 1 minibatch)
    with pytest.raises(FileExistsError, match="--overwrite"):
        a2c_example.main(["--total-steps", "20", "--out", out, *TINY])


def test_agent_is_sb3s_a2c():
    # SB3's A2C: l2 critic weighted 0.5, no entropy term, GAE(1), RMSprop (alpha 0.99, eps 1e-5).
    cfg = a2c_example.Config()
    env = envs.VecEnv("CartPole-v1", 2)
    nets, params, trainer, _, _ = a2c_example.make_agent(cfg, env.observation_spec, env.action_spec)
    env.close()
    assert (cfg.num_envs, cfg.num_steps, cfg.entropy_coeff, cfg.critic_coeff) == (8, 5, 0.0, 0.5)
    assert nets.distribution == "categorical"
    assert params["actor"]["layers"][-1]["weight"].shape == (2, 64)
    # orthogonal init: the hidden layer's rows are orthogonal with norm sqrt 2
    w = params["critic"]["layers"][0]["weight"]  # [64, 4]: its 4 columns are orthogonal
    torch.testing.assert_close(w.T @ w, 2.0 * torch.eye(4), atol=1e-5, rtol=0)
    state = trainer.init(params)
    assert len(tree.leaves(state.opt)) > 0


def test_continuous_pendulum_with_normalisers_and_init_scale(tmp_path):
    flags = ["--normalize-observations", "--scale-rewards", "--init-scale", "0.25"]
    result = a2c_example.main(
        ["--env", "Pendulum-v1", "--total-steps", "20", "--out", str(tmp_path), *TINY, *flags]
    )
    assert result["steps"] == 20 and result["eval_return"] < 0
    ckpt = _util.load_checkpoint(os.path.join(str(tmp_path), "checkpoint.pt")).tree
    assert float(ckpt["normalizers"]["observation"]["count"]) == 20
    # biased_softplus_0.25: a zero actor output is a std of 0.25
    cfg = a2c_example.Config(init_scale=0.25)
    kw = _on_policy.make_nets(cfg, *_specs("Pendulum-v1"))
    assert kw["scale_mapping"] == "biased_softplus_0.25"


def _specs(env_id):
    env = envs.VecEnv(env_id, 1)
    specs = env.observation_spec, env.action_spec
    env.close()
    return specs


def test_same_seed_same_run(tmp_path):
    runs = [
        a2c_example.main(["--total-steps", "40", "--out", str(tmp_path / str(i)), *TINY])
        for i in range(2)
    ]
    for a, b in zip(tree.leaves(runs[0]["params"]), tree.leaves(runs[1]["params"])):
        assert torch.equal(a, b)


# -- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv, match",
    [
        (["--total-steps", "8"], r"a2c.py: --total-steps 8 is less than one rollout \(--num-envs x"),
        (["--num-minibatches", "3"], r"a2c.py: a rollout of 10 steps does not split into "
         r"--num-minibatches 3"),
        (["--init-scale", "0"], r"a2c.py: --init-scale must be > 0, got 0.0"),
    ],
)  # fmt: skip
def test_a2c_rejects(tmp_path, argv, match):
    with pytest.raises(ValueError, match=match):
        a2c_example.main(["--out", str(tmp_path), *TINY, "--total-steps", "40", *argv])


def test_ppo_rejects_a_negative_init_scale(tmp_path):
    with pytest.raises(ValueError, match=r"ppo.py: --init-scale must be > 0, got -1.0"):
        ppo_example.main(["--out", str(tmp_path), "--init-scale", "-1", "--no-progress"])


@pytest.mark.parametrize(
    "field, value, match",
    [
        ("num_steps", 0, r"--num-steps must be an int >= 1, got 0"),  # looped forever before
        ("epochs", 0, r"--epochs must be an int >= 1, got 0"),
        ("num_minibatches", 2.0, r"--num-minibatches must be an int >= 1, got 2.0"),
        ("entropy_coeff", -0.1, r"--entropy-coeff must be >= 0, got -0.1"),
        ("critic_coeff", float("nan"), r"--critic-coeff must be >= 0, got nan"),
        ("lmbda", 1.5, r"--lmbda must be in \[0, 1\], got 1.5"),
        ("gamma", -0.5, r"--gamma must be in \[0, 1\], got -0.5"),
    ],
)
def test_config_from_python_is_checked(tmp_path, field, value, match):
    # A config built in Python skips the command line's checks; train() repeats them.
    for script, name in ((a2c_example, "a2c.py"), (ppo_example, "ppo.py")):
        cfg = script.Config(out=str(tmp_path), progress=False, **{field: value})
        with pytest.raises(ValueError, match=rf"{name}: {match}"):
            script.train(cfg)


@pytest.mark.slow
def test_cartpole_learns_at_rl_zoo_budget(tmp_path):
    # rl-zoo's a2c.yml CartPole-v1 settings are the defaults; SB3's A2C reaches ~500 there.
    result = a2c_example.main(
        ["--total-steps", "500000", "--out", str(tmp_path), "--no-progress", "--threads", "1"]
    )
    assert result["eval_return"] >= 475, result["eval_returns"]


def test_host_loop_update_takes_epochs_times_minibatches_steps():
    # --compile / --jit's update: the host loops over epochs x minibatches around one compiled
    # minibatch step (eager here: compiling takes minutes on a CPU); each step sees N / M rows.
    cfg = ppo_example.Config(num_envs=2, num_steps=8, epochs=3, num_minibatches=4, num_cells=(8,))
    env = envs.VecEnv("CartPole-v1", 2)
    agent = ppo_example.make_agent(cfg, env.observation_spec, env.action_spec)
    norm, norm_state = _on_policy.make_normalizers(cfg, env)
    obs = env.reset(seed=0)["observation"]
    fns = _on_policy.step_fns(agent.nets, norm)
    rollout, _, _ = _on_policy.collect(env, agent.params, fns, norm_state, obs, 8, random.key(1))
    env.close()
    sizes = []

    def compile_fn(fn):
        def recorded(*args):
            if fn.__name__ == "minibatch":
                sizes.append(args[3].shape[0])
            return fn(*args)

        return recorded

    update = _on_policy.host_loop_update(agent, 3, 4, compile_fn)
    state = agent.trainer.init(agent.params)
    params, state, metrics = update(agent.params, state, rollout, random.key(2))
    assert sizes == [4] * 12 and int(state.step) == 12
    assert set(ppo_example.METRICS) <= set(metrics)
    # The same draws and steps as the eager trainer (which counts rollouts, not minibatches).
    want, _, want_metrics = agent.trainer.step(
        agent.params, agent.trainer.init(agent.params), rollout, random.key(2)
    )
    for a, b in zip(tree.leaves(params), tree.leaves(want)):
        torch.testing.assert_close(a, b)
    for k in ppo_example.METRICS:
        torch.testing.assert_close(metrics[k], want_metrics[k])
    moved = [not torch.equal(a, b) for a, b in zip(tree.leaves(params), tree.leaves(agent.params))]
    assert any(moved)


@pytest.mark.parametrize("normalize", [False, True])
def test_collect_equals_a_step_by_step_rollout(normalize):
    # collect batches its work (one fused call per step, the rollout stacked once); a plain
    # per-step loop with the same semantics must give the same rollout: observations folded into
    # the statistics, then normalised with them; the transition's next observation normalised
    # with the same statistics; rewards scaled through terminations (CartPole ends episodes).
    cfg = ppo_example.Config(
        num_envs=2, num_cells=(8,), normalize_observations=normalize, scale_rewards=normalize
    )
    env = envs.VecEnv("CartPole-v1", 2)
    agent = ppo_example.make_agent(cfg, env.observation_spec, env.action_spec)
    norm, norm_state = _on_policy.make_normalizers(cfg, env)
    fns = _on_policy.step_fns(agent.nets, norm)
    obs = env.reset(seed=3)["observation"]
    rollout, last_obs, state = _on_policy.collect(
        env, agent.params, fns, norm_state, obs, 40, random.key(5)
    )
    assert bool(rollout["next", "terminated"].any())  # the reward scaling's reset is exercised

    obs, ns, steps = env.reset(seed=3)["observation"], norm_state, []
    for t in range(40):
        if norm.observation is not None:
            ns = {**ns, "observation": norm.observation.update(ns["observation"], obs)}
        key = random.fold_in(random.key(5), torch.tensor(t))
        out = on_policy.explore(agent.params, norm.obs(ns, obs), nets=agent.nets, key=key)
        transition, nxt = env.step(out["action"])
        transition = transition.update({k: v for k, v in out.items() if k != "action"})
        for k in ("observation", ("next", "observation")):
            transition = transition.set(k, norm.obs(ns, transition[k]))
        if norm.reward is not None:
            r, term = transition["next", "reward"][:, 0], transition["next", "terminated"][:, 0]
            rs, scaled = norm.reward(ns["reward"], r, term)
            ns = {**ns, "reward": rs}
            transition = transition.set(("next", "reward"), scaled[:, None])
        steps.append(transition)
        obs = nxt["observation"]
    env.close()
    want = Record.stack(steps, dim=1)
    assert sorted(map(str, rollout.keys(include_nested=True))) == sorted(
        map(str, want.keys(include_nested=True))
    )
    for k in want.keys(include_nested=True, leaves_only=True):
        torch.testing.assert_close(rollout[k], want[k], msg=lambda m, k=k: f"{k}: {m}")
    torch.testing.assert_close(last_obs, obs)
    for a, b in zip(tree.leaves(state), tree.leaves(ns)):
        torch.testing.assert_close(a, b)
