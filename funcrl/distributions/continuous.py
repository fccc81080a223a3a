"""Continuous action distributions: TanhNormal, IndependentNormal, TruncatedNormal, Delta, TanhDelta.

Constructor arguments and defaults follow TorchRL 0.14 (``torchrl/modules/distributions``); the
math is written directly (a Normal base, a tanh, an affine map) rather than through
``torch.distributions.TransformedDistribution``, so a distribution costs a few tensor ops to build
and traces without graph breaks.
"""

from __future__ import annotations

import math
from numbers import Number

import numpy as np
import torch

from funcrl._constants import filled
from funcrl.distributions._utils import (
    Scale,
    TensorLike,
    as_param,
    check_finite,
    check_floating,
    check_low_high,
    check_positive,
    check_value_shape,
    normal_log_prob,
    resolve_scale,
    safe_atanh,
    safe_tanh,
    standard_normal,
    standard_uniform,
    sum_rightmost,
    tanh_log_abs_det_jacobian,
)
from funcrl.distributions.base import Distribution, ShapeLike, as_size

__all__ = ["TanhNormal", "IndependentNormal", "TruncatedNormal", "Delta", "TanhDelta"]

# Gauss-Hermite nodes/weights for E[f(X)], X ~ N(mu, s^2): sum_i w_i f(mu + sqrt(2) s x_i) / sqrt(pi).
_GH_NODES, _GH_WEIGHTS = (tuple(a.tolist()) for a in np.polynomial.hermite.hermgauss(64))


def _check_numbers_low_high(low: TensorLike, high: TensorLike, owner: str) -> None:
    # Python numbers are checked always (free); tensors only under validate_args (host sync).
    if isinstance(low, Number) and isinstance(high, Number) and not high > low:
        raise ValueError(
            f"{owner}: high must be strictly greater than low, got low={low} high={high}"
        )


class TanhNormal(Distribution):
    """``a = low + (high - low) / 2 * (tanh(u) + 1)`` with ``u ~ Normal(loc, scale)`` per dim.

    TorchRL 0.14's ``TanhNormal``: same arguments, same samples for the same RNG state, same
    ``log_prob`` (to float rounding).

    Args:
      loc: Normal location ``[*batch, *event]`` (pre-tanh).
      scale: Normal standard deviation, broadcastable to ``loc``; a tensor, a number, or a
        callable ``scale(loc)`` (TorchRL's compile-friendly ``torch.ones_like`` idiom).
      upscale: ``a`` in ``loc = a * tanh(loc / a)``, used only when ``tanh_loc``. Default 5.0.
      low, high: support bounds, numbers or tensors broadcastable to the event shape.
      event_dims: how many trailing dims ``log_prob`` sums over. Default ``min(1, loc.ndim)``.
      tanh_loc: squash ``loc`` as above. As TorchRL, the squashed ``loc`` is then shifted by
        ``(high + low) / 2`` (a no-op for the default bounds ``[-1, 1]``).
      safe_tanh: keep ``tanh`` in ``[-1 + eps, 1 - eps]`` and clamp before ``atanh`` in
        ``log_prob`` (``eps = torch.finfo(dtype).resolution``: 1e-6 in float32, 1e-15 in
        float64), with the gradient passing through the clamp, as TorchRL's
        ``SafeTanhTransform``. With ``False`` the plain ``tanh``/``atanh`` are used: samples may
        round to exactly ``+-1`` and ``log_prob`` there is ``+inf``/NaN.
      validate_args: check dtypes, ``scale > 0``, ``high > low``, finite parameters, and in
        ``log_prob`` the value's shape and that it lies in ``[low, high]`` (host syncs: for
        debugging, not for compiled code).

    What happens at ``|a| = 1`` (default bounds, ``safe_tanh=True``): ``log_prob`` clamps the
    pre-image to ``atanh(+-(1 - eps))`` = +-7.248 (float32) / +-17.616 (float64) and scores it
    there, so the result is finite (e.g. ``TanhNormal(0, 1).log_prob(1.0) = -0.919 - 26.31 + 13.12
    = -14.07`` per dim in float32). Values outside ``[low, high]`` are clamped the same way (no ``-inf``;
    TorchRL does the same); use ``validate_args=True`` to reject them.

    ``log_prob(rsample())`` re-inverts the rounded sample, like TorchRL; when ``tanh`` saturates
    that pre-image can differ from the drawn one. ``rsample_and_log_prob`` scores the drawn
    pre-image exactly (TorchRL 0.14 has the same method) and is the one to use in losses.
    """

    def __init__(
        self,
        loc: torch.Tensor,
        scale: Scale,
        upscale: TensorLike = 5.0,
        low: TensorLike = -1.0,
        high: TensorLike = 1.0,
        event_dims: int | None = None,
        tanh_loc: bool = False,
        safe_tanh: bool = True,
        *,
        validate_args: bool = False,
    ):
        owner = "TanhNormal"
        if not isinstance(loc, torch.Tensor):
            loc = torch.as_tensor(loc, dtype=torch.get_default_dtype())
        _check_numbers_low_high(low, high, owner)
        scale = resolve_scale(scale, loc, owner=owner)
        low_t = as_param(low, loc, name="low", owner=owner)
        high_t = as_param(high, loc, name="high", owner=owner)
        if event_dims is None:
            event_dims = min(1, loc.ndim)
        if validate_args:
            check_floating(loc, name="loc", owner=owner)
            check_finite(loc, name="loc", owner=owner)
            check_positive(scale, name="scale", owner=owner)
            check_low_high(low_t, high_t, owner=owner)
        if tanh_loc:
            # TorchRL: loc = upscale * tanh(loc / upscale), then + (high - low) / 2 + low.
            loc = (loc / upscale).tanh() * upscale + (high_t + low_t) / 2
        loc, scale = torch.broadcast_tensors(loc, scale)
        if not 0 <= event_dims <= loc.ndim:
            raise ValueError(
                f"{owner}: event_dims must be in [0, loc.ndim={loc.ndim}], got {event_dims}"
            )
        self.loc = loc
        self.scale = scale
        self.low = low_t
        self.high = high_t
        self.upscale = upscale
        self.tanh_loc = tanh_loc
        self.safe_tanh = safe_tanh
        self.event_dims = event_dims
        self.validate_args = validate_args
        cut = loc.ndim - event_dims
        self.batch_shape = loc.shape[:cut]
        self.event_shape = loc.shape[cut:]
        # The affine map tanh -> [low, high].
        self._mid = (high_t + low_t) / 2
        self._half = (high_t - low_t) / 2

    # -- the bijection ---------------------------------------------------------------------------

    def _tanh(self, u: torch.Tensor) -> torch.Tensor:
        return safe_tanh(u) if self.safe_tanh else torch.tanh(u)

    def _atanh(self, t: torch.Tensor) -> torch.Tensor:
        return safe_atanh(t) if self.safe_tanh else torch.atanh(t)

    def _forward(self, u: torch.Tensor) -> torch.Tensor:
        a = self._mid + self._half * self._tanh(u)
        # mid + half * t can round one ulp past a bound; keep samples inside [low, high].
        return torch.minimum(torch.maximum(a, self.low), self.high)

    def _log_prob_pre(self, u: torch.Tensor) -> torch.Tensor:
        """log p(a) for ``a = forward(u)``, written on the pre-image ``u``: ``[*sample, *batch]``."""
        lp = normal_log_prob(u, self.loc, self.scale)
        lp = lp - tanh_log_abs_det_jacobian(u) - torch.log(self._half)
        return sum_rightmost(lp, self.event_dims)

    # -- API -------------------------------------------------------------------------------------

    def rsample(
        self, sample_shape: ShapeLike = (), *, key: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Reparameterised draw ``[*sample_shape, *batch, *event]`` in ``[low, high]``. Samples."""
        shape = as_size(sample_shape) + self.loc.shape
        eps = standard_normal(shape, self.loc, key)
        return self._forward(self.loc + self.scale * eps)

    def rsample_and_log_prob(
        self, sample_shape: ShapeLike = (), *, key: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw and score the same pre-tanh value (no re-inversion). Samples.

        Returns:
          ``(action [*sample_shape, *batch, *event], log_prob [*sample_shape, *batch])``, both
          differentiable (pathwise) w.r.t. ``loc`` and ``scale``.
        """
        shape = as_size(sample_shape) + self.loc.shape
        eps = standard_normal(shape, self.loc, key)
        u = self.loc + self.scale * eps
        return self._forward(u), self._log_prob_pre(u)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """``log p(value)``, summed over the event dims: ``[*sample, *batch]``.

        Finite at and next to ``low``/``high`` with ``safe_tanh`` (see the class docstring).
        """
        if self.validate_args:
            check_value_shape(
                value, self.batch_shape + self.event_shape, owner="TanhNormal.log_prob"
            )
            if not bool(((value >= self.low) & (value <= self.high)).all()):
                raise ValueError(
                    "TanhNormal.log_prob: value has entries outside [low, high] = "
                    f"[{self.low.tolist()}, {self.high.tolist()}]"
                )
        u = self._atanh((value - self._mid) / self._half)
        return self._log_prob_pre(u)

    @property
    def deterministic_sample(self) -> torch.Tensor:
        """``low + (high - low) / 2 * (tanh(loc) + 1)``: the image of the Normal's mean (TorchRL)."""
        return self._forward(self.loc)

    @property
    def mode(self) -> torch.Tensor:
        """Same as ``deterministic_sample`` (the image of the Normal's mode).

        TorchRL raises here because the density's own argmax has no closed form (it is bimodal,
        near the bounds, once ``scale^2 > 1/2``); funcrl returns the same point as
        ``deterministic_sample`` so that ``interaction_type="mode"`` works.
        """
        return self.deterministic_sample

    @property
    def mean(self) -> torch.Tensor:
        """``E[a]`` by 64-point Gauss-Hermite quadrature of ``E[tanh(u)]``: ``[*batch, *event]``.

        TorchRL raises and suggests ``sample((N,)).mean(0)``; the quadrature is deterministic
        (draws nothing) and far more accurate (error < 1e-6 for ``scale <= 3``; it degrades to
        ~1e-2 as ``scale`` grows past 10, when ``tanh(u)`` approaches a step).
        Use ``sample_mean(n)`` for the Monte-Carlo estimate.
        """
        nodes = filled(_GH_NODES, self.loc.dtype, self.loc.device)
        weights = filled(_GH_WEIGHTS, self.loc.dtype, self.loc.device)
        u = self.loc.unsqueeze(-1) + math.sqrt(2.0) * self.scale.unsqueeze(-1) * nodes
        t = (torch.tanh(u) * weights).sum(-1) / math.sqrt(math.pi)
        return self._mid + self._half * t

    def sample_mean(self, num_samples: int = 1000) -> torch.Tensor:
        """Monte-Carlo ``sample((num_samples,)).mean(0)`` (TorchRL's suggestion). Samples."""
        return self.sample((num_samples,)).mean(0)


class IndependentNormal(Distribution):
    """Normal with the last ``event_dim`` dims as the event (TorchRL's ``IndependentNormal``).

    Args:
      loc: ``[*batch, *event]``.
      scale: tensor, number or callable ``scale(loc)``, broadcastable to ``loc``.
      upscale: ``a`` in ``loc = a * tanh(loc / a)`` when ``tanh_loc``. Default 5.0.
      tanh_loc: squash ``loc`` as above. Default ``False``.
      event_dim: number of trailing event dims. Default 1.
      validate_args: check ``scale > 0`` and value shapes (host syncs).
    """

    def __init__(
        self,
        loc: torch.Tensor,
        scale: Scale,
        upscale: float = 5.0,
        tanh_loc: bool = False,
        event_dim: int = 1,
        *,
        validate_args: bool = False,
    ):
        owner = "IndependentNormal"
        if validate_args:
            check_floating(loc, name="loc", owner=owner)
        scale = resolve_scale(scale, loc, owner=owner)
        if validate_args:
            check_positive(scale, name="scale", owner=owner)
        if tanh_loc:
            loc = upscale * (loc / upscale).tanh()
        loc, scale = torch.broadcast_tensors(loc, scale)
        if not 0 <= event_dim <= loc.ndim:
            raise ValueError(
                f"{owner}: event_dim must be in [0, loc.ndim={loc.ndim}], got {event_dim}"
            )
        self.loc, self.scale = loc, scale
        self.upscale, self.tanh_loc, self.event_dim = upscale, tanh_loc, event_dim
        self.validate_args = validate_args
        cut = loc.ndim - event_dim
        self.batch_shape, self.event_shape = loc.shape[:cut], loc.shape[cut:]

    def rsample(
        self, sample_shape: ShapeLike = (), *, key: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``loc + scale * eps``, ``[*sample_shape, *batch, *event]``. Samples."""
        shape = as_size(sample_shape) + self.loc.shape
        eps = standard_normal(shape, self.loc, key)
        return self.loc + self.scale * eps

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """Gaussian log-density summed over the event dims: ``[*sample, *batch]``."""
        if self.validate_args:
            check_value_shape(value, self.loc.shape, owner="IndependentNormal.log_prob")
        return sum_rightmost(normal_log_prob(value, self.loc, self.scale), self.event_dim)

    def entropy(self) -> torch.Tensor:
        """``sum(0.5 + 0.5 log(2 pi) + log scale)`` over the event dims: ``[*batch]``."""
        h = 0.5 + 0.5 * math.log(2 * math.pi) + torch.log(self.scale)
        return sum_rightmost(h, self.event_dim)

    @property
    def mean(self) -> torch.Tensor:
        return self.loc

    @property
    def mode(self) -> torch.Tensor:
        return self.loc

    @property
    def deterministic_sample(self) -> torch.Tensor:
        return self.loc

    @property
    def stddev(self) -> torch.Tensor:
        return self.scale

    @property
    def variance(self) -> torch.Tensor:
        return self.scale**2


_SQRT2 = math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_LOG_SQRT_2PI_E = 0.5 * math.log(2.0 * math.pi * math.e)


def _std_normal_pdf(x: torch.Tensor) -> torch.Tensor:
    return torch.exp(-0.5 * x**2) * _INV_SQRT_2PI


def _std_normal_cdf(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * (1.0 + torch.erf(x / _SQRT2))


class TruncatedNormal(Distribution):
    """Normal(loc, scale) restricted to ``[low, high]``, last dim as the event (TorchRL's).

    With ``alpha = (low - loc) / scale``, ``beta = (high - loc) / scale`` and the mass
    ``Z = Phi(beta) - Phi(alpha)``::

        log p(x) = -log(2 pi) / 2 - log Z - ((x - loc) / scale)^2 / 2 - log scale

    summed over the event dim. As TorchRL: ``scale`` is floored at ``eps = 1e-6``, ``Phi`` and
    ``Z`` are clamped to ``[eps, 1 - eps]`` (so ``log Z >= log 1e-6`` even when ``loc`` is far
    outside the bounds), ``log_prob`` clamps values to ``[low + eps, high - eps]`` and returns
    ``-inf`` for an event with any entry outside ``[low, high]``.

    Args:
      loc, scale: ``[*batch, d]`` (scale broadcastable; tensor, number or callable).
      upscale: ``a`` in ``loc = a * tanh(loc / a)`` when ``tanh_loc``. Default 5.0.
      low, high: bounds, numbers or tensors broadcastable to ``[*batch, d]``.
      tanh_loc: squash ``loc`` as above. Default ``False``.
      validate_args: check ``scale > 0``, ``high > low`` and value shapes (host syncs).
    """

    eps: float = 1e-6

    def __init__(
        self,
        loc: torch.Tensor,
        scale: Scale,
        upscale: TensorLike = 5.0,
        low: TensorLike = -1.0,
        high: TensorLike = 1.0,
        tanh_loc: bool = False,
        *,
        validate_args: bool = False,
    ):
        owner = "TruncatedNormal"
        _check_numbers_low_high(low, high, owner)
        scale = resolve_scale(scale, loc, owner=owner)
        low_t = as_param(low, loc, name="low", owner=owner)
        high_t = as_param(high, loc, name="high", owner=owner)
        if validate_args:
            check_floating(loc, name="loc", owner=owner)
            check_positive(scale, name="scale", owner=owner)
            check_low_high(low_t, high_t, owner=owner)
        if loc.ndim < 1:
            raise ValueError(f"{owner}: loc must have an event dim [*batch, d], got shape ()")
        if tanh_loc:
            loc = (loc / upscale).tanh() * upscale
        scale = scale.clamp_min(self.eps)
        loc, scale, low_t, high_t = torch.broadcast_tensors(loc, scale, low_t, high_t)
        self.loc, self.scale, self.low, self.high = loc, scale, low_t, high_t
        self.upscale, self.tanh_loc, self.validate_args = upscale, tanh_loc, validate_args
        self.batch_shape, self.event_shape = loc.shape[:-1], loc.shape[-1:]
        eps = self.eps
        self._alpha = (low_t - loc) / scale
        self._beta = (high_t - loc) / scale
        self._phi_a = _std_normal_pdf(self._alpha)
        self._phi_b = _std_normal_pdf(self._beta)
        self._Phi_a = _std_normal_cdf(self._alpha).clamp(eps, 1 - eps)
        self._Phi_b = _std_normal_cdf(self._beta).clamp(eps, 1 - eps)
        self._Z = (self._Phi_b - self._Phi_a).clamp(eps, 1 - eps)
        self._log_Z = torch.log(self._Z)

    def rsample(
        self, sample_shape: ShapeLike = (), *, key: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Inverse-CDF draw ``[*sample_shape, *batch, d]`` in ``[low, high]``. Samples.

        Pathwise gradients w.r.t. ``loc``/``scale``; the final clip into the bounds changes the
        value only (straight-through), as TorchRL's ``sample.data.copy_(clip)``.
        """
        eps = self.eps
        shape = as_size(sample_shape) + self.loc.shape
        u = standard_uniform(shape, self.loc, key) * (1 - 2 * eps) + eps
        p = (self._Phi_a + u * self._Z).clamp(eps, 1 - eps)
        x = self.loc + self.scale * (_SQRT2 * torch.erfinv(2 * p - 1))
        clipped = torch.minimum(torch.maximum(x, self.low), self.high)
        return clipped.detach() + (x - x.detach())

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """``[*sample, *batch]``; ``-inf`` where any entry of the event is outside the bounds."""
        if self.validate_args:
            check_value_shape(value, self.loc.shape, owner="TruncatedNormal.log_prob")
        outside = ((value < self.low) | (value > self.high)).any(-1)
        v = torch.minimum(torch.maximum(value, self.low + self.eps), self.high - self.eps)
        z = (v - self.loc) / self.scale
        lp = (-0.5 * math.log(2 * math.pi) - self._log_Z - 0.5 * z**2 - torch.log(self.scale)).sum(
            -1
        )
        return lp.masked_fill(outside, -math.inf)

    @property
    def mean(self) -> torch.Tensor:
        """``loc - scale (phi(beta) - phi(alpha)) / Z``: ``[*batch, d]``."""
        return self.loc - self.scale * (self._phi_b - self._phi_a) / self._Z

    @property
    def variance(self) -> torch.Tensor:
        a, b, Z = self._alpha, self._beta, self._Z
        r = (self._phi_b * b - self._phi_a * a) / Z
        return self.scale**2 * (1 - r - ((self._phi_b - self._phi_a) / Z) ** 2)

    def entropy(self) -> torch.Tensor:
        """``log(sqrt(2 pi e) Z scale) - (phi(beta) beta - phi(alpha) alpha) / (2 Z)``: ``[*batch]``."""
        r = (self._phi_b * self._beta - self._phi_a * self._alpha) / self._Z
        return (_LOG_SQRT_2PI_E + self._log_Z - 0.5 * r + torch.log(self.scale)).sum(-1)

    @property
    def mode(self) -> torch.Tensor:
        """``loc`` clamped into ``[low + eps, high - eps]`` (TorchRL)."""
        return torch.minimum(torch.maximum(self.loc, self.low + self.eps), self.high - self.eps)

    @property
    def deterministic_sample(self) -> torch.Tensor:
        """The mean (TorchRL)."""
        return self.mean


class Delta(Distribution):
    """Point mass at ``param`` (TorchRL's ``Delta``).

    ``log_prob(v)`` is ``+inf`` where ``|v - param| < atol + rtol |param|`` on the whole event,
    ``-inf`` elsewhere. ``rsample`` returns ``param`` (expanded) with its gradient; ``sample``
    the same detached.

    Args:
      param: ``[*batch, *event]``.
      atol, rtol: match tolerances. Default 1e-6 each.
      batch_shape, event_shape: explicit shapes; by default the last dim of ``param`` is the event.
    """

    def __init__(
        self,
        param: torch.Tensor,
        atol: float = 1e-6,
        rtol: float = 1e-6,
        batch_shape: ShapeLike | None = None,
        event_shape: ShapeLike | None = None,
        *,
        validate_args: bool = False,
    ):
        batch_shape = torch.Size(() if batch_shape is None else batch_shape)
        event_shape = torch.Size(() if event_shape is None else event_shape)
        if not len(batch_shape) and not len(event_shape):
            batch_shape, event_shape = param.shape[:-1], param.shape[-1:]
        if validate_args and batch_shape + event_shape != param.shape:
            raise ValueError(
                f"Delta: batch_shape + event_shape = {tuple(batch_shape + event_shape)} does not "
                f"match param shape {tuple(param.shape)}"
            )
        self.param, self.atol, self.rtol = param, atol, rtol
        self.batch_shape, self.event_shape = batch_shape, event_shape
        self.validate_args = validate_args

    def _is_equal(self, value: torch.Tensor) -> torch.Tensor:
        eq = (value - self.param).abs() < self.atol + self.rtol * self.param.abs()
        if len(self.event_shape):
            eq = eq.flatten(-len(self.event_shape)).all(-1)
        return eq

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """``+inf`` / ``-inf``, ``[*sample, *batch]``, dtype of ``value``."""
        if self.validate_args:
            check_value_shape(value, self.param.shape, owner="Delta.log_prob")
        eq = self._is_equal(value)
        inf = torch.full(eq.shape, math.inf, dtype=value.dtype, device=value.device)
        return torch.where(eq, inf, -inf)

    def rsample(
        self, sample_shape: ShapeLike = (), *, key: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self.param.expand(as_size(sample_shape) + self.param.shape)

    @property
    def mode(self) -> torch.Tensor:
        return self.param

    @property
    def mean(self) -> torch.Tensor:
        return self.param

    @property
    def deterministic_sample(self) -> torch.Tensor:
        return self.param


class TanhDelta(Distribution):
    """Point mass at ``low + (high - low) / 2 * (tanh(param + (high + low) / 2) + 1)``.

    TorchRL's ``TanhDelta``. Note TorchRL's shift: the pre-tanh location is
    ``param + (high + low) / 2`` (0 for the default bounds ``[-1, 1]``), kept for parity.

    Args:
      param: ``[*batch, *event]`` pre-tanh location.
      low, high: support bounds (numbers or tensors broadcastable to the event).
      event_dims: trailing event dims. Default 1.
      atol, rtol: ``log_prob`` match tolerances on the pre-tanh value. Default 1e-6.
      safe: clamp ``tanh`` away from +-1 (see ``TanhNormal``'s ``safe_tanh``). Default ``True``.
    """

    def __init__(
        self,
        param: torch.Tensor,
        low: TensorLike = -1.0,
        high: TensorLike = 1.0,
        event_dims: int = 1,
        atol: float = 1e-6,
        rtol: float = 1e-6,
        safe: bool = True,
        *,
        validate_args: bool = False,
    ):
        owner = "TanhDelta"
        _check_numbers_low_high(low, high, owner)
        low_t = as_param(low, param, name="low", owner=owner)
        high_t = as_param(high, param, name="high", owner=owner)
        if validate_args:
            check_floating(param, name="param", owner=owner)
            check_low_high(low_t, high_t, owner=owner)
        if not 0 <= event_dims <= param.ndim:
            raise ValueError(f"{owner}: event_dims must be in [0, {param.ndim}], got {event_dims}")
        self.low, self.high, self.safe = low_t, high_t, safe
        self._mid = (high_t + low_t) / 2
        self._half = (high_t - low_t) / 2
        self.loc = param + self._mid
        self.event_dims = event_dims
        cut = param.ndim - event_dims
        self.batch_shape, self.event_shape = param.shape[:cut], param.shape[cut:]
        self._base = Delta(
            self.loc,
            atol=atol,
            rtol=rtol,
            batch_shape=self.batch_shape,
            event_shape=self.event_shape,
        )
        self.validate_args = validate_args

    def _forward(self, u: torch.Tensor) -> torch.Tensor:
        t = safe_tanh(u) if self.safe else torch.tanh(u)
        return self._mid + self._half * t

    @property
    def mode(self) -> torch.Tensor:
        return self._forward(self.loc)

    @property
    def deterministic_sample(self) -> torch.Tensor:
        return self.mode

    @property
    def mean(self) -> torch.Tensor:
        """The point itself (TorchRL raises here; a point mass's mean is its location)."""
        return self.mode

    def rsample(
        self, sample_shape: ShapeLike = (), *, key: torch.Tensor | None = None
    ) -> torch.Tensor:
        m = self.mode
        return m.expand(as_size(sample_shape) + m.shape)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """``+inf`` at the point (to ``atol``/``rtol`` on the pre-tanh value), ``-inf`` elsewhere."""
        if self.validate_args:
            check_value_shape(value, self.loc.shape, owner="TanhDelta.log_prob")
        t = (value - self._mid) / self._half
        u = safe_atanh(t) if self.safe else torch.atanh(t)
        ladj = tanh_log_abs_det_jacobian(u) + torch.log(self._half)
        return self._base.log_prob(u) - sum_rightmost(ladj.expand_as(u), self.event_dims)
