"""Inductor settings funcrl's compiled loops share: what makes their compile cheaper.

Two costs dominate compiling a whole training iteration (:mod:`funcrl.pure_train`) on a CPU,
neither of them the C++ compiler's:

* **Inductor's kernel code generation re-registers its dtype rules for every op it emits.**
  ``DtypePropagationOpsHandler`` is a singleton, but its ``__init__`` runs on every
  construction, and the C++ backend constructs it once per generated op: ~290k times for a PPO
  iteration, ~17 s of its ~105 s compile (cProfile, torch 2.13). :func:`prepare` makes that
  ``__init__`` run again only when the rule tables it reads have grown.
* **The on-disk caches refuse graphs with loops.** Inductor's FX graph cache and AOTAutograd's
  cache bypass every graph holding a higher-order op unless it is marked cacheable, so each new
  process compiled a scan-based iteration from scratch. :data:`CACHEABLE_LOOPS` marks ``scan``
  and ``while_loop`` (the form Inductor lowers a scan to) cacheable, keyed by the torch
  version. Their bodies are ``GraphModule`` submodules of the graph, and the cache key pickles
  the graph with its submodules' code, so a changed body is a different key
  (``tests/test_inductor_cache.py`` checks that in fresh processes). A second process then skips
  AOTAutograd and Inductor: a one-seed PPO iteration's compile went from ~90 s to ~11 s
  (with :mod:`funcrl.tree`'s traced path, ~8 s).
"""

from __future__ import annotations

import threading
from typing import Any

import torch

__all__ = ["CACHEABLE_LOOPS", "CPP_WRAPPER_LOOPS", "prepare"]


def _cacheable_loops() -> dict[str, Any]:
    import torch._inductor.config as config

    if not hasattr(config, "unsafe_marked_cacheable_functions"):
        return {}  # pragma: no cover - a torch without the opt-in: loops stay uncached
    marked = {
        "torch.ops.higher_order.scan": torch.__version__,
        "torch.ops.higher_order.while_loop": torch.__version__,
    }
    return {"unsafe_marked_cacheable_functions": marked}


CACHEABLE_LOOPS: dict[str, Any] = _cacheable_loops()

# Whether Inductor's C++ wrapper (``cpp_wrapper``) can call a loop's body: torch 2.11's fails an
# assertion generating a ``while_loop`` subgraph call (``codegen_subgraph_prefix``), where its
# Python wrapper compiles the same graph.
CPP_WRAPPER_LOOPS: bool = tuple(int(v) for v in torch.__version__.split(".")[:2]) >= (2, 13)

_LOCK = threading.Lock()
_DONE = False


def prepare() -> None:
    """Once per process: make Inductor's dtype-rule singleton initialise only when needed.

    Without effect (and without error) on a torch whose ``DtypePropagationOpsHandler`` is not
    the singleton described in the module docstring.
    """
    global _DONE
    if _DONE:
        return
    with _LOCK:
        if _DONE:
            return
        _DONE = True
        try:
            from torch._inductor import dtype_propagation, utils
            from torch._inductor.codegen import common
        except ImportError:  # pragma: no cover - a torch without Inductor's C++ backend
            return
        cls = getattr(dtype_propagation, "DtypePropagationOpsHandler", None)
        rules = getattr(utils, "op_dtype_propagation_rules", None)
        pointwise = getattr(common, "pointwise_overrides_data", None)
        if cls is None or rules is None or pointwise is None or "_instance" not in vars(cls):
            return  # pragma: no cover - another torch layout: leave it alone
        original = cls.__init__

        def __init__(self: Any) -> None:  # noqa: N807
            # The tables __init__ copies into attributes: while they have not grown, every
            # attribute it would set is already set to the same rule.
            tables = (len(rules), len(pointwise))
            if self.__dict__.get("_funcrl_tables") == tables:
                return
            original(self)
            self._funcrl_tables = tables

        cls.__init__ = __init__
