"""``jit``: trace a pure function once per input signature, compile it, call it without guards.

``torch.compile`` re-checks every guard on every call: for a SAC step that is ~1,800 guard lines
(each param's shape, the optimizer's dict keys, the loss config's fields), about 0.09 ms of a
0.65 ms small-network update on a CPU. A *pure* function of explicit pytrees does not need them:
like ``jax.jit``, :func:`jit` keys its cache on what the function can see (the pytree structure,
the non-tensor leaves, each tensor's shape, strides, dtype and device), traces the function with
``make_fx`` into one aten graph (``torch.func`` transforms inlined), compiles that with Inductor
(static shapes; on a CPU with its C++ host wrapper), and calls the compiled graph directly, each
call matched to its signature by torch's C++ tensor guards (~2 us for 50 tensors)::

    step = funcrl.jit(train.step)
    params, opt_state, metrics = step(params, opt_state, batch)   # 1st call: trace + compile

The first call with a new signature runs the function once (eagerly, to trace it; this draws
from the RNG like a normal call) and compiles the graph. Contract (the one ``jax.jit`` has): the function is pure -- its output depends only on its
arguments and the global RNG; Python state it reads (closures, globals) is frozen at trace time;
Python control flow on tensor *values* is frozen too (the traced branch is replayed). Non-tensor
leaves (ints, floats, strings) are static: a new value traces again. Random ops draw from the
global torch generator through Inductor's own seeding, like ``torch.compile``: reproducible under
``torch.manual_seed``, not the same numbers as eager.

Use ``torch.compile`` when the function is not pure or changes shapes every call; use :func:`jit`
for a training step called thousands of times with the same shapes.

On CUDA, ``jit(fn, cudagraphs=True)`` also captures the compiled graph in a CUDA graph (after two
warm-up runs on a side stream) and replays it: a call copies the inputs into the graph's static
input buffers, replays every kernel with one launch, and returns copies of the static outputs (so
a result stays valid after the next call). That removes the per-kernel launch cost, which is most
of a small network's update step on a GPU. The outputs are copied by one multi-tensor kernel per
dtype rather than one clone each (a SAC step returns ~70 tensors: params, optimizer moments,
metrics).
"""

from __future__ import annotations

import functools
import importlib
import sys
from collections.abc import Callable
from typing import Any

import optree
import torch

from funcrl import _inductor
from funcrl._tracing import is_tracing

__all__ = ["jit", "Jitted", "compile_step", "is_tracing", "can_read_values"]

_NS = "funcrl"


def _check_cudagraphs(owner: str, cudagraphs: Any) -> None:
    """Raises unless ``cudagraphs`` is a bool, and ``True`` only where CUDA is available (torch
    would otherwise run the step without CUDA graphs and say nothing)."""
    if not isinstance(cudagraphs, bool):
        raise TypeError(f"{owner}: cudagraphs must be a bool, got {type(cudagraphs).__name__}")
    if cudagraphs and not torch.cuda.is_available():
        raise ValueError(
            f"{owner}: cudagraphs=True needs a CUDA device; torch.cuda.is_available() is False "
            "(use cudagraphs=False on CPU)"
        )


def can_read_values(t: torch.Tensor) -> bool:
    """Whether an eager-only check may read ``t``'s values on the host: on the CPU, not under a
    tracer (:func:`is_tracing`: a read would be a graph break or be frozen into the trace) and not
    a ``vmap``/``grad`` wrapper (no single host copy). On an accelerator the read would be a host
    sync inside the training step, so value checks are skipped there (shape and dtype checks
    still run)."""
    return (
        t.device.type == "cpu"
        and not is_tracing()
        and not torch._C._functorch.is_functorch_wrapped_tensor(t)
    )


def _signature(leaves: list[Any]) -> tuple:
    # What a pure function can observe about its inputs; anything else is replayed from the trace.
    return tuple(
        (x.shape, x.stride(), x.dtype, x.device, x.requires_grad)
        if isinstance(x, torch.Tensor)
        else (type(x), x)
        for x in leaves
    )


def _distinct(tensors: list[torch.Tensor]) -> tuple[tuple[int, ...] | None, list[torch.Tensor]]:
    """``(alias pattern, distinct tensors)``: the pattern maps each position to its tensor's first
    occurrence (``None`` when every tensor is a different object)."""
    ids = list(map(id, tensors))
    if len(set(ids)) == len(ids):
        return None, tensors
    first: dict[int, int] = {}
    pattern = tuple(first.setdefault(i, len(first)) for i in ids)
    return pattern, list({i: t for i, t in zip(ids, tensors)}.values())


class _Entry:
    """The fast check of one compiled signature: the static leaves compared by type and value,
    the tensors by ``TensorGuards`` (dispatch keys, dtype, device, requires_grad, sizes and
    strides, :func:`_signature`'s fields and more, checked in C++: ~2 us for 50 tensors where
    building the signature takes ~10 us). ``TensorGuards`` refuses a tensor passed twice, so a
    guard is kept per aliasing pattern seen (the compiled graph itself, of a pure function,
    does not depend on aliasing)."""

    def __init__(self, leaves: list[Any], compiled: Callable, out_spec: Any) -> None:
        self.tensor_idx = [i for i, x in enumerate(leaves) if isinstance(x, torch.Tensor)]
        is_tensor = set(self.tensor_idx)
        self.statics = [(i, type(x), x) for i, x in enumerate(leaves) if i not in is_tensor]
        self.num_leaves = len(leaves)
        self.compiled = compiled
        self.out_spec = out_spec
        self.guards: dict[tuple[int, ...] | None, Any] = {}

    def add_guard(self, tensors: list[torch.Tensor]) -> None:
        from torch._C._dynamo.guards import TensorGuards

        pattern, distinct = _distinct(tensors)
        if pattern not in self.guards:
            self.guards[pattern] = TensorGuards(
                *distinct,
                dynamic_dims_sizes=[list(x.shape) for x in distinct],
                dynamic_dims_strides=[list(x.stride()) for x in distinct],
            )

    def match(self, leaves: list[Any]) -> list[torch.Tensor] | None:
        """The tensor leaves when ``leaves`` has this entry's signature, else ``None``."""
        if len(leaves) != self.num_leaves:
            return None
        for i, t, v in self.statics:
            x = leaves[i]
            if type(x) is not t or not (x == v):
                return None
        tensors = [leaves[i] for i in self.tensor_idx]
        pattern, distinct = _distinct(tensors)
        guard = self.guards.get(pattern)
        # check() is False for a non-tensor where a tensor was.
        return tensors if guard is not None and guard.check(*distinct) else None


class Jitted:
    """A function compiled per input signature (see :func:`jit`).

    Attributes:
        fn: the wrapped pure function.
        backend: ``"inductor"`` (compiled kernels) or ``"eager"`` (the traced aten graph run as is;
            for tests and debugging).
        cudagraphs: whether each compiled graph is captured and replayed as a CUDA graph.
        cache: ``{(treedef, signature): (compiled, out_treedef)}``; ``len(cache)`` counts traces.
    """

    def __init__(
        self, fn: Callable[..., Any], backend: str = "inductor", cudagraphs: bool = False
    ) -> None:
        if backend not in ("inductor", "eager"):
            raise ValueError(f"jit: backend must be 'inductor' or 'eager', got {backend!r}")
        _check_cudagraphs("jit", cudagraphs)
        self.fn = fn
        self.backend = backend
        self.cudagraphs = cudagraphs
        self.cache: dict[Any, tuple[Callable[..., Any], Any]] = {}
        self._entries: dict[Any, _Entry] = {}
        self._by_spec: dict[Any, list[_Entry]] = {}
        functools.update_wrapper(self, fn)

    def __call__(self, *args: Any) -> Any:
        leaves, spec = optree.tree_flatten(args, namespace=_NS, none_is_leaf=False)
        # Fast path: the signatures already compiled for this structure, each checked by one C++
        # call over the tensors (~2 us for 50 tensors; building the signature tuple is ~10 us).
        for entry in self._by_spec.get(spec, ()):
            tensors = entry.match(leaves)
            if tensors is not None:
                return optree.tree_unflatten(entry.out_spec, entry.compiled(tensors))
        key = (spec, _signature(leaves))
        hit = self.cache.get(key)
        if hit is None:
            hit = self.cache[key] = self._compile(spec, leaves)
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = _Entry(leaves, *hit)
            self._by_spec.setdefault(spec, []).append(entry)
        tensors = [x for x in leaves if isinstance(x, torch.Tensor)]
        entry.add_guard(tensors)
        return optree.tree_unflatten(entry.out_spec, entry.compiled(tensors))

    def _compile(self, spec: Any, leaves: list[Any]):
        from torch.fx.experimental.proxy_tensor import make_fx

        is_t = [isinstance(x, torch.Tensor) for x in leaves]
        statics = [None if t else x for x, t in zip(leaves, is_t)]
        box: dict[str, Any] = {}

        def flat(*tensors: torch.Tensor) -> list[torch.Tensor]:
            it = iter(tensors)
            full = [next(it) if t else s for s, t in zip(statics, is_t)]
            out = self.fn(*optree.tree_unflatten(spec, full))
            out_leaves, box["spec"] = optree.tree_flatten(out, namespace=_NS, none_is_leaf=False)
            bad = [type(x).__name__ for x in out_leaves if not isinstance(x, torch.Tensor)]
            if bad:
                raise TypeError(f"jit: the function must return a pytree of tensors; got {bad}")
            # Contiguous outputs: a step whose outputs come back as its next inputs (params,
            # optimizer state) then keeps one stride signature, so it traces once. Without this,
            # an op that returns a transposed layout (a vmapped weight gradient) would change the
            # inputs' strides after the first step and force a second trace.
            return [x.contiguous() for x in out_leaves]

        example = [x for x, t in zip(leaves, is_t) if t]
        if self.cudagraphs:
            _check_cuda_inputs(example)
        gm = make_fx(flat, tracing_mode="real")(*example)
        if self.backend == "eager":
            compiled = gm
        else:
            compiled = _inductor_compile(gm, example)
        if self.cudagraphs:
            return _cuda_graph(compiled, example), box["spec"]

        def run(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
            return compiled(*tensors)

        return run, box["spec"]


def _inductor_compile(gm: torch.fx.GraphModule, example: list[torch.Tensor]) -> Callable:
    """Inductor on a traced aten graph, inside a tracing context whose fake mode has a
    ``ShapeEnv``: Inductor's on-disk FX graph cache and AOTAutograd's cache key their entries on
    the shape environment and bypass both without one, so without it every process would compile
    the graph from scratch (a minute and more for a PPO update on a CPU)."""
    from torch._guards import TracingContext, tracing
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx.experimental.symbolic_shapes import ShapeEnv

    inductor = importlib.import_module("torch._inductor")
    fake_mode = FakeTensorMode(shape_env=ShapeEnv())
    # Static shapes: AOTAutograd would otherwise give each input symbolic sizes. No size asserts:
    # the caller's signature check already pins every input's sizes and strides (the asserts
    # cost ~0.3 us per input per call, a quarter of a small policy step's compiled call).
    fake = [fake_mode.from_tensor(x, static_shapes=True) for x in example]
    _inductor.prepare()
    options = {"size_asserts": False, **_inductor.CACHEABLE_LOOPS}
    if all(x.device.type == "cpu" for x in example):
        # The graph's host code as C++ too, where Python would spend ~0.1 us per buffer and
        # kernel launch: ~25 us of a PPO minibatch step's ~0.9 ms.
        options["cpp_wrapper"] = True
    with tracing(TracingContext(fake_mode)):
        return inductor.compile(gm, fake, options=options)


def _check_cuda_inputs(example: list[torch.Tensor]) -> None:
    devices = {x.device for x in example}
    if not example or any(d.type != "cuda" for d in devices) or len(devices) != 1:
        raise ValueError(
            f"jit: cudagraphs=True needs every tensor input on one CUDA device, got "
            f"{sorted(str(d) for d in devices) or 'no tensors'}"
        )


def _clone_all(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """Copies of ``tensors`` (contiguous), made by one multi-tensor ``x * 1`` per dtype: exact for
    every number, -0.0 and infinities included (a NaN stays NaN; its payload bits may be
    canonicalised). On CUDA that is a few kernel launches for a SAC step's ~70 outputs instead of
    one clone each. Bool tensors, which ``* 1`` would promote, are cloned."""
    out: list[Any] = [None] * len(tensors)
    groups: dict[torch.dtype, list[int]] = {}
    for i, x in enumerate(tensors):
        groups.setdefault(x.dtype, []).append(i)
    for dtype, idx in groups.items():
        if dtype == torch.bool or len(idx) == 1:
            copies = [tensors[i].clone() for i in idx]
        else:
            copies = torch._foreach_mul([tensors[i] for i in idx], 1)
        for i, y in zip(idx, copies):
            out[i] = y
    return out


def _cuda_graph(
    compiled: Callable[..., list[torch.Tensor]], example: list[torch.Tensor]
) -> Callable[[list[torch.Tensor]], list[torch.Tensor]]:
    """``compiled`` captured in a CUDA graph with static input and output buffers.

    The inputs are copied into buffers the graph reads (a call's tensors live at other addresses);
    the outputs are copied out of the graph's memory pool, which the next replay overwrites
    (:func:`_clone_all`).
    """
    static_in = [x.detach().clone() for x in example]
    # Warm-up on a side stream, as torch.cuda.graphs asks: lazy initialisation (cuBLAS handles,
    # Triton autotuning, allocator growth) must not happen during capture.
    side = torch.cuda.Stream(device=static_in[0].device)
    side.wait_stream(torch.cuda.current_stream(static_in[0].device))
    with torch.cuda.stream(side):
        for _ in range(2):
            compiled(*static_in)
    torch.cuda.current_stream(static_in[0].device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out = compiled(*static_in)

    def run(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
        # The signature (shape, stride, dtype, device) matched, so the copies are exact.
        torch._foreach_copy_(static_in, tensors)
        graph.replay()
        return _clone_all(static_out)

    return run


def jit(
    fn: Callable[..., Any] | None = None, *, backend: str = "inductor", cudagraphs: bool = False
) -> Any:
    """Compiles a pure function of pytrees once per input signature (``jax.jit``'s contract).

    Args:
        fn: ``fn(*args) -> pytree of tensors``; args are pytrees of tensors and static values.
        backend: ``"inductor"`` or ``"eager"`` (the traced graph, uncompiled).
        cudagraphs: capture each compiled graph in a CUDA graph and replay it (CUDA inputs only;
            see the module docstring).

    Returns:
        A :class:`Jitted` callable with ``fn``'s signature (positional arguments only).
    """
    if fn is None:
        return functools.partial(jit, backend=backend, cudagraphs=cudagraphs)
    return Jitted(fn, backend=backend, cudagraphs=cudagraphs)


def compile_step(
    fn: Callable[..., Any], *, cudagraphs: bool = False, fullgraph: bool = True
) -> Callable[..., Any]:
    """``torch.compile(fn, fullgraph=fullgraph)`` for a step called in a loop; with ``cudagraphs``,
    ``mode="reduce-overhead"`` (CUDA graphs) made safe for one.

    CUDA graph trees replay into a fixed memory pool: the next replay overwrites the last call's
    outputs. A training step feeds those outputs back as its next inputs, and a rollout keeps each
    step's outputs, so torch raises "accessing tensor output of CUDAGraphs that has been
    overwritten by a subsequent run". Here each call starts a new CUDA-graph step
    (``torch.compiler.cudagraph_mark_step_begin()``) and returns clones of the output tensors,
    which stay valid after later calls, as :func:`jit`'s ``cudagraphs=True`` results do. Leaves
    that are not tensors (a TensorDict, say) come back as the graph returned them.

    Args:
        fn: the step.
        cudagraphs: replay the compiled step as a CUDA graph (CUDA inputs).
        fullgraph: ``torch.compile``'s: one graph or an error.

    Raises:
        TypeError: ``cudagraphs`` is not a bool.
        ValueError: ``cudagraphs=True`` without a CUDA device (torch would silently run the step
            without CUDA graphs).
    """
    _check_cudagraphs("compile_step", cudagraphs)
    mode = "reduce-overhead" if cudagraphs else None
    compiled = torch.compile(fn, fullgraph=fullgraph, mode=mode)
    if not cudagraphs:
        return compiled
    from funcrl import tree

    @functools.wraps(fn)
    def step(*args: Any, **kwargs: Any) -> Any:
        torch.compiler.cudagraph_mark_step_begin()
        out = compiled(*args, **kwargs)
        return tree.map(lambda x: x.clone() if isinstance(x, torch.Tensor) else x, out)

    return step


class _CallableModule(type(functools)):
    """``funcrl.jit`` is this module *and* :func:`jit`: ``funcrl.jit(step)`` compiles, while
    ``funcrl.jit.is_tracing`` and ``from funcrl.jit import Jitted`` keep working."""

    def __call__(
        self,
        fn: Callable[..., Any] | None = None,
        *,
        backend: str = "inductor",
        cudagraphs: bool = False,
    ) -> Any:
        return jit(fn, backend=backend, cudagraphs=cudagraphs)


sys.modules[__name__].__class__ = _CallableModule
