"""Discrete IQL or discrete CQL from a fixed dataset of a discrete task, evaluated online.

    python examples/make_dataset.py --env CartPole-v1 --kind medium --out runs/datasets/cartpole-medium
    python examples/discrete_offline.py --algo discrete_iql --dataset runs/datasets/cartpole-medium
    python examples/discrete_offline.py --algo discrete_cql --dataset runs/datasets/cartpole-medium

The algorithms are ``funcrl.discrete_iql.loss`` (TorchRL's ``DiscreteIQLLoss``: expectile value,
TD critics, advantage-weighted categorical actor) and ``funcrl.discrete_cql.loss`` (TorchRL's
``DiscreteCQLLoss``: a DQN regression plus the ``log-sum-exp`` conservative penalty), each trained
by its ``trainer`` (Adam, Polyak targets); one update -- sample a batch of dataset transitions,
losses, gradients, Adam, targets -- is one compiled function. The evaluation acts greedily (the
policy's mode for IQL, ``argmax Q`` for CQL). The loop, evaluation, logging and checkpoints are
``examples/_offline.py``.

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

from funcrl import buffers, datasets, discrete_cql, discrete_iql, envs, optim  # noqa: E402
from funcrl import random as funcrl_random  # noqa: E402

ALGOS = ("discrete_iql", "discrete_cql")


@dataclasses.dataclass
class Config(_offline.OfflineConfig):
    """The loop's settings plus these."""

    algo: str = dataclasses.field(default="discrete_iql", metadata={"help": f"one of {ALGOS}"})
    dataset: str = dataclasses.field(
        default="runs/datasets/cartpole-medium",
        metadata={"help": "Minari dataset directory (examples/make_dataset.py builds one)"},
    )
    env: str = dataclasses.field(
        default="CartPole-v1", metadata={"help": "gymnasium env id of the online evaluation"}
    )
    total_steps: int = dataclasses.field(default=20_000, metadata={"help": "gradient updates"})
    eval_every: int = dataclasses.field(
        default=2_000, metadata={"help": "updates between online evaluations (0: end only)"}
    )
    out: str = dataclasses.field(default="runs/discrete_offline", metadata={"help": "output dir"})
    learning_rate: float = dataclasses.field(default=3e-4, metadata={"help": "Adam step size"})
    gamma: float = dataclasses.field(default=0.99, metadata={"help": "discount"})
    tau: float = dataclasses.field(default=0.005, metadata={"help": "Polyak weight of the targets"})
    num_cells: tuple[int, ...] = dataclasses.field(
        default=(256, 256), metadata={"help": "hidden sizes of every net"}
    )
    expectile: float = dataclasses.field(default=0.7, metadata={"help": "IQL: expectile of V"})
    temperature: float = dataclasses.field(
        default=3.0, metadata={"help": "IQL: inverse temperature beta of the advantage weights"}
    )


def make_agent(cfg: Config, obs_stats: datasets.ObservationStats | None = None) -> _offline.Agent:
    """The algorithm's params, optimizer state, compiled update and online evaluation."""
    if cfg.algo not in ALGOS:
        raise ValueError(f"discrete_offline: --algo must be one of {ALGOS}, got {cfg.algo!r}")
    env = envs.GymEnv(cfg.env)
    obs_spec, act_spec = env.observation_spec, env.action_spec
    env.close()
    init_key = _util.run_keys(cfg.seed).init
    adam = optim.adam(cfg.learning_rate)
    # funcrl.envs and the datasets store Discrete actions as indices.
    if cfg.algo == "discrete_iql":
        module = discrete_iql
        loss_cfg = discrete_iql.Config(
            action_space="categorical",
            gamma=cfg.gamma,
            expectile=cfg.expectile,
            temperature=cfg.temperature,
            loss_function="l2",
        )
        nets = discrete_iql.Nets(num_cells=cfg.num_cells)
    else:
        module = discrete_cql
        loss_cfg = discrete_cql.Config(action_space="categorical", gamma=cfg.gamma)
        nets = discrete_cql.Nets(num_cells=cfg.num_cells)
    params = module.init(init_key, obs_spec, act_spec, loss_cfg, nets)
    trainer = module.trainer(adam, config=loss_cfg, nets=nets, tau=cfg.tau)

    def step(params, opt_state, buffer, key):
        k_sample, k_loss = funcrl_random.split(key)
        batch = buffers.sample(buffer, cfg.batch_size, key=k_sample)
        return trainer.step(params, opt_state, batch, k_loss)

    def act(params, obs):
        return module.act(params, obs, config=loss_cfg, nets=nets, mode="deterministic")

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
    keys = ("loss_qvalue", "loss_value", "loss_actor")
    result = _offline.train(
        cfg,
        agent,
        datasets.to_buffer(data),
        title=f"{cfg.algo} on {os.path.basename(cfg.dataset)} (seed {cfg.seed})",
        metric_keys=keys if cfg.algo == "discrete_iql" else ("loss_qvalue", "loss_cql"),
    )
    print(_offline.summary_line(result))
    return result


if __name__ == "__main__":
    main()
