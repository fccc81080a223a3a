"""Plumbing shared by the example scripts: CLI from a dataclass, CSV log, curve PNG, checkpoints.

Nothing here is RL: each example script keeps its whole algorithm in one readable file.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import json
import os
import time
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

import torch

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
    return cls(**values)


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

    A fresh run starts a new file; ``resume=True`` appends to the existing one, so a resumed run's
    log continues the first and a new run never mixes with an old one.
    """

    def __init__(self, out_dir: str, fields: list[str], resume: bool = False):
        os.makedirs(out_dir, exist_ok=True)
        self.path = os.path.join(out_dir, "log.csv")
        self.fields = fields
        new = not (resume and os.path.exists(self.path))
        self._fh = open(self.path, "w" if new else "a", newline="")
        self._w = csv.DictWriter(self._fh, fieldnames=fields, extrasaction="ignore")
        if new:
            self._w.writeheader()

    def log(self, row: Mapping[str, Any]) -> None:
        self._w.writerow({k: _scalar(v) for k, v in row.items()})
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()


def _scalar(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        return float(v.detach().cpu())
    return v


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
    fig.savefig(png_path, dpi=110)
    plt.close(fig)
    return png_path


def save_checkpoint(path: str, **state: Any) -> None:
    """Atomically writes a checkpoint (a dict of pytrees / tensors / plain values)."""
    tmp = path + ".tmp"
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str) -> dict[str, Any]:
    return torch.load(path, weights_only=False)


def write_json(path: str, obj: Any) -> None:
    with open(path, "w") as fh:
        json.dump(obj, fh, indent=2, default=str)


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
