"""PPO on a pure (torch-native) environment, many seeds at once: PureJaxRL on PyTorch.

    python examples/ppo_pure.py --env CartPole-v1 --seeds 16 --out runs/ppo_pure_cartpole
    python examples/ppo_pure.py --env Acrobot-v1 --seeds 4 --out runs/ppo_pure_acrobot

The environment is :mod:`funcrl.envs.pure` (gymnasium's dynamics as torch functions), so one
training iteration (rollout, GAE, 4 epochs x 4 minibatches of PPO updates) is one pure function
(:func:`funcrl.pure_train.make_train`); ``--seeds N`` vmaps it over N seeds and
``torch.compile`` makes it one graph. The defaults are PureJaxRL's CartPole settings.

Writes ``<out>/curve.png`` (the seeds' median return and their min-max and 25-75% bands),
``<out>/returns.csv`` (per-iteration return of every seed) and ``<out>/result.json`` (each
seed's final return, timings); prints each seed's final return.

Run as a script, it re-executes itself once with glibc's per-thread allocation cache enlarged
(``_util.MALLOC_TUNABLES``: a one-seed PPO iteration 6.0 -> 5.0 ms);
``FUNCRL_NO_RELAUNCH=1`` opts out.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os
import sys
from typing import Any

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _util  # noqa: E402

import funcrl  # noqa: E402
from funcrl.envs import pure  # noqa: E402
from funcrl.pure_train import PPOTrainConfig, make_train  # noqa: E402


@dataclasses.dataclass
class Config:
    """PPO on a pure env, ``--seeds`` at once, PureJaxRL's settings."""

    env: str = dataclasses.field(default="CartPole-v1", metadata={"help": "a funcrl.envs.pure id"})
    seeds: int = dataclasses.field(default=16, metadata={"help": "seeds trained at once (vmap)"})
    seed: int = dataclasses.field(default=0, metadata={"help": "the key the seeds split from"})
    total_steps: int = dataclasses.field(default=500_000, metadata={"help": "env steps per seed"})
    num_envs: int = dataclasses.field(default=4, metadata={"help": "environments per seed"})
    num_steps: int = dataclasses.field(default=128, metadata={"help": "steps per env per rollout"})
    epochs: int = dataclasses.field(default=4, metadata={"help": "passes over each rollout"})
    num_minibatches: int = dataclasses.field(default=4, metadata={"help": "minibatches per epoch"})
    learning_rate: float = dataclasses.field(default=2.5e-4, metadata={"help": "Adam step size"})
    num_cells: tuple[int, ...] = dataclasses.field(
        default=(64, 64), metadata={"help": "hidden sizes of actor and critic (tanh)"}
    )
    final_iterations: int = dataclasses.field(
        default=10, metadata={"help": "iterations averaged into a seed's final return"}
    )
    compile: bool = dataclasses.field(
        default=True, metadata={"help": "torch.compile the vmapped iteration (fullgraph)"}
    )
    out: str = dataclasses.field(default="runs/ppo_pure", metadata={"help": "output directory"})
    overwrite: bool = dataclasses.field(default=False, metadata={"help": "replace an earlier run"})
    progress: bool = dataclasses.field(default=True, metadata={"help": "progress bar"})
    threads: int = dataclasses.field(default=1, metadata={"help": "torch CPU threads"})
    device: str = dataclasses.field(
        default="auto",
        metadata={"help": "auto (CUDA when available, else CPU), cpu or cuda[:i]: where it trains"},
    )


OUT_FILES = ("result.json", "returns.csv", "curve.png")


def train_config(cfg: Config) -> PPOTrainConfig:
    """The library config from the script's flags (its errors name the field)."""
    if cfg.env not in pure.ENVS:
        raise ValueError(f"ppo_pure.py: --env must be one of {sorted(pure.ENVS)}, got {cfg.env!r}")
    return PPOTrainConfig(
        total_timesteps=cfg.total_steps,
        num_envs=cfg.num_envs,
        num_steps=cfg.num_steps,
        update_epochs=cfg.epochs,
        num_minibatches=cfg.num_minibatches,
        lr=cfg.learning_rate,
        hidden=cfg.num_cells,
    )


def plot_seeds(steps: list[int], returns: torch.Tensor, path: str, title: str) -> None:
    """The seeds' median return ``[I]`` with their min-max and 25-75% bands, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    q = torch.quantile(returns.double(), torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0]).double(), dim=0)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.fill_between(steps, q[0], q[4], alpha=0.15, label="min-max over seeds")
    ax.fill_between(steps, q[1], q[3], alpha=0.3, label="25-75%")
    ax.plot(steps, q[2], "-", label=f"median of {returns.shape[0]} seeds")
    ax.set_xlabel("environment steps per seed")
    ax.set_ylabel("episode return")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    _util.save_figure(fig, path)


def _write_csv(path: str, steps: list[int], returns: torch.Tensor) -> None:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["step"] + [f"seed_{i}" for i in range(returns.shape[0])])
    for j, s in enumerate(steps):
        w.writerow([s] + [f"{v:.3f}" for v in returns[:, j].tolist()])
    funcrl.checkpoint.atomic_write(path, buf.getvalue().encode())


def train(cfg: Config) -> dict[str, Any]:
    """Trains ``cfg.seeds`` seeds at once; returns the summary written to ``result.json``."""
    tcfg = train_config(cfg)
    _util.prepare_out(cfg.out, None, cfg.overwrite, OUT_FILES)
    torch.set_num_threads(cfg.threads)
    run = make_train(tcfg, pure.make(cfg.env))
    dev = _util.resolve_device(cfg.device)
    keys = funcrl.random.split(funcrl.random.key(cfg.seed, device=dev), cfg.seeds)
    out = run(keys, compile=cfg.compile, progress=cfg.progress)
    return write_results(cfg, out, tcfg.batch_size, "PPO")


def write_results(cfg: Any, out: Any, per_iteration: int, algo: str) -> dict[str, Any]:
    """The curve, ``returns.csv`` and ``result.json`` of a pure run (``out`` from ``make_train``'s
    ``train``, ``per_iteration`` env steps per seed and iteration); returns the summary. Shared
    by ``ppo_pure.py`` and ``dqn_pure.py``."""
    returns = out.metrics["episode_return"]  # [S, I]
    steps = [(i + 1) * per_iteration for i in range(returns.shape[1])]
    final = returns[:, -cfg.final_iterations :].mean(1)
    png = os.path.join(cfg.out, "curve.png")
    plot_seeds(steps, returns, png, f"{algo} on pure {cfg.env}, {cfg.seeds} seeds (vmap)")
    _write_csv(os.path.join(cfg.out, "returns.csv"), steps, returns)
    # train_time covers the iterations after the first compiled call's.
    env_steps = cfg.seeds * per_iteration * max(returns.shape[1] - out.iterations_per_call, 0)
    result = {
        "env": cfg.env,
        "final_returns": final.tolist(),
        "median_final_return": float(final.median()),
        "compile_time": out.compile_time,
        "train_time": out.train_time,
        "env_steps_per_s": env_steps / out.train_time if out.train_time > 0 else None,
        "steps_per_seed": steps[-1],
        "png": png,
        "config": dataclasses.asdict(cfg),
    }
    _util.write_json(os.path.join(cfg.out, "result.json"), result)
    return result


def report(result: dict[str, Any], cfg: Any, algo: str) -> None:
    """Prints each seed's final return and the summary line."""
    for i, r in enumerate(result["final_returns"]):
        print(f"seed {i}: final return {r:.1f}")
    print(
        f"{algo} pure {cfg.env}, {cfg.seeds} seeds: median {result['median_final_return']:.1f}; "
        f"compile {result['compile_time']:.1f} s, train {result['train_time']:.1f} s"
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    cfg = _util.parse_config(Config, argv)
    result = train(cfg)
    report(result, cfg, "PPO")
    return result


if __name__ == "__main__":
    _util.relaunch_with_malloc_tunables()
    main()
