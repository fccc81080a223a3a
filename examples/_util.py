"""Plumbing shared by the example scripts: CLI from a dataclass, CSV log, curve PNG, checkpoints.

Nothing here is RL: each example script keeps its whole algorithm in one readable file. Every file
written here goes through ``funcrl.checkpoint.atomic_write`` (a kill mid-write leaves the previous
file), except the per-row appends to ``log.csv``, which are flushed and fsynced row by row (a torn
last row is dropped by :func:`truncate_log` on ``--resume``).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import gc
import io
import json
import math
import os
import time
import typing
from collections.abc import Mapping
from typing import Any, NamedTuple, TypeVar

import torch

from funcrl import checkpoint
from funcrl import random as funcrl_random

T = TypeVar("T")


def parse_config(cls: type[T], argv: list[str] | None = None, description: str = "") -> T:
    """Builds an argparse CLI from a dataclass: ``field_name`` becomes ``--field-name``.

    Booleans get ``--flag`` / ``--no-flag``; each field's ``metadata["help"]`` is its help text.
    """
    parser = argparse.ArgumentParser(description=description or cls.__doc__)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        name = "--" + f.name.replace("_", "-")
        typ = hints[f.name]
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        help_ = f.metadata.get("help", "") + f" (default: {default})"
        if typ is bool:
            parser.add_argument(
                name, action=argparse.BooleanOptionalAction, default=default, help=help_
            )
        elif typing.get_origin(typ) is tuple:
            # tuple[int, ...] fields (hidden sizes): ``--num-cells 256 256``.
            item = typing.get_args(typ)[0]
            parser.add_argument(name, type=item, nargs="+", default=default, help=help_)
        else:
            base = _base_type(typ)
            parser.add_argument(name, type=base, default=default, help=help_)
    ns = parser.parse_args(argv)
    values = {f.name: getattr(ns, f.name) for f in dataclasses.fields(cls)}
    for f in dataclasses.fields(cls):
        if typing.get_origin(hints[f.name]) is tuple:
            values[f.name] = tuple(values[f.name])
    cfg = cls(**values)
    check_config(cfg)
    return cfg


# Ranges of the example scripts' settings, by field name (a field absent from a config, or left at
# None to be filled later, is skipped).
_POSITIVE = {
    "total_steps", "num_envs", "buffer_size", "batch_size", "eval_episodes", "threads", "agents",
    "n_agents", "max_steps", "eval_envs", "updates_per_collect", "mixing_embed_dim", "num_atoms",
    "num_qvalue_nets", "sub_sample_len", "policy_delay", "target_update_period", "delay_actor",
    "learning_rate", "actor_learning_rate", "updates_per_step", "max_grad_norm", "alpha_init",
    "num_cells", "critic_cells",
}  # fmt: skip
_NON_NEGATIVE = {
    "learning_starts", "eval_every", "checkpoint_every", "warmup_steps", "exploration_noise",
    "policy_noise", "noise_clip", "sigma_init", "sigma_end", "target_entropy_weight",
}  # fmt: skip
_UNIT = {"gamma", "tau", "eps_init", "eps_end", "eps_fraction", "exploration_fraction",
         "batch_norm_momentum"}  # fmt: skip


def check_config(cfg: Any) -> None:
    """Checks the ranges of an example config's settings (e.g. ``--total-steps > 0``).

    Raises:
        ValueError: naming the flag, the allowed range and the value.
    """
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if v is None or isinstance(v, (bool, str)):
            continue
        flag = "--" + f.name.replace("_", "-")
        items = v if isinstance(v, tuple) else (v,)
        for x in items:
            if not isinstance(x, (int, float)) or isinstance(x, bool):
                continue
            if not math.isfinite(x):
                raise ValueError(f"parse_config: {flag} must be finite, got {v}")
            if f.name in _POSITIVE and not x > 0:
                raise ValueError(f"parse_config: {flag} must be > 0, got {v}")
            if f.name in _NON_NEGATIVE and not x >= 0:
                raise ValueError(f"parse_config: {flag} must be >= 0, got {v}")
            if f.name in _UNIT and not 0 <= x <= 1:
                raise ValueError(f"parse_config: {flag} must be in [0, 1], got {v}")
    check_device_flags(cfg)
    lo, hi = getattr(cfg, "v_min", None), getattr(cfg, "v_max", None)
    if lo is not None and hi is not None and not lo < hi:
        raise ValueError(f"parse_config: --v-min must be < --v-max, got {lo} and {hi}")


def resolve_device(name: str) -> torch.device:
    """``--device``: ``"auto"`` is CUDA when available, else CPU.

    Raises:
        ValueError: not a CPU or CUDA device, or CUDA asked for without one.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ValueError(
            f"parse_config: --device must be auto, cpu or cuda[:i], got {name!r}"
        ) from None
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"parse_config: --device must be auto, cpu or cuda[:i], got {name!r}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"parse_config: --device {name}: no CUDA device is available")
    return dev


def check_device_flags(cfg: Any) -> None:
    """``--device`` names a usable device; ``--cudagraphs`` needs CUDA and a compiled step."""
    if not hasattr(cfg, "device"):
        return
    dev = resolve_device(cfg.device)
    if getattr(cfg, "cudagraphs", False):
        if dev.type != "cuda":
            raise ValueError(f"parse_config: --cudagraphs needs a CUDA device, got --device {dev}")
        if not (getattr(cfg, "compile", False) or getattr(cfg, "jit", False)):
            raise ValueError("parse_config: --cudagraphs needs --compile or --jit")


def to_device(tree_: Any, device: torch.device) -> Any:
    """Every tensor of a pytree on ``device`` (the params, optimizer state, buffer)."""
    from funcrl import tree

    return tree.map(lambda x: x.to(device) if isinstance(x, torch.Tensor) else x, tree_)


def prepare_out(out: str, resume: bool | None, overwrite: bool, files: tuple[str, ...]) -> None:
    """Creates ``out`` and refuses to silently replace an earlier run's files.

    A run into a folder that holds any of ``files`` (its checkpoint or log) must say what it wants:
    ``--resume`` continues that run, ``--overwrite`` deletes those files and starts a new one.
    ``resume=None`` is for a script without ``--resume``.

    Raises:
        FileExistsError: ``out`` holds an earlier run and neither flag is set.
    """
    os.makedirs(out, exist_ok=True)
    found = [f for f in files if os.path.exists(os.path.join(out, f))]
    if not found or resume:
        return
    if not overwrite:
        how = (
            "--overwrite to replace it"
            if resume is None
            else ("--resume to continue it or --overwrite to replace it")
        )
        raise FileExistsError(
            f"--out {out} already holds {', '.join(found)} from an earlier run: pass {how}"
        )
    # Delete up front: a new run killed early must not leave the old checkpoint beside its log.
    for f in found:
        os.remove(os.path.join(out, f))


def _base_type(typ: Any) -> Any:
    origin = typing.get_origin(typ)
    if origin is typing.Union or (
        origin is not None and str(origin) == "<class 'types.UnionType'>"
    ):
        args = [a for a in typing.get_args(typ) if a is not type(None)]
        return args[0]
    return typ


class CSVLogger:
    """Writes rows of scalars to ``<out>/log.csv``.

    A fresh run starts a new file (its header written atomically); ``resume=True`` appends to the
    existing one, so a resumed run's log continues the first and a new run never mixes with an old
    one. Each row is flushed and fsynced, so a kill loses at most the row being written (call
    :func:`truncate_log` before resuming).
    """

    def __init__(self, out_dir: str, fields: list[str], resume: bool = False):
        os.makedirs(out_dir, exist_ok=True)
        self.path = os.path.join(out_dir, "log.csv")
        self.fields = fields
        if not (resume and os.path.exists(self.path)):
            header = io.StringIO()
            csv.DictWriter(header, fieldnames=fields).writeheader()
            checkpoint.atomic_write(self.path, header.getvalue().encode())
        self._fh = open(self.path, "a", newline="")
        self._w = csv.DictWriter(self._fh, fieldnames=fields, extrasaction="ignore")

    def log(self, row: Mapping[str, Any]) -> None:
        self._w.writerow({k: _scalar(v) for k, v in row.items()})
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        self._fh.close()


def _scalar(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        return float(v.detach().cpu())
    return v


def truncate_log(path: str, step: int | float) -> int:
    """Keeps the rows of a CSV log whose ``step`` is ``<= step`` (rewritten atomically).

    On ``--resume`` the rows a killed run wrote after its last checkpoint would repeat, out of
    order, once the resumed run logs those steps again. A last line without its newline (a row
    torn by the kill) is dropped too.

    Returns:
        The number of rows dropped (0 when the file does not exist).
    """
    if not os.path.exists(path):
        return 0
    with open(path, newline="") as fh:
        text = fh.read()
    lines = text.splitlines(keepends=True)
    torn = 1 if lines and not lines[-1].endswith("\n") else 0
    rows = list(csv.reader(lines[: len(lines) - torn]))
    if not rows:
        return torn
    header, body = rows[0], rows[1:]
    if "step" not in header:
        raise ValueError(f"truncate_log: {path} has no 'step' column (header {header})")
    col = header.index("step")

    def keep(row: list[str]) -> bool:
        try:
            return len(row) == len(header) and float(row[col]) <= step
        except ValueError:
            return False

    kept = [r for r in body if keep(r)]
    out = io.StringIO()
    csv.writer(out).writerows([header, *kept])
    checkpoint.atomic_write(path, out.getvalue().encode())
    return len(body) - len(kept) + torn


def read_csv(path: str) -> list[dict[str, float]]:
    with open(path) as fh:
        return [
            {k: float(v) for k, v in row.items() if v not in ("", None)}
            for row in csv.DictReader(fh)
        ]


def plot_curve(
    csv_path: str,
    png_path: str,
    title: str,
    x: str = "step",
    y: str = "episode_return",
    eval_key: str = "eval_return",
) -> str:
    """Writes a learning curve (training returns and evaluations) from the CSV log to a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_csv(csv_path)
    fig, ax = plt.subplots(figsize=(7, 4))
    pts = [(r[x], r[y]) for r in rows if y in r and x in r]
    if pts:
        xs, ys = zip(*pts)
        ax.plot(xs, ys, ".", alpha=0.35, label="training episodes")
        k = max(1, len(ys) // 20)
        smooth = [
            sum(ys[max(0, i - k) : i + 1]) / len(ys[max(0, i - k) : i + 1]) for i in range(len(ys))
        ]
        ax.plot(xs, smooth, "-", label=f"moving average ({k + 1})")
    ev = [(r[x], r[eval_key]) for r in rows if eval_key in r and x in r]
    if ev:
        ex, ey = zip(*ev)
        ax.plot(ex, ey, "o-", label="deterministic evaluation")
    ax.set_xlabel("environment steps")
    ax.set_ylabel("return")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    save_figure(fig, png_path)
    return png_path


def save_figure(fig: Any, path: str, dpi: int = 110) -> None:
    """Writes a matplotlib figure to a PNG atomically and closes it."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, dpi=dpi, format="png")
    plt.close(fig)
    checkpoint.atomic_write(path, buf.getvalue())


def save_checkpoint(path: str, state: dict[str, Any], config: Any = None) -> None:
    """Writes a checkpoint with ``funcrl.checkpoint.save`` (atomic, no pickle).

    Args:
        path: the file.
        state: a dict of pytrees (params, optimizer state, buffers, counters, RNG state tensors).
        config: the run's config dataclass, stored as metadata so ``--resume`` can compare it.
    """
    meta = {"config": _json_config(config)} if config is not None else {}
    checkpoint.save(path, state, metadata=meta)


def load_checkpoint(path: str, like: Any = None) -> checkpoint.Checkpoint:
    """Reads a checkpoint written by :func:`save_checkpoint`: ``(tree, metadata)``. ``like`` is a
    template (``...`` for subtrees not checked); a mismatch names the first differing path."""
    return checkpoint.load(path, like=like)


# Settings a resumed run may change: they do not shape the nets, the optimizer or the data.
RESUMABLE = {
    "total_steps", "out", "resume", "overwrite", "progress", "threads", "compile", "jit",
    "device", "cudagraphs",
    "eval_every", "eval_episodes", "checkpoint_every", "buffer_size", "batch_size",
    "learning_starts", "updates_per_step",
}  # fmt: skip


def check_resume_config(path: str, saved: Mapping[str, Any], cfg: Any) -> None:
    """Refuses ``--resume`` with settings other than the checkpoint's (outside :data:`RESUMABLE`).

    Raises:
        ValueError: naming the flag, the checkpoint's value and this run's.
    """
    saved = saved.get("config")
    if not isinstance(saved, Mapping):
        raise ValueError(f"--resume: {path} holds no run config; it was not written by an example")
    now = _json_config(cfg)
    for k, v in now.items():
        if k in RESUMABLE or saved.get(k, "<absent>") == v:
            continue
        flag = "--" + k.replace("_", "-")
        raise ValueError(
            f"--resume: {path} was trained with {flag} {_show(saved.get(k, '<absent>'))}, this run "
            f"has {flag} {_show(v)}; resume with the checkpoint's value, or start a new run "
            "(another --out, or --overwrite)"
        )


def _show(v: Any) -> str:
    return " ".join(map(str, v)) if isinstance(v, list) else str(v)


def _json_config(cfg: Any) -> dict[str, Any]:
    # Through JSON so that tuples compare equal to the lists a checkpoint gives back.
    return json.loads(json.dumps(dataclasses.asdict(cfg), default=str))


def write_json(path: str, obj: Any) -> None:
    """Writes ``obj`` as indented JSON, atomically."""
    checkpoint.atomic_write(path, json.dumps(obj, indent=2, default=str).encode())


@contextlib.contextmanager
def heap_freezer():
    """Yields ``freeze()``, which collects garbage once and then moves every object alive to the
    collector's permanent generation (``gc.freeze``); the block's exit unfreezes them.

    A loop calls ``freeze()`` once its first step has been compiled: torch's compiler leaves
    ~600k long-lived objects that every full collection would otherwise scan again (~0.3 s
    each, every few thousand env steps: ~9% of a HalfCheetah PPO run). Objects made later are
    collected as usual.
    """
    frozen = False

    def freeze() -> None:
        nonlocal frozen
        if not frozen:
            gc.collect()
            gc.freeze()
            frozen = True

    try:
        yield freeze
    finally:
        if frozen:
            gc.unfreeze()


def flushes_denormals() -> bool:
    """Whether this thread's CPU flushes denormal floats to zero (a denormal input reads as 0)."""
    return float(torch.tensor([1e-39], dtype=torch.float32) * 1.0) == 0.0


@contextlib.contextmanager
def flush_denormal(enabled: bool):
    """Denormal floats (below ~1.2e-38 in float32) flushed to zero on the CPU inside the block
    (``torch.set_flush_denormal``: x86's FTZ/DAZ, what TensorFlow's CPU threads set by default),
    restored on exit.

    Adam's second moments of weights whose gradients are nearly zero decay into the denormal
    range; x86 takes ~100x longer on each such operand. In a HalfCheetah PPO run that made the
    update ~10% slower after ~40 iterations.
    """
    was = flushes_denormals()
    torch.set_flush_denormal(enabled)
    try:
        yield
    finally:
        torch.set_flush_denormal(was)


# glibc keeps at most 7 freed chunks of each size in a thread's cache; past that, frees and
# mallocs go through its slower bins. A compiled scan body allocates and frees dozens of
# same-size buffers and tensor handles per loop step: with the default cache ~28% of a one-seed
# pure PPO iteration was in malloc and free (perf); with 1000 the iteration took 5.0 ms, not 6.0.
MALLOC_TUNABLES = "glibc.malloc.tcache_count=1000"


def malloc_tunables_env(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` with :data:`MALLOC_TUNABLES` added to ``GLIBC_TUNABLES`` (a tcache count already
    there is kept)."""
    have = env.get("GLIBC_TUNABLES", "")
    if "glibc.malloc.tcache_count=" in have:
        return dict(env)
    return {**env, "GLIBC_TUNABLES": f"{have}:{MALLOC_TUNABLES}" if have else MALLOC_TUNABLES}


def relaunch_with_malloc_tunables() -> None:
    """Re-executes this process's command line once with :data:`MALLOC_TUNABLES` (glibc reads
    its tunables only at start-up). No-op off glibc, when already set, or with
    ``FUNCRL_NO_RELAUNCH=1``. Call it first thing under ``if __name__ == "__main__"``."""
    import platform
    import sys

    env = malloc_tunables_env(os.environ)
    if (
        platform.libc_ver()[0] != "glibc"
        or env == dict(os.environ)
        or os.environ.get("FUNCRL_NO_RELAUNCH") == "1"
    ):
        return
    env["FUNCRL_NO_RELAUNCH"] = "1"  # never twice, whatever the child's environment does
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, sys.orig_argv, env)


class Timer:
    """Wall clock of training alone: time spent inside :meth:`paused` (evaluation, checkpoints)
    is left out, so a learning curve's time axis compares across runs that evaluate differently."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.excluded = 0.0

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0 - self.excluded

    @contextlib.contextmanager
    def paused(self):
        t = time.perf_counter()
        try:
            yield
        finally:
            self.excluded += time.perf_counter() - t


# ------------------------------------------------------------------------------ keys


class Keys(NamedTuple):
    """A run's key streams, one per use (:func:`run_keys`)."""

    init: torch.Tensor
    env: torch.Tensor
    explore: torch.Tensor
    update: torch.Tensor


def run_keys(seed: int | torch.Tensor) -> Keys:
    """The run's keys, split from ``funcrl.random.key(seed)`` (or from a saved root key)."""
    root = funcrl_random.key(seed) if isinstance(seed, int) else seed
    return Keys(*funcrl_random.split(root, len(Keys._fields)).unbind(0))


def int_seed(key: torch.Tensor) -> int:
    """A 31-bit int drawn from ``key``, for what takes int seeds (gymnasium, torch.Generator)."""
    return int(funcrl_random.bits(key)) & 0x7FFFFFFF
