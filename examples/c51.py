"""Distributional DQN (C51) on a gymnasium task with discrete actions, in one readable file.

    python examples/c51.py --env CartPole-v1 --total-steps 100000 --out runs/c51

The algorithm is ``funcrl.c51.loss`` (TorchRL's ``DistributionalDQNLoss``: for each action a
categorical distribution over ``num_atoms`` returns on ``[v_min, v_max]``; the loss is the
cross-entropy to the projected Bellman target of the target network at the online network's best
next action) trained by ``funcrl.c51.trainer`` (Adam; the target network is a hard copy every ``target_update_period``
environment steps, TorchRL's ``HardUpdate``). One update step is a single pure function compiled
with ``torch.compile(fullgraph=True)``. Exploration is epsilon-greedy
(``funcrl.modules.exploration.EGreedy``) with epsilon annealed linearly from ``eps_init`` to
``eps_end`` over ``exploration_fraction`` of the run. The collection loop, evaluation, logging and
checkpoints live in ``examples/_offpolicy.py``.

Writes ``<out>/log.csv``, ``<out>/curve.png`` and ``<out>/checkpoint.pt``, and prints the final
deterministic evaluation (the mean over ``--eval-episodes`` episodes of the policy that is greedy
in the expected return ``sum_j z_j p_j(s, a)``).
"""

from __future__ import annotations

import dataclasses
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _offpolicy  # noqa: E402
import _util  # noqa: E402

from funcrl import c51, optim  # noqa: E402
from funcrl.modules.exploration import EGreedy  # noqa: E402
from funcrl.record import Record  # noqa: E402


@dataclasses.dataclass
class Config(_offpolicy.OffPolicyConfig):
    """C51: the loop's settings (env, steps, buffer, evaluation, output) plus these.

    The defaults are CleanRL's CartPole settings (support, atoms, step size, target period) with
    a shorter schedule (an update every 2 steps, a short exploration phase) and a step size fading
    to 0, so CartPole is solved in 100,000 steps.
    """

    env: str = dataclasses.field(default="CartPole-v1", metadata={"help": "gymnasium env id"})
    total_steps: int = dataclasses.field(
        default=100_000, metadata={"help": "environment steps (all envs together)"}
    )
    out: str = dataclasses.field(default="runs/c51", metadata={"help": "output directory"})
    buffer_size: int = dataclasses.field(
        default=100_000, metadata={"help": "replay capacity (transitions)"}
    )
    batch_size: int = dataclasses.field(default=128, metadata={"help": "transitions per update"})
    learning_starts: int = dataclasses.field(
        default=1_000, metadata={"help": "random-action steps before the first update"}
    )
    updates_per_step: float = dataclasses.field(
        default=0.5, metadata={"help": "gradient updates per collected transition"}
    )
    eval_every: int = dataclasses.field(
        default=5_000, metadata={"help": "steps between deterministic evaluations (0: end only)"}
    )
    learning_rate: float = dataclasses.field(default=2.5e-4, metadata={"help": "Adam step size"})
    gamma: float = dataclasses.field(default=0.99, metadata={"help": "discount"})
    num_cells: tuple[int, ...] = dataclasses.field(
        default=(256, 256), metadata={"help": "hidden sizes of the Q-network"}
    )
    target_update_period: int = dataclasses.field(
        default=500, metadata={"help": "environment steps between hard target copies"}
    )
    eps_init: float = dataclasses.field(default=1.0, metadata={"help": "initial epsilon"})
    eps_end: float = dataclasses.field(default=0.04, metadata={"help": "final epsilon"})
    exploration_fraction: float = dataclasses.field(
        default=0.2, metadata={"help": "fraction of total_steps over which epsilon anneals"}
    )
    anneal_lr: bool = dataclasses.field(
        default=True,
        metadata={"help": "decay the step size linearly to 0 over the run (a stable final policy)"},
    )
    num_atoms: int = dataclasses.field(default=101, metadata={"help": "atoms of the support"})
    v_min: float = dataclasses.field(default=-100.0, metadata={"help": "lowest atom"})
    v_max: float = dataclasses.field(default=100.0, metadata={"help": "highest atom"})


def make_agent(cfg: Config, observation_spec, action_spec) -> _offpolicy.Agent:
    """C51's params, optimizer state, compiled update step and policies."""
    loss_cfg = c51.Config(
        gamma=cfg.gamma,
        v_min=cfg.v_min,
        v_max=cfg.v_max,
        num_atoms=cfg.num_atoms,
        action_space="categorical",  # funcrl.envs stores Discrete actions as indices
    )
    nets = c51.Nets(num_cells=cfg.num_cells)
    params = c51.init(cfg.seed, observation_spec, action_spec, loss_cfg, nets)
    # The trainer counts gradient updates: convert the period from environment steps.
    period = max(1, round(cfg.target_update_period * cfg.updates_per_step))
    learning_rate = cfg.learning_rate
    if cfg.anneal_lr:
        # Late updates can still unlearn a solved task; fading the step size freezes the policy.
        updates = max(1, int((cfg.total_steps - cfg.learning_starts) * cfg.updates_per_step))
        learning_rate = optim.linear_schedule(cfg.learning_rate, 0.0, updates)
    trainer = c51.trainer(
        optim.adam(learning_rate), config=loss_cfg, nets=nets, hard_target_period=period
    )

    train_step = _offpolicy.update_step(trainer.step, cfg)

    egreedy = EGreedy(
        action_spec,
        eps_init=cfg.eps_init,
        eps_end=cfg.eps_end,
        annealing_num_steps=max(1, int(cfg.exploration_fraction * cfg.total_steps)),
    )

    def act(params, observation):
        # Greedy in the expected return.
        return c51.act(params, observation, config=loss_cfg, nets=nets, mode="deterministic")

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
        title=f"C51 on {cfg.env} (seed {cfg.seed})",
        metric_keys=("loss",),
    )
    env.close()
    print(_offpolicy.summary_line(result))
    return result


if __name__ == "__main__":
    main()
