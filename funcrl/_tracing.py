"""Whether code runs under a graph tracer: a leaf module, so the nets (:mod:`funcrl.nn`) can ask
while traced without importing :mod:`funcrl.jit`, which imports them, and whose module object
dynamo before torch 2.13 cannot import inside a trace (``Bad import result``)."""

from __future__ import annotations

import torch
from torch.fx.experimental.proxy_tensor import get_proxy_mode

__all__ = ["is_tracing"]


def is_tracing() -> bool:
    """Whether the caller runs under a graph tracer -- ``torch.compile`` (dynamo) or ``make_fx``
    (:func:`funcrl.jit.jit`) -- rather than eagerly. Host reads of tensor values (``int(t)``,
    ``bool(t)``) are then errors or frozen into the graph, so eager-only checks must be skipped."""
    return torch.compiler.is_compiling() or get_proxy_mode() is not None
