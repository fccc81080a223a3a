"""PPO on a gymnasium task with PureJaxRL's settings, in one readable file.

    python examples/ppo.py --env CartPole-v1 --total-steps 500000 --out runs/ppo_cartpole
    python examples/ppo.py --env Acrobot-v1 --out runs/ppo_acrobot
    python examples/ppo.py --env Pendulum-v1 --total-steps 1000000 --out runs/ppo_pendulum

The algorithm is ``funcrl.ppo.loss`` (TorchRL's ``ClipPPOLoss``) trained by ``funcrl.ppo.trainer``:
each iteration collects ``--num-envs`` x ``--num-steps`` transitions from a gymnasium vector env,
then one pure function computes GAE with the critic frozen and runs ``--epochs`` x
``--num-minibatches`` shuffled minibatch steps (clip 0.2, entropy 0.01, value clip, advantages
normalised per minibatch, global-norm clip 0.5, Adam with the learning rate annealed to 0). The
defaults are PureJaxRL's CartPole settings: 4 envs x 128 steps, 4 x 4 minibatches, lr 2.5e-4,
tanh 64x64 networks with orthogonal init. The loop (rollouts, normalisation, evaluation,
checkpoints) is ``examples/_on_policy.py``, shared with ``examples/a2c.py``.

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

from funcrl import optim, ppo  # noqa: E402
from funcrl.objectives import on_policy  # noqa: E402


@dataclasses.dataclass
class Config(_on_policy.OnPolicyConfig):
    """PPO: the loop's settings and PureJaxRL's hyperparameters."""

    clip_epsilon: float = dataclasses.field(default=0.2, metadata={"help": "ratio clip"})
    clip_value: bool = dataclasses.field(
        default=True, metadata={"help": "clip the value to the rollout's +- clip_epsilon"}
    )
    critic_coeff: float = dataclasses.field(
        default=0.25, metadata={"help": "weight of the squared value error (PureJaxRL's 0.5 x 0.5)"}
    )
    out: str = dataclasses.field(default="runs/ppo", metadata={"help": "output directory"})


METRICS = ("loss_objective", "loss_critic", "entropy", "clip_fraction", "kl_approx")


def make_agent(cfg: Config, observation_spec: Any, action_spec: Any) -> _on_policy.Agent:
    """PPO's nets, params and trainer for the env's specs."""
    nets = ppo.Nets(**_on_policy.make_nets(cfg, observation_spec, action_spec))
    loss_cfg = ppo.Config(
        clip_epsilon=cfg.clip_epsilon,
        entropy_coeff=cfg.entropy_coeff,
        critic_coeff=cfg.critic_coeff,
        loss_critic_type="l2",
        clip_value=cfg.clip_value,
        normalize_advantage=True,
        gamma=cfg.gamma,
        lmbda=cfg.lmbda,
    )
    params = ppo.init(_util.run_keys(cfg.seed).init, observation_spec, action_spec, loss_cfg, nets)
    lr = _on_policy.learning_rate(cfg, cfg.epochs * cfg.num_minibatches)
    opt = optim.chain(optim.clip_by_global_norm(cfg.max_grad_norm), optim.adam(lr, eps=1e-5))
    train = ppo.trainer(
        opt, config=loss_cfg, nets=nets, epochs=cfg.epochs, num_minibatches=cfg.num_minibatches
    )
    # What --compile / --jit compile: one minibatch step (the minibatch loop stays on the host).
    loss = partial(ppo.loss, config=loss_cfg, nets=nets)
    one_step = on_policy.minibatch_trainer(loss, opt)
    advantages = partial(on_policy.advantages, config=loss_cfg, nets=nets)
    return _on_policy.Agent(nets, params, train, advantages, one_step)


def train(cfg: Config) -> dict[str, Any]:
    """Runs PPO and returns a summary (``eval_return``, ``train_time``, paths, final params)."""
    _on_policy.check_config("ppo.py", cfg)
    return _on_policy.train(cfg, make_agent, title="PPO", metrics=METRICS)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    cfg = _util.parse_config(Config, argv)
    result = train(cfg)
    print(
        f"PPO {cfg.env}: eval return {result['eval_return']:.1f} after {result['steps']} steps "
        f"in {result['train_time']:.0f} s"
    )
    return result


if __name__ == "__main__":
    main()
