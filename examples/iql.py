"""Implicit Q-Learning from a fixed dataset, evaluated online, in one readable file.

    python examples/make_dataset.py --kind medium --out runs/datasets/pendulum-medium
    python examples/iql.py --dataset runs/datasets/pendulum-medium --total-steps 50000 --out runs/iql

The algorithm is ``funcrl.iql.loss`` (TorchRL's ``IQLLoss``: expectile value, TD critics,
advantage-weighted actor) trained by ``funcrl.iql.trainer`` (Adam, Polyak target critics); one
update -- sample a batch of dataset transitions, losses, gradients, Adam, targets -- is one
compiled function. The loop, evaluation, logging and checkpoints are ``examples/_offline.py``.

Writes ``<out>/log.csv``, ``<out>/curve.png`` and ``<out>/checkpoint.pt`` and prints the final
deterministic evaluation.
"""

from __future__ import annotations

import dataclasses
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _offline  # noqa: E402
import _offpolicy  # noqa: E402
import _util  # noqa: E402

from funcrl import buffers, datasets, envs, iql, optim  # noqa: E402
from funcrl import random as funcrl_random  # noqa: E402


@dataclasses.dataclass
class Config(_offline.OfflineConfig):
    """IQL: the loop's settings plus these (defaults: the paper's locomotion settings)."""

    out: str = dataclasses.field(default="runs/iql", metadata={"help": "output directory"})
    learning_rate: float = dataclasses.field(default=3e-4, metadata={"help": "Adam step size"})
    gamma: float = dataclasses.field(default=0.99, metadata={"help": "discount"})
    tau: float = dataclasses.field(default=0.005, metadata={"help": "Polyak weight of the targets"})
    num_cells: tuple[int, ...] = dataclasses.field(
        default=(256, 256), metadata={"help": "hidden sizes of actor, critics and value"}
    )
    scale_lb: float = dataclasses.field(
        default=0.1,
        metadata={"help": "lower bound of the policy's scale (TorchRL's offline examples' 0.1)"},
    )
    expectile: float = dataclasses.field(default=0.7, metadata={"help": "expectile of V"})
    temperature: float = dataclasses.field(
        default=3.0, metadata={"help": "inverse temperature beta of the advantage weights"}
    )
    actor_cosine: bool = dataclasses.field(
        default=True,
        metadata={
            "help": "decay the actor's step size to 0 by a cosine over --total-steps (the "
            "paper's); --resume with a new --total-steps stretches the cosine to it"
        },
    )


def make_agent(cfg: Config, obs_stats: datasets.ObservationStats | None = None) -> _offline.Agent:
    """IQL's params, optimizer state, compiled update and online evaluation."""
    loss_cfg = iql.Config(
        gamma=cfg.gamma, expectile=cfg.expectile, temperature=cfg.temperature, loss_function="l2"
    )
    nets = iql.Nets(num_cells=cfg.num_cells, scale_lb=cfg.scale_lb)
    env = envs.GymEnv(cfg.env)
    params = iql.init(
        _util.run_keys(cfg.seed).init, env.observation_spec, env.action_spec, loss_cfg, nets
    )
    env.close()
    actor_lr = (
        optim.cosine_decay_schedule(cfg.learning_rate, cfg.total_steps)
        if cfg.actor_cosine
        else cfg.learning_rate
    )
    optimizer = {
        "actor": optim.adam(actor_lr),
        "qvalue": optim.adam(cfg.learning_rate),
        "value": optim.adam(cfg.learning_rate),
    }
    trainer = iql.trainer(optimizer, config=loss_cfg, nets=nets, tau=cfg.tau)

    def step(params, opt_state, buffer, key):
        k_sample, k_loss = funcrl_random.split(key)
        batch = buffers.sample(buffer, cfg.batch_size, key=k_sample)
        return trainer.step(params, opt_state, batch, k_loss)

    def act(params, obs):
        return iql.act(params, obs, nets=nets, mode="deterministic")

    return _offline.Agent(
        params,
        trainer.init(params),
        _offpolicy.compile_step(step, cfg),
        lambda p: _offline.evaluate(cfg, act, p, obs_stats),
        obs_stats,
    )


def main(argv: list[str] | None = None) -> dict:
    cfg = _util.parse_config(Config, argv)
    _offpolicy.set_threads(cfg.threads)
    data, obs_stats = _offline.normalize(cfg, _offline.load_dataset(cfg))
    agent = make_agent(cfg, obs_stats)
    result = _offline.train(
        cfg,
        agent,
        datasets.to_buffer(data),
        title=f"IQL on {os.path.basename(cfg.dataset)} (seed {cfg.seed})",
        metric_keys=("loss_qvalue", "loss_value", "loss_actor"),
    )
    print(_offline.summary_line(result))
    return result


if __name__ == "__main__":
    main()
