"""Bad input to funcrl.pure_train and funcrl.pure_dqn: every error names the function and the argument."""

from __future__ import annotations

import pytest
import torch

from funcrl.envs import pure
from funcrl.pure_dqn import DQNTrainConfig
from funcrl.pure_dqn import make_train as dqn_make_train
from funcrl.pure_train import PPOTrainConfig, make_train


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"num_envs": 0}, ValueError, r"PPOTrainConfig: num_envs must be an int >= 1, got 0"),
        ({"num_steps": 2.0}, ValueError, r"PPOTrainConfig: num_steps must be an int >= 1"),
        ({"update_epochs": True}, ValueError, r"PPOTrainConfig: update_epochs must be an int"),
        ({"num_minibatches": -1}, ValueError, r"PPOTrainConfig: num_minibatches must be an int"),
        ({"total_timesteps": 100}, ValueError, r"PPOTrainConfig: total_timesteps=100 is less "
         r"than one rollout \(num_envs x num_steps = 512\)"),
        ({"num_minibatches": 3}, ValueError, r"PPOTrainConfig: a rollout of num_envs x "
         r"num_steps = 512 transitions does not split into num_minibatches=3"),
        ({"lr": 0.0}, ValueError, r"PPOTrainConfig: lr must be > 0, got 0.0"),
        ({"lr": "3e-4"}, TypeError, r"PPOTrainConfig: lr must be a finite number, got '3e-4'"),
        ({"ent_coef": float("nan")}, TypeError, r"PPOTrainConfig: ent_coef must be a finite"),
        ({"max_grad_norm": -1.0}, ValueError, r"PPOTrainConfig: max_grad_norm must be > 0"),
        ({"vf_coef": -0.5}, ValueError, r"PPOTrainConfig: vf_coef must be >= 0, got -0.5"),
        ({"clip_eps": 1.5}, ValueError, r"PPOTrainConfig: clip_eps must be < 1, got 1.5"),
        ({"gamma": 1.1}, ValueError, r"PPOTrainConfig: gamma must be in \[0, 1\], got 1.1"),
        ({"gae_lambda": -0.1}, ValueError, r"PPOTrainConfig: gae_lambda must be in \[0, 1\]"),
        ({"hidden": [64, 64]}, ValueError, r"PPOTrainConfig: hidden must be a non-empty tuple"),
        ({"hidden": (64, 0)}, ValueError, r"PPOTrainConfig: hidden must be a non-empty tuple"),
        ({"activation": "gelu"}, ValueError, r"PPOTrainConfig: activation must be 'tanh' or "
         r"'relu', got 'gelu'"),
        ({"dtype": torch.int32}, TypeError, r"PPOTrainConfig: dtype must be a float torch.dtype"),
    ],
)  # fmt: skip
def test_bad_config(kwargs, error, match):
    with pytest.raises(error, match=match):
        PPOTrainConfig(**kwargs)


def test_bad_make_train_arguments():
    with pytest.raises(TypeError, match=r"pure_train.make_train: config must be a PPOTrainConfig"):
        make_train({"num_envs": 4}, pure.make("CartPole-v1"))
    with pytest.raises(TypeError, match=r"pure_train.make_train: env must be a funcrl.envs.pure"):
        make_train(PPOTrainConfig(), "CartPole-v1")


@pytest.mark.parametrize(
    "key, match",
    [
        (torch.zeros(3, dtype=torch.int64), r"got dtype torch.int64 shape \[3\]"),
        (torch.zeros(2), r"got dtype torch.float32 shape \[2\]"),
        (torch.zeros(2, 2, 2, dtype=torch.int64), r"got dtype torch.int64 shape \[2, 2, 2\]"),
        (0, r"got int"),
    ],
)
def test_bad_key(key, match):
    run = make_train(PPOTrainConfig(total_timesteps=512), pure.make("CartPole-v1"))
    with pytest.raises(ValueError, match=r"pure_train.train: key must be an int64 funcrl.random "
                       r"key \[2\] or a stack of keys \[S, 2\], " + match):  # fmt: skip
        run(key, compile=False)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"num_envs": 0}, ValueError, r"DQNTrainConfig: num_envs must be an int >= 1, got 0"),
        ({"buffer_size": 1.5}, ValueError, r"DQNTrainConfig: buffer_size must be an int >= 1"),
        ({"steps_per_iteration": True}, ValueError, r"DQNTrainConfig: steps_per_iteration must"),
        ({"learning_starts": -1}, ValueError, r"DQNTrainConfig: learning_starts must be an int "
         r">= 0, got -1"),
        ({"lr": "1e-3"}, TypeError, r"DQNTrainConfig: lr must be a finite number, got '1e-3'"),
        ({"lr": 0.0}, ValueError, r"DQNTrainConfig: lr must be > 0, got 0.0"),
        ({"gamma": 1.5}, ValueError, r"DQNTrainConfig: gamma must be in \[0, 1\], got 1.5"),
        ({"epsilon_finish": -0.1}, ValueError, r"DQNTrainConfig: epsilon_finish must be in"),
        ({"tau": 0.0}, ValueError, r"DQNTrainConfig: tau must be in \(0, 1\], got 0.0"),
        ({"tau": float("inf")}, TypeError, r"DQNTrainConfig: tau must be a finite number"),
        ({"target_update_interval": 55}, ValueError, r"DQNTrainConfig: target_update_interval"
         r"=55 is not a multiple of num_envs=10"),
        ({"training_interval": 5}, ValueError, r"DQNTrainConfig: training_interval=5 is not a "
         r"multiple of num_envs=10"),
        ({"batch_size": 20_000}, ValueError, r"DQNTrainConfig: batch_size=20000 is larger than "
         r"buffer_size=10000"),
        ({"total_timesteps": 100}, ValueError, r"DQNTrainConfig: total_timesteps=100 is less than "
         r"one iteration \(num_envs x steps_per_iteration = 500\)"),
        ({"hidden": (120, -1)}, ValueError, r"DQNTrainConfig: hidden must be a non-empty tuple"),
        ({"dtype": torch.int64}, TypeError, r"DQNTrainConfig: dtype must be a float torch.dtype"),
    ],
)  # fmt: skip
def test_bad_dqn_config(kwargs, error, match):
    with pytest.raises(error, match=match):
        DQNTrainConfig(**kwargs)


def test_bad_dqn_make_train_arguments():
    with pytest.raises(TypeError, match=r"pure_dqn.make_train: config must be a DQNTrainConfig"):
        dqn_make_train(PPOTrainConfig(), pure.make("CartPole-v1"))
    with pytest.raises(TypeError, match=r"pure_dqn.make_train: env must be a funcrl.envs.pure"):
        dqn_make_train(DQNTrainConfig(), "CartPole-v1")
    with pytest.raises(ValueError, match=r"pure_dqn.make_train: DQN needs discrete actions; "
                       r"Pendulum-v1's action_spec is"):  # fmt: skip
        dqn_make_train(DQNTrainConfig(), pure.make("Pendulum-v1"))


def test_bad_dqn_key():
    run = dqn_make_train(DQNTrainConfig(total_timesteps=500), pure.make("CartPole-v1"))
    with pytest.raises(ValueError, match=r"pure_dqn.train: key must be an int64 funcrl.random "
                       r"key \[2\] or a stack of keys \[S, 2\], got dtype torch.float32"):  # fmt: skip
        run(torch.zeros(2), compile=False)


@pytest.mark.parametrize(
    "value, match",
    [
        (-1, r"cpu_allocator.caching: max_cached_bytes must be >= 0, got -1"),
        (1.5, r"cpu_allocator.caching: max_cached_bytes must be an int, got float"),
        (True, r"cpu_allocator.caching: max_cached_bytes must be an int, got bool"),
    ],
)
def test_bad_cpu_cache_limit(value, match):
    from funcrl import cpu_allocator

    with pytest.raises(ValueError, match=match), cpu_allocator.caching(value):
        pass
    assert not cpu_allocator.stats().active


def test_bad_cpu_cache_flag():
    train = make_train(
        PPOTrainConfig(total_timesteps=32, num_envs=2, num_steps=8, num_minibatches=2),
        pure.make("CartPole-v1"),
    )
    with pytest.raises(TypeError, match=r"pure_train.train: cpu_cache must be a bool, got str"):
        train(torch.tensor([0, 1]), compile=False, cpu_cache="no")


@pytest.mark.parametrize("value", [0, -2, 3, 2.0, True, "2"])
def test_bad_iterations_per_call(value):
    # Two iterations (total_timesteps 32 = 2 x 16): only 1 and 2 divide them.
    train = make_train(
        PPOTrainConfig(total_timesteps=32, num_envs=2, num_steps=8, num_minibatches=2),
        pure.make("CartPole-v1"),
    )
    with pytest.raises(ValueError, match=r"pure_train.train: iterations_per_call must be an int "
                       r">= 1 that divides the run's 2 iterations, got " + repr(value)):  # fmt: skip
        train(torch.tensor([0, 1]), compile=False, iterations_per_call=value)


@pytest.mark.parametrize(
    "start, error, match",
    [
        ((torch.zeros(4), torch.tensor(0)), TypeError, r"start must be an EnvState, got tuple"),
        ("physics1", ValueError, r"CartPole-v1.step_with_start: start.physics must match "
         r"state.physics \(shape \(4,\) dtype torch.float32\), got shape \(1,\)"),
        ("physics64", ValueError, r"start.physics must match state.physics .*got shape "
         r"\(4,\) dtype torch.float64"),
        ("t2", ValueError, r"start.t must match state.t \(shape \(\) dtype torch.int64\), "
         r"got shape \(2,\)"),
    ],
)  # fmt: skip
def test_bad_start_state(start, error, match):
    env = pure.make("CartPole-v1")
    state, _ = env.reset(torch.tensor([0, 1]))
    if start == "physics1":
        start = pure.EnvState(torch.zeros(1), state.t)
    elif start == "physics64":
        start = pure.EnvState(state.physics.double(), state.t)
    elif start == "t2":
        start = pure.EnvState(state.physics, torch.zeros(2, dtype=torch.int64))
    with pytest.raises(error, match=match):
        env.step_with_start(state, torch.tensor(1), start)


@pytest.mark.parametrize("value", [0, -1, 8.0, True, None])
def test_bad_default_iterations_per_call(value):
    from funcrl.pure_train import default_iterations_per_call

    with pytest.raises(ValueError, match=r"pure_train.default_iterations_per_call: num_iterations "
                       r"must be an int >= 1, got " + repr(value)):  # fmt: skip
        default_iterations_per_call(value)


@pytest.mark.parametrize(
    "args, match",
    [
        ((torch.ones(3, 2), torch.ones(4, 2)), r"the leaves' leading \(batch\) sizes differ: "
         r"leaf 0 has 3, leaf 1 has shape \[4, 2\]"),
        (({"a": torch.ones(3), "b": torch.ones(())},), r"leaf 1 is 0-d; every input leaf needs "
         r"a leading batch dim"),
        (([torch.ones(3), 2.0],), r"every input leaf must be a tensor with a leading batch dim, "
         r"leaf 1 is of type float"),
        (((),), r"no tensors to vmap over"),
    ],
)  # fmt: skip
def test_bad_seed_batches(args, match):
    # The seed vmap of pure_train.seeded_iteration (funcrl._vmap.vmap_leading): inputs whose
    # leading dims do not form one batch are errors, never broadcast.
    from funcrl._vmap import vmap_leading

    fn = vmap_leading(lambda *xs: xs, owner="pure_train.seeded_iteration")
    with pytest.raises(ValueError, match=r"pure_train.seeded_iteration: " + match):
        fn(*args)
    with pytest.raises(ValueError, match=r"pure_train.seeded_iteration: every output leaf must "
                       r"be a tensor, leaf 0 is of type int"):  # fmt: skip
        vmap_leading(lambda x: 3, owner="pure_train.seeded_iteration")(torch.ones(2))
    # A bad randomness reached functorch's C++ as an internal assertion; now rejected up front.
    with pytest.raises(ValueError, match=r"pure_train.seeded_iteration: randomness must be one "
                       r"of 'error', 'different', 'same', got 'foo'"):  # fmt: skip
        vmap_leading(lambda x: x, randomness="foo", owner="pure_train.seeded_iteration")
