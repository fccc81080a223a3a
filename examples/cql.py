"""Conservative Q-Learning from a fixed dataset, evaluated online, in one readable file.

    python examples/make_dataset.py --kind medium --out runs/datasets/pendulum-medium
    python examples/cql.py --dataset runs/datasets/pendulum-medium --total-steps 50000 --out runs/cql

The algorithm is ``funcrl.cql.loss`` (TorchRL's ``CQLLoss``: SAC with a conservative penalty
on the critics) trained by ``funcrl.cql.trainer`` (Adam, Polyak target critics); one
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

import funcrl  # noqa: E402
from funcrl import buffers, cql, datasets, envs, optim  # noqa: E402


@dataclasses.dataclass
class Config(_offline.OfflineConfig):
    """CQL: the loop's settings plus these (defaults: TorchRL's offline CQL example's, with the
    paper's Lagrangian on: without it the gap grows over training and the policy degrades on the
    Pendulum datasets, docs/results.md)."""

    out: str = dataclasses.field(default="runs/cql", metadata={"help": "output directory"})
    learning_rate: float = dataclasses.field(default=3e-4, metadata={"help": "Adam step size"})
    gamma: float = dataclasses.field(default=0.99, metadata={"help": "discount"})
    tau: float = dataclasses.field(default=0.005, metadata={"help": "Polyak weight of the targets"})
    num_cells: tuple[int, ...] = dataclasses.field(
        default=(256, 256), metadata={"help": "hidden sizes of actor and critics"}
    )
    scale_lb: float = dataclasses.field(
        default=0.1,
        metadata={"help": "lower bound of the policy's scale (TorchRL's offline examples' 0.1)"},
    )
    min_q_weight: float = dataclasses.field(
        default=5.0, metadata={"help": "weight of the conservative penalty"}
    )
    num_random: int = dataclasses.field(default=10, metadata={"help": "actions drawn per state"})
    with_lagrange: bool = dataclasses.field(
        default=True,
        metadata={
            "help": "the paper's Lagrangian: tune the penalty's weight alpha' so that each "
            "critic's gap stays at --lagrange-thresh (off: a fixed weight --min-q-weight)"
        },
    )
    lagrange_thresh: float = dataclasses.field(
        default=10.0, metadata={"help": "each critic's target gap under the Lagrangian"}
    )


def make_agent(cfg: Config, obs_stats: datasets.ObservationStats | None = None) -> _offline.Agent:
    """CQL's params, optimizer state, compiled update (keyed draws) and online evaluation."""
    loss_cfg = cql.Config(
        gamma=cfg.gamma,
        loss_function="l2",
        min_q_weight=cfg.min_q_weight,
        num_random=cfg.num_random,
        with_lagrange=cfg.with_lagrange,
        lagrange_thresh=cfg.lagrange_thresh,
    )
    nets = cql.Nets(num_cells=cfg.num_cells, scale_lb=cfg.scale_lb)
    env = envs.GymEnv(cfg.env)
    params = cql.init(
        _util.run_keys(cfg.seed).init, env.observation_spec, env.action_spec, loss_cfg, nets
    )
    env.close()
    trainer = cql.trainer(optim.adam(cfg.learning_rate), config=loss_cfg, nets=nets, tau=cfg.tau)

    def step(params, opt_state, buffer, key):
        k_sample, k_loss = funcrl.random.split(key)
        batch = buffers.sample(buffer, cfg.batch_size, key=k_sample)
        return trainer.step(params, opt_state, batch, k_loss)

    def act(params, obs):
        return cql.act(params, obs, nets=nets, mode="deterministic")

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
        title=f"CQL on {os.path.basename(cfg.dataset)} (seed {cfg.seed})",
        metric_keys=("loss_qvalue", "loss_cql", "loss_actor", "alpha"),
    )
    print(_offline.summary_line(result))
    return result


if __name__ == "__main__":
    main()
