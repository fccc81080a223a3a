"""CrossQ on a gymnasium task, in one readable file.

    python examples/crossq.py --env Pendulum-v1 --total-steps 15000 --out runs/crossq
    python examples/crossq.py --env HalfCheetah-v5 --critic-cells 2048 2048 --learning-starts 5000

The algorithm is ``funcrl.crossq.loss_and_state`` (TorchRL's ``CrossQLoss``: SAC without target
networks; the critics carry BatchRenorm layers and evaluate the current and next state-action
pairs in one joint pass) trained by ``funcrl.training.update(..., has_state=True)``, which writes
the new BatchRenorm running statistics into the params after each step. The actor and the
temperature move every ``policy_delay`` critic steps; Adam uses ``beta1 = 0.5`` as in the paper.
One update step is a single pure function compiled with ``torch.compile(fullgraph=True)``. The
collection loop, evaluation, logging and checkpoints live in ``examples/_offpolicy.py``.

Writes ``<out>/log.csv``, ``<out>/curve.png`` and ``<out>/checkpoint.pt``, and prints the final
deterministic evaluation (the mean over ``--eval-episodes`` episodes of the policy's mode, with
BatchRenorm in evaluation mode).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _offpolicy  # noqa: E402
import _util  # noqa: E402

from funcrl import crossq, optim  # noqa: E402
from funcrl.training import update  # noqa: E402


@dataclasses.dataclass
class Config(_offpolicy.OffPolicyConfig):
    """CrossQ: the loop's settings (env, steps, buffer, evaluation, output) plus these."""

    out: str = dataclasses.field(default="runs/crossq", metadata={"help": "output directory"})
    learning_rate: float = dataclasses.field(
        default=1e-3, metadata={"help": "Adam step size of actor, critics and temperature"}
    )
    adam_beta1: float = dataclasses.field(
        default=0.5, metadata={"help": "Adam's first-moment decay (the paper's 0.5)"}
    )
    gamma: float = dataclasses.field(default=0.99, metadata={"help": "discount"})
    num_cells: tuple[int, ...] = dataclasses.field(
        default=(256, 256), metadata={"help": "hidden sizes of the actor"}
    )
    critic_cells: tuple[int, ...] = dataclasses.field(
        default=(256, 256), metadata={"help": "hidden sizes of the critics (the paper: 2048 2048)"}
    )
    policy_delay: int = dataclasses.field(
        default=3, metadata={"help": "critic steps per actor and temperature step"}
    )
    batch_norm_momentum: float = dataclasses.field(
        default=0.01, metadata={"help": "BatchRenorm running-statistics momentum"}
    )
    warmup_steps: int = dataclasses.field(
        default=10_000, metadata={"help": "BatchRenorm steps before renormalisation is full"}
    )
    alpha_init: float = dataclasses.field(default=1.0, metadata={"help": "initial temperature"})
    loss_function: str = dataclasses.field(
        default="l2", metadata={"help": "critic regression: l2, smooth_l1 (TorchRL's) or l1"}
    )


def make_agent(cfg: Config, observation_spec, action_spec) -> _offpolicy.Agent:
    """CrossQ's params, optimizer state, compiled update step and policies."""
    loss_cfg = crossq.Config(
        gamma=cfg.gamma, alpha_init=cfg.alpha_init, loss_function=cfg.loss_function
    )
    renorm = {"momentum": cfg.batch_norm_momentum, "warmup_steps": cfg.warmup_steps}
    nets = crossq.Nets(
        actor=crossq.RenormMLP(num_cells=cfg.num_cells, **renorm),
        qvalue=crossq.RenormMLP(num_cells=cfg.critic_cells, **renorm),
    )
    params = crossq.init(
        _util.run_keys(cfg.seed).init, observation_spec, action_spec, loss_cfg, nets
    )
    adam = optim.adam(cfg.learning_rate, b1=cfg.adam_beta1)
    trainer = update(
        functools.partial(crossq.loss_and_state, config=loss_cfg, nets=nets),
        _offpolicy.optimizer(cfg, {"actor": adam, "qvalue": adam, "log_alpha": adam}),
        trainable=("actor", "qvalue", "log_alpha"),
        every={"actor": cfg.policy_delay, "log_alpha": cfg.policy_delay},
        has_state=True,  # the loss also returns the new BatchRenorm statistics
    )

    train_step = _offpolicy.update_step(trainer.step, cfg)

    # Acting never moves the statistics: BatchRenorm in evaluation mode (train=False).
    def explore(params, observation, key):
        return crossq.policy(params, observation, nets=nets)[0].sample(key=key)

    def act(params, observation):
        return crossq.policy(params, observation, nets=nets)[0].deterministic_sample

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
        title=f"CrossQ on {cfg.env} (seed {cfg.seed})",
        metric_keys=("loss_qvalue", "loss_actor", "alpha", "entropy"),
    )
    env.close()
    print(_offpolicy.summary_line(result))
    return result


if __name__ == "__main__":
    main()
