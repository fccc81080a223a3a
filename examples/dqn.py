"""Deep Q-Network (DQN) on a gymnasium task with discrete actions, in one readable file.

    python examples/dqn.py --env CartPole-v1 --total-steps 50000 --out runs/dqn
    python examples/dqn.py --double-dqn --out runs/ddqn

The algorithm is ``funcrl.dqn.loss`` (TorchRL's ``DQNLoss``: the Bellman residual of the taken
action against ``r + gamma max_a' Q_target(s', a')``, or Double DQN's target) trained by
``funcrl.dqn.trainer`` (Adam; the target network is a hard copy every ``target_update_period``
environment steps, TorchRL's ``HardUpdate``). One update step is a single pure function compiled
with ``torch.compile(fullgraph=True)``. Exploration is epsilon-greedy
(``funcrl.modules.exploration.EGreedy``) with epsilon annealed linearly from ``eps_init`` to
``eps_end`` over ``exploration_fraction`` of the run. The collection loop, evaluation, logging and
checkpoints live in ``examples/_offpolicy.py``.

Writes ``<out>/log.csv``, ``<out>/curve.png`` and ``<out>/checkpoint.pt``, and prints the final
deterministic evaluation (the mean over ``--eval-episodes`` episodes of the greedy policy).
"""

from __future__ import annotations

import dataclasses
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _offpolicy  # noqa: E402
import _util  # noqa: E402

from funcrl import dqn, optim  # noqa: E402
from funcrl.modules.exploration import EGreedy  # noqa: E402
from funcrl.record import Record  # noqa: E402


@dataclasses.dataclass
class Config(_offpolicy.OffPolicyConfig):
    """DQN: the loop's settings (env, steps, buffer, evaluation, output) plus these.

    The defaults are RL Baselines3 Zoo's CartPole settings (a larger step size, frequent hard
    target copies, a short exploration phase, Huber loss, clipped gradients), which solve CartPole
    in 50,000 steps.
    """

    env: str = dataclasses.field(default="CartPole-v1", metadata={"help": "gymnasium env id"})
    total_steps: int = dataclasses.field(
        default=50_000, metadata={"help": "environment steps (all envs together)"}
    )
    out: str = dataclasses.field(default="runs/dqn", metadata={"help": "output directory"})
    buffer_size: int = dataclasses.field(
        default=100_000, metadata={"help": "replay capacity (transitions)"}
    )
    batch_size: int = dataclasses.field(default=64, metadata={"help": "transitions per update"})
    learning_starts: int = dataclasses.field(
        default=1_000, metadata={"help": "random-action steps before the first update"}
    )
    updates_per_step: float = dataclasses.field(
        default=0.5, metadata={"help": "gradient updates per collected transition"}
    )
    eval_every: int = dataclasses.field(
        default=5_000, metadata={"help": "steps between deterministic evaluations (0: end only)"}
    )
    learning_rate: float = dataclasses.field(default=1e-3, metadata={"help": "Adam step size"})
    gamma: float = dataclasses.field(default=0.99, metadata={"help": "discount"})
    num_cells: tuple[int, ...] = dataclasses.field(
        default=(256, 256), metadata={"help": "hidden sizes of the Q-network"}
    )
    target_update_period: int = dataclasses.field(
        default=250, metadata={"help": "environment steps between hard target copies"}
    )
    eps_init: float = dataclasses.field(default=1.0, metadata={"help": "initial epsilon"})
    eps_end: float = dataclasses.field(default=0.04, metadata={"help": "final epsilon"})
    exploration_fraction: float = dataclasses.field(
        default=0.2, metadata={"help": "fraction of total_steps over which epsilon anneals"}
    )
    double_dqn: bool = dataclasses.field(default=False, metadata={"help": "Double DQN target"})
    loss_function: str = dataclasses.field(
        default="smooth_l1",
        metadata={"help": "TD regression: smooth_l1 (Huber), l2 (TorchRL's), l1"},
    )
    max_grad_norm: float = dataclasses.field(
        default=10.0, metadata={"help": "clip the gradient's global norm (0: no clipping)"}
    )


def make_agent(cfg: Config, observation_spec, action_spec) -> _offpolicy.Agent:
    """DQN's params, optimizer state, compiled update step and policies."""
    loss_cfg = dqn.Config(
        gamma=cfg.gamma,
        double_dqn=cfg.double_dqn,
        action_space="categorical",  # funcrl.envs stores Discrete actions as indices
        loss_function=cfg.loss_function,
    )
    nets = dqn.Nets(num_cells=cfg.num_cells)
    params = dqn.init(cfg.seed, observation_spec, action_spec, loss_cfg, nets)
    # The trainer counts gradient updates: convert the period from environment steps.
    period = max(1, round(cfg.target_update_period * cfg.updates_per_step))
    adam = optim.adam(cfg.learning_rate)
    if cfg.max_grad_norm > 0:
        adam = optim.chain(optim.clip_by_global_norm(cfg.max_grad_norm), adam)
    trainer = dqn.trainer(adam, config=loss_cfg, nets=nets, hard_target_period=period)

    train_step = _offpolicy.update_step(trainer.step, cfg)

    egreedy = EGreedy(
        action_spec,
        eps_init=cfg.eps_init,
        eps_end=cfg.eps_end,
        annealing_num_steps=max(1, int(cfg.exploration_fraction * cfg.total_steps)),
    )

    def act(params, observation):
        return dqn.act(params, observation, config=loss_cfg, nets=nets, mode="deterministic")

    def explore(params, observation, step):
        # The schedule's state is the number of environment steps taken so far.
        state = {"step": torch.tensor(step)}
        return egreedy(state, Record({"action": act(params, observation)}, batch_ndim=1))["action"]

    return _offpolicy.Agent(
        params, trainer.init(params), train_step, explore, act, explore_uses_step=True
    )


def main(argv: list[str] | None = None) -> dict:
    cfg = _util.parse_config(Config, argv)
    _offpolicy.set_threads(cfg.threads)
    env = _offpolicy.make_env(cfg)
    agent = make_agent(cfg, env.observation_spec, env.action_spec)
    result = _offpolicy.train(
        cfg,
        agent,
        env,
        title=f"DQN on {cfg.env} (seed {cfg.seed})",
        metric_keys=("loss",),
    )
    env.close()
    print(_offpolicy.summary_line(result))
    return result


if __name__ == "__main__":
    main()
