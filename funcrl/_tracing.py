"""Whether code runs under a graph tracer: a leaf module, so the nets (:mod:`funcrl.nn`) can ask
while traced without importing :mod:`funcrl.jit`, which imports them, and whose module object
dynamo before torch 2.13 cannot import inside a trace (``Bad import result``). Also
:func:`own_code`, for functions that ``torch.compile`` must cache apart."""

from __future__ import annotations

import functools
import types
from collections.abc import Callable
from typing import Any

import torch
from torch.fx.experimental.proxy_tensor import get_proxy_mode

__all__ = ["is_tracing", "own_code"]


def is_tracing() -> bool:
    """Whether the caller runs under a graph tracer -- ``torch.compile`` (dynamo) or ``make_fx``
    (:func:`funcrl.jit.jit`) -- rather than eagerly. Host reads of tensor values (``int(t)``,
    ``bool(t)``) are then errors or frozen into the graph, so eager-only checks must be skipped."""
    return torch.compiler.is_compiling() or get_proxy_mode() is not None


def own_code(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` behind a function whose code object belongs to this call alone.

    Dynamo keeps its compiled graphs per code object, at most ``recompile_limit`` (8) of them,
    and fails a ``fullgraph`` compile past that. Every ``torch.func.vmap(f)`` is the same
    function (functorch's ``wrapped``), as is every closure made by one ``def``; so compiling
    them for a ninth ``f`` in one process (a ninth config of a sweep) failed. The returned
    function runs ``fn(*args, **kwargs)`` and gets a cache of its own.
    """

    def call(*args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    code = call.__code__.replace()  # a new, equal code object
    own = types.FunctionType(code, call.__globals__, call.__name__, None, call.__closure__)
    return functools.update_wrapper(own, fn) if hasattr(fn, "__name__") else own
