"""funcrl: TorchRL's modules and objectives as pure functions on ``torch.func``."""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
from typing import Any

from funcrl import _compat
from funcrl.record import Record

_compat.patch_dynamo_random_check()

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
    "objectives",
    "training",
    "pure_train",
    "pure_dqn",
    "autodiff",
    "jit",
    "buffers",
    "checkpoint",
    "envs",
    "multiagent",
    "datasets",
    "random",
    "distributed",
}


# Objectives live in funcrl.objectives; `funcrl.sac`, `import funcrl.sac` and `from funcrl.sac
# import loss` name the same module object (aliased on first import, never copied).
from funcrl.objectives import OBJECTIVES as _OBJECTIVES  # noqa: E402 - the one list


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, target: str) -> None:
        self.target = target

    def create_module(self, spec):  # noqa: ANN001 - importlib's signature
        return importlib.import_module(self.target)

    def exec_module(self, module) -> None:  # noqa: ANN001 - the target module already ran
        pass


class _AliasFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):  # noqa: ANN001 - importlib's signature
        head, _, name = fullname.rpartition(".")
        if head == __name__ and name in _OBJECTIVES:
            return importlib.util.spec_from_loader(
                fullname, _AliasLoader(f"{__name__}.objectives.{name}")
            )
        return None


if not any(isinstance(f, _AliasFinder) for f in sys.meta_path):
    sys.meta_path.insert(0, _AliasFinder())


def __getattr__(name: str) -> Any:
    # Submodules load on first use so that `import funcrl` stays cheap.
    if name in _SUBMODULES or name in _OBJECTIVES:
        module = importlib.import_module(f"funcrl.{name}")
        globals()[name] = module
        return module
    if name == "update":
        from funcrl.training import update

        return update
    raise AttributeError(f"module 'funcrl' has no attribute {name!r}")


__all__ = ["Record", "__version__", "update", *sorted(_SUBMODULES | set(_OBJECTIVES))]
