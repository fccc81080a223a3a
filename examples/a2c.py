"""A2C on a gymnasium task with Stable-Baselines3's settings, in one readable file.

    python examples/a2c.py --env CartPole-v1 --total-steps 500000 --out runs/a2c_cartpole

The algorithm is ``funcrl.a2c.loss`` (TorchRL's ``A2CLoss``) trained by ``funcrl.a2c.trainer``:
each iteration collects ``--num-envs`` x ``--num-steps`` transitions from a gymnasium vector env,
computes the advantages with the critic frozen (GAE with ``--lmbda`` 1: the n-step return
bootstrapped from the last state, as SB3's A2C) and takes one gradient step on the whole rollout
(``--epochs`` x ``--num-minibatches`` = 1 x 1). The loop (rollouts, normalisation, evaluation,
checkpoints) is ``examples/_on_policy.py``, shared with ``examples/ppo.py``.

The defaults are rl-baselines3-zoo's ``hyperparams/a2c.yml`` for CartPole-v1::

    CartPole-v1:
      n_envs: 8
      n_timesteps: !!float 5e5
      policy: 'MlpPolicy'
      ent_coef: 0.0

on top of SB3 2.x's ``A2C`` defaults: ``learning_rate=7e-4`` (constant), ``n_steps=5``,
``gamma=0.99``, ``gae_lambda=1.0``, ``vf_coef=0.5`` (on the mean squared value error),
``max_grad_norm=0.5``, ``use_rms_prop=True`` with ``rms_prop_eps=1e-5`` (``torch.optim.RMSprop``,
``alpha=0.99``: here ``funcrl.optim.rmsprop``, the same arithmetic), ``normalize_advantage=False``,
and SB3's ``MlpPolicy``: separate tanh 64x64 actor and critic, orthogonal init (sqrt 2 hidden,
0.01 policy head, 1 value head).

Writes ``<out>/log.csv``, ``<out>/curve.png``, ``<out>/checkpoint.pt`` and ``<out>/result.json``,
and prints the final deterministic evaluation (the mean over ``--eval-episodes`` episodes).
"""

from __future__ import annotations

import dataclasses
import os
import sys
from functools import partial
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _on_policy  # noqa: E402
import _util  # noqa: E402

from funcrl import a2c, optim  # noqa: E402
from funcrl.objectives import on_policy  # noqa: E402


@dataclasses.dataclass
class Config(_on_policy.OnPolicyConfig):
    """A2C: the loop's settings and SB3 / rl-zoo's CartPole-v1 hyperparameters."""

    num_envs: int = dataclasses.field(default=8, metadata={"help": "parallel environments"})
    num_steps: int = dataclasses.field(default=5, metadata={"help": "steps per env per rollout"})
    learning_rate: float = dataclasses.field(default=7e-4, metadata={"help": "RMSprop step size"})
    anneal_lr: bool = dataclasses.field(default=False, metadata={"help": "lr linearly to 0"})
    lmbda: float = dataclasses.field(
        default=1.0, metadata={"help": "GAE lambda (1: n-step returns)"}
    )
    entropy_coeff: float = dataclasses.field(default=0.0, metadata={"help": "entropy bonus"})
    rms_alpha: float = dataclasses.field(
        default=0.99, metadata={"help": "RMSprop's decay of the squared gradients"}
    )
    rms_eps: float = dataclasses.field(default=1e-5, metadata={"help": "RMSprop's epsilon"})
    epochs: int = dataclasses.field(default=1, metadata={"help": "passes over each rollout"})
    num_minibatches: int = dataclasses.field(default=1, metadata={"help": "minibatches per epoch"})
    out: str = dataclasses.field(default="runs/a2c", metadata={"help": "output directory"})


METRICS = ("loss_objective", "loss_critic", "entropy")


def make_agent(cfg: Config, observation_spec: Any, action_spec: Any) -> _on_policy.Agent:
    """A2C's nets, params and trainer for the env's specs."""
    nets = a2c.Nets(**_on_policy.make_nets(cfg, observation_spec, action_spec))
    loss_cfg = a2c.Config(
        entropy_coeff=cfg.entropy_coeff,
        critic_coeff=cfg.critic_coeff,
        loss_critic_type="l2",
        gamma=cfg.gamma,
        lmbda=cfg.lmbda,
    )
    params = a2c.init(_util.run_keys(cfg.seed).init, observation_spec, action_spec, loss_cfg, nets)
    lr = _on_policy.learning_rate(cfg, cfg.epochs * cfg.num_minibatches)
    opt = optim.chain(
        optim.clip_by_global_norm(cfg.max_grad_norm),
        optim.rmsprop(lr, alpha=cfg.rms_alpha, eps=cfg.rms_eps),
    )
    train = a2c.trainer(
        opt, config=loss_cfg, nets=nets, epochs=cfg.epochs, num_minibatches=cfg.num_minibatches
    )
    # What --compile / --jit compile: one minibatch step (the minibatch loop stays on the host).
    loss = partial(a2c.loss, config=loss_cfg, nets=nets)
    one_step = on_policy.minibatch_trainer(loss, opt)
    advantages = partial(on_policy.advantages, config=loss_cfg, nets=nets)
    return _on_policy.Agent(nets, params, train, advantages, one_step)


def train(cfg: Config) -> dict[str, Any]:
    """Runs A2C and returns a summary (``eval_return``, ``train_time``, paths, final params)."""
    _on_policy.check_config("a2c.py", cfg)
    return _on_policy.train(cfg, make_agent, title="A2C", metrics=METRICS)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    cfg = _util.parse_config(Config, argv)
    result = train(cfg)
    print(
        f"A2C {cfg.env}: eval return {result['eval_return']:.1f} after {result['steps']} steps "
        f"in {result['train_time']:.0f} s"
    )
    return result


if __name__ == "__main__":
    main()
