"""The offline training loop shared by the offline example scripts (IQL, CQL, TD3+BC, DT).

An algorithm script builds an :class:`Agent` (params, optimizer state, one update function and an
evaluation) and hands it to :func:`train` with the dataset in a replay buffer; :func:`train` does
what every offline method shares:

* ``total_steps`` gradient updates on batches sampled from the fixed dataset (no environment
  interaction while learning: the buffer is never written);
* a tqdm progress bar with updates/s and the latest evaluation;
* an online evaluation every ``eval_every`` updates and at the end (``funcrl.envs.evaluate``);
* ``log.csv``, ``curve.png`` (evaluation return against gradient updates) and ``checkpoint.pt`` in
  ``out`` (``examples/_util.py``); ``--resume`` restarts from the checkpoint with the params,
  optimizer state, counters and RNG state; an ``out`` holding an earlier run is refused unless
  ``--resume`` or ``--overwrite`` says what to do with it.

Datasets are Minari directories (``funcrl.datasets.write_minari``; build them locally with
``examples/make_dataset.py``): nothing here touches the network.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Callable
from typing import Any, NamedTuple

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _offpolicy  # noqa: E402
import _util  # noqa: E402

from funcrl import checkpoint, datasets, envs  # noqa: E402
from funcrl import random as funcrl_random  # noqa: E402

__all__ = [
    "Agent",
    "OfflineConfig",
    "train",
    "load_dataset",
    "normalize",
    "evaluate",
    "summary_line",
]


@dataclasses.dataclass
class OfflineConfig:
    """The loop's settings; algorithm configs subclass it and add their hyperparameters."""

    dataset: str = dataclasses.field(
        default="runs/datasets/pendulum-medium",
        metadata={"help": "Minari dataset directory (examples/make_dataset.py builds one)"},
    )
    env: str = dataclasses.field(
        default="Pendulum-v1", metadata={"help": "gymnasium env id of the online evaluation"}
    )
    total_steps: int = dataclasses.field(default=50_000, metadata={"help": "gradient updates"})
    seed: int = dataclasses.field(default=0, metadata={"help": "seed of params and sampling"})
    batch_size: int = dataclasses.field(default=256, metadata={"help": "transitions per update"})
    eval_every: int = dataclasses.field(
        default=5_000, metadata={"help": "updates between online evaluations (0: end only)"}
    )
    eval_episodes: int = dataclasses.field(default=10, metadata={"help": "episodes per evaluation"})
    checkpoint_every: int = dataclasses.field(
        default=10_000, metadata={"help": "updates between checkpoints (the last always saves)"}
    )
    threads: int = dataclasses.field(default=1, metadata={"help": "torch intra-op threads"})
    compile: bool = dataclasses.field(
        default=True, metadata={"help": "torch.compile(fullgraph=True) the update step"}
    )
    jit: bool = dataclasses.field(
        default=False, metadata={"help": "compile the update step with funcrl.jit instead"}
    )
    out: str = dataclasses.field(default="runs/offline", metadata={"help": "output directory"})
    resume: bool = dataclasses.field(
        default=False, metadata={"help": "continue from <out>/checkpoint.pt"}
    )
    overwrite: bool = dataclasses.field(
        default=False, metadata={"help": "replace the checkpoint and log of an earlier run"}
    )
    progress: bool = dataclasses.field(default=True, metadata={"help": "show a progress bar"})
    normalize_obs: bool = dataclasses.field(
        default=True,
        metadata={
            "help": "train on observations standardised by the dataset's mean and std, and "
            "standardise the policy's input alike (TD3+BC's and IQL's state normalisation)"
        },
    )


class Agent(NamedTuple):
    """What an algorithm script gives :func:`train`.

    Attributes:
        params, opt_state: the params pytree and the trainer's state.
        update: ``(params, opt_state, buffer, key) -> (params, opt_state, metrics)``: samples a batch
            from the dataset's buffer and takes one training step (compiled if wanted).
        evaluate: ``params -> returns [episodes]``: the online evaluation.
        obs_stats: the dataset's :class:`funcrl.datasets.ObservationStats` the policy's input is
            standardised by (``None``: raw observations); saved in the checkpoint beside the
            params, since the policy is useless without them.
    """

    params: Any
    opt_state: Any
    update: Callable[..., tuple[Any, Any, dict[str, torch.Tensor]]]
    evaluate: Callable[[Any], torch.Tensor]
    obs_stats: datasets.ObservationStats | None = None


def load_dataset(cfg: OfflineConfig):
    """The dataset at ``cfg.dataset`` as a Record of transitions (a clear error if missing)."""
    if not os.path.isdir(cfg.dataset):
        raise FileNotFoundError(
            f"--dataset {cfg.dataset}: no such directory; build one with "
            "`python examples/make_dataset.py --kind medium --out <dir>`"
        )
    return datasets.read_minari(cfg.dataset)


def normalize(cfg: OfflineConfig, data) -> tuple[Any, datasets.ObservationStats | None]:
    """``(data, stats)``: with ``--normalize-obs`` the dataset with standardised observations and
    the statistics that did it, else ``(data, None)``."""
    if not cfg.normalize_obs:
        return data, None
    stats = datasets.observation_stats(data)
    return datasets.normalize_observations(data, stats), stats


def evaluate(
    cfg: OfflineConfig,
    act: Callable[[Any, torch.Tensor], torch.Tensor],
    params: Any,
    obs_stats: datasets.ObservationStats | None = None,
):
    """Deterministic returns of ``act`` over ``cfg.eval_episodes`` episodes (fixed seeds); the
    environment's observations go through ``obs_stats`` first when given."""
    seed = 1_000_000 + 1_000 * cfg.seed
    norm = (lambda o: o) if obs_stats is None else obs_stats
    return envs.evaluate(lambda o: act(params, norm(o)), cfg.env, cfg.eval_episodes, seed=seed)[
        "return"
    ]


LOG_FIELDS = ["step", "time", "sps", "eval_return", "eval_std"]
OUT_FILES = ("checkpoint.pt", "log.csv")


def train(
    cfg: OfflineConfig,
    agent: Agent,
    buffer: Any,
    *,
    title: str,
    metric_keys: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Runs ``cfg.total_steps`` updates on the dataset's ``buffer`` and returns a summary
    (``{"eval_return", "eval_returns", "png", "csv", "checkpoint", "train_time", "steps",
    "params"}``); ``train_time`` leaves evaluations and checkpoints out."""
    _util.prepare_out(cfg.out, cfg.resume, cfg.overwrite, OUT_FILES)
    ckpt_path = os.path.join(cfg.out, "checkpoint.pt")
    params, opt_state = agent.params, agent.opt_state
    # Every draw from one key (_util.run_keys): params (make_agent), and update u's batch and
    # loss draws from fold_in(keys.update, u); the checkpoint keeps the key.
    root = funcrl_random.key(cfg.seed)
    step, elapsed = 0, 0.0
    if cfg.resume:
        if not os.path.exists(ckpt_path):
            raise FileNotFoundError(f"--resume: no checkpoint at {ckpt_path}")
        _util.check_resume_config(ckpt_path, checkpoint.metadata(ckpt_path), cfg)
        like = {
            "params": params,
            "opt_state": opt_state,
            "step": 0,
            "elapsed": 0.0,
            "key": root,
            "obs_stats": agent.obs_stats,
        }
        ck = _util.load_checkpoint(ckpt_path, like=like).tree
        params, opt_state, step, elapsed = ck["params"], ck["opt_state"], ck["step"], ck["elapsed"]
        root = ck["key"]
        _util.truncate_log(os.path.join(cfg.out, "log.csv"), step)
    keys = _util.run_keys(root)
    log = _util.CSVLogger(cfg.out, LOG_FIELDS + list(metric_keys), resume=cfg.resume)
    timer = _util.Timer()
    t_start = elapsed
    bar = None
    if cfg.progress:
        from tqdm import tqdm

        bar = tqdm(total=cfg.total_steps, initial=step, unit="update", dynamic_ncols=True)
    next_eval = _offpolicy._next_multiple(step, cfg.eval_every)
    next_ckpt = _offpolicy._next_multiple(step, cfg.checkpoint_every)
    log_every = max(1, min(1_000, cfg.total_steps // 50))
    sps_t, sps_step, sps, last_eval = timer.elapsed(), step, 0.0, float("nan")
    metrics: dict[str, torch.Tensor] = {}

    def save(at: int, t: float) -> None:
        state = {
            "params": params,
            "opt_state": opt_state,
            "step": at,
            "elapsed": float(t),
            "key": root,
            "obs_stats": agent.obs_stats,
        }
        _util.save_checkpoint(ckpt_path, state, cfg)

    while step < cfg.total_steps:
        key = funcrl_random.fold_in(keys.update, step)
        params, opt_state, metrics = agent.update(params, opt_state, buffer, key)
        step += 1
        now = timer.elapsed()
        if step % log_every == 0:
            row = {"step": step, "time": t_start + now}
            row.update({k: metrics[k] for k in metric_keys if k in metrics})
            log.log(row)
        if bar is not None:
            bar.update(1)
            if now - sps_t > 1.0:
                sps, sps_t, sps_step = (step - sps_step) / (now - sps_t), now, step
                bar.set_postfix(ups=f"{sps:.0f}", eval=f"{last_eval:.1f}", refresh=False)
        if next_eval is not None and step >= next_eval and step < cfg.total_steps:
            with timer.paused():
                rets = agent.evaluate(params)
            last_eval = float(rets.mean())
            log.log(_offpolicy._eval_row(step, t_start + timer.elapsed(), sps, rets))
            next_eval = _offpolicy._next_multiple(step, cfg.eval_every)
        if next_ckpt is not None and step >= next_ckpt and step < cfg.total_steps:
            with timer.paused():
                save(step, t_start + timer.elapsed())
            next_ckpt = _offpolicy._next_multiple(step, cfg.checkpoint_every)
    if bar is not None:
        bar.close()
    train_time = t_start + timer.elapsed()
    rets = agent.evaluate(params)
    log.log(_offpolicy._eval_row(step, train_time, sps, rets))
    log.close()
    save(step, train_time)
    png = _util.plot_curve(
        log.path, os.path.join(cfg.out, "curve.png"), title + " (x: gradient updates)"
    )
    result = {
        "eval_return": float(rets.mean()),
        "eval_returns": rets.tolist(),
        "png": png,
        "csv": log.path,
        "checkpoint": ckpt_path,
        "train_time": train_time,
        "steps": step,
        "config": dataclasses.asdict(cfg),
    }
    _util.write_json(os.path.join(cfg.out, "result.json"), result)
    return {**result, "params": params}


def summary_line(result: dict[str, Any]) -> str:
    """The final message: the online evaluation and where the curve is."""
    return _offpolicy.summary_line(result).replace("steps", "gradient updates", 1)
