"""Discrete Soft Actor-Critic on a gymnasium task with discrete actions, in one readable file.

    python examples/discrete_sac.py --env CartPole-v1 --total-steps 100000 --out runs/dsac

The algorithm is ``funcrl.discrete_sac.loss`` (TorchRL's ``DiscreteSACLoss``: a categorical actor,
twin critics giving ``Q(s, .)`` for every action, exact expectations over the policy instead of
samples, learned temperature) trained by ``funcrl.training.update`` (Adam, Polyak-averaged target
critics). One update step is a single pure function compiled with
``torch.compile(fullgraph=True)``. The behaviour policy samples from the actor's categorical
distribution. The collection loop, evaluation, logging and checkpoints live in
``examples/_offpolicy.py``.

Writes ``<out>/log.csv``, ``<out>/curve.png`` and ``<out>/checkpoint.pt``, and prints the final
deterministic evaluation (the mean over ``--eval-episodes`` episodes of the actor's most likely
action).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _offpolicy  # noqa: E402
import _util  # noqa: E402

from funcrl import discrete_sac, optim  # noqa: E402
from funcrl.training import update  # noqa: E402


@dataclasses.dataclass
class Config(_offpolicy.OffPolicyConfig):
    """Discrete SAC: the loop's settings (env, steps, buffer, evaluation, output) plus these.

    The defaults follow TorchRL's discrete SAC example (learning rate, target entropy weight).
    """

    env: str = dataclasses.field(default="CartPole-v1", metadata={"help": "gymnasium env id"})
    total_steps: int = dataclasses.field(
        default=100_000, metadata={"help": "environment steps (all envs together)"}
    )
    out: str = dataclasses.field(default="runs/discrete_sac", metadata={"help": "output directory"})
    buffer_size: int = dataclasses.field(
        default=100_000, metadata={"help": "replay capacity (transitions)"}
    )
    batch_size: int = dataclasses.field(default=64, metadata={"help": "transitions per update"})
    updates_per_step: float = dataclasses.field(
        default=0.5, metadata={"help": "gradient updates per collected transition"}
    )
    eval_every: int = dataclasses.field(
        default=10_000, metadata={"help": "steps between deterministic evaluations (0: end only)"}
    )
    learning_rate: float = dataclasses.field(
        default=3e-4, metadata={"help": "Adam step size of actor, critics and temperature"}
    )
    gamma: float = dataclasses.field(default=0.99, metadata={"help": "discount"})
    tau: float = dataclasses.field(default=0.005, metadata={"help": "Polyak weight of the targets"})
    num_cells: tuple[int, ...] = dataclasses.field(
        default=(256, 256), metadata={"help": "hidden sizes of actor and critics"}
    )
    target_entropy_weight: float = dataclasses.field(
        default=0.2, metadata={"help": "target entropy as a fraction of the uniform policy's"}
    )
    alpha_init: float = dataclasses.field(default=1.0, metadata={"help": "initial temperature"})
    loss_function: str = dataclasses.field(
        default="l2", metadata={"help": "critic regression: l2, smooth_l1 (TorchRL's) or l1"}
    )


def make_agent(cfg: Config, observation_spec, action_spec) -> _offpolicy.Agent:
    """Discrete SAC's params, optimizer state, compiled update step and policies."""
    loss_cfg = discrete_sac.Config(
        action_space="categorical",  # funcrl.envs stores Discrete actions as indices
        gamma=cfg.gamma,
        alpha_init=cfg.alpha_init,
        target_entropy_weight=cfg.target_entropy_weight,
        loss_function=cfg.loss_function,
    )
    nets = discrete_sac.Nets(num_cells=cfg.num_cells)
    params = discrete_sac.init(cfg.seed, observation_spec, action_spec, loss_cfg, nets)
    trainer = update(
        functools.partial(discrete_sac.loss, config=loss_cfg, nets=nets),
        optim.adam(cfg.learning_rate),
        trainable=("actor", "qvalue", "log_alpha"),
        targets={"target_qvalue": "qvalue"},
        tau=cfg.tau,
    )

    train_step = _offpolicy.update_step(trainer.step, cfg)

    def explore(params, observation):
        return discrete_sac.act(params, observation, config=loss_cfg, nets=nets, mode="random")

    def act(params, observation):
        return discrete_sac.act(
            params, observation, config=loss_cfg, nets=nets, mode="deterministic"
        )

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
        title=f"Discrete SAC on {cfg.env} (seed {cfg.seed})",
        metric_keys=("loss_qvalue", "loss_actor", "alpha", "entropy"),
    )
    env.close()
    print(_offpolicy.summary_line(result))
    return result


if __name__ == "__main__":
    main()
