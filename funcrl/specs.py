"""Tensor specs: the shape, dtype and domain of observations and actions.

funcrl's counterparts of TorchRL's ``torchrl.data`` specs (``Unbounded``, ``Bounded``,
``Categorical``, ``OneHot``, ``MultiOneHot``, ``MultiCategorical``, ``Binary``, ``Composite``),
reduced to plain classes that hold a few tensors and Python metadata:

* ``.shape`` (``torch.Size``), ``.dtype``, ``.device``; discrete specs have ``.n`` / ``.nvec``;
* ``is_in(x)`` returns a **0-dim bool tensor** (never a Python bool, so that it never forces a
  host sync by itself; wrap it in ``bool(...)`` for an ``if``). A value of the wrong trailing shape
  or dtype gives ``tensor(False)``. ``is_in`` is meant for checks and tests, not hot paths;
* ``project(x)`` maps any value of shape ``[*batch, *spec.shape]`` into the spec's domain, cast to
  the spec's dtype. It always computes the projection (TorchRL skips it when ``is_in`` holds, which
  costs a host sync), so it is safe inside ``torch.compile(fullgraph=True)`` and ``vmap``;
* ``rand(shape=(), generator=None)`` samples ``[*shape, *spec.shape]`` (from the global RNG unless
  a ``torch.Generator`` is given); ``zero(shape=())`` returns zeros of that shape.

``Composite`` holds named (possibly nested) specs; its ``rand`` / ``zero`` / ``project`` return
``funcrl.Record`` s whose batch dims are ``[*shape, *composite.shape]``.

Specs are ordinary objects (tensors inside, ``__eq__`` by value, not hashable). They can be
closed over as constants by ``torch.compile``'d functions.

Deliberate differences from TorchRL 0.14:

* ``OneHot.project`` takes the argmax (first maximum) instead of sampling
  ``multinomial(x)``: projection is deterministic.
* ``Categorical`` / ``MultiCategorical`` / ``Binary`` / integer ``Bounded`` projections round,
  clamp, and return the spec's dtype.

Projection never wraps. ``project`` clamps in the *source* dtype (or a wider one) and only then
casts, so ``Bounded(0, 100, dtype=torch.uint8).project(300)`` is 100 and an int32 spec's
``project(1e10)`` is its upper bound; floats are rounded to the nearest integer (half to even)
before an integer cast, never truncated. Every spec dtype works: uint8, int8, int16, int32, int64,
bool, float16, bfloat16, float32, float64.

NaN policy (one rule, identical eager, vmapped and compiled, since ``project`` runs inside training
steps where a value check would cost a host sync): **NaN projects to the spec's lower bound** --
``low`` for ``Bounded``, category 0 for ``Categorical`` / ``MultiCategorical``, 0 (``False``) for
``Binary``; ``OneHot`` / ``MultiOneHot`` treat a NaN score as ``-inf`` (an all-NaN row gives
category 0); an integer or bool ``Unbounded`` maps NaN to 0. A floating ``Unbounded`` spec holds
any float, NaN included, and its ``project`` only casts. ``is_in`` is ``False`` for NaN everywhere
but in a floating ``Unbounded``.
* masks are data, not spec state: ``Categorical.rand`` and ``OneHot.rand`` take an optional
  ``mask`` argument instead of ``spec.update_mask``.
* ``from_gymnasium`` maps ``Discrete`` to ``Categorical`` by default (TorchRL's default is
  ``OneHot``; pass ``one_hot=True``), and ``Tuple`` to a ``Composite`` with keys ``"0"``, ``"1"``...
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch

from funcrl.record import NestedKey, Record

__all__ = [
    "TensorSpec",
    "Unbounded",
    "Bounded",
    "Categorical",
    "OneHot",
    "MultiOneHot",
    "MultiCategorical",
    "Binary",
    "Composite",
    "from_gymnasium",
]

ShapeLike = int | Sequence[int] | torch.Size


def _size(shape: ShapeLike | None, name: str, owner: str) -> torch.Size:
    if shape is None:
        return torch.Size([])
    if isinstance(shape, int):
        shape = (shape,)
    try:
        out = torch.Size([int(s) for s in shape])
    except (TypeError, ValueError) as err:
        raise TypeError(
            f"{owner}: {name} must be an int or a sequence of ints, got {shape!r}"
        ) from err
    if any(s < 0 for s in out):
        raise ValueError(f"{owner}: {name} must have non-negative sizes, got {tuple(out)}")
    return out


def _device(device: Any) -> torch.device:
    return torch.device("cpu") if device is None else torch.device(device)


def _false(device: torch.device) -> torch.Tensor:
    return torch.zeros((), dtype=torch.bool, device=device)


def _true(device: torch.device) -> torch.Tensor:
    return torch.ones((), dtype=torch.bool, device=device)


_DTYPES = (
    torch.uint8,
    torch.int8,
    torch.int16,
    torch.int32,
    torch.int64,
    torch.bool,
    torch.float16,
    torch.bfloat16,
    torch.float32,
    torch.float64,
)


_INT_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


def _check_dtype(owner: str, dtype: Any, allowed: Sequence[torch.dtype] = _DTYPES) -> None:
    if not isinstance(dtype, torch.dtype) or dtype not in allowed:
        kind = "an integer dtype" if allowed == _INT_DTYPES else "a real or bool dtype"
        raise TypeError(
            f"{owner}: dtype must be {kind} "
            f"({', '.join(str(d).removeprefix('torch.') for d in allowed)}), got {dtype!r}"
        )


def _check_real_input(owner: str, x: torch.Tensor) -> None:
    if x.is_complex() or x.dtype not in _DTYPES:
        raise TypeError(f"{owner}: value has dtype {x.dtype}, expected a real or bool dtype")


def _saturate(x: torch.Tensor, low: Any, high: Any, dtype: torch.dtype) -> torch.Tensor:
    """``x`` clamped into ``[low, high]`` *before* the cast to ``dtype``, so nothing wraps.

    Args:
        x: any real or bool tensor.
        low: lower bounds (a tensor or number) exactly representable in ``dtype``.
        high: upper bounds, likewise.
        dtype: the result dtype.

    Floats going to an integer dtype are rounded first (half to even); NaN maps to ``low``.
    """
    if x.dtype == torch.bool:
        x = x.to(torch.int64)
    low = torch.as_tensor(low, device=x.device)
    high = torch.as_tensor(high, device=x.device)
    if dtype.is_floating_point:
        work = torch.promote_types(x.dtype, dtype)  # holds every value of both dtypes' ranges
        lo, hi = low.to(work), high.to(work)
        xw = x.to(work)
        out = (
            torch.where(torch.isnan(xw), lo, torch.clamp(xw, lo, hi))
            if xw.is_floating_point()
            else torch.clamp(xw, lo, hi)
        )
        return out.to(dtype)
    lo64, hi64 = low.to(torch.int64), high.to(torch.int64)
    if not x.is_floating_point():
        return torch.clamp(x.to(torch.int64), lo64, hi64).to(dtype)
    # float64 holds every float16/bfloat16/float32 value exactly; the bounds may round up (int64
    # max -> 2**63), so values at or past a bound take the exact integer bound, not a cast.
    xf = torch.round(x.to(torch.float64))
    lo_f, hi_f = lo64.to(torch.float64), hi64.to(torch.float64)
    nan = torch.isnan(xf)
    inside = torch.where(nan | (xf <= lo_f) | (xf >= hi_f), lo_f, xf).to(torch.int64)
    out = torch.where(xf >= hi_f, hi64, torch.where(nan | (xf <= lo_f), lo64, inside))
    return out.to(dtype)


def _dtype_limits(dtype: torch.dtype) -> tuple[float, float]:
    if dtype == torch.bool:
        return 0, 1
    info = torch.finfo(dtype) if dtype.is_floating_point else torch.iinfo(dtype)
    return info.min, info.max


class TensorSpec:
    """Base class of the tensor specs: shape, dtype and device plus the shared shape checks."""

    shape: torch.Size
    dtype: torch.dtype
    device: torch.device

    @property
    def ndim(self) -> int:
        return len(self.shape)

    # -- shape helpers ------------------------------------------------------------------------
    def _matches(self, x: Any) -> bool:
        """Whether ``x`` is a tensor of shape ``[*batch, *self.shape]`` and dtype ``self.dtype``."""
        return (
            isinstance(x, torch.Tensor)
            and x.ndim >= self.ndim
            and x.shape[x.ndim - self.ndim :] == self.shape
            and x.dtype == self.dtype
        )

    def _check_value(self, x: Any, method: str) -> torch.Tensor:
        """Raises a clear error unless ``x`` is a tensor of shape ``[*batch, *self.shape]``."""
        owner = f"{type(self).__name__}.{method}"
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{owner}: expected a tensor, got {type(x).__name__}")
        _check_real_input(owner, x)
        if x.ndim < self.ndim or x.shape[x.ndim - self.ndim :] != self.shape:
            raise ValueError(
                f"{owner}: value has shape {tuple(x.shape)}, expected "
                f"[*batch, {', '.join(map(str, self.shape))}] (spec shape {tuple(self.shape)})"
            )
        return x

    def _full_shape(self, shape: ShapeLike | None) -> torch.Size:
        return _size(shape, "shape", f"{type(self).__name__}.rand/zero") + self.shape

    # -- API ----------------------------------------------------------------------------------
    def is_in(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def project(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def rand(
        self, shape: ShapeLike = (), generator: torch.Generator | None = None
    ) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def zero(self, shape: ShapeLike = ()) -> torch.Tensor:
        """Zeros of shape ``[*shape, *self.shape]`` (not necessarily inside the domain)."""
        return torch.zeros(self._full_shape(shape), dtype=self.dtype, device=self.device)

    def _meta(self) -> tuple:
        return (type(self), self.shape, self.dtype, self.device)

    def _tensors(self) -> tuple[torch.Tensor, ...]:
        return ()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TensorSpec) or self._meta() != other._meta():
            return False
        return all(torch.equal(a, b) for a, b in zip(self._tensors(), other._tensors()))

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        extra = self._repr_extra()
        return (
            f"{type(self).__name__}(shape={tuple(self.shape)}, dtype={self.dtype}, "
            f"device={self.device}{', ' + extra if extra else ''})"
        )

    def _repr_extra(self) -> str:
        return ""


# ---------------------------------------------------------------------------------- continuous
class Unbounded(TensorSpec):
    """Any value of the given shape and dtype.

    Args:
        shape: the spec shape (an int ``d`` means ``(d,)``).
        dtype: defaults to ``torch.float32``.
        device: defaults to CPU.

    ``rand`` draws standard normals for floating dtypes, uniform integers over the dtype's
    non-negative range for integer dtypes, and fair coins for ``torch.bool``. ``project`` casts
    to ``dtype``, saturating at the dtype's limits for integer and bool dtypes (floats rounded,
    NaN to 0, bool keeps 0/1 after the clamp); ``is_in`` checks shape and dtype.
    """

    def __init__(
        self, shape: ShapeLike = (), dtype: torch.dtype = torch.float32, device: Any = None
    ):
        _check_dtype("Unbounded", dtype)
        self.shape = _size(shape, "shape", "Unbounded")
        self.dtype = dtype
        self.device = _device(device)

    def is_in(self, x: torch.Tensor) -> torch.Tensor:
        """``tensor(True)`` iff ``x`` has shape ``[*batch, *shape]`` and dtype ``dtype``."""
        return _true(self.device) if self._matches(x) else _false(self.device)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """Casts ``x`` ([*batch, *shape]) to ``dtype``, saturating (never wrapping) for ints."""
        x = self._check_value(x, "project")
        if self.dtype.is_floating_point:
            return x.to(self.dtype)  # any float, NaN and inf included, is in the domain
        lo, hi = _dtype_limits(self.dtype)
        if x.is_floating_point():
            # NaN -> 0 here (an unbounded integer has no meaningful lower bound)
            x = torch.where(torch.isnan(x), torch.zeros_like(x), x)
        return _saturate(x, lo, hi, self.dtype)

    def rand(self, shape: ShapeLike = (), generator: torch.Generator | None = None) -> torch.Tensor:
        """Samples ``[*shape, *self.shape]``; uses the global RNG unless ``generator`` is given."""
        full = self._full_shape(shape)
        dev = _rng_device(generator, self.device)
        if self.dtype.is_floating_point:
            x = torch.randn(full, generator=generator, dtype=self.dtype, device=dev)
        elif self.dtype == torch.bool:
            x = torch.randint(0, 2, full, generator=generator, device=dev).bool()
        else:
            x = torch.empty(full, dtype=self.dtype, device=dev).random_(generator=generator)
        return x.to(self.device)


class Bounded(TensorSpec):
    """A box ``low <= x <= high`` (element-wise).

    Args:
        low: lower bound, a number or a tensor broadcastable to ``shape``.
        high: upper bound, a number or a tensor broadcastable to ``shape``.
        shape: the spec shape; inferred from ``low`` / ``high`` when ``None``.
        dtype: ``torch.float32`` by default; an integer dtype makes a discrete box (bounds inclusive).
        device: defaults to CPU.

    ``.low`` / ``.high`` are tensors of ``.shape`` and ``dtype``. ``project`` clamps in the
    source dtype and then casts (for integer dtypes it rounds first), so it never wraps; NaN
    projects to ``low``. ``rand`` is uniform on the box; where a bound is infinite it
    follows gymnasium's ``Box.sample`` (normal if both are infinite, ``low + Exp(1)`` or
    ``high - Exp(1)`` if one is).

    Raises:
        ValueError: if ``low > high`` anywhere, a bound is NaN, the shapes do not broadcast, a
            bound does not fit ``dtype``, or an integer ``dtype`` gets a non-integral bound.
    """

    def __init__(
        self,
        low: float | torch.Tensor,
        high: float | torch.Tensor,
        shape: ShapeLike | None = None,
        dtype: torch.dtype = torch.float32,
        device: Any = None,
    ):
        if dtype == torch.bool:
            raise TypeError("Bounded: dtype=torch.bool is not a box; use Binary")
        _check_dtype("Bounded", dtype)
        device = _device(device)
        low_t = torch.as_tensor(low, device=device)
        high_t = torch.as_tensor(high, device=device)
        if shape is None:
            try:
                shape_ = torch.broadcast_shapes(low_t.shape, high_t.shape)
            except RuntimeError as err:
                raise ValueError(
                    f"Bounded: low shape {tuple(low_t.shape)} and high shape "
                    f"{tuple(high_t.shape)} do not broadcast"
                ) from err
        else:
            shape_ = _size(shape, "shape", "Bounded")
        for name, t in (("low", low_t), ("high", high_t)):
            try:
                if torch.broadcast_shapes(t.shape, shape_) != shape_:
                    raise RuntimeError
            except RuntimeError as err:
                raise ValueError(
                    f"Bounded: {name} has shape {tuple(t.shape)}, which does not broadcast to "
                    f"shape {tuple(shape_)}"
                ) from err
        if low_t.is_floating_point() and bool(low_t.isnan().any()):
            raise ValueError("Bounded: low contains NaN")
        if high_t.is_floating_point() and bool(high_t.isnan().any()):
            raise ValueError("Bounded: high contains NaN")
        # Compare before the cast so that e.g. low=0.5, high=0.2 with an int dtype still raises.
        if bool((low_t.double() > high_t.double()).any()):
            raise ValueError(f"Bounded: low > high somewhere (low={low_t}, high={high_t})")
        if not dtype.is_floating_point and (
            bool(torch.as_tensor(low_t).double().isinf().any())
            or bool(torch.as_tensor(high_t).double().isinf().any())
        ):
            raise ValueError(f"Bounded: infinite bounds need a floating dtype, got {dtype}")
        # The bounds must survive the cast to dtype unchanged: a uint8 high=300 would wrap to 44
        # and a float16 high=1e5 would become inf.
        dmin, dmax = _dtype_limits(dtype)
        for name, t in (("low", low_t), ("high", high_t)):
            t64 = t.double()
            finite = t64[torch.isfinite(t64)]
            if finite.numel() and (bool((finite < dmin).any()) or bool((finite > dmax).any())):
                raise ValueError(
                    f"Bounded: {name}={t.tolist()} is outside the range [{dmin}, {dmax}] of {dtype}"
                )
            if not dtype.is_floating_point and bool((t64 != t64.round()).any()):
                raise ValueError(
                    f"Bounded: {name}={t.tolist()} is not integral, but dtype {dtype} is; pass "
                    "integer bounds (the box's integer end points)"
                )
        self.shape = shape_
        self.dtype = dtype
        self.device = device
        self.low = low_t.to(dtype).expand(shape_).clone()
        self.high = high_t.to(dtype).expand(shape_).clone()
        # Static flag, so rand() never branches on tensor values (no host sync under compile).
        self._finite = bool(torch.isfinite(self.low).all()) and bool(
            torch.isfinite(self.high).all()
        )

    def _tensors(self) -> tuple[torch.Tensor, ...]:
        return (self.low, self.high)

    def _repr_extra(self) -> str:
        return f"low={self.low.tolist()}, high={self.high.tolist()}"

    def is_in(self, x: torch.Tensor) -> torch.Tensor:
        """``tensor(True)`` iff shape and dtype match and ``low <= x <= high`` everywhere."""
        if not self._matches(x):
            return _false(self.device)
        return ((x >= self.low) & (x <= self.high)).all()

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """Clamps ``x`` ([*batch, *shape]) to ``[low, high]``, then casts to ``dtype``.

        Integer dtypes round floats first (half to even). NaN maps to ``low``. Nothing wraps:
        the clamp happens before the cast.
        """
        x = self._check_value(x, "project")
        return _saturate(x, self.low, self.high, self.dtype)

    def rand(self, shape: ShapeLike = (), generator: torch.Generator | None = None) -> torch.Tensor:
        """Samples uniformly in the box ``[*shape, *self.shape]``; global RNG unless ``generator``."""
        full = self._full_shape(shape)
        dev = _rng_device(generator, self.device)
        if not self.dtype.is_floating_point:
            # Discrete box: floor(U * (high - low + 1)) in float64, clamped against rounding up.
            low, high = self.low.double(), self.high.double()
            u = torch.rand(full, generator=generator, dtype=torch.float64, device=dev)
            u = u.to(self.device)
            x = torch.minimum(low + torch.floor(u * (high - low + 1.0)), high)
            return _saturate(x, self.low, self.high, self.dtype)
        low, high = self.low, self.high
        u = torch.rand(full, generator=generator, dtype=self.dtype, device=dev).to(self.device)
        if self._finite:
            # Clamp because low + u * (high - low) can round past high in low precision.
            return torch.clamp(low + u * (high - low), low, high)
        lo_fin, hi_fin = torch.isfinite(low), torch.isfinite(high)
        zero = torch.zeros_like(low)
        lo_s, hi_s = torch.where(lo_fin, low, zero), torch.where(hi_fin, high, zero)
        normal = torch.randn(full, generator=generator, dtype=self.dtype, device=dev)
        expo = torch.empty(full, dtype=self.dtype, device=dev).exponential_(generator=generator)
        normal, expo = normal.to(self.device), expo.to(self.device)
        out = torch.where(
            lo_fin & hi_fin,
            lo_s + u * (hi_s - lo_s),
            torch.where(lo_fin, lo_s + expo, torch.where(hi_fin, hi_s - expo, normal)),
        )
        return torch.clamp(out, low, high)


# ---------------------------------------------------------------------------------- discrete
def _one_hot(index: torch.Tensor, n: int, dtype: torch.dtype) -> torch.Tensor:
    # Comparison with an arange instead of F.one_hot: F.one_hot checks the index range on the host,
    # which breaks vmap and graph capture.
    return (index.unsqueeze(-1) == torch.arange(n, device=index.device)).to(dtype)


def _check_index_dtype(owner: str, x: torch.Tensor) -> None:
    # .long() would truncate 1.7 to 1 silently: categories must already be integers.
    if x.is_floating_point() or x.dtype == torch.bool:
        raise TypeError(
            f"{owner}: x must be an integer tensor of categories, got {x.dtype}; call "
            "spec.project(x) first to round and clamp it"
        )


def _rng_device(generator: torch.Generator | None, device: torch.device) -> torch.device:
    """Where a draw happens: on ``generator``'s device when one is given (torch draws only there,
    so a CPU generator can feed a CUDA spec, with the same numbers as on the CPU), else on
    ``device``. Callers move the draw to the spec's device."""
    return device if generator is None else generator.device


def _masked_uniform_index(
    mask: torch.Tensor | None,
    shape: torch.Size,
    n: int,
    generator: torch.Generator | None,
    device: torch.device,
) -> torch.Tensor:
    """Uniform index in ``[0, n)`` of ``shape``, restricted to ``mask[..., i] == True`` if given.

    Sampling is ``argmax`` of uniform noise over the allowed entries, which needs no host sync.
    """
    dev = _rng_device(generator, device)
    if mask is None:
        return torch.randint(0, n, shape, generator=generator, device=dev).to(device)
    if mask.dtype != torch.bool or mask.shape[-1:] != (n,):
        raise ValueError(
            f"mask must be a bool tensor of shape [..., {n}], got {mask.dtype} {tuple(mask.shape)}"
        )
    try:
        mask = mask.expand(*shape, n)
    except RuntimeError as err:
        raise ValueError(
            f"mask of shape {tuple(mask.shape)} does not broadcast to {(*shape, n)}"
        ) from err
    noise = torch.rand((*shape, n), generator=generator, device=dev).to(device)
    return torch.where(mask, noise, -1.0).argmax(-1)


class Categorical(TensorSpec):
    """Integer values in ``{0, ..., n - 1}``.

    Args:
        n: number of categories.
        shape: the spec shape (defaults to ``()``: one categorical value).
        dtype: defaults to ``torch.int64``.
        device: defaults to CPU.

    ``project`` rounds (for floating inputs) and clamps to ``[0, n - 1]`` before casting;
    NaN projects to category 0.
    """

    def __init__(
        self, n: int, shape: ShapeLike = (), dtype: torch.dtype = torch.int64, device: Any = None
    ):
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ValueError(f"Categorical: n must be a positive int, got {n!r}")
        _check_dtype("Categorical", dtype, _INT_DTYPES)
        if n - 1 > torch.iinfo(dtype).max:
            raise ValueError(
                f"Categorical: n={n} categories do not fit dtype {dtype} (max {torch.iinfo(dtype).max})"
            )
        self.n = n
        self.shape = _size(shape, "shape", type(self).__name__)
        self.dtype = dtype
        self.device = _device(device)

    def _meta(self) -> tuple:
        return (*super()._meta(), self.n)

    def _repr_extra(self) -> str:
        return f"n={self.n}"

    def is_in(self, x: torch.Tensor) -> torch.Tensor:
        """``tensor(True)`` iff shape and dtype match and ``0 <= x < n`` everywhere."""
        if not self._matches(x):
            return _false(self.device)
        return ((x >= 0) & (x < self.n)).all()

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """Rounds and clamps ``x`` ([*batch, *shape]) to ``[0, n - 1]``, cast to ``dtype``.

        NaN maps to 0; values beyond any dtype's range saturate, never wrap.
        """
        x = self._check_value(x, "project")
        return _saturate(x, 0, self.n - 1, self.dtype)

    def rand(
        self,
        shape: ShapeLike = (),
        generator: torch.Generator | None = None,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Uniform categories ``[*shape, *self.shape]``; global RNG unless ``generator``.

        Args:
            shape: leading batch shape.
            generator: optional ``torch.Generator``.
            mask: optional bool ``[..., n]`` broadcastable to ``[*shape, *self.shape, n]``; only
                categories where it is ``True`` are drawn (each row needs one ``True``).
        """
        full = self._full_shape(shape)
        return _masked_uniform_index(mask, full, self.n, generator, self.device).to(self.dtype)

    def to_one_hot(self, x: torch.Tensor, dtype: torch.dtype = torch.bool) -> torch.Tensor:
        """``[*batch, *shape]`` categories -> ``[*batch, *shape, n]`` one-hot (bool, as TorchRL)."""
        x = self._check_value(x, "to_one_hot")
        _check_index_dtype("Categorical.to_one_hot", x)
        return _one_hot(x.long(), self.n, dtype)

    def to_categorical(self, x: torch.Tensor) -> torch.Tensor:
        """Identity (already categorical)."""
        return x

    def to_one_hot_spec(self) -> OneHot:
        return OneHot(self.n, shape=(*self.shape, self.n), device=self.device)

    def to_categorical_spec(self) -> Categorical:
        return self


class Binary(TensorSpec):
    """Vectors of 0/1 values (several entries may be 1, unlike ``OneHot``).

    Args:
        n: length of the binary vector (``shape[-1]``); optional if ``shape`` is given.
        shape: the spec shape, defaults to ``(n,)``.
        dtype: defaults to ``torch.int8`` (TorchRL's); ``torch.bool`` and floats work too.
        device: defaults to CPU.

    ``project`` rounds and clamps to ``{0, 1}``; NaN projects to 0.
    """

    def __init__(
        self,
        n: int | None = None,
        shape: ShapeLike | None = None,
        dtype: torch.dtype = torch.int8,
        device: Any = None,
    ):
        if n is None and shape is None:
            raise TypeError("Binary: give n or shape")
        shape_ = _size((n,) if shape is None else shape, "shape", "Binary")
        if n is not None and (not shape_ or shape_[-1] != n):
            raise ValueError(f"Binary: shape[-1] must equal n={n}, got shape {tuple(shape_)}")
        _check_dtype("Binary", dtype)
        self.shape = shape_
        self.n = shape_[-1] if shape_ else 0
        self.dtype = dtype
        self.device = _device(device)

    def is_in(self, x: torch.Tensor) -> torch.Tensor:
        """``tensor(True)`` iff shape and dtype match and every entry is 0 or 1."""
        if not self._matches(x):
            return _false(self.device)
        if x.dtype == torch.bool:
            return _true(self.device)
        return ((x == 0) | (x == 1)).all()

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """Rounds and clamps ``x`` to ``{0, 1}``, cast to ``dtype`` (NaN maps to 0)."""
        x = self._check_value(x, "project")
        if x.is_floating_point():
            # round before the clamp even for a float spec: the domain is {0, 1}
            x = torch.round(x)
        return _saturate(x, 0, 1, self.dtype)

    def rand(self, shape: ShapeLike = (), generator: torch.Generator | None = None) -> torch.Tensor:
        """Fair coins ``[*shape, *self.shape]``; global RNG unless ``generator``."""
        full = self._full_shape(shape)
        dev = _rng_device(generator, self.device)
        x = torch.randint(0, 2, full, generator=generator, device=dev)
        return x.to(device=self.device, dtype=self.dtype)


class OneHot(TensorSpec):
    """One-hot vectors over ``n`` categories along the last dim.

    Args:
        n: number of categories.
        shape: the spec shape, ``shape[-1] == n``; defaults to ``(n,)``.
        dtype: defaults to ``torch.bool`` (TorchRL's default).
        device: defaults to CPU.

    ``project`` maps each row to the one-hot of its argmax (first maximum): TorchRL samples
    ``multinomial(x)`` instead; a deterministic projection is what a greedy policy expects.
    """

    def __init__(
        self,
        n: int,
        shape: ShapeLike | None = None,
        dtype: torch.dtype = torch.bool,
        device: Any = None,
    ):
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ValueError(f"OneHot: n must be a positive int, got {n!r}")
        shape_ = _size((n,) if shape is None else shape, "shape", "OneHot")
        if not shape_ or shape_[-1] != n:
            raise ValueError(f"OneHot: shape[-1] must equal n={n}, got shape {tuple(shape_)}")
        _check_dtype("OneHot", dtype)
        self.n = n
        self.shape = shape_
        self.dtype = dtype
        self.device = _device(device)

    def _meta(self) -> tuple:
        return (*super()._meta(), self.n)

    def _repr_extra(self) -> str:
        return f"n={self.n}"

    def is_in(self, x: torch.Tensor) -> torch.Tensor:
        """``tensor(True)`` iff shape and dtype match and each row is 0/1 with exactly one 1."""
        if not self._matches(x):
            return _false(self.device)
        return _is_one_hot(x)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """One-hot of ``argmax(x, -1)`` (scores or a noisy one-hot), in ``dtype``."""
        x = self._check_value(x, "project")
        return _one_hot(_argmax(x), self.n, self.dtype)

    def rand(
        self,
        shape: ShapeLike = (),
        generator: torch.Generator | None = None,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Uniform one-hot rows ``[*shape, *self.shape]``; global RNG unless ``generator``.

        ``mask``: optional bool ``[..., n]`` restricting the categories drawn (see
        ``Categorical.rand``).
        """
        full = _size(shape, "shape", "OneHot.rand") + self.shape[:-1]
        index = _masked_uniform_index(mask, full, self.n, generator, self.device)
        return _one_hot(index, self.n, self.dtype)

    def to_categorical(self, x: torch.Tensor) -> torch.Tensor:
        """``[*batch, *shape[:-1], n]`` one-hot -> ``[*batch, *shape[:-1]]`` int64 indices."""
        return _argmax(self._check_value(x, "to_categorical"))

    def to_one_hot(self, x: torch.Tensor) -> torch.Tensor:
        """Identity (already one-hot)."""
        return x

    def to_categorical_spec(self) -> Categorical:
        return Categorical(self.n, shape=self.shape[:-1], device=self.device)

    def to_one_hot_spec(self) -> OneHot:
        return self


def _argmax(x: torch.Tensor) -> torch.Tensor:
    # argmax is not implemented for bool tensors; torch's argmax picks NaN as the maximum, the NaN
    # policy (module doc) makes a NaN score the lowest instead.
    if x.is_floating_point():
        return torch.where(torch.isnan(x), float("-inf"), x).argmax(-1)
    return x.to(torch.int64).argmax(-1)


def _is_one_hot(x: torch.Tensor) -> torch.Tensor:
    binary = (
        torch.ones((), dtype=torch.bool, device=x.device)
        if x.dtype == torch.bool
        else ((x == 0) | (x == 1)).all()
    )
    return binary & (x.to(torch.int64).sum(-1) == 1).all()


def _nvec_list(nvec: Any, owner: str) -> list[int]:
    values = nvec.tolist() if isinstance(nvec, torch.Tensor) else list(nvec)
    if not values or any(not isinstance(v, int) or isinstance(v, bool) or v < 1 for v in values):
        raise ValueError(
            f"{owner}: nvec must be a non-empty 1-D sequence of positive ints, got {nvec!r}"
        )
    return values


class MultiOneHot(TensorSpec):
    """Concatenated one-hot vectors, one per sub-action of sizes ``nvec``.

    Args:
        nvec: 1-D sequence of category counts; the last dim is ``sum(nvec)``.
        shape: the spec shape, ``shape[-1] == sum(nvec)``; defaults to ``(sum(nvec),)``.
        dtype: defaults to ``torch.bool``.
        device: defaults to CPU.

    ``project`` takes the argmax one-hot within each segment.
    """

    def __init__(
        self,
        nvec: Sequence[int] | torch.Tensor,
        shape: ShapeLike | None = None,
        dtype: torch.dtype = torch.bool,
        device: Any = None,
    ):
        self.nvec = _nvec_list(nvec, "MultiOneHot")
        total = sum(self.nvec)
        shape_ = _size((total,) if shape is None else shape, "shape", "MultiOneHot")
        if not shape_ or shape_[-1] != total:
            raise ValueError(
                f"MultiOneHot: shape[-1] must equal sum(nvec)={total}, got shape {tuple(shape_)}"
            )
        _check_dtype("MultiOneHot", dtype)
        self.shape = shape_
        self.dtype = dtype
        self.device = _device(device)

    @property
    def n(self) -> int:
        """Total width ``sum(nvec)``."""
        return sum(self.nvec)

    def _meta(self) -> tuple:
        return (*super()._meta(), tuple(self.nvec))

    def _repr_extra(self) -> str:
        return f"nvec={self.nvec}"

    def is_in(self, x: torch.Tensor) -> torch.Tensor:
        """``tensor(True)`` iff shape and dtype match and every segment is one-hot."""
        if not self._matches(x):
            return _false(self.device)
        ok = _true(self.device)
        for part in x.split(self.nvec, dim=-1):
            ok = ok & _is_one_hot(part)
        return ok

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """Per-segment argmax one-hot, in ``dtype``."""
        x = self._check_value(x, "project")
        parts = x.split(self.nvec, dim=-1)
        return torch.cat(
            [_one_hot(_argmax(p), n, self.dtype) for p, n in zip(parts, self.nvec)], -1
        )

    def rand(self, shape: ShapeLike = (), generator: torch.Generator | None = None) -> torch.Tensor:
        """Uniform per-segment one-hots ``[*shape, *self.shape]``; global RNG unless ``generator``."""
        lead = _size(shape, "shape", "MultiOneHot.rand") + self.shape[:-1]
        return torch.cat(
            [
                _one_hot(
                    torch.randint(
                        0, n, lead, generator=generator, device=_rng_device(generator, self.device)
                    ).to(self.device),
                    n,
                    self.dtype,
                )
                for n in self.nvec
            ],
            -1,
        )

    def to_categorical(self, x: torch.Tensor) -> torch.Tensor:
        """``[..., sum(nvec)]`` -> ``[..., len(nvec)]`` int64 indices, one per segment."""
        x = self._check_value(x, "to_categorical")
        return torch.stack([_argmax(p) for p in x.split(self.nvec, dim=-1)], -1)

    def to_one_hot(self, x: torch.Tensor) -> torch.Tensor:
        """Identity (already one-hot)."""
        return x

    def to_categorical_spec(self) -> MultiCategorical:
        return MultiCategorical(
            self.nvec, shape=(*self.shape[:-1], len(self.nvec)), device=self.device
        )

    def to_one_hot_spec(self) -> MultiOneHot:
        return self


class MultiCategorical(TensorSpec):
    """Several categorical values side by side: ``x[..., i]`` in ``{0, ..., nvec[i] - 1}``.

    Args:
        nvec: 1-D sequence of category counts; the last dim is ``len(nvec)``.
        shape: the spec shape, ``shape[-1] == len(nvec)``; defaults to ``(len(nvec),)``.
        dtype: defaults to ``torch.int64``.
        device: defaults to CPU.

    ``project`` rounds and clamps each column to ``[0, nvec[i] - 1]``; NaN projects to 0.
    """

    def __init__(
        self,
        nvec: Sequence[int] | torch.Tensor,
        shape: ShapeLike | None = None,
        dtype: torch.dtype = torch.int64,
        device: Any = None,
    ):
        self.nvec = _nvec_list(nvec, "MultiCategorical")
        k = len(self.nvec)
        shape_ = _size((k,) if shape is None else shape, "shape", "MultiCategorical")
        if not shape_ or shape_[-1] != k:
            raise ValueError(
                f"MultiCategorical: shape[-1] must equal len(nvec)={k}, got shape {tuple(shape_)}"
            )
        _check_dtype("MultiCategorical", dtype, _INT_DTYPES)
        if max(self.nvec) - 1 > torch.iinfo(dtype).max:
            raise ValueError(
                f"MultiCategorical: nvec={self.nvec} categories do not fit dtype {dtype} "
                f"(max {torch.iinfo(dtype).max})"
            )
        self.shape = shape_
        self.dtype = dtype
        self.device = _device(device)
        # High bound per column, as a tensor for the vectorized clamp / is_in.
        self._high = torch.tensor(self.nvec, device=self.device) - 1

    def _meta(self) -> tuple:
        return (*super()._meta(), tuple(self.nvec))

    def _repr_extra(self) -> str:
        return f"nvec={self.nvec}"

    def is_in(self, x: torch.Tensor) -> torch.Tensor:
        """``tensor(True)`` iff shape and dtype match and ``0 <= x[..., i] < nvec[i]``."""
        if not self._matches(x):
            return _false(self.device)
        return ((x >= 0) & (x <= self._high)).all()

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """Rounds and clamps each column to ``[0, nvec[i] - 1]``, cast to ``dtype``."""
        x = self._check_value(x, "project")
        return _saturate(x, torch.zeros_like(self._high), self._high, self.dtype)

    def rand(self, shape: ShapeLike = (), generator: torch.Generator | None = None) -> torch.Tensor:
        """Uniform categories ``[*shape, *self.shape]``; global RNG unless ``generator``."""
        full = self._full_shape(shape)
        dev = _rng_device(generator, self.device)
        u = torch.rand(full, generator=generator, dtype=torch.float64, device=dev).to(self.device)
        n = (self._high + 1).double()
        return torch.minimum(torch.floor(u * n), n - 1).to(self.dtype)

    def to_one_hot(self, x: torch.Tensor, dtype: torch.dtype = torch.bool) -> torch.Tensor:
        """``[..., len(nvec)]`` -> ``[..., sum(nvec)]`` concatenated one-hots (bool by default)."""
        x = self._check_value(x, "to_one_hot")
        _check_index_dtype("MultiCategorical.to_one_hot", x)
        x = x.long()
        return torch.cat([_one_hot(x[..., i], n, dtype) for i, n in enumerate(self.nvec)], -1)

    def to_categorical(self, x: torch.Tensor) -> torch.Tensor:
        """Identity (already categorical)."""
        return x

    def to_one_hot_spec(self) -> MultiOneHot:
        return MultiOneHot(self.nvec, shape=(*self.shape[:-1], sum(self.nvec)), device=self.device)

    def to_categorical_spec(self) -> MultiCategorical:
        return self


# ---------------------------------------------------------------------------------- composite
def _show(path: tuple[str, ...]) -> NestedKey:
    return path[0] if len(path) == 1 else path


def _as_path(key: NestedKey) -> tuple[str, ...]:
    if isinstance(key, str):
        return (key,)
    if isinstance(key, tuple) and key and all(isinstance(k, str) for k in key):
        return key
    raise KeyError(f"Composite keys are str or non-empty tuples of str, got {key!r}")


class Composite:
    """Named specs, possibly nested, describing a ``Record``.

    Args:
        mapping: ``{key: spec}``; values are specs, ``Composite`` s or plain mappings (turned into
            nested ``Composite`` s of the same ``shape``); tuple keys create nested entries.
        shape: the composite's batch shape; every entry's shape must start with it (TorchRL's
            convention: ``Composite({"obs": Unbounded((4, 3))}, shape=(4,))``).
        device: optional device (``None`` allows entries on different devices).
        **specs: more entries by keyword.

    ``rand(shape)`` / ``zero(shape)`` return a ``Record`` with batch dims
    ``[*shape, *self.shape]``; ``project(record)`` projects the entries the spec knows and keeps
    the others unchanged; ``is_in(record)`` is a 0-dim bool tensor: every spec entry present and
    inside its spec (extra record keys are ignored).
    """

    def __init__(
        self,
        mapping: Mapping[NestedKey, Any] | None = None,
        shape: ShapeLike = (),
        device: Any = None,
        **specs: Any,
    ):
        self.shape = _size(shape, "shape", "Composite")
        self.device = None if device is None else torch.device(device)
        self.dtype = None
        self._specs: dict[str, TensorSpec | Composite] = {}
        items = list((mapping or {}).items()) + list(specs.items())
        for key, spec in items:
            self._insert(_as_path(key), spec)

    def _insert(self, path: tuple[str, ...], spec: Any, prefix: tuple[str, ...] = ()) -> None:
        # Like Record: ("next", "r") and {"next": {...}} merge in any order; one entry given twice
        # (or both a spec and a Composite) raises instead of keeping the last.
        head, rest = path[0], path[1:]
        here = (*prefix, head)
        existing = self._specs.get(head)
        if rest:
            if existing is None:
                existing = self._specs[head] = Composite(shape=self.shape, device=self.device)
            elif not isinstance(existing, Composite):
                raise ValueError(
                    f"Composite: key {_show(here)!r} holds a {type(existing).__name__} and is also given "
                    f"nested entries (via {(*prefix, *path)!r})"
                )
            existing._insert(rest, spec, here)
            return
        if isinstance(spec, Mapping | Composite) and isinstance(existing, Composite):
            if isinstance(spec, Composite) and spec.shape != existing.shape:
                raise ValueError(
                    f"Composite: key {_show(here)!r} merges Composites of shapes {tuple(existing.shape)} "
                    f"and {tuple(spec.shape)}"
                )
            entries = spec._specs if isinstance(spec, Composite) else spec
            for k, v in entries.items():
                existing._insert(_as_path(k), v, here)
            return
        if existing is not None:
            raise ValueError(
                f"Composite: key {_show(here)!r} is given twice (already a {type(existing).__name__}); "
                "each entry must appear once"
            )
        if isinstance(spec, Mapping) and not isinstance(spec, Composite):
            nested = Composite(shape=self.shape, device=self.device)
            for k, v in spec.items():
                nested._insert(_as_path(k), v, here)
            spec = nested
        elif isinstance(spec, Composite):
            spec = spec._copy()  # a later merge into this key must not modify the caller's object
        if not isinstance(spec, TensorSpec | Composite):
            raise TypeError(
                f"Composite: entry {_show(here)!r} must be a spec or a mapping, got {type(spec).__name__}"
            )
        if spec.shape[: len(self.shape)] != self.shape:
            raise ValueError(
                f"Composite: entry {_show(here)!r} has shape {tuple(spec.shape)}, which does not start "
                f"with the composite shape {tuple(self.shape)}"
            )
        if self.device is not None and spec.device is not None and spec.device != self.device:
            raise ValueError(
                f"Composite: entry {_show(here)!r} is on {spec.device}, the composite on {self.device}"
            )
        self._specs[head] = spec

    def _copy(self) -> Composite:
        out = Composite(shape=self.shape, device=self.device)
        out._specs = {
            k: v._copy() if isinstance(v, Composite) else v for k, v in self._specs.items()
        }
        return out

    # -- mapping access -------------------------------------------------------------------------
    def __getitem__(self, key: NestedKey) -> TensorSpec | Composite:
        node: Any = self
        for k in _as_path(key):
            if not isinstance(node, Composite) or k not in node._specs:
                raise KeyError(f"Composite has no key {key!r}; keys: {self.keys(True, True)}")
            node = node._specs[k]
        return node

    def __contains__(self, key: object) -> bool:
        try:
            self[key]  # type: ignore[index]
        except KeyError:
            return False
        return True

    def __iter__(self) -> Iterator[str]:
        return iter(self._specs)

    def __len__(self) -> int:
        return len(self._specs)

    def keys(self, include_nested: bool = False, leaves_only: bool = False) -> list[NestedKey]:
        """Keys; nested keys as tuples with ``include_nested``; only tensor specs with ``leaves_only``."""
        out: list[NestedKey] = []
        for k, v in self._specs.items():
            nested = isinstance(v, Composite)
            if not (leaves_only and nested):
                out.append(k)
            if include_nested and nested:
                out.extend((k, *_as_path(sub)) for sub in v.keys(True, leaves_only))
        return out

    def items(self) -> list[tuple[str, TensorSpec | Composite]]:
        return list(self._specs.items())

    def values(self) -> list[TensorSpec | Composite]:
        return list(self._specs.values())

    @property
    def ndim(self) -> int:
        return len(self.shape)

    # -- spec API -------------------------------------------------------------------------------
    def _record(self, data: dict[str, Any], shape: ShapeLike) -> Record:
        extra = _size(shape, "shape", "Composite.rand/zero")
        return Record(data, batch_ndim=len(extra) + len(self.shape))

    def rand(self, shape: ShapeLike = (), generator: torch.Generator | None = None) -> Record:
        """A ``Record`` of samples with batch dims ``[*shape, *self.shape]``."""
        return self._record(self._rand_dict(shape, generator), shape)

    def _rand_dict(self, shape: ShapeLike, generator: torch.Generator | None) -> dict[str, Any]:
        return {
            k: v._rand_dict(shape, generator)
            if isinstance(v, Composite)
            else v.rand(shape, generator)
            for k, v in self._specs.items()
        }

    def zero(self, shape: ShapeLike = ()) -> Record:
        """A ``Record`` of zeros with batch dims ``[*shape, *self.shape]``."""
        return self._record(self._zero_dict(shape), shape)

    def _zero_dict(self, shape: ShapeLike) -> dict[str, Any]:
        return {
            k: v._zero_dict(shape) if isinstance(v, Composite) else v.zero(shape)
            for k, v in self._specs.items()
        }

    def is_in(self, record: Record | Mapping[str, Any]) -> torch.Tensor:
        """0-dim bool tensor: every entry of the spec is in ``record`` and inside its spec."""
        ok = torch.ones((), dtype=torch.bool, device=self.device)
        for k, spec in self._specs.items():
            if k not in record:
                return torch.zeros((), dtype=torch.bool, device=self.device)
            inside = spec.is_in(record[k])
            ok = ok & inside.to(ok.device)
        return ok

    def project(self, record: Record) -> Record:
        """A new ``Record`` with each entry the spec knows projected; other keys are kept."""
        if not isinstance(record, Record):
            raise TypeError(
                f"Composite.project: expected a funcrl.Record, got {type(record).__name__}"
            )
        out = record
        for key in self.keys(include_nested=True, leaves_only=True):
            if key in record:
                out = out.set(key, self[key].project(record[key]))
        return out

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Composite)
            and self.shape == other.shape
            and self._specs.keys() == other._specs.keys()
            and all(v == other._specs[k] for k, v in self._specs.items())
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        inner = ", ".join(f"{k!r}: {v!r}" for k, v in self._specs.items())
        return f"Composite({{{inner}}}, shape={tuple(self.shape)})"


# ---------------------------------------------------------------------------------- gymnasium
def _torch_dtype(np_dtype: Any) -> torch.dtype:
    import numpy as np

    return torch.from_numpy(np.zeros(0, dtype=np_dtype)).dtype


def from_gymnasium(
    space: Any, *, one_hot: bool = False, device: Any = None
) -> TensorSpec | Composite:
    """Converts a gymnasium space to a spec.

    * ``Box`` -> ``Bounded`` (``Unbounded`` when every bound is infinite or at the dtype's limits,
      as TorchRL); a scalar ``Box`` gets shape ``(1,)`` as in TorchRL.
    * ``Discrete(n)`` -> ``Categorical(n)`` (``OneHot(n, dtype=torch.int64)`` with
      ``one_hot=True``, TorchRL's one-hot dtype for gym actions). A non-zero ``start`` raises.
    * ``MultiDiscrete(nvec)`` (1-D) -> ``MultiCategorical(nvec)`` (``MultiOneHot`` with
      ``one_hot=True``).
    * ``MultiBinary(n)`` -> ``Binary(shape=n)`` with the space's dtype (int8).
    * ``Dict`` -> ``Composite`` with the same keys; ``Tuple`` -> ``Composite`` keyed ``"0"``,
      ``"1"``, ...

    Args:
        space: a ``gymnasium.spaces.Space``.
        one_hot: encode ``Discrete`` / ``MultiDiscrete`` as one-hot.
        device: device of the specs.
    """
    from gymnasium import spaces

    def convert(s: Any) -> TensorSpec | Composite:
        return from_gymnasium(s, one_hot=one_hot, device=device)

    if isinstance(space, spaces.Box):
        dtype = _torch_dtype(space.dtype)
        shape = tuple(space.shape) or (1,)
        low = torch.as_tensor(space.low).reshape(shape).to(torch.float64)
        high = torch.as_tensor(space.high).reshape(shape).to(torch.float64)
        if dtype.is_floating_point:
            lim = torch.finfo(dtype)
        else:
            lim = torch.iinfo(dtype)
        unbounded = bool(((low == -math.inf) | (low <= lim.min)).all()) and bool(
            ((high == math.inf) | (high >= lim.max)).all()
        )
        if unbounded:
            return Unbounded(shape, dtype=dtype, device=device)
        return Bounded(
            torch.as_tensor(space.low).reshape(shape),
            torch.as_tensor(space.high).reshape(shape),
            shape,
            dtype=dtype,
            device=device,
        )
    if isinstance(space, spaces.Discrete):
        if int(space.start) != 0:
            raise ValueError(
                f"from_gymnasium: Discrete(start={int(space.start)}) is not supported; "
                "specs count categories from 0"
            )
        n = int(space.n)
        if one_hot:
            return OneHot(n, dtype=torch.int64, device=device)
        return Categorical(n, dtype=_torch_dtype(space.dtype), device=device)
    if isinstance(space, spaces.MultiDiscrete):
        nvec = space.nvec
        if nvec.ndim != 1:
            raise ValueError(
                f"from_gymnasium: only 1-D MultiDiscrete nvec is supported, got shape {nvec.shape}"
            )
        if (space.start != 0).any():
            raise ValueError("from_gymnasium: MultiDiscrete with a non-zero start is not supported")
        nv = [int(v) for v in nvec]
        if one_hot:
            return MultiOneHot(nv, dtype=torch.int64, device=device)
        return MultiCategorical(nv, dtype=_torch_dtype(space.dtype), device=device)
    if isinstance(space, spaces.MultiBinary):
        return Binary(shape=tuple(space.shape), dtype=_torch_dtype(space.dtype), device=device)
    if isinstance(space, spaces.Dict):
        return Composite({k: convert(s) for k, s in space.spaces.items()}, device=device)
    if isinstance(space, spaces.Tuple):
        return Composite({str(i): convert(s) for i, s in enumerate(space.spaces)}, device=device)
    raise TypeError(f"from_gymnasium: unsupported space {type(space).__name__}: {space!r}")
