"""Behaviour cloning from a fixed dataset, evaluated online: the baseline every offline method must
beat, in one readable file.

    python examples/make_dataset.py --kind medium --out runs/datasets/pendulum-medium
    python examples/bc.py --dataset runs/datasets/pendulum-medium --total-steps 50000 --out runs/bc

The algorithm is ``funcrl.bc.loss`` (TorchRL's ``BCLoss``) trained by ``funcrl.bc.trainer`` (Adam):
``--loss-function l2`` (default; TD3+BC's BC baseline) regresses a deterministic
``tanh``-bounded actor onto the data's actions, ``--loss-function nll`` maximises a ``TanhNormal``
policy's log-likelihood of them. One update -- sample a batch of dataset transitions, loss,
gradients, Adam -- is one compiled function. The loop, evaluation, logging and checkpoints are
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

from funcrl import bc, buffers, datasets, envs, optim  # noqa: E402
from funcrl import random as funcrl_random  # noqa: E402
from funcrl.nn import MLP, TanhBounded  # noqa: E402
from funcrl.objectives.common import spec_size  # noqa: E402

LOSS_FUNCTIONS = ("l2", "nll")


@dataclasses.dataclass
class Config(_offline.OfflineConfig):
    """BC: the loop's settings plus these."""

    out: str = dataclasses.field(default="runs/bc", metadata={"help": "output directory"})
    learning_rate: float = dataclasses.field(default=3e-4, metadata={"help": "Adam step size"})
    num_cells: tuple[int, ...] = dataclasses.field(
        default=(256, 256), metadata={"help": "hidden sizes of the actor"}
    )
    loss_function: str = dataclasses.field(
        default="l2",
        metadata={
            "help": f"one of {LOSS_FUNCTIONS}: MSE of a deterministic actor or TanhNormal NLL"
        },
    )


def make_agent(cfg: Config, obs_stats: datasets.ObservationStats | None = None) -> _offline.Agent:
    """BC's params, optimizer state, compiled update and online evaluation."""
    if cfg.loss_function not in LOSS_FUNCTIONS:
        raise ValueError(
            f"bc example: --loss-function must be one of {LOSS_FUNCTIONS}, got {cfg.loss_function!r}"
        )
    env = envs.GymEnv(cfg.env)
    spec = env.action_spec
    if cfg.loss_function == "nll":
        loss_cfg, nets = bc.Config(), bc.Nets(num_cells=cfg.num_cells)
    else:
        obs_dim = spec_size(env.observation_spec, "bc example", "observation_spec")
        actor = TanhBounded(
            MLP(obs_dim, spec.shape[-1], num_cells=cfg.num_cells),
            float(spec.low.min()),
            float(spec.high.max()),
        )
        loss_cfg, nets = bc.Config(loss_function="l2"), bc.Nets(actor=actor)
    params = bc.init(_util.run_keys(cfg.seed).init, env.observation_spec, spec, loss_cfg, nets)
    env.close()
    trainer = bc.trainer(optim.adam(cfg.learning_rate), config=loss_cfg, nets=nets)

    def step(params, opt_state, buffer, key):
        k_sample, k_loss = funcrl_random.split(key)
        batch = buffers.sample(buffer, cfg.batch_size, key=k_sample)
        return trainer.step(params, opt_state, batch, k_loss)

    def act(params, obs):
        return bc.act(params, obs, config=loss_cfg, nets=nets, mode="deterministic")

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
        title=f"BC ({cfg.loss_function}) on {os.path.basename(cfg.dataset)} (seed {cfg.seed})",
        metric_keys=("loss_bc",),
    )
    print(_offline.summary_line(result))
    return result


if __name__ == "__main__":
    main()
