"""examples/ppo.py: a fast smoke run (a few hundred steps, what it writes) and, under
``@pytest.mark.slow``, PureJaxRL's CartPole-v1 target (>= 475 after 5e5 steps)."""

from __future__ import annotations

import csv
import importlib
import json
import math
import os
import sys

import pytest
import torch

from funcrl import envs, random, tree

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "examples"))

ppo_example = importlib.import_module("ppo")
_util = importlib.import_module("_util")

TINY = [
    "--num-envs", "2", "--num-steps", "32", "--num-cells", "16", "--eval-episodes", "2",
    "--eval-every", "128", "--checkpoint-every", "128", "--no-progress", "--threads", "1",
]  # fmt: skip


def test_smoke_cartpole(tmp_path, monkeypatch):
    import gc

    _on_policy = importlib.import_module("_on_policy")
    seen = []  # what the loop's first finished iteration sees: a flushing CPU, then a freeze
    real_freezer = _util.heap_freezer

    def freezer():
        ctx = real_freezer()
        freeze = ctx.__enter__()

        def spy():
            seen.append(_util.flushes_denormals())
            freeze()
            seen.append(gc.get_freeze_count() > 0)

        class Ctx:
            def __enter__(self):
                return spy

            def __exit__(self, *exc):
                return ctx.__exit__(*exc)

        return Ctx()

    monkeypatch.setattr(_on_policy._util, "heap_freezer", freezer)
    out = str(tmp_path / "run")
    result = ppo_example.main(["--total-steps", "320", "--out", out, *TINY])
    assert seen == [True, True]  # called once, after the first rollout and update
    # Both are undone when the run returns.
    assert not _util.flushes_denormals() and gc.get_freeze_count() == 0
    for f in ("log.csv", "curve.png", "checkpoint.pt", "result.json"):
        assert os.path.getsize(os.path.join(out, f)) > 0, f
    assert result["steps"] == 320  # 5 rollouts of 2 envs x 32 steps
    with open(os.path.join(out, "result.json")) as fh:
        assert json.load(fh)["eval_return"] == pytest.approx(result["eval_return"])
    with open(os.path.join(out, "log.csv")) as fh:
        rows = list(csv.DictReader(fh))
    evals = [r for r in rows if r["eval_return"]]
    assert len(evals) == 3  # at 128, 256 and the final one
    assert any(r["loss_objective"] for r in rows if r["episode_return"])
    # A second run into the same folder must say --overwrite.
    with pytest.raises(FileExistsError, match="--overwrite"):
        ppo_example.main(["--total-steps", "64", "--out", out, *TINY])


@pytest.mark.parametrize("normalize", [False, True])
def test_smoke_continuous_pendulum(tmp_path, normalize):
    flags = ["--normalize-observations", "--scale-rewards"] if normalize else []
    result = ppo_example.main(
        ["--env", "Pendulum-v1", "--total-steps", "128", "--out", str(tmp_path), *TINY, *flags]
    )
    assert result["steps"] == 128 and result["eval_return"] < 0
    ckpt = _util.load_checkpoint(os.path.join(str(tmp_path), "checkpoint.pt")).tree
    assert torch.equal(ckpt["key"], random.key(0))  # the run's root key (--seed 0)
    if normalize:
        # 128 steps of 2 envs folded into the observation statistics.
        assert float(ckpt["normalizers"]["observation"]["count"]) == 128
        assert ckpt["normalizers"]["reward"].discounted_return.shape == (2,)
    else:
        assert not ckpt["normalizers"]


def test_rejects_a_run_shorter_than_one_rollout(tmp_path):
    with pytest.raises(ValueError, match="ppo.py: --total-steps 10 is less than one rollout"):
        ppo_example.main(["--total-steps", "10", "--out", str(tmp_path), *TINY])


@pytest.mark.slow
def test_cartpole_learns_purejaxrl_target(tmp_path):
    # PureJaxRL's settings are the script's defaults: 4 envs x 128 steps, 4 x 4 minibatches.
    result = ppo_example.main(
        ["--total-steps", "500000", "--out", str(tmp_path), "--no-progress", "--threads", "1"]
    )
    assert result["eval_return"] >= 475, result["eval_returns"]


def test_same_seed_same_run(tmp_path):
    # --seed seeds the params, the envs and the global torch RNG: two runs agree exactly.
    runs = [
        ppo_example.main(["--total-steps", "128", "--out", str(tmp_path / str(i)), *TINY])
        for i in range(2)
    ]
    for a, b in zip(tree.leaves(runs[0]["params"]), tree.leaves(runs[1]["params"])):
        assert torch.equal(a, b)


def test_rl_zoo_halfcheetah_flags_reach_the_nets():
    # bench/on_policy.py's HalfCheetah settings: ReLU 256x256, default init, std exp(-2) at start.
    cfg = _util.parse_config(
        ppo_example.Config,
        ["--activation", "relu", "--no-ortho-init", "--init-scale", "0.135", "--num-cells", "256",
         "256", "--no-clip-value", "--out", "/unused"],
    )  # fmt: skip
    env = envs.VecEnv("Pendulum-v1", 1)
    nets, params, *_ = ppo_example.make_agent(cfg, env.observation_spec, env.action_spec)
    env.close()
    assert nets.actor.activation == "relu" and nets.actor.num_cells == (256, 256)
    assert nets.actor.last_layer_init_scale is None or nets.actor.last_layer_init_scale == 1.0
    assert nets.scale_mapping == "biased_softplus_0.135" and not cfg.clip_value
    assert params["actor"]["layers"][-1]["weight"].shape == (2, 256)  # loc and scale of 1 action


@pytest.mark.parametrize("flag", ["--jit", "--compile"])
def test_compiled_loop_trains_like_the_eager_one(tmp_path, monkeypatch, flag):
    # --jit / --compile trace the rollout's step functions and one minibatch step and loop the
    # epochs on the host; with normalisers on, every traced path runs (act, observe_act,
    # observe, the gathered minibatch, the batched draws). Traced but not Inductor-compiled here
    # (minutes on a CPU): the same ops, so the same run as the eager trainer's.
    from funcrl.jit import jit as funcrl_jit

    _on_policy = importlib.import_module("_on_policy")
    traced = []

    def compiler(cfg):
        assert cfg.jit or cfg.compile

        def wrap(fn):
            traced.append(fn.__name__)
            return funcrl_jit(fn, backend="eager")

        return wrap

    monkeypatch.setattr(_on_policy, "compiler", compiler)
    flags = ["--env", "Pendulum-v1", "--total-steps", "128", *TINY]
    flags += ["--normalize-observations", "--scale-rewards", "--epochs", "2"]
    flags += ["--num-minibatches", "4", "--eval-every", "0", "--checkpoint-every", "0"]
    eager = ppo_example.main([*flags, "--out", str(tmp_path / "eager")])
    compiled = ppo_example.main([*flags, "--out", str(tmp_path / "jit"), flag])
    assert sorted(traced) == ["act", "minibatch", "minibatch_draws", "observe", "observe_act"]
    assert tree.allclose(compiled["params"], eager["params"], rtol=1e-5, atol=1e-6)
    assert compiled["eval_returns"] == pytest.approx(eager["eval_returns"], rel=1e-4)


def test_state_independent_gaussian_policy_clips_for_the_env_only(tmp_path):
    # SB3's continuous policy: Normal(loc(obs), exp(log_std)), log_std a parameter starting at
    # log(--init-scale); the env gets the sample clipped to the bounds, the rollout keeps it
    # unclipped (its log-prob is the one the loss compares).
    _on_policy = importlib.import_module("_on_policy")
    from funcrl.nn import StateIndependentScale

    cfg = ppo_example.Config(
        env="Pendulum-v1", num_envs=2, num_cells=(8,), distribution="normal",
        state_independent_std=True, init_scale=5.0,
    )  # fmt: skip
    env = envs.VecEnv("Pendulum-v1", 2)
    agent = ppo_example.make_agent(cfg, env.observation_spec, env.action_spec)
    assert isinstance(agent.nets.actor, StateIndependentScale)
    assert agent.nets.distribution == "normal" and agent.nets.scale_mapping == "exp"
    torch.testing.assert_close(agent.params["actor"]["scale"], torch.full((1,), math.log(5.0)))
    norm, norm_state = _on_policy.make_normalizers(cfg, env)
    fns = _on_policy.step_fns(agent.nets, norm)
    bounds = (env.action_spec.low, env.action_spec.high)
    obs = env.reset(seed=0)["observation"]
    rollout, _, _ = _on_policy.collect(
        env, agent.params, fns, norm_state, obs, 32, random.key(1), bounds
    )
    env.close()
    action = rollout["action"]
    torch.testing.assert_close(rollout["scale"], torch.full_like(action, 5.0))
    assert float(action.abs().max()) > 2.0  # std 5: many samples leave [-2, 2], kept as drawn
    # Pendulum's torque is the clipped action: its reward is -(th^2 + 0.1 thdot^2 + 0.001 u^2)
    # with |u| <= 2, so no reward goes below -(pi^2 + 0.1 * 8^2 + 0.001 * 4).
    assert float(rollout["next", "reward"].min()) >= -(math.pi**2 + 6.4 + 0.004) - 1e-4
    result = ppo_example.main(
        ["--env", "Pendulum-v1", "--total-steps", "128", "--out", str(tmp_path), *TINY,
         "--distribution", "normal", "--state-independent-std"]
    )  # fmt: skip
    assert result["steps"] == 128 and math.isfinite(result["eval_return"])


def test_rejects_policy_options_that_do_not_fit_the_env(tmp_path):
    with pytest.raises(ValueError, match="ppo.py: --distribution must be 'tanh_normal' or"):
        ppo_example.main(["--out", str(tmp_path), *TINY, "--distribution", "beta"])
    with pytest.raises(ValueError, match="--state-independent-std are for continuous"):
        ppo_example.main(["--out", str(tmp_path), *TINY, "--state-independent-std"])
