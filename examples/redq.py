"""Randomized Ensembled Double Q-learning (REDQ) on a gymnasium task, in one readable file.

    python examples/redq.py --env Pendulum-v1 --total-steps 10000 --out runs/redq
    python examples/redq.py --updates-per-step 20 --out runs/redq_utd20   # the paper's ratio

The algorithm is ``funcrl.redq.loss`` (TorchRL's ``REDQLoss``: SAC with an ensemble of
``num_qvalue_nets`` critics whose target takes the min over a random subset of ``sub_sample_len``
target critics, learned temperature) trained by ``funcrl.training.update`` (Adam, Polyak-averaged
target critics). The ensemble's low-bias target allows many gradient updates per environment step
(the update-to-data ratio ``--updates-per-step``). One update step is a single pure function
compiled with ``torch.compile(fullgraph=True)``. The collection loop, evaluation, logging and
checkpoints live in ``examples/_offpolicy.py``.

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

from funcrl import optim, redq, sac  # noqa: E402
from funcrl.training import update  # noqa: E402


@dataclasses.dataclass
class Config(_offpolicy.OffPolicyConfig):
    """REDQ: the loop's settings (env, steps, buffer, evaluation, output) plus these."""

    total_steps: int = dataclasses.field(
        default=10_000, metadata={"help": "environment steps (all envs together)"}
    )
    out: str = dataclasses.field(default="runs/redq", metadata={"help": "output directory"})
    updates_per_step: float = dataclasses.field(
        default=2.0, metadata={"help": "gradient updates per collected transition (UTD ratio)"}
    )
    learning_rate: float = dataclasses.field(
        default=1e-3, metadata={"help": "Adam step size of actor, critics and temperature"}
    )
    gamma: float = dataclasses.field(default=0.99, metadata={"help": "discount"})
    tau: float = dataclasses.field(default=0.005, metadata={"help": "Polyak weight of the targets"})
    num_cells: tuple[int, ...] = dataclasses.field(
        default=(128, 128), metadata={"help": "hidden sizes of actor and critics (paper: 256 256)"}
    )
    num_qvalue_nets: int = dataclasses.field(
        default=10, metadata={"help": "critics in the ensemble (N)"}
    )
    sub_sample_len: int = dataclasses.field(
        default=2, metadata={"help": "target critics the min is taken over (M)"}
    )
    alpha_init: float = dataclasses.field(default=1.0, metadata={"help": "initial temperature"})
    loss_function: str = dataclasses.field(
        default="l2", metadata={"help": "critic regression: l2, smooth_l1 (TorchRL's) or l1"}
    )


def make_agent(cfg: Config, observation_spec, action_spec) -> _offpolicy.Agent:
    """REDQ's params, optimizer state, compiled update step and policies."""
    loss_cfg = redq.Config(
        num_qvalue_nets=cfg.num_qvalue_nets,
        sub_sample_len=cfg.sub_sample_len,
        gamma=cfg.gamma,
        alpha_init=cfg.alpha_init,
        loss_function=cfg.loss_function,
    )
    nets = redq.Nets(num_cells=cfg.num_cells)
    params = redq.init(_util.run_keys(cfg.seed).init, observation_spec, action_spec, loss_cfg, nets)
    trainer = update(
        functools.partial(redq.loss, config=loss_cfg, nets=nets),
        _offpolicy.optimizer(cfg, optim.adam(cfg.learning_rate)),
        trainable=("actor", "qvalue", "log_alpha"),
        targets={"target_qvalue": "qvalue"},
        tau=cfg.tau,
    )

    train_step = _offpolicy.update_step(trainer.step, cfg)

    # REDQ's actor is SAC's: a TanhNormal on the action box.
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
        title=f"REDQ on {cfg.env} (seed {cfg.seed})",
        metric_keys=("loss_qvalue", "loss_actor", "alpha", "entropy"),
    )
    env.close()
    print(_offpolicy.summary_line(result))
    return result


if __name__ == "__main__":
    main()
