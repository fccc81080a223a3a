"""TD3+BC from a fixed dataset, evaluated online, in one readable file.

    python examples/make_dataset.py --kind medium --out runs/datasets/pendulum-medium
    python examples/td3_bc.py --dataset runs/datasets/pendulum-medium --total-steps 50000 --out runs/td3_bc

The algorithm is ``funcrl.td3_bc.loss`` (TorchRL's ``TD3BCLoss``: TD3's critics, an actor
regularised towards the data's actions) trained by ``funcrl.td3_bc.trainer`` (Adam, the actor and
Polyak targets every ``--policy-delay`` updates); one
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

from funcrl import buffers, datasets, envs, optim, td3_bc  # noqa: E402
from funcrl import random as funcrl_random  # noqa: E402
from funcrl.nn import MLP, TanhBounded  # noqa: E402
from funcrl.objectives.common import spec_size as _spec_size  # noqa: E402


def spec_size(spec) -> int:
    return _spec_size(spec, "td3_bc example", "observation_spec")


@dataclasses.dataclass
class Config(_offline.OfflineConfig):
    """TD3+BC: the loop's settings plus these (defaults: the paper's)."""

    out: str = dataclasses.field(default="runs/td3_bc", metadata={"help": "output directory"})
    learning_rate: float = dataclasses.field(default=3e-4, metadata={"help": "Adam step size"})
    gamma: float = dataclasses.field(default=0.99, metadata={"help": "discount"})
    tau: float = dataclasses.field(default=0.005, metadata={"help": "Polyak weight of the targets"})
    num_cells: tuple[int, ...] = dataclasses.field(
        default=(256, 256), metadata={"help": "hidden sizes of actor and critics"}
    )
    alpha: float = dataclasses.field(default=2.5, metadata={"help": "weight of the Q term"})
    policy_delay: int = dataclasses.field(
        default=2, metadata={"help": "critic updates per actor update"}
    )


def make_agent(cfg: Config, obs_stats: datasets.ObservationStats | None = None) -> _offline.Agent:
    """TD3+BC's params, optimizer state, compiled update and online evaluation. The default
    actor is tanh on [-1, 1]: for another box, a TanhBounded actor on the spec's bounds."""
    loss_cfg = td3_bc.Config(gamma=cfg.gamma, alpha=cfg.alpha, loss_function="l2")
    env = envs.GymEnv(cfg.env)
    spec = env.action_spec
    actor = TanhBounded(
        MLP(spec_size(env.observation_spec), spec.shape[-1], num_cells=cfg.num_cells),
        float(spec.low.min()),
        float(spec.high.max()),
    )
    nets = td3_bc.Nets(actor=actor, num_cells=cfg.num_cells)
    params = td3_bc.init(_util.run_keys(cfg.seed).init, env.observation_spec, spec, loss_cfg, nets)
    env.close()
    trainer = td3_bc.trainer(
        optim.adam(cfg.learning_rate),
        config=loss_cfg,
        nets=nets,
        tau=cfg.tau,
        policy_delay=cfg.policy_delay,
    )

    def step(params, opt_state, buffer, key):
        k_sample, k_loss = funcrl_random.split(key)
        batch = buffers.sample(buffer, cfg.batch_size, key=k_sample)
        return trainer.step(params, opt_state, batch, k_loss)

    def act(params, obs):
        return td3_bc.act(params, obs, nets=nets, mode="deterministic")

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
        title=f"TD3+BC on {os.path.basename(cfg.dataset)} (seed {cfg.seed})",
        metric_keys=("loss_qvalue", "loss_actor", "bc_loss", "lmbd"),
    )
    print(_offline.summary_line(result))
    return result


if __name__ == "__main__":
    main()
