"""PPO and DQN training runs on pure environments (funcrl.pure_train, funcrl.pure_dqn): eager ==
compiled, vmap == solo."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import funcrl
from funcrl import pure_dqn, pure_train
from funcrl.envs import pure
from funcrl.pure_dqn import DQNTrainConfig
from funcrl.pure_train import PPOTrainConfig, make_train
from funcrl.record import Record

TINY = PPOTrainConfig(
    total_timesteps=2 * 8 * 2, num_envs=2, num_steps=8, update_epochs=1, num_minibatches=2
)


@pytest.fixture(autouse=True)
def _plain_random(monkeypatch):
    # The eager draws' compiled kernels cost seconds to build in a short test process.
    monkeypatch.setattr(funcrl.random, "_FUSED_ENV", False)


def _close(a, b, **tol):
    flat_a, spec_a = torch.utils._pytree.tree_flatten(a)
    flat_b, spec_b = torch.utils._pytree.tree_flatten(b)
    assert spec_a == spec_b
    for x, y in zip(flat_a, flat_b):
        torch.testing.assert_close(x, y, **tol)


def test_defaults_are_purejaxrl_settings():
    cfg = PPOTrainConfig()
    assert (cfg.num_envs, cfg.num_steps, cfg.update_epochs, cfg.num_minibatches) == (4, 128, 4, 4)
    assert cfg.num_updates == 976 and cfg.batch_size == 512
    loss = pure_train.loss_config(cfg)
    # PureJaxRL: 0.5 * vf_coef * max(squared errors), clipped by clip_eps, advantages normalised.
    assert loss.critic_coeff == 0.25 and loss.loss_critic_type == "l2"
    assert loss.value_clip == 0.2 and loss.normalize_advantage and loss.time_dim == 0


def test_episode_stats_hand_computed():
    # T=3, E=2: env 0 ends episodes at t=0 (return 1) and t=2 (return 2); env 1 never ends.
    done = torch.tensor([[True, False], [False, False], [True, False]]).unsqueeze(-1)
    ret = torch.tensor([[1.0, 1.0], [1.0, 2.0], [2.0, 3.0]])
    traj = Record({"next": {"done": done, "episode_return": ret}}, batch_ndim=2)
    last, finished, total = pure_train._episode_stats(traj, torch.tensor([7.0, 9.0]))
    assert last.tolist() == [2.0, 9.0]
    assert finished.item() == 2.0 and total.item() == 3.0


def test_iteration_layout_and_metrics():
    train = make_train(TINY, pure.make("CartPole-v1"))
    out = train(funcrl.random.key(0), compile=False)
    assert out.metrics["episode_return"].shape == (2,)
    assert out.metrics["loss_objective"].shape == (2,)
    assert out.state.last_return.shape == (2,)
    assert out.state.rollout.observation.shape == (2, 4)
    # Two iterations of 1 epoch x 2 minibatches: the trainer counts rollouts, Adam counts steps.
    assert out.state.trainer.step.item() == 2
    assert out.compile_time >= 0.0 and out.train_time >= 0.0
    # CartPole pays 1 per step: a finished episode's return is its length, at least 1.
    fin = out.metrics["episodes_finished"]
    assert (out.metrics["finished_return_sum"] >= fin).all()


def test_vmap_over_seeds_equals_solo_runs():
    train = make_train(TINY, pure.make("CartPole-v1"))
    keys = funcrl.random.split(funcrl.random.key(3), 2)
    both = train(keys, compile=False)
    for i in range(2):
        solo = train(keys[i], compile=False)
        got = torch.utils._pytree.tree_map(lambda x, i=i: x[i], (both.state, both.metrics))
        _close(got, (solo.state, solo.metrics), rtol=1e-4, atol=1e-5)
    # Different seeds train differently.
    assert not torch.equal(both.metrics["loss_objective"][0], both.metrics["loss_objective"][1])


def test_same_key_same_run_and_continuous_env():
    train = make_train(TINY, pure.make("Pendulum-v1"))
    a = train(funcrl.random.key(1), compile=False)
    b = train(funcrl.random.key(1), compile=False)
    _close(a.metrics, b.metrics, rtol=0, atol=0)
    assert train.nets.distribution == "tanh_normal"
    assert a.state.rollout.observation.shape == (2, 3)


def test_compiled_iteration_matches_eager():
    # aot_eager: the same graph as inductor (one fullgraph capture, the rollout a scan) at a
    # fraction of the compile time. Four iterations: from the third on, the compiled calls skip
    # dynamo's guards, but not inside the callback.
    from torch._dynamo.eval_frame import _is_skip_guard_eval_unsafe_stance as skipping

    cfg = PPOTrainConfig(
        total_timesteps=4 * 2 * 8, num_envs=2, num_steps=8, update_epochs=1, num_minibatches=2
    )
    train = make_train(cfg, pure.make("CartPole-v1"))
    keys = funcrl.random.split(funcrl.random.key(0), 2)
    eager = train(keys, compile=False)
    seen = []
    compiled = train(
        keys, compile=True, backend="aot_eager", callback=lambda i, m: seen.append(skipping())
    )
    assert seen == [False] * 4 and not skipping()
    _close(compiled.state, eager.state, rtol=1e-4, atol=1e-5)
    _close(compiled.metrics, eager.metrics, rtol=1e-4, atol=1e-5)


def test_iterations_per_call_is_the_same_run():
    # K iterations per call draw from the same keys as one per call: the same run, with the
    # callback still called once per iteration (after each call) and metrics [S, I].
    cfg = dataclasses.replace(TINY, total_timesteps=4 * 2 * 8)
    train = make_train(cfg, pure.make("CartPole-v1"))
    keys = funcrl.random.split(funcrl.random.key(0), 2)
    one = train(keys, compile=False, iterations_per_call=1)
    two = train(keys, compile=False, iterations_per_call=2)
    _close(two.state, one.state, rtol=0, atol=0)
    _close(two.metrics, one.metrics, rtol=0, atol=0)
    seen = []
    four = train(
        keys,
        compile=True,
        backend="eager",
        iterations_per_call=4,
        callback=lambda i, m: seen.append((i, tuple(m["episode_return"].shape))),
    )
    assert seen == [(i, (2,)) for i in range(4)]
    assert (one.iterations_per_call, two.iterations_per_call, four.iterations_per_call) == (1, 2, 4)
    assert four.metrics["loss_objective"].shape == (2, 4)
    _close(four.state, one.state, rtol=1e-4, atol=1e-5)
    _close(four.metrics, one.metrics, rtol=1e-4, atol=1e-5)


def test_default_iterations_per_call():
    from funcrl import _inductor

    pick = pure_train.default_iterations_per_call
    if _inductor.NESTED_LOOPS:
        # The largest divisor up to MAX_ITERATIONS_PER_CALL (8): 976 = 8 x 122, 21 = 7 x 3.
        assert [pick(n) for n in (976, 21, 13, 1)] == [8, 7, 1, 1]
    else:
        assert pick(976) == 1
    assert pick(976, compile=False) == 1 and pick(976, backend="aot_eager") == 1
    assert pick(976, device="meta") == 1  # only where it has run: the CPU


def test_configs_of_other_sizes_compile_in_one_process():
    # A second config (another num_updates) recompiles the same iteration code: with dynamo's
    # automatic dynamic shapes the changed ints became SymInts and the vmapped step failed to
    # trace (the learning-rate schedule divided a batched tensor by one). dynamo alone (the
    # "eager" backend) is where it failed.
    env = pure.make("CartPole-v1")
    for n in (2, 3):
        cfg = dataclasses.replace(TINY, total_timesteps=n * 2 * 8)
        out = make_train(cfg, env)(funcrl.random.key(0), compile=True, backend="eager")
        assert out.metrics["episode_return"].shape == (n,)


def test_progress_and_callback():
    train = make_train(TINY, pure.make("CartPole-v1"))
    seen = []
    train(funcrl.random.key(0), compile=False, progress=True, callback=lambda i, m: seen.append(i))
    assert seen == [0, 1]


@pytest.mark.slow
def test_learns_cartpole_16_seeds():
    # PureJaxRL's target: median final return over 16 seeds >= 475 after 5e5 steps.
    torch.set_num_threads(1)
    train = make_train(PPOTrainConfig(), pure.make("CartPole-v1"))
    out = train(funcrl.random.split(funcrl.random.key(0), 16))
    final = out.metrics["episode_return"][:, -10:].mean(1)
    assert final.median().item() >= 475.0, final.tolist()


def test_scanned_update_equals_ppo_trainer_step():
    # PPOTrain.update is ppo.trainer's step with the minibatch loop scannable: same draws, same
    # numbers up to round-off (GAE as a [T, T] product there, a loop in ppo.trainer).
    cfg = PPOTrainConfig(
        total_timesteps=2 * 8, num_envs=2, num_steps=8, update_epochs=2, num_minibatches=2
    )
    train = make_train(cfg, pure.make("CartPole-v1"))
    state = train.init(funcrl.random.key(0))
    _, traj = pure.collect(
        train.policy, state.params, train.env, state.rollout, funcrl.random.key(1), 8
    )
    key = funcrl.random.key(2)
    got = train.update(state.params, state.trainer, traj, key)
    want = train.trainer.step(state.params, state.trainer, traj, key)
    _close(got, want, rtol=1e-5, atol=1e-6)


# --- DQN (funcrl.pure_dqn) ------------------------------------------------------------------------

DQN_TINY = DQNTrainConfig(
    total_timesteps=2 * 4 * 3,
    num_envs=2,
    buffer_size=16,
    batch_size=4,
    learning_starts=4,
    training_interval=2,
    target_update_interval=8,
    steps_per_iteration=4,
    epsilon_anneal_time=20,
    hidden=(8,),
)


def test_dqn_defaults_are_purejaxrl_settings():
    cfg = DQNTrainConfig()
    assert (cfg.num_envs, cfg.buffer_size, cfg.batch_size, cfg.hidden) == (
        10,
        10_000,
        128,
        (120, 84),
    )
    assert (cfg.learning_starts, cfg.training_interval, cfg.target_update_interval) == (
        10_000,
        10,
        500,
    )
    assert (cfg.epsilon_start, cfg.epsilon_finish, cfg.epsilon_anneal_time) == (1.0, 0.05, 250_000)
    assert cfg.tau == 1.0 and cfg.lr == 2.5e-4 and cfg.gamma == 0.99
    assert cfg.num_iterations == 1000


def test_dqn_epsilon_schedule_hand_computed():
    cfg = DQNTrainConfig(epsilon_anneal_time=100, epsilon_start=1.0, epsilon_finish=0.1)
    t = torch.tensor([0, 50, 100, 1000])
    got = torch.stack([pure_dqn.epsilon(cfg, x) for x in t])
    torch.testing.assert_close(got, torch.tensor([1.0, 0.55, 0.1, 0.1]))


def test_dqn_counts_updates_and_copies_the_target():
    train = pure_dqn.make_train(DQN_TINY, pure.make("CartPole-v1"))
    out = train(funcrl.random.key(0), compile=False)
    # Timesteps 2, 4, ..., 24; learning at t > 4 with t % 2 == 0 (the buffer holds >= 4 from t=4).
    assert out.metrics["updates"].tolist() == [2.0, 4.0, 4.0]
    assert out.state.trainer.step.item() == 10 and out.state.timesteps.item() == 24
    # t=24 is a target step (interval 8, tau 1): the target is a copy of the online net.
    _close(out.state.params["target_value"], out.state.params["value"], rtol=0, atol=0)
    assert out.state.buffer.size.item() == 16 and out.state.buffer.cursor.item() == 24 % 16
    # epsilon after 8, 16, 24 timesteps of a 20-step anneal from 1.0 to 0.05.
    torch.testing.assert_close(out.metrics["epsilon"], torch.tensor([0.62, 0.24, 0.05]))
    assert (out.metrics["loss"] > 0).all()


def test_dqn_vmap_over_seeds_equals_solo_runs():
    train = pure_dqn.make_train(DQN_TINY, pure.make("CartPole-v1"))
    keys = funcrl.random.split(funcrl.random.key(3), 2)
    both = train(keys, compile=False)
    for i in range(2):
        solo = train(keys[i], compile=False)
        got = torch.utils._pytree.tree_map(lambda x, i=i: x[i], (both.state, both.metrics))
        _close(got, (solo.state, solo.metrics), rtol=1e-4, atol=1e-5)
    assert not torch.equal(both.metrics["loss"][0], both.metrics["loss"][1])


def test_dqn_compiled_iteration_matches_eager():
    cfg = dataclasses.replace(DQN_TINY, total_timesteps=2 * 2 * 4, steps_per_iteration=2)
    train = pure_dqn.make_train(cfg, pure.make("CartPole-v1"))
    keys = funcrl.random.split(funcrl.random.key(0), 2)
    eager = train(keys, compile=False)
    compiled = train(keys, compile=True, backend="aot_eager")
    _close(compiled.state, eager.state, rtol=1e-4, atol=1e-5)
    _close(compiled.metrics, eager.metrics, rtol=1e-4, atol=1e-5)


def test_env_step_equals_a_one_step_collect():
    env = pure.make("CartPole-v1")
    train = make_train(TINY, env)
    state = train.init(funcrl.random.key(0))
    key = funcrl.random.key(5)
    # collect splits its key into one key per step; step takes that step key directly.
    step_key = funcrl.random.split(key, 1)[0]
    new, tr = pure.step(train.policy, state.params, env, state.rollout, step_key)
    new_c, traj = pure.collect(train.policy, state.params, env, state.rollout, key, 1)
    _close(tuple(new), tuple(new_c), rtol=0, atol=0)
    _close(tr.to_dict(), traj.reshape(-1).to_dict(), rtol=0, atol=0)


@pytest.mark.slow
def test_dqn_learns_cartpole_16_seeds():
    # PureJaxRL's DQN budget and settings (5e5 steps). Measured 2026-11-29 (examples/dqn_pure.py,
    # 16 seeds): median 500.0, min 385.0; bench/purejaxrl_dqn.py on the same budget: median
    # 500.0, min 498.6.
    torch.set_num_threads(1)
    train = pure_dqn.make_train(DQNTrainConfig(), pure.make("CartPole-v1"))
    out = train(funcrl.random.split(funcrl.random.key(0), 16))
    final = out.metrics["episode_return"][:, -10:].mean(1)
    assert final.median().item() >= 475.0, final.tolist()


def test_objectives_reexport_make_train():
    from funcrl import dqn, ppo, pure_dqn, pure_train

    env = pure.make("CartPole-v1")
    assert type(dqn.make_train(pure_dqn.DQNTrainConfig(), env)) is type(
        pure_dqn.make_train(pure_dqn.DQNTrainConfig(), env)
    )
    assert type(ppo.make_train(TINY, env)) is type(pure_train.make_train(TINY, env))


def test_inductor_compile_marks_loops_cacheable(monkeypatch):
    # seeded_iteration's Inductor compile carries funcrl._inductor's settings: scan graphs go to
    # the on-disk caches (tests/test_inductor_cache.py checks those in fresh processes).
    from funcrl import _inductor

    seen = {}

    def fake_compile(fn, **kwargs):
        seen.update(kwargs)
        return fn

    monkeypatch.setattr(torch, "compile", fake_compile)
    algo = make_train(PPOTrainConfig(total_timesteps=1024), pure.make("CartPole-v1"))
    pure_train.seeded_iteration(algo)
    options = seen["options"]
    for name, value in _inductor.CACHEABLE_LOOPS.items():
        assert options[name] == value
    assert options["cpp_wrapper"] is _inductor.CPP_WRAPPER_LOOPS and seen["fullgraph"]
    assert options["cpp_wrapper_build_separate"] is _inductor.CPP_WRAPPER_LOOPS
    seen.clear()
    pure_train.seeded_iteration(algo, backend="aot_eager")
    assert seen["options"] is None  # Inductor's settings only for Inductor


def test_each_seeded_iteration_has_its_own_compile_cache():
    # torch.func.vmap(f) is one function (functorch's `wrapped`) for every f: compiled as it is,
    # a ninth config in one process hit dynamo's recompile limit (a hard error with fullgraph).
    from funcrl._tracing import own_code

    algo = make_train(TINY, pure.make("CartPole-v1"))
    a = pure_train.seeded_iteration(algo, backend="eager")
    b = pure_train.seeded_iteration(algo, backend="eager")
    assert a._torchdynamo_orig_callable.__code__ is not b._torchdynamo_orig_callable.__code__
    torch._dynamo.reset()
    fns = [
        torch.compile(
            own_code(torch.func.vmap(lambda x, i=i: x * i)), fullgraph=True, backend="eager"
        )
        for i in range(12)
    ]
    assert [int(f(torch.ones(2))[0]) for f in fns] == list(range(12))
