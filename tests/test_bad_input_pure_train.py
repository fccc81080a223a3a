"""Bad input to funcrl.pure_train: every error names the function and the argument."""

from __future__ import annotations

import pytest
import torch

from funcrl.envs import pure
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
