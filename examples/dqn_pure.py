"""DQN on a pure (torch-native) environment, many seeds at once: PureJaxRL's DQN on PyTorch.

    python examples/dqn_pure.py --env CartPole-v1 --seeds 16 --out runs/dqn_pure_cartpole

The environment is :mod:`funcrl.envs.pure`, the replay buffer part of the state
(:func:`funcrl.pure_dqn.make_train`): one iteration (``--steps-per-iteration`` steps of
``--num-envs`` environments, a buffer add and a gradient step each) is one pure function;
``--seeds N`` vmaps it over N seeds and ``torch.compile`` makes it one graph. The defaults are
PureJaxRL's CartPole DQN settings.

Writes ``<out>/curve.png``, ``<out>/returns.csv`` and ``<out>/result.json`` as
``examples/ppo_pure.py`` does; prints each seed's final return.

Run as a script, it re-executes itself once with glibc's per-thread allocation cache enlarged
(``_util.MALLOC_TUNABLES``: a one-seed PPO iteration 6.0 -> 5.0 ms);
``FUNCRL_NO_RELAUNCH=1`` opts out.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from typing import Any

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _util  # noqa: E402
from ppo_pure import OUT_FILES, report, write_results  # noqa: E402

import funcrl  # noqa: E402
from funcrl.envs import pure  # noqa: E402
from funcrl.pure_dqn import DQNTrainConfig, make_train  # noqa: E402


@dataclasses.dataclass
class Config:
    """DQN on a pure env, ``--seeds`` at once, PureJaxRL's settings."""

    env: str = dataclasses.field(default="CartPole-v1", metadata={"help": "a funcrl.envs.pure id"})
    seeds: int = dataclasses.field(default=16, metadata={"help": "seeds trained at once (vmap)"})
    seed: int = dataclasses.field(default=0, metadata={"help": "the key the seeds split from"})
    total_steps: int = dataclasses.field(default=500_000, metadata={"help": "env steps per seed"})
    num_envs: int = dataclasses.field(default=10, metadata={"help": "environments per seed"})
    buffer_size: int = dataclasses.field(default=10_000, metadata={"help": "replay capacity"})
    batch_size: int = dataclasses.field(default=128, metadata={"help": "sampled batch"})
    learning_starts: int = dataclasses.field(
        default=10_000, metadata={"help": "env steps before the first update"}
    )
    target_update_interval: int = dataclasses.field(
        default=500, metadata={"help": "env steps between target copies"}
    )
    epsilon_anneal_time: int = dataclasses.field(
        default=250_000, metadata={"help": "env steps over which epsilon falls to 0.05"}
    )
    learning_rate: float = dataclasses.field(default=2.5e-4, metadata={"help": "Adam step size"})
    num_cells: tuple[int, ...] = dataclasses.field(
        default=(120, 84), metadata={"help": "hidden sizes of the Q-network (ReLU)"}
    )
    steps_per_iteration: int = dataclasses.field(
        default=50, metadata={"help": "environment steps per compiled iteration"}
    )
    final_iterations: int = dataclasses.field(
        default=10, metadata={"help": "iterations averaged into a seed's final return"}
    )
    compile: bool = dataclasses.field(
        default=True, metadata={"help": "torch.compile the vmapped iteration (fullgraph)"}
    )
    out: str = dataclasses.field(default="runs/dqn_pure", metadata={"help": "output directory"})
    overwrite: bool = dataclasses.field(default=False, metadata={"help": "replace an earlier run"})
    progress: bool = dataclasses.field(default=True, metadata={"help": "progress bar"})
    threads: int = dataclasses.field(default=1, metadata={"help": "torch CPU threads"})
    device: str = dataclasses.field(
        default="auto",
        metadata={"help": "auto (CUDA when available, else CPU), cpu or cuda[:i]: where it trains"},
    )


def train_config(cfg: Config) -> DQNTrainConfig:
    """The library config from the script's flags (its errors name the field)."""
    if cfg.env not in pure.ENVS:
        raise ValueError(f"dqn_pure.py: --env must be one of {sorted(pure.ENVS)}, got {cfg.env!r}")
    return DQNTrainConfig(
        total_timesteps=cfg.total_steps,
        num_envs=cfg.num_envs,
        buffer_size=cfg.buffer_size,
        batch_size=cfg.batch_size,
        learning_starts=cfg.learning_starts,
        target_update_interval=cfg.target_update_interval,
        epsilon_anneal_time=cfg.epsilon_anneal_time,
        lr=cfg.learning_rate,
        hidden=cfg.num_cells,
        steps_per_iteration=cfg.steps_per_iteration,
    )


def train(cfg: Config) -> dict[str, Any]:
    """Trains ``cfg.seeds`` seeds at once; returns the summary written to ``result.json``."""
    tcfg = train_config(cfg)
    _util.prepare_out(cfg.out, None, cfg.overwrite, OUT_FILES)
    torch.set_num_threads(cfg.threads)
    run = make_train(tcfg, pure.make(cfg.env))
    dev = _util.resolve_device(cfg.device)
    keys = funcrl.random.split(funcrl.random.key(cfg.seed, device=dev), cfg.seeds)
    out = run(keys, compile=cfg.compile, progress=cfg.progress)
    return write_results(cfg, out, tcfg.timesteps_per_iteration, "DQN")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    cfg = _util.parse_config(Config, argv)
    result = train(cfg)
    report(result, cfg, "DQN")
    return result


if __name__ == "__main__":
    _util.relaunch_with_malloc_tunables()
    main()
