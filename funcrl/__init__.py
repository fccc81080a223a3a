"""funcrl: TorchRL's modules and objectives as pure functions on ``torch.func``."""

from __future__ import annotations

import importlib
from typing import Any

from funcrl.record import Record

__version__ = "0.1.0"

_SUBMODULES = {
    "tree",
    "specs",
    "nn",
    "optim",
    "targets",
    "values",
    "testing",
    "distributions",
    "modules",
    "sac",
    "td3",
    "ddpg",
    "dqn",
    "c51",
    "redq",
    "crossq",
    "discrete_sac",
    "training",
    "autodiff",
    "jit",
    "buffers",
    "envs",
    "multiagent",
    "qmix",
    "random",
}


def __getattr__(name: str) -> Any:
    # Submodules load on first use so that `import funcrl` stays cheap.
    if name in _SUBMODULES:
        module = importlib.import_module(f"funcrl.{name}")
        globals()[name] = module
        return module
    if name == "update":
        from funcrl.training import update

        return update
    raise AttributeError(f"module 'funcrl' has no attribute {name!r}")


__all__ = ["Record", "__version__", *sorted(_SUBMODULES)]
