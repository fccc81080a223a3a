"""The off-policy training loop shared by the example scripts (SAC, TD3, DDPG, ...).

An algorithm script builds an :class:`Agent` (its params, optimizer state, one update function and
two policies) and hands it to :func:`train`, which does the plumbing every off-policy method
shares:

* a vector environment (``funcrl.envs.VecEnv``) and a replay buffer (``funcrl.buffers``, in-place
  ``add_``);
* ``learning_starts`` uniformly random warm-up steps, then the agent's exploration policy;
* ``updates_per_step`` gradient updates per collected transition once learning has started;
* a tqdm progress bar with steps/s and the recent training return;
* a deterministic evaluation every ``eval_every`` steps and at the end (``funcrl.envs.evaluate``);
* ``log.csv``, ``curve.png`` and ``checkpoint.pt`` in ``out`` (``examples/_util.py``); ``resume``
  restarts from the checkpoint with the params, optimizer state, buffer, step counters and RNG
  states (environments start new episodes on resume; log rows past the checkpoint are dropped;
  settings that shape the nets must match). The checkpoint is a ``funcrl.checkpoint`` file
  (safetensors, no pickle, written atomically); an ``out`` holding an earlier run is refused
  unless ``--resume`` or ``--overwrite`` says what to do with it.

The update function ``update(params, opt_state, buffer, key) -> (params, opt_state, metrics)``
samples its own batch, so the whole "sample + loss + gradients + optimizer + target update" step is
one function for ``torch.compile``.

Randomness: everything is seeded from one ``funcrl.random.key(seed)``, split by use
(``_util.run_keys``): the params' init, the environments and warm-up actions, exploration and the
updates. Update ``u`` gets ``fold_in(keys.update, u)`` (its batch and its loss's draws) and
environment step ``t``'s exploration ``fold_in(keys.explore, t)``, so the streams are functions of
the key and the counters; the checkpoint stores the key and the counters, so a resumed run draws
what the uninterrupted run would have drawn.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections import deque
from collections.abc import Callable
from typing import Any, NamedTuple

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _util  # noqa: E402

from funcrl import buffers, checkpoint, distributed, envs  # noqa: E402
from funcrl import random as frandom  # noqa: E402
from funcrl.jit import compile_step as compile_jit_step  # noqa: E402
from funcrl.jit import jit as funcrl_jit  # noqa: E402

__all__ = ["Agent", "OffPolicyConfig", "train", "set_threads", "make_env"]


@dataclasses.dataclass
class OffPolicyConfig:
    """The loop's settings; algorithm configs subclass it and add their hyperparameters."""

    env: str = dataclasses.field(default="Pendulum-v1", metadata={"help": "gymnasium env id"})
    total_steps: int = dataclasses.field(
        default=15_000, metadata={"help": "environment steps (all envs together)"}
    )
    seed: int = dataclasses.field(default=0, metadata={"help": "seed of params, RNG and envs"})
    num_envs: int = dataclasses.field(default=1, metadata={"help": "environments stepped together"})
    buffer_size: int = dataclasses.field(
        default=1_000_000, metadata={"help": "replay capacity (transitions)"}
    )
    batch_size: int = dataclasses.field(default=256, metadata={"help": "transitions per update"})
    learning_starts: int = dataclasses.field(
        default=1_000, metadata={"help": "random-action steps before the first update"}
    )
    updates_per_step: float = dataclasses.field(
        default=1.0, metadata={"help": "gradient updates per collected transition"}
    )
    eval_every: int = dataclasses.field(
        default=2_500, metadata={"help": "steps between deterministic evaluations (0: end only)"}
    )
    eval_episodes: int = dataclasses.field(default=10, metadata={"help": "episodes per evaluation"})
    checkpoint_every: int = dataclasses.field(
        default=5_000, metadata={"help": "steps between checkpoints (the last step always saves)"}
    )
    threads: int = dataclasses.field(
        default=1, metadata={"help": "torch intra-op threads (torch.set_num_threads)"}
    )
    compile: bool = dataclasses.field(
        default=True, metadata={"help": "torch.compile(fullgraph=True) the update step"}
    )
    jit: bool = dataclasses.field(
        default=False,
        metadata={
            "help": "compile the update step with funcrl.jit instead of torch.compile (traced "
            "once per input signature, called without dynamo's guards; a shorter cold start); "
            "overrides --no-compile"
        },
    )
    device: str = dataclasses.field(
        default="auto", metadata={"help": "auto (CUDA when available, else CPU), cpu or cuda[:i]"}
    )
    cudagraphs: bool = dataclasses.field(
        default=False,
        metadata={
            "help": "CUDA graphs for the update step: funcrl.jit(cudagraphs=True) with --jit, "
            'torch.compile(mode="reduce-overhead") with --compile (CUDA only)'
        },
    )
    distributed: bool = dataclasses.field(
        default=False,
        metadata={
            "help": "data parallel over the processes torchrun starts (gloo on CPU, NCCL on "
            "CUDA): gradients averaged in the step, one buffer and env seeds per rank, files "
            "from rank 0; --total-steps counts all ranks' steps"
        },
    )
    out: str = dataclasses.field(default="runs/example", metadata={"help": "output directory"})
    resume: bool = dataclasses.field(
        default=False, metadata={"help": "continue from <out>/checkpoint.pt"}
    )
    overwrite: bool = dataclasses.field(
        default=False,
        metadata={"help": "replace the checkpoint and log of an earlier run in <out>"},
    )
    progress: bool = dataclasses.field(default=True, metadata={"help": "show a progress bar"})


class Agent(NamedTuple):
    """What an algorithm script gives :func:`train`.

    Attributes:
        params: the params pytree (e.g. ``funcrl.sac.init``'s output).
        opt_state: the trainer's state (``Trainer.init(params)``).
        update: ``(params, opt_state, buffer, key) -> (params, opt_state, metrics)``: samples a
            batch and takes one training step (already compiled if wanted; :func:`update_step`).
        explore: ``(params, observation [n, o], key) -> action [n, a]``: the behaviour policy,
            drawing from ``key``.
        act: ``(params, observation [n, o]) -> action [n, a]``: the deterministic policy.
        explore_uses_step: call ``explore(params, observation, step, key)`` with the number of
            environment steps taken so far (an int), for annealed exploration such as DQN's
            epsilon-greedy; the step is restored on ``resume``, so the schedule continues.
    """

    params: Any
    opt_state: Any
    update: Callable[..., tuple[Any, Any, dict[str, torch.Tensor]]]
    explore: Callable[..., torch.Tensor]
    act: Callable[[Any, torch.Tensor], torch.Tensor]
    explore_uses_step: bool = False


def set_threads(n: int) -> None:
    """Sets torch's intra-op threads (call before building anything)."""
    torch.set_num_threads(max(1, int(n)))


def update_step(trainer_step: Callable, cfg: OffPolicyConfig) -> Callable:
    """``update(params, opt_state, buffer, key)``: sample ``cfg.batch_size`` transitions and take
    one ``trainer_step``, compiled as the config asks (:func:`compile_step`). Sampling lives inside
    the step so the whole update is one compiled graph; the key is an input, so a new one per step
    never recompiles.
    """

    def train_step(params, opt_state, buffer, key):
        k_sample, k_loss = frandom.split(key)
        batch = buffers.sample(buffer, cfg.batch_size, key=k_sample)
        return trainer_step(params, opt_state, batch, k_loss)

    return compile_step(train_step, cfg)


def compile_step(step: Callable, cfg: OffPolicyConfig) -> Callable:
    """The update step as the config asks: ``funcrl.jit`` (``--jit``), else
    ``torch.compile(fullgraph=True)`` (``--compile``, the default), else eager; ``--cudagraphs``
    replays it as a CUDA graph (``funcrl.jit(cudagraphs=True)`` / ``mode="reduce-overhead"``)."""
    graphs = getattr(cfg, "cudagraphs", False)
    if cfg.jit:
        return funcrl_jit(step, cudagraphs=graphs)
    if not cfg.compile:
        return step
    return compile_jit_step(step, cudagraphs=graphs)


def optimizer(cfg: OffPolicyConfig, opt: Any) -> Any:
    """``opt``, averaging the gradients over the ranks with ``--distributed``
    (``funcrl.distributed.data_parallel``); every algorithm script builds its optimizer with it."""
    return distributed.data_parallel(opt) if getattr(cfg, "distributed", False) else opt


def device(cfg: OffPolicyConfig) -> torch.device:
    """The run's device (``--device``); with ``--distributed`` on CUDA, GPU ``LOCAL_RANK``."""
    dev = _util.resolve_device(getattr(cfg, "device", "cpu"))
    if getattr(cfg, "distributed", False) and dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return dev


def make_env(cfg: OffPolicyConfig) -> envs.VecEnv:
    """The training vector env: ``num_envs`` copies of ``cfg.env``, tensors on the run's device."""
    return envs.VecEnv(cfg.env, cfg.num_envs, device=device(cfg))


def evaluate(cfg: OffPolicyConfig, agent_act: Callable, params: Any) -> torch.Tensor:
    """Deterministic returns over ``cfg.eval_episodes`` episodes (seeds disjoint from training)."""
    seed = 1_000_000 + 1_000 * cfg.seed
    res = envs.evaluate(
        lambda o: agent_act(params, o), cfg.env, cfg.eval_episodes, seed=seed, device=device(cfg)
    )
    return res["return"]


LOG_FIELDS = ["step", "time", "sps", "episode_return", "episode_length", "eval_return", "eval_std"]


def train(
    cfg: OffPolicyConfig,
    agent: Agent,
    env: envs.VecEnv,
    *,
    title: str,
    metric_keys: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Runs the off-policy loop and returns a summary.

    Args:
        cfg: the loop's settings.
        agent: params, optimizer state, update and policies.
        env: the training vector env (``make_env(cfg)``).
        title: the learning curve's title.
        metric_keys: entries of the update's metrics written to the CSV (e.g. ``"loss_qvalue"``).

    Returns:
        ``{"eval_return": mean, "eval_returns": list, "png": path, "csv": path, "checkpoint": path,
        "train_time": seconds, "steps": int, "params": final params}``. ``train_time`` and the
        CSV's ``time`` column count collection, updates and compilation; periodic evaluations and
        checkpoints are left out so the curve's time axis is the cost of learning alone.
    """
    dev = device(cfg)
    rank, world = 0, 1
    if getattr(cfg, "distributed", False):
        if cfg.resume:
            raise ValueError("--resume: not supported with --distributed (one buffer per rank)")
        rank, world = distributed.setup(device=dev)
    lead = rank == 0  # only rank 0 writes files, shows progress and evaluates during training
    if lead:
        _util.prepare_out(cfg.out, cfg.resume, cfg.overwrite, OUT_FILES)
    ckpt_path = os.path.join(cfg.out, "checkpoint.pt")
    # Same params on every rank (same key); the update's all-reduce keeps them equal.
    params, opt_state = _util.to_device((agent.params, agent.opt_state), dev)
    # Keys on the buffer's device (sampling checks it). Rank 0 draws a one-process run's streams;
    # rank r > 0 its own env seeds, sampling, exploration and loss draws from fold_in(root, r).
    root = frandom.key(cfg.seed, device=dev)
    keys = _util.run_keys(root if rank == 0 else frandom.fold_in(root, rank))
    # The random warm-up actions come from gymnasium-side code that takes a torch.Generator: one
    # seeded from the env key, saved in the checkpoint so a resumed run continues its stream.
    env_seed = _util.int_seed(keys.env)
    action_gen = torch.Generator().manual_seed(env_seed)
    obs = env.reset(seed=env_seed)
    example, _ = env.step(env.random_action(generator=action_gen))
    obs = env.reset(seed=env_seed)
    buf = buffers.init(cfg.buffer_size, example[0])  # on the env's device, like the example
    step, updates_done, elapsed = 0, 0.0, 0.0
    recent: deque[float] = deque(maxlen=10)
    if cfg.resume:
        if not os.path.exists(ckpt_path):
            raise FileNotFoundError(f"--resume: no checkpoint at {ckpt_path}")
        # The settings first (a clear "--num-cells 256 256 vs 64 64"), then the tensors' shapes.
        _util.check_resume_config(ckpt_path, checkpoint.metadata(ckpt_path), cfg)
        # Loaded on the CPU (the generator state must stay there), then the tensors moved.
        ck = _util.load_checkpoint(ckpt_path, like=checkpoint_template(params, opt_state)).tree
        params, opt_state = _util.to_device((ck["params"], ck["opt_state"]), dev)
        buf = load_buffer(_util.to_device(ck["buffer"], dev), buf)
        step, updates_done, elapsed = ck["step"], ck["updates_done"], ck["elapsed"]
        recent.extend(ck["recent"])
        root = ck["key"].to(dev)  # --resume is one process: rank 0's streams
        keys = _util.run_keys(root)
        env_seed = _util.int_seed(keys.env)
        action_gen.set_state(ck["action_rng"])
        # Rows a killed run logged after this checkpoint would repeat: drop them.
        _util.truncate_log(os.path.join(cfg.out, "log.csv"), step)
        # New episodes, seeded apart from the first ones (gymnasium's env RNG is not saved).
        obs = env.reset(seed=env_seed + 7919 * (step // max(cfg.num_envs, 1) + 1))
    fields = LOG_FIELDS + list(metric_keys)
    log = _util.CSVLogger(cfg.out, fields, resume=cfg.resume) if lead else _NoLog()
    timer = _util.Timer()
    t_start = elapsed
    bar = None
    if cfg.progress and lead:
        from tqdm import tqdm

        bar = tqdm(total=cfg.total_steps, initial=step, unit="step", dynamic_ncols=True)
    next_eval = _next_multiple(step, cfg.eval_every)
    next_ckpt = _next_multiple(step, cfg.checkpoint_every)
    metrics: dict[str, torch.Tensor] = {}
    sps_t, sps_step = timer.elapsed(), step
    sps = 0.0
    while step < cfg.total_steps:
        if step < cfg.learning_starts:
            action = env.random_action(generator=action_gen)
        else:
            key = frandom.fold_in(keys.explore, step)
            with torch.no_grad():
                if agent.explore_uses_step:
                    action = agent.explore(params, obs["observation"], step, key)
                else:
                    action = agent.explore(params, obs["observation"], key)
        transition, obs = env.step(action)
        buffers.add_(buf, transition)
        step += cfg.num_envs * world  # all ranks' steps: every rank counts the same
        if step >= cfg.learning_starts:
            # A fractional ratio accumulates: 0.5 updates per step is one update every 2 steps.
            # Per rank's own transitions, so every rank takes the same updates (the all-reduce).
            target = (step - cfg.learning_starts + cfg.num_envs * world) / world
            target *= cfg.updates_per_step
            while updates_done + 1 <= target:
                key = frandom.fold_in(keys.update, int(updates_done))
                params, opt_state, metrics = agent.update(params, opt_state, buf, key)
                updates_done += 1
        episodes = env.completed_episodes()
        now = timer.elapsed()
        for ret, length in zip(episodes["return"].tolist(), episodes["length"].tolist()):
            recent.append(ret)
            row = {"step": step, "time": t_start + now, "episode_return": ret}
            row["episode_length"] = length
            row.update({k: metrics[k] for k in metric_keys if k in metrics})
            log.log(row)
        if bar is not None:
            bar.update(cfg.num_envs * world)
            if now - sps_t > 1.0:
                sps = (step - sps_step) / (now - sps_t)
                sps_t, sps_step = now, step
                ret = sum(recent) / len(recent) if recent else float("nan")
                bar.set_postfix(sps=f"{sps:.0f}", ret=f"{ret:.1f}", refresh=False)
        if lead and next_eval is not None and step >= next_eval and step < cfg.total_steps:
            with timer.paused():
                rets = evaluate(cfg, agent.act, params)
            log.log(_eval_row(step, t_start + timer.elapsed(), sps, rets))
            next_eval = _next_multiple(step, cfg.eval_every)
        if lead and next_ckpt is not None and step >= next_ckpt and step < cfg.total_steps:
            with timer.paused():
                _save(
                    ckpt_path,
                    cfg,
                    params,
                    opt_state,
                    buf,
                    step,
                    updates_done,
                    t_start + timer.elapsed(),
                    recent,
                    action_gen,
                    root,
                )
            next_ckpt = _next_multiple(step, cfg.checkpoint_every)
    if bar is not None:
        bar.close()
    train_time = t_start + timer.elapsed()
    # Every rank evaluates the same params (same seeds): the same result, no broadcast needed.
    rets = evaluate(cfg, agent.act, params)
    result = {
        "eval_return": float(rets.mean()),
        "eval_returns": rets.tolist(),
        "png": os.path.join(cfg.out, "curve.png"),
        "csv": os.path.join(cfg.out, "log.csv"),
        "checkpoint": ckpt_path,
        "train_time": train_time,
        "steps": step,
        "updates": int(updates_done),
        "config": dataclasses.asdict(cfg),
        "rank": rank,
        "world_size": world,
    }
    if lead:
        log.log(_eval_row(step, train_time, sps, rets))
        log.close()
        _save(
            ckpt_path, cfg, params, opt_state, buf, step, updates_done, train_time, recent,
            action_gen, root,
        )  # fmt: skip
        result["png"] = _util.plot_curve(log.path, result["png"], title)
        # result.json: what bench/learning.py and the tests read back.
        _util.write_json(os.path.join(cfg.out, "result.json"), result)
    if world > 1:
        import torch.distributed as dist

        dist.destroy_process_group()
    return {**result, "params": params}


class _NoLog:
    """The log of a rank other than 0: rows are dropped (rank 0 writes ``log.csv``)."""

    def log(self, row: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass


def _next_multiple(step: int, every: int) -> int | None:
    if every <= 0:
        return None
    return (step // every + 1) * every


def _eval_row(step: int, t: float, sps: float, rets: torch.Tensor) -> dict[str, Any]:
    std = float(rets.std()) if rets.numel() > 1 else 0.0
    return {"step": step, "time": t, "sps": sps, "eval_return": float(rets.mean()), "eval_std": std}


# What a fresh run refuses to replace without --overwrite (--resume continues it instead).
OUT_FILES = ("checkpoint.pt", "log.csv")


def checkpoint_template(params: Any, opt_state: Any) -> dict[str, Any]:
    """The checkpoint's layout for ``funcrl.checkpoint.load(like=...)``: params and optimizer
    state must match this run's nets exactly, counters and RNG states have their types and shapes;
    the buffer (``...``, not checked here) is checked by ``buffers.restore``."""
    return {
        "params": params,
        "opt_state": opt_state,
        "buffer": ...,
        "step": 0,
        "updates_done": 0.0,
        "elapsed": 0.0,
        "recent": ...,
        "action_rng": torch.Generator().get_state(),
        "key": frandom.key(0),
    }


def _save(
    path, cfg, params, opt_state, buf, step, updates_done, elapsed, recent, action_gen, key
) -> None:
    state = {
        "params": params,
        "opt_state": opt_state,
        "buffer": buffer_state(buf),
        "step": step,
        "updates_done": float(updates_done),
        "elapsed": float(elapsed),
        "recent": [float(r) for r in recent],
        "action_rng": action_gen.get_state(),
        # The root key: with the counters above, every stream continues where it stopped.
        "key": key.cpu(),
    }
    _util.save_checkpoint(path, state, cfg)


def summary_line(result: dict[str, Any]) -> str:
    """The final message: deterministic return and where the curve is."""
    rets = result["eval_returns"]
    std = float(torch.tensor(rets).std()) if len(rets) > 1 else 0.0
    return (
        f"final deterministic evaluation over {len(rets)} episodes: "
        f"{result['eval_return']:.1f} +/- {std:.1f} after {result['steps']} steps "
        f"({result['train_time']:.0f} s)\nlearning curve: {result['png']}"
    )


def buffer_state(buf: buffers.ReplayState) -> buffers.ReplayState:
    """The buffer for a checkpoint: until the ring wraps, a copy holding only the filled slots (a
    1e6-slot buffer after 15k steps is saved as 15k rows); a full ring as it is."""
    size = int(buf.size)
    if size == buffers.capacity(buf):
        return buf
    prio = buf.prioritized
    kw = {"prioritized": True, "alpha": float(prio.alpha), "eps": float(prio.eps)} if prio else {}
    small = buffers.init(max(size, 1), buf.storage[0], **kw)
    return buffers.restore(buf, small)[0]


def load_buffer(saved: buffers.ReplayState, empty: buffers.ReplayState) -> buffers.ReplayState:
    """The saved buffer in this run's capacity (``--buffer-size``): the newest transitions, in age
    order, with their priorities (``buffers.restore``); says how many old ones did not fit."""
    buf, dropped = buffers.restore(saved, empty)
    if dropped:
        print(
            f"--resume: the checkpoint's buffer holds {int(saved.size)} transitions, "
            f"--buffer-size is {buffers.capacity(empty)}: dropped the {dropped} oldest"
        )
    return buf
