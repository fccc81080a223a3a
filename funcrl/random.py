"""``random``: explicit, counter-based random keys (Threefry-2x32), JAX's ``jax.random`` in torch.

A key is an ``int64`` tensor of shape ``[2]`` holding two unsigned 32-bit words ``[k0, k1]``
(JAX's raw threefry key layout). Every draw is a pure function of the key and the shape::

    key = funcrl.random.key(0)
    key, sub = funcrl.random.split(key)
    eps = funcrl.random.normal(sub, (256, 6))          # same numbers as jax.random.normal

Keys are split, never reused. Because a key is an ordinary small integer tensor, it is batched by
``torch.func.vmap`` (one key per seed: ``vmap(f)(split(key, 16))``), an ordinary input to
``torch.compile`` (a new key value never recompiles) and gives the same bits on every device
(and so the same uniforms; normals, through ``erfinv``, agree on CPU and CUDA to the last bits).

The generator is Threefry-2x32 with 20 rounds (Salmon et al. 2011, Random123), written as int64
torch ops masked to 32 bits so that it runs on every device and dtype backend. The counter layout
is JAX's default (``jax_threefry_partitionable=True``, JAX >= 0.5): element ``i`` of a draw of any
shape is ``threefry(key, (i >> 32, i & 0xFFFFFFFF))``, so ``split``, ``fold_in``, ``bits``,
``uniform`` and ``normal`` reproduce JAX's numbers for the same key (``normal`` up to the last ulp:
``erfinv`` differs between XLA and torch).

Threefry on a CPU is one call of the native operator ``funcrl::threefry2x32`` (``csrc/threefry.cpp``,
built once per machine; :func:`native_enabled`), eagerly and under ``torch.compile``: as torch
ops, every draw in a compiled graph was a fused kernel of ~170 integer ops for Inductor to
generate, about two thirds of a pure PPO iteration's cold compile. On other devices it runs as
torch ops, which the caller's compiler fuses there. ``FUNCRL_RANDOM_NATIVE=0`` keeps the torch
ops on a CPU too.

Speed: about 120 integer ops per draw would cost 100x ``torch.randn`` if run op by op, so in plain
eager mode the flat kernels (``split``, ``fold_in``, threefry over a counter vector, bits ->
floats) each run as one ``torch.compile``-d kernel with a dynamic size: compiled once per process
per kind and dtype (seconds; ``FUNCRL_RANDOM_FUSED=0`` turns this off), then within 1.5x of
``torch.randn`` for large draws and ~0.04 ms for small ones (a key split: 0.05 ms, 0.45 ms as
plain ops). Where Threefry is the native operator (a CPU), keys, raw bits and uniforms under
2^18 values skip the kernel (:data:`NATIVE_FUSED_MIN_NUMEL`): the operator makes them as fast
without it, and a process that draws only those never pays its compile. Under
``torch.compile``/``funcrl.jit`` tracing, and for keys batched by ``vmap``, the
same code runs as plain ops, which the caller's compiler fuses or the transform batches (an
unbatched key inside ``grad`` or ``vmap`` still gets the kernel). All paths give bitwise
identical results.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
import warnings
from collections.abc import Callable, Sequence
from typing import Union

import torch

from funcrl import _inductor, _native
from funcrl._constants import filled
from funcrl.jit import is_tracing

__all__ = [
    "key",
    "split",
    "fold_in",
    "bits",
    "uniform",
    "normal",
    "truncated_normal",
    "gumbel",
    "randint",
    "categorical",
    "bernoulli",
    "permutation",
    "is_key",
    "split_optional",
    "fold_in_optional",
]

ShapeLike = Union[int, Sequence[int], torch.Size]

_M32 = 0xFFFFFFFF
_PARITY = 0x1BD11BDA  # Threefry's key-schedule parity constant (Skein).
_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
# Draws of at least this many elements run as the compiled kernel in eager mode. Measured on a
# CPU: even 6 normals take ~0.3 ms as ~150 separate plain ops and ~0.035 ms compiled, so every
# size but 0 and 1 (which torch.compile would specialise, i.e. recompile for) is fused.
FUSED_MIN_NUMEL = 2
# Where Threefry is the native operator (a CPU), the smallest draw of each kind that runs as the
# compiled kernel; None: never. The operator already makes a key split or raw bits one call, so
# the kernel only fuses the float conversion (and normal's erfinv, ~30 ops) -- and costs its
# compile, seconds at the first draw of each kind in every process. Measured on one core
# (plain ops against the kernel, warm): split and bits no faster compiled at any size up to 2^20;
# uniform slower compiled up to 2^16 (0.15 against 0.30 ms for 16 values), faster at 2^20
# (14.8 against 19.9 ms); normal faster compiled at every size (0.26 against 0.43 ms for 2).
NATIVE_FUSED_MIN_NUMEL: dict[str, int | None] = {
    "split": None,
    "fold_in": None,
    "bits": None,
    "uniform": 1 << 18,
    "normal": FUSED_MIN_NUMEL,
}
# FUNCRL_RANDOM_FUSED=0 never compiles the kernel (same bits, slower draws): for short processes
# such as test runs, where the one-time compile (seconds per kind and dtype) would dominate.
_FUSED_ENV = os.environ.get("FUNCRL_RANDOM_FUSED", "1") != "0"


# ---------------------------------------------------------------------------------------------
# Threefry-2x32 core (plain int64 ops masked to 32 bits)
# ---------------------------------------------------------------------------------------------


def _rotl(x: torch.Tensor, r: int) -> torch.Tensor:
    # x < 2**32, so x << r < 2**56 fits in int64 before the mask.
    return ((x << r) | (x >> (32 - r))) & _M32


def threefry2x32(
    k0: torch.Tensor, k1: torch.Tensor, x0: torch.Tensor, x1: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Threefry-2x32, 20 rounds, on uint32 words held in int64 tensors (broadcasting).

    On a CPU this is one call of the operator ``funcrl::threefry2x32`` (``csrc/threefry.cpp``,
    see :func:`native_enabled`); elsewhere, ~170 torch ops. Both give the same bits.

    Args:
        k0, k1: key words, int64 in ``[0, 2**32)``.
        x0, x1: counter words, int64 in ``[0, 2**32)``, broadcastable with the key words.

    Returns:
        The two output words, int64 in ``[0, 2**32)``.
    """
    if x0.device.type == "cpu" and _native_ready():
        return torch.ops.funcrl.threefry2x32(k0, k1, x0, x1)
    return _threefry2x32_ops(k0, k1, x0, x1)


def _threefry2x32_ops(
    k0: torch.Tensor, k1: torch.Tensor, x0: torch.Tensor, x1: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    ks = (k0, k1, k0 ^ k1 ^ _PARITY)
    x0 = (x0 + ks[0]) & _M32
    x1 = (x1 + ks[1]) & _M32
    for i in range(5):
        for r in _ROTATIONS[i % 2]:
            x0 = (x0 + x1) & _M32
            x1 = _rotl(x1, r) ^ x0
        # Key injection after every 4 rounds: words rotate through ks, plus the injection count.
        x0 = (x0 + ks[(i + 1) % 3]) & _M32
        x1 = (x1 + ks[(i + 2) % 3] + (i + 1)) & _M32
    return x0, x1


# The native operator. Written as torch ops, each Threefry in a compiled graph is a fused kernel
# of ~170 integer ops that Inductor must generate C++ for: about two thirds of the cold compile
# of a pure PPO iteration (218.6 s against 69.6 s with a 6-op stand-in, docs/results.md). As one
# operator it is one call to emit. FUNCRL_RANDOM_NATIVE=0 keeps the torch ops (same bits).
_NATIVE_ENV = os.environ.get("FUNCRL_RANDOM_NATIVE", "1") != "0"
_native_state: bool | None = None  # None: not loaded or tried yet
_NATIVE_LOCK = threading.Lock()


def native_enabled() -> bool:
    """Whether Threefry on a CPU runs as the operator ``funcrl::threefry2x32``.

    The operator (``funcrl/csrc/threefry.cpp``) is built at first use by
    :func:`funcrl._native.library` (~12 s once per machine and torch version; then loading it
    takes milliseconds) when the first key is made or drawn from eagerly. Where it cannot be
    built (no C++ compiler) a warning says so once and the torch ops run instead. Under
    ``torch.compile`` it is an opaque call whose fake and ``vmap`` rules are registered here;
    on other devices the torch ops run, as the caller's compiler fuses them there.
    """
    return _native_ready()


def _native_ready() -> bool:
    state = _native_state
    if state is not None:
        return state
    # Loading runs a compiler and reads files: never while a tracer runs this code (the torch
    # ops are traced instead; key() loads it eagerly first).
    return False if is_tracing() else _load_native()


def _load_native() -> bool:
    global _native_state
    with _NATIVE_LOCK:
        if _native_state is None:
            ok = False
            if _NATIVE_ENV:
                try:
                    path = _native.library(
                        "threefry", link=("c10", "torch_cpu"), owner="funcrl.random"
                    )
                    torch.ops.load_library(str(path))
                    _register_native_rules()
                    ok = True
                except Exception as err:  # pragma: no cover - no C++ compiler
                    warnings.warn(
                        f"funcrl.random: the native Threefry operator is unavailable "
                        f"({type(err).__name__}: {str(err)[:500]}); drawing with torch ops "
                        "(the same bits; compiled graphs take longer to compile)",
                        RuntimeWarning,
                        stacklevel=4,
                    )
            _native_state = ok
    return _native_state


def _register_native_rules() -> None:
    op = "funcrl::threefry2x32"

    @torch.library.register_fake(op)
    def _fake(k0, k1, x0, x1):
        shape = torch.broadcast_shapes(k0.shape, k1.shape, x0.shape, x1.shape)
        return x0.new_empty(shape), x0.new_empty(shape)

    @torch.library.register_vmap(op)
    def _vmap(info, in_dims, *words):
        # Each batched word: its batch dim first, then size-1 dims up to the largest logical
        # rank, so that it broadcasts against the unbatched words as its logical shape does.
        ranks = [w.dim() - (d is not None) for w, d in zip(words, in_dims)]
        rank = max(ranks)
        moved = []
        for w, d, r in zip(words, in_dims, ranks):
            if d is not None:
                w = w.movedim(d, 0)
                w = w.reshape((w.shape[0],) + (1,) * (rank - r) + tuple(w.shape[1:]))
            moved.append(w)
        return torch.ops.funcrl.threefry2x32(*moved), (0, 0)


def _words(key: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return key[..., 0], key[..., 1]


def _block(key: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Threefry of ``key`` over the 64-bit counters ``0..n-1`` (JAX's ``iota_2x32_shape``)."""
    k0, k1 = _words(key)
    i = torch.arange(n, dtype=torch.int64, device=key.device)
    hi = i >> 32 if n > 2**32 else torch.zeros_like(i)
    return threefry2x32(k0, k1, hi, i & _M32)


# Flat kernels: each returns a 1-D tensor of n values; run eagerly or as one compiled kernel.


def _bits_flat(key: torch.Tensor, n: int) -> torch.Tensor:
    y0, y1 = _block(key, n)
    return y0 ^ y1


def _float_flat(key: torch.Tensor, n: int, dtype: torch.dtype) -> torch.Tensor:
    """Uniform ``[1, 2)`` floats from random mantissa bits (JAX's ``_uniform``), as ``dtype``.

    ``1 + m * 2**-k`` for ``k`` random mantissa bits ``m``: every step is exact (``m`` and the
    sum fit the mantissa of the type computed in), so the values are those of JAX's bit cast
    ``(m | exponent_of_1).view(dtype)``, with no bit cast, which vmap cannot batch on torch
    2.11 (no batching rule for ``aten::view.dtype``).
    """
    y0, y1 = _block(key, n)
    if dtype == torch.float64:
        # 64 random bits (y0 high, y1 low), top 52 of them as the mantissa.
        m = (y0 << 20) | (y1 >> 12)
        return m.to(torch.float64) * 2.0**-52 + 1.0
    b = y0 ^ y1
    if dtype == torch.float32:
        m = b >> 9
        k = 23
    elif dtype == torch.float16:
        m = (b & 0xFFFF) >> 6
        k = 10
    else:
        # bfloat16 has 7 mantissa bits: JAX draws 8 random bits for it.
        m = (b & 0xFF) >> 1
        k = 7
    # float32 holds 1 + m * 2**-k exactly for k <= 23; the 16-bit types' k bits fit them too.
    return (m.to(torch.float32) * 2.0**-k + 1.0).to(dtype)


def _uniform_flat(
    key: torch.Tensor, n: int, dtype: torch.dtype, lo: torch.Tensor, hi: torch.Tensor
) -> torch.Tensor:
    u = _float_flat(key, n, dtype) - 1.0
    if dtype.itemsize == 2:
        # 16-bit floats: do the affine map in float32 and round once, as compiled code does for
        # a fused half-precision expression (eager would round after each op).
        out = (u.float() * (hi.float() - lo.float()) + lo.float()).to(dtype)
    else:
        out = u * (hi - lo) + lo
    # max(lo, .) as JAX does: rounding in u * (hi - lo) + lo can never go below lo.
    return torch.maximum(out, lo)


# Giles (2010) single-precision erfinv, as XLA's ErfInv32 (so normals match JAX's): unlike
# torch.erfinv it is plain elementwise arithmetic, which the compiled kernel vectorises (torch's
# erfinv runs scalar there, 8x slower) and which gives the same bits eager and compiled.
_ERFINV_LT5 = (2.81022636e-08, 3.43273939e-07, -3.5233877e-06, -4.39150654e-06, 0.00021858087,
               -0.00125372503, -0.00417768164, 0.246640727, 1.50140941)  # fmt: skip
_ERFINV_GE5 = (-0.000200214257, 0.000100950558, 0.00134934322, -0.00367342844, 0.00573950773,
               -0.0076224613, 0.00943887047, 1.00167406, 2.83297682)  # fmt: skip


def _erfinv32(x: torch.Tensor) -> torch.Tensor:
    """erfinv of float32 ``x`` in ``(-1, 1)`` (Giles' polynomial, max error ~4 ulp)."""
    w = -torch.log1p(-x * x)
    lt = w < 5.0
    # sqrt in float64, rounded once to float32: exact, whereas torch's eager float32 sqrt on CPU
    # is off by an ulp for ~17% of inputs and compiled code's is exact (the paths must agree).
    w = torch.where(lt, w - 2.5, torch.sqrt(w.double()).float() - 3.0)
    p = torch.where(lt, _ERFINV_LT5[0], _ERFINV_GE5[0])
    for a, b in zip(_ERFINV_LT5[1:], _ERFINV_GE5[1:]):
        p = torch.where(lt, a, b) + p * w
    return p * x


def _normal_flat(key: torch.Tensor, n: int, dtype: torch.dtype) -> torch.Tensor:
    # JAX: sqrt(2) * erfinv(uniform(nextafter(-1, 0), 1)); u > -1 keeps erfinv finite.
    lo = torch.nextafter(filled(-1.0, dtype, key.device), filled(0.0, dtype, key.device))
    hi = filled(1.0, dtype, key.device)
    if dtype.itemsize == 2:
        # float16/bfloat16: the 16-bit uniform mapped to (-1, 1) and erfinv'd in float32, rounded
        # to 16 bits once (a compiler drops a float32 -> 16 -> 32 bit round trip, eager would not).
        u = _float_flat(key, n, dtype).float() - 1.0
        lo32, hi32 = lo.float(), hi.float()
        u = torch.maximum(u * (hi32 - lo32) + lo32, lo32)
        return (_erfinv32(u) * math.sqrt(2)).to(dtype)
    return _erfinv32(_uniform_flat(key, n, dtype, lo, hi)) * math.sqrt(2)


def _split_flat(key: torch.Tensor, n: int) -> torch.Tensor:
    y0, y1 = _block(key, n)
    return torch.stack([y0, y1], dim=-1)


def _fold_in_flat(key: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    k0, k1 = _words(key)
    y0, y1 = threefry2x32(k0, k1, torch.zeros_like(d), d)
    return torch.stack([y0, y1], dim=-1)


_KERNELS: dict[str, Callable[..., torch.Tensor]] = {
    "split": _split_flat,
    "fold_in": _fold_in_flat,
    "bits": _bits_flat,
    "uniform": _uniform_flat,
    "normal": _normal_flat,
}
_COMPILED: dict[str, Callable[..., torch.Tensor]] = {}
_FUSED_BROKEN = False
_LOCK = threading.Lock()


def _compiled(kind: str) -> Callable[..., torch.Tensor]:
    fn = _COMPILED.get(kind)
    if fn is None:
        with _LOCK:
            fn = _COMPILED.get(kind)
            if fn is None:
                _inductor.prepare()
                # dynamic=True: one compile per kind/dtype/device serves every size.
                fn = torch.compile(_KERNELS[kind], dynamic=True, fullgraph=True)
                _COMPILED[kind] = fn
    return fn


def fused_enabled(key: torch.Tensor, n: int, kind: str | None = None) -> bool:
    """Whether a draw of ``n`` values from ``key`` runs as the compiled kernel.

    ``kind`` (``"split"``, ``"fold_in"``, ``"bits"``, ``"uniform"``, ``"normal"``) narrows it
    where Threefry is the native operator (a CPU): there the kernel is used only where it pays
    for its compile (:data:`NATIVE_FUSED_MIN_NUMEL`).

    Only eagerly: under ``torch.compile``/``funcrl.jit`` tracing the caller's graph fuses the ops
    itself. Inside a ``torch.func`` transform the kernel runs only when the key is an ordinary
    tensor (e.g. a loss's key under ``grad``): the draw is then a constant to the transform and
    runs outside it. A key that belongs to the transform (batched by ``vmap``) needs the plain
    ops, which the transform batches.
    """
    return (
        _FUSED_ENV
        and not _FUSED_BROKEN
        and isinstance(n, int)
        and n >= FUSED_MIN_NUMEL
        and not is_tracing()
        and not torch._C._functorch.is_functorch_wrapped_tensor(key)
        and (kind is None or _worth_fusing(kind, key, n))
    )


def _worth_fusing(kind: str, key: torch.Tensor, n: int) -> bool:
    if key.device.type != "cpu" or not _native_ready():
        return True
    least = NATIVE_FUSED_MIN_NUMEL[kind]
    return least is not None and n >= least


def _run(
    kind: str, key: torch.Tensor, n: int, *args: object, size_arg: bool = True
) -> torch.Tensor:
    global _FUSED_BROKEN
    call_args = (key, n, *args) if size_arg else (key, *args)
    if fused_enabled(key, n, kind) and not any(
        isinstance(a, torch.Tensor) and _is_wrapped(a) for a in args
    ):
        try:
            # no_grad: nothing here is differentiable, and a fixed grad mode keeps one compile.
            # Outside any torch.func transform (dynamo refuses to run under one): no input
            # belongs to a transform, so the result is the same constant the plain ops give, and
            # a loss's draws under grad cost one kernel call instead of ~150 transformed ops.
            with torch.no_grad(), _outside_transforms():
                return _compiled(kind)(*call_args)
        except Exception as err:  # pragma: no cover - no C++ compiler, unsupported backend
            _FUSED_BROKEN = True
            warnings.warn(
                f"funcrl.random: the compiled generator failed ({type(err).__name__}: {err}); "
                "falling back to plain torch ops (correct, but ~50x slower for large draws)",
                RuntimeWarning,
                stacklevel=3,
            )
    return _KERNELS[kind](*call_args)


def _outside_transforms() -> contextlib.AbstractContextManager:
    if torch._C._functorch.peek_interpreter_stack() is None:
        return contextlib.nullcontext()
    from torch._functorch.pyfunctorch import temporarily_clear_interpreter_stack

    return temporarily_clear_interpreter_stack()


def _is_wrapped(t: torch.Tensor) -> bool:
    return torch._C._functorch.is_functorch_wrapped_tensor(t)


# ---------------------------------------------------------------------------------------------
# Argument checks (static: shapes, dtypes, Python values; free under compile and vmap)
# ---------------------------------------------------------------------------------------------


def is_key(x: object) -> bool:
    """Whether ``x`` looks like a single key: an int64 tensor of shape ``[2]``."""
    return isinstance(x, torch.Tensor) and x.dtype == torch.int64 and tuple(x.shape) == (2,)


def _check_key(fn: str, k: object, name: str = "key") -> torch.Tensor:
    # `fn` is a funcrl.random function's name, or a dotted owner elsewhere in funcrl.
    fn = fn if "." in fn else f"funcrl.random.{fn}"
    if not isinstance(k, torch.Tensor):
        raise TypeError(
            f"{fn}: {name} must be a key (int64 tensor of shape [2], from "
            f"funcrl.random.key), got {type(k).__name__}"
        )
    if k.dtype != torch.int64 or tuple(k.shape) != (2,):
        raise ValueError(
            f"{fn}: {name} must be an int64 tensor of shape [2] (from "
            f"funcrl.random.key; a batch of keys goes through vmap), got dtype {k.dtype} shape "
            f"{list(k.shape)}"
        )
    # The words must be uint32 values; reading them is free on CPU in eager mode only (a host
    # sync on accelerators, a trace error under compile, meaningless under vmap).
    if (
        k.device.type == "cpu"
        and not is_tracing()
        and not torch._C._functorch.is_functorch_wrapped_tensor(k)
    ):
        lo, hi = int(k.min()), int(k.max())
        if lo < 0 or hi > _M32:
            raise ValueError(
                f"{fn}: {name} words must be in [0, 2**32), got values in [{lo}, {hi}]"
            )
    return k


def _check_shape(fn: str, shape: ShapeLike, name: str = "shape") -> tuple[int, ...]:
    if isinstance(shape, (int, torch.SymInt)) and not isinstance(shape, bool):
        shape = (shape,)
    if not isinstance(shape, (tuple, list, torch.Size)):
        raise TypeError(
            f"funcrl.random.{fn}: {name} must be an int or a sequence of ints, got "
            f"{type(shape).__name__}"
        )
    out = tuple(shape)
    for d in out:
        if isinstance(d, bool) or not isinstance(d, (int, torch.SymInt)):
            raise TypeError(
                f"funcrl.random.{fn}: {name} must contain ints, got {list(out)} "
                f"(element of type {type(d).__name__})"
            )
        if isinstance(d, int) and d < 0:
            raise ValueError(f"funcrl.random.{fn}: {name} must be non-negative, got {list(out)}")
    return out


def _check_float_dtype(fn: str, dtype: torch.dtype) -> torch.dtype:
    if dtype not in _FLOATS:
        raise TypeError(
            f"funcrl.random.{fn}: dtype must be one of {[str(d) for d in _FLOATS]}, got {dtype}"
        )
    return dtype


def _numel(shape: tuple[int, ...]) -> int:
    return math.prod(shape) if shape else 1


# ---------------------------------------------------------------------------------------------
# Keys
# ---------------------------------------------------------------------------------------------


def key(seed: int, device: torch.device | str | None = None) -> torch.Tensor:
    """A key from an integer seed, as JAX's ``PRNGKey(seed)``.

    Args:
        seed: an int. Seeds in ``[-2**31, 2**32)`` give ``[0, seed mod 2**32]`` (JAX's default
            32-bit seeds); larger 64-bit seeds in ``[-2**63, 2**64)`` give their high and low
            words ``[hi, lo]`` (JAX with ``jax_enable_x64``).
        device: where the key lives (default: CPU).

    Returns:
        ``[2]`` int64 key.
    """
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"funcrl.random.key: seed must be an int, got {type(seed).__name__}")
    if not -(2**63) <= seed < 2**63:
        raise ValueError(f"funcrl.random.key: seed must be in [-2**63, 2**63), got {seed}")
    _native_ready()  # build or load the operator now, before any graph is traced
    if -(2**31) <= seed < 2**32:
        words = [0, seed & _M32]
    else:
        words = [(seed >> 32) & _M32, seed & _M32]
    return torch.tensor(words, dtype=torch.int64, device=device)


def split(key: torch.Tensor, num: int | Sequence[int] = 2) -> torch.Tensor:
    """``num`` new keys from ``key`` (JAX's ``split``, partitionable layout).

    Args:
        key: ``[2]`` key.
        num: number of keys, or a shape.

    Returns:
        ``[num, 2]`` (or ``[*shape, 2]``) keys; child ``i`` is ``threefry(key, (0, i))``.
    """
    _check_key("split", key)
    shape = _check_shape("split", num, "num")
    return _run("split", key, _numel(shape)).reshape(*shape, 2)


def fold_in(key: torch.Tensor, data: int | torch.Tensor) -> torch.Tensor:
    """A new key from ``key`` and a 32-bit integer (JAX's ``fold_in``): e.g. a step count.

    Args:
        key: ``[2]`` key.
        data: int in ``[0, 2**32)`` or a 0-d integer tensor (such a tensor is an ordinary input
            under ``torch.compile`` and may be batched by ``vmap``).

    Returns:
        ``[2]`` key, ``threefry(key, (0, data))``.
    """
    _check_key("fold_in", key)
    if isinstance(data, torch.Tensor):
        if data.dtype.is_floating_point or data.dtype.is_complex or data.dtype == torch.bool:
            raise TypeError(
                f"funcrl.random.fold_in: data must be an integer tensor, got dtype {data.dtype}"
            )
        if data.dim() != 0:
            raise ValueError(
                f"funcrl.random.fold_in: data must be a 0-d tensor, got shape {list(data.shape)}"
            )
        d = data.to(device=key.device, dtype=torch.int64)
        if (
            d.device.type == "cpu"
            and not is_tracing()
            and not torch._C._functorch.is_functorch_wrapped_tensor(d)
        ):
            if not 0 <= int(d) <= _M32:
                raise ValueError(f"funcrl.random.fold_in: data must be in [0, 2**32), got {int(d)}")
    elif isinstance(data, int) and not isinstance(data, bool):
        if not 0 <= data <= _M32:
            raise ValueError(f"funcrl.random.fold_in: data must be in [0, 2**32), got {data}")
        d = filled(data, torch.int64, key.device)
    else:
        raise TypeError(
            f"funcrl.random.fold_in: data must be an int or an integer tensor, got "
            f"{type(data).__name__}"
        )
    # Counted as a 2-element draw for the fused/plain choice (one block, two words).
    return _run("fold_in", key, 2, d, size_arg=False)


# ---------------------------------------------------------------------------------------------
# Draws
# ---------------------------------------------------------------------------------------------


def bits(key: torch.Tensor, shape: ShapeLike = ()) -> torch.Tensor:
    """Uniform random 32-bit words (JAX's ``random_bits(key, 32, shape)``).

    Returns:
        ``shape`` int64 tensor of values in ``[0, 2**32)``.
    """
    _check_key("bits", key)
    shape = _check_shape("bits", shape)
    return _run("bits", key, _numel(shape)).reshape(shape)


def _bound(
    fn: str, name: str, v: float | torch.Tensor, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    if isinstance(v, torch.Tensor):
        if not v.dtype.is_floating_point and v.dtype not in (torch.int32, torch.int64):
            raise TypeError(f"funcrl.random.{fn}: {name} must be a real tensor, got {v.dtype}")
        return v.to(dtype=dtype, device=device)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise TypeError(
            f"funcrl.random.{fn}: {name} must be a float or a tensor, got {type(v).__name__}"
        )
    return filled(v, dtype, device)


def _check_broadcast(fn: str, name: str, t: torch.Tensor, shape: tuple[int, ...]) -> None:
    # The bounds may vary per element but must not enlarge the draw: shape is the output shape.
    try:
        out = torch.broadcast_shapes(t.shape, shape)
    except RuntimeError:
        out = None
    if out is None or tuple(out) != tuple(shape):
        raise ValueError(
            f"funcrl.random.{fn}: {name} of shape {list(t.shape)} does not broadcast to shape "
            f"{list(shape)}"
        )


def uniform(
    key: torch.Tensor,
    shape: ShapeLike = (),
    dtype: torch.dtype = torch.float32,
    minval: float | torch.Tensor = 0.0,
    maxval: float | torch.Tensor = 1.0,
) -> torch.Tensor:
    """Uniform floats in ``[minval, maxval)`` (JAX's ``uniform``: random mantissa bits).

    Args:
        key: ``[2]`` key.
        shape: output shape.
        dtype: float16, bfloat16, float32 or float64.
        minval, maxval: bounds, floats or tensors broadcastable to ``shape``.

    Returns:
        ``shape`` tensor of ``dtype`` on the key's device.
    """
    _check_key("uniform", key)
    shape = _check_shape("uniform", shape)
    _check_float_dtype("uniform", dtype)
    lo = _bound("uniform", "minval", minval, dtype, key.device)
    hi = _bound("uniform", "maxval", maxval, dtype, key.device)
    if lo.dim() == 0 and hi.dim() == 0 and not (lo.requires_grad or hi.requires_grad):
        return _run("uniform", key, _numel(shape), dtype, lo, hi).reshape(shape)
    _check_broadcast("uniform", "minval", lo, shape)
    _check_broadcast("uniform", "maxval", hi, shape)
    u = _run("uniform", key, _numel(shape), dtype, _ZERO(dtype, key), _ONE(dtype, key))
    return torch.maximum(u.reshape(shape) * (hi - lo) + lo, lo)


def _ZERO(dtype: torch.dtype, k: torch.Tensor) -> torch.Tensor:  # noqa: N802
    return torch.zeros((), dtype=dtype, device=k.device)


def _ONE(dtype: torch.dtype, k: torch.Tensor) -> torch.Tensor:  # noqa: N802
    return torch.ones((), dtype=dtype, device=k.device)


def normal(
    key: torch.Tensor, shape: ShapeLike = (), dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Standard normal floats (JAX's ``normal``: ``sqrt(2) * erfinv(uniform(-1, 1))``).

    Returns:
        ``shape`` tensor of ``dtype`` on the key's device.
    """
    _check_key("normal", key)
    shape = _check_shape("normal", shape)
    _check_float_dtype("normal", dtype)
    n = _numel(shape)
    if dtype == torch.float64:
        # No polynomial here: torch.erfinv, run outside the kernel so both paths share it.
        lo = torch.nextafter(_ONE(dtype, key).neg(), _ZERO(dtype, key))
        u = _run("uniform", key, n, dtype, lo, _ONE(dtype, key))
        return (torch.erfinv(u) * math.sqrt(2)).reshape(shape)
    return _run("normal", key, n, dtype).reshape(shape)


def truncated_normal(
    key: torch.Tensor,
    lower: float | torch.Tensor,
    upper: float | torch.Tensor,
    shape: ShapeLike = (),
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Standard normal truncated to ``(lower, upper)`` by inverse CDF (JAX's ``truncated_normal``).

    Args:
        key: ``[2]`` key.
        lower, upper: bounds, floats or tensors broadcastable to ``shape``.
        shape: output shape.
        dtype: floating dtype.

    Returns:
        ``shape`` tensor, strictly inside ``(lower, upper)``.
    """
    _check_key("truncated_normal", key)
    shape = _check_shape("truncated_normal", shape)
    _check_float_dtype("truncated_normal", dtype)
    lo = _bound("truncated_normal", "lower", lower, dtype, key.device)
    hi = _bound("truncated_normal", "upper", upper, dtype, key.device)
    _check_broadcast("truncated_normal", "lower", lo, shape)
    _check_broadcast("truncated_normal", "upper", hi, shape)
    sqrt2 = math.sqrt(2)
    a, b = torch.erf(lo / sqrt2), torch.erf(hi / sqrt2)
    u = uniform(key, shape, dtype, a, b)
    out = u.erfinv() * sqrt2
    inf = filled(math.inf, dtype, key.device)
    return torch.clamp(out, torch.nextafter(lo.detach(), inf), torch.nextafter(hi, -inf))


def gumbel(
    key: torch.Tensor, shape: ShapeLike = (), dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Standard Gumbel noise ``-log(-log(u))``, ``u`` uniform in ``[tiny, 1)`` (JAX's ``gumbel``).

    Returns:
        ``shape`` tensor of ``dtype``.
    """
    _check_key("gumbel", key)
    shape = _check_shape("gumbel", shape)
    _check_float_dtype("gumbel", dtype)
    u = uniform(key, shape, dtype, torch.finfo(dtype).tiny, 1.0)
    return -torch.log(-torch.log(u))


def randint(
    key: torch.Tensor,
    shape: ShapeLike,
    low: int,
    high: int,
    dtype: torch.dtype = torch.int64,
) -> torch.Tensor:
    """Uniform integers in ``[low, high)`` (JAX's ``randint`` algorithm, 32-bit draws).

    Two 32-bit words per value, combined modulo the span so that the bias is below 2**-32.

    Args:
        key: ``[2]`` key.
        shape: output shape.
        low, high: ints with ``low < high`` and ``high - low <= 2**32``.
        dtype: integer dtype that holds ``[low, high)``.

    Returns:
        ``shape`` tensor of ``dtype``.
    """
    _check_key("randint", key)
    shape = _check_shape("randint", shape)
    for name, v in (("low", low), ("high", high)):
        if isinstance(v, bool) or not isinstance(v, int):
            raise TypeError(f"funcrl.random.randint: {name} must be an int, got {type(v).__name__}")
    if not low < high:
        raise ValueError(f"funcrl.random.randint: need low < high, got low={low}, high={high}")
    if high - low > 2**32:
        raise ValueError(f"funcrl.random.randint: high - low must be <= 2**32, got {high - low}")
    if dtype.is_floating_point or dtype.is_complex or dtype == torch.bool:
        raise TypeError(f"funcrl.random.randint: dtype must be an integer dtype, got {dtype}")
    info = torch.iinfo(dtype)
    if low < info.min or high - 1 > info.max:
        raise ValueError(
            f"funcrl.random.randint: [low, high) = [{low}, {high}) does not fit dtype {dtype}"
        )
    k1, k2 = split(key)
    n = _numel(shape)
    higher, lower = _run("bits", k1, n), _run("bits", k2, n)
    span = high - low
    # (2**16 mod span)**2 mod span == 2**32 mod span: hi * 2**32 + lo mod span, in uint32 math.
    mult = ((2**16 % span) ** 2) % span
    off = (((higher % span) * mult) & _M32) + (lower % span)
    off = (off & _M32) % span
    return (off + low).to(dtype).reshape(shape)


def bernoulli(
    key: torch.Tensor, p: float | torch.Tensor = 0.5, shape: ShapeLike | None = None
) -> torch.Tensor:
    """Booleans that are True with probability ``p`` (JAX's ``bernoulli``: ``uniform < p``).

    Args:
        key: ``[2]`` key.
        p: probability in ``[0, 1]``, a float or a float tensor broadcastable to ``shape``.
        shape: output shape (default: ``p``'s shape).

    Returns:
        bool tensor.
    """
    _check_key("bernoulli", key)
    if isinstance(p, torch.Tensor):
        if not p.dtype.is_floating_point:
            raise TypeError(f"funcrl.random.bernoulli: p must be a float tensor, got {p.dtype}")
        pt = p.to(key.device)
        if (
            pt.device.type == "cpu"
            and not is_tracing()
            and not torch._C._functorch.is_functorch_wrapped_tensor(pt)
            and pt.numel() > 0
        ):
            lo, hi = float(pt.min()), float(pt.max())
            if not (0.0 <= lo and hi <= 1.0):
                raise ValueError(
                    f"funcrl.random.bernoulli: p must be in [0, 1], got values in [{lo}, {hi}]"
                )
    elif isinstance(p, (int, float)) and not isinstance(p, bool):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"funcrl.random.bernoulli: p must be in [0, 1], got {p}")
        pt = filled(float(p), torch.get_default_dtype(), key.device)
    else:
        raise TypeError(
            f"funcrl.random.bernoulli: p must be a float or a tensor, got {type(p).__name__}"
        )
    shape = tuple(pt.shape) if shape is None else _check_shape("bernoulli", shape)
    _check_broadcast("bernoulli", "p", pt, shape)
    return uniform(key, shape, pt.dtype) < pt


def categorical(
    key: torch.Tensor,
    logits: torch.Tensor,
    axis: int = -1,
    shape: ShapeLike | None = None,
) -> torch.Tensor:
    """Indices drawn with probabilities ``softmax(logits, axis)`` (JAX's Gumbel-max ``categorical``).

    Args:
        key: ``[2]`` key.
        logits: unnormalised log-probabilities; ``-inf`` entries are never drawn.
        axis: the category axis.
        shape: output shape, ``[*sample_shape, *batch_shape]`` where ``batch_shape`` is
            ``logits.shape`` without ``axis`` (default: ``batch_shape``).

    Returns:
        int64 tensor of ``shape``.
    """
    _check_key("categorical", key)
    if not isinstance(logits, torch.Tensor) or not logits.dtype.is_floating_point:
        raise TypeError(
            "funcrl.random.categorical: logits must be a float tensor, got "
            f"{getattr(logits, 'dtype', type(logits).__name__)}"
        )
    if logits.dim() == 0:
        raise ValueError("funcrl.random.categorical: logits must have at least 1 dim, got 0-d")
    if not -logits.dim() <= axis < logits.dim():
        raise ValueError(
            f"funcrl.random.categorical: axis {axis} out of range for logits of shape "
            f"{list(logits.shape)}"
        )
    axis = axis % logits.dim()
    batch = tuple(logits.shape[:axis]) + tuple(logits.shape[axis + 1 :])
    if shape is None:
        shape = batch
    else:
        shape = _check_shape("categorical", shape)
        if len(shape) < len(batch) or tuple(shape[len(shape) - len(batch) :]) != batch:
            raise ValueError(
                f"funcrl.random.categorical: shape {list(shape)} must end with the batch shape "
                f"{list(batch)} (logits {list(logits.shape)} without axis {axis})"
            )
    prefix = tuple(shape[: len(shape) - len(batch)])
    full = prefix + tuple(logits.shape)
    g = gumbel(key, full, logits.dtype)
    return torch.argmax(g + logits.to(key.device), dim=len(prefix) + axis)


def permutation(key: torch.Tensor, x: int | torch.Tensor) -> torch.Tensor:
    """A random permutation of ``range(x)``, or of ``x``'s first dim (JAX's sort-based shuffle).

    Args:
        key: ``[2]`` key.
        x: an int ``n >= 0`` or a tensor with at least one dim.

    Returns:
        ``[n]`` int64 permutation, or ``x`` with its rows shuffled.
    """
    _check_key("permutation", key)
    if isinstance(x, torch.Tensor):
        if x.dim() == 0:
            raise ValueError("funcrl.random.permutation: x must have at least 1 dim, got 0-d")
        n = x.shape[0]
    elif isinstance(x, int) and not isinstance(x, bool):
        if x < 0:
            raise ValueError(f"funcrl.random.permutation: x must be >= 0, got {x}")
        n = x
    else:
        raise TypeError(
            f"funcrl.random.permutation: x must be an int or a tensor, got {type(x).__name__}"
        )
    idx = torch.arange(n, device=key.device)
    # JAX: enough rounds of sorting by 32-bit random keys that ties (which a stable sort resolves
    # by position) are unlikely: ceil(3 * ln(n) / ln(2**32 - 1)) rounds.
    rounds = math.ceil(3 * math.log(max(1, n)) / math.log(_M32))
    for _ in range(rounds):
        key, sub = split(key)
        order = torch.sort(bits(sub, (n,)), stable=True).indices
        idx = idx[order]
    return x[idx] if isinstance(x, torch.Tensor) else idx


def split_optional(key: torch.Tensor | None, num: int) -> list[torch.Tensor | None]:
    """``num`` sub-keys of ``key`` as a list (one per draw site, in a fixed order), or ``num``
    ``None`` s without a key: the idiom of every sampler whose ``key=None`` means the global RNG."""
    if key is None:
        return [None] * num
    return list(split(key, num).unbind(0))


def fold_in_optional(key: torch.Tensor | None, data: int | torch.Tensor) -> torch.Tensor | None:
    """:func:`fold_in`, or ``None`` without a key (see :func:`split_optional`)."""
    return None if key is None else fold_in(key, data)
