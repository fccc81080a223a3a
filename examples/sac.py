"""Soft Actor-Critic on a gymnasium task, in one readable file.

    python examples/sac.py --env Pendulum-v1 --total-steps 15000 --out runs/demo
    python examples/sac.py --env HalfCheetah-v5 --total-steps 1000000 --out runs/cheetah
    python examples/sac.py --out runs/demo --total-steps 30000 --resume   # continue a run

The algorithm is ``funcrl.sac.loss`` (TorchRL's ``SACLoss``, version 2: twin Q, learned
temperature) trained by ``funcrl.training.update`` (Adam, Polyak-averaged target critics). One
update step -- sample a batch from the replay buffer, compute the losses, differentiate, apply Adam,
move the targets -- is a single pure function compiled with ``torch.compile(fullgraph=True)``. The
collection loop, evaluation, logging and checkpoints live in ``examples/_offpolicy.py``.

Writes ``<out>/log.csv``, ``<out>/curve.png`` and ``<out>/checkpoint.pt``, and prints the final
deterministic evaluation (the mean over ``--eval-episodes`` episodes of the policy's mode).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _offpolicy  # noqa: E402
import _util  # noqa: E402

from funcrl import optim, sac  # noqa: E402
from funcrl.training import update  # noqa: E402


@dataclasses.dataclass
class Config(_offpolicy.OffPolicyConfig):
    """SAC: the loop's settings (env, steps, buffer, evaluation, output) plus these."""

    out: str = dataclasses.field(default="runs/sac", metadata={"help": "output directory"})
    learning_rate: float = dataclasses.field(
        default=1e-3, metadata={"help": "Adam step size of actor, critics and temperature"}
    )
    gamma: float = dataclasses.field(default=0.99, metadata={"help": "discount"})
    tau: float = dataclasses.field(default=0.005, metadata={"help": "Polyak weight of the targets"})
    num_cells: tuple[int, ...] = dataclasses.field(
        default=(256, 256), metadata={"help": "hidden sizes of actor and critics"}
    )
    alpha_init: float = dataclasses.field(default=1.0, metadata={"help": "initial temperature"})
    loss_function: str = dataclasses.field(
        default="l2", metadata={"help": "critic regression: l2, smooth_l1 (TorchRL's) or l1"}
    )


def make_agent(cfg: Config, observation_spec, action_spec) -> _offpolicy.Agent:
    """SAC's params, optimizer state, compiled update step and policies."""
    loss_cfg = sac.Config(
        gamma=cfg.gamma, alpha_init=cfg.alpha_init, loss_function=cfg.loss_function
    )
    nets = sac.Nets(num_cells=cfg.num_cells)
    params = sac.init(_util.run_keys(cfg.seed).init, observation_spec, action_spec, loss_cfg, nets)
    trainer = update(
        functools.partial(sac.loss, config=loss_cfg, nets=nets),
        _offpolicy.optimizer(cfg, optim.adam(cfg.learning_rate)),
        trainable=("actor", "qvalue", "log_alpha"),
        targets={"target_qvalue": "qvalue"},
        tau=cfg.tau,
    )

    train_step = _offpolicy.update_step(trainer.step, cfg)

    def explore(params, observation, key):
        return sac.policy(params, observation, nets=nets).sample(key=key)

    def act(params, observation):
        return sac.policy(params, observation, nets=nets).deterministic_sample

    return _offpolicy.Agent(params, trainer.init(params), train_step, explore, act)


def main(argv: list[str] | None = None) -> dict:
    cfg = _util.parse_config(Config, argv)
    _offpolicy.set_threads(cfg.threads)
    env = _offpolicy.make_env(cfg)
    agent = make_agent(cfg, env.observation_spec, env.action_spec)
    result = _offpolicy.train(
        cfg,
        agent,
        env,
        title=f"SAC on {cfg.env} (seed {cfg.seed})",
        metric_keys=("loss_qvalue", "loss_actor", "alpha", "entropy"),
    )
    env.close()
    print(_offpolicy.summary_line(result))
    return result


if __name__ == "__main__":
    main()
