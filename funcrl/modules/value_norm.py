"""Value-target normalisation with the statistics as an explicit state pytree.

* :class:`PopArtValueNorm` -- debiased exponential moving averages of the targets' mean and
  mean of squares (TorchRL's PopArtValueNorm, van Hasselt et al. 2016 / 2019), plus
  :func:`popart_preserve`, the "Preserving Outputs Precisely" rescale of the value head's last
  linear layer so that the *denormalised* outputs do not move when the statistics do.
* :class:`RunningValueNorm` -- exact running mean / population variance (Chan et al.'s parallel
  Welford update; TorchRL's RunningValueNorm).

Every method is pure: ``state = vn.init()``, ``state = vn.update(state, targets)``,
``vn.normalize(state, x)``, ``vn.denormalize(state, y)``, ``vn.scale(state)``. Updates stop
gradients through the targets.

Shapes: ``shape`` is the per-element value shape (usually ``(1,)``); ``update`` reduces every
leading dim of ``targets [*batch, *shape]``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch

__all__ = ["PopArtValueNorm", "RunningValueNorm", "popart_preserve", "popart_update"]


def _shape(shape: int | tuple[int, ...]) -> tuple[int, ...]:
    return (shape,) if isinstance(shape, int) else tuple(shape)


def _reduce_dims(x: torch.Tensor, shape: tuple[int, ...], owner: str) -> tuple[int, ...]:
    n = len(shape)
    if x.ndim < n or tuple(x.shape[x.ndim - n :]) != shape:
        raise ValueError(
            f"{owner}: value_target has shape {tuple(x.shape)}, expected [*batch, "
            f"{', '.join(map(str, shape))}] (shape={shape})"
        )
    return tuple(range(x.ndim - n))


@dataclasses.dataclass(frozen=True)
class PopArtValueNorm:
    """PopArt normaliser: debiased EMA of ``E[G]`` and ``E[G^2]``.

    State: ``{"running_mean": [*shape], "running_mean_sq": [*shape], "debiasing_term": []}``.

    ``update``: ``m <- beta m + (1 - beta) mean(G)``, ``q <- beta q + (1 - beta) mean(G^2)``,
    ``d <- beta d + (1 - beta)``. Statistics: ``mu = m / max(d, eps)``,
    ``sigma^2 = max(q / max(d, eps) - mu^2, eps)``.

    Args:
        shape: per-element value shape.
        beta: EMA decay (TorchRL's default ``0.99999``, MAPPO's).
        epsilon: floor of the debiasing term and of the variance.
    """

    shape: int | tuple[int, ...] = 1
    beta: float = 0.99999
    epsilon: float = 1e-5

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", _shape(self.shape))
        if not 0.0 <= self.beta < 1.0:
            raise ValueError(f"PopArtValueNorm: beta must be in [0, 1), got {self.beta}")

    def init(self, *, device: Any = None, dtype: torch.dtype = torch.float32) -> dict:
        zeros = torch.zeros(self.shape, device=device, dtype=dtype)
        return {
            "running_mean": zeros,
            "running_mean_sq": zeros.clone(),
            "debiasing_term": torch.zeros((), device=device, dtype=dtype),
        }

    def update(self, state: dict, value_target: torch.Tensor) -> dict:
        """Folds a batch of targets into the statistics (no gradient flows through them)."""
        g = value_target.detach()
        dims = _reduce_dims(g, self.shape, "PopArtValueNorm.update")
        batch_mean = g.mean(dim=dims) if dims else g
        batch_mean_sq = g.pow(2).mean(dim=dims) if dims else g.pow(2)
        beta = self.beta
        return {
            "running_mean": beta * state["running_mean"] + (1 - beta) * batch_mean,
            "running_mean_sq": beta * state["running_mean_sq"] + (1 - beta) * batch_mean_sq,
            "debiasing_term": beta * state["debiasing_term"] + (1 - beta),
        }

    def mean_std(self, state: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """The debiased ``(mu, sigma)``, each ``[*shape]``."""
        debias = state["debiasing_term"].clamp(min=self.epsilon)
        mean = state["running_mean"] / debias
        var = (state["running_mean_sq"] / debias - mean.pow(2)).clamp(min=self.epsilon)
        return mean, var.sqrt()

    def normalize(self, state: dict, value_target: torch.Tensor) -> torch.Tensor:
        mean, std = self.mean_std(state)
        return (value_target - mean) / std

    def denormalize(self, state: dict, normalized_value: torch.Tensor) -> torch.Tensor:
        mean, std = self.mean_std(state)
        return normalized_value * std + mean

    def scale(self, state: dict) -> torch.Tensor:
        """``sigma``, the multiplicative scale (for advantages, which are already centred)."""
        return self.mean_std(state)[1]


def popart_preserve(
    layer: dict,
    old: tuple[torch.Tensor, torch.Tensor],
    new: tuple[torch.Tensor, torch.Tensor],
) -> dict:
    """Rescales the value head's last linear layer so ``sigma * (W h + b) + mu`` is unchanged.

    Preserving Outputs Precisely (van Hasselt et al., 2016, eq. 4 / Algorithm 1)::

        W' = W * sigma_old / sigma_new
        b' = (sigma_old * b + mu_old - mu_new) / sigma_new

    Args:
        layer: ``{"weight": [out, in], "bias": [out]}`` (``torch.nn.Linear`` layout) producing
            normalised values.
        old, new: ``(mu, sigma)`` before and after the statistics update, each with ``out``
            elements (any shape, e.g. the value-norm ``shape``).

    Returns:
        The new layer params (gradients stopped through the statistics).
    """
    weight, bias = layer["weight"], layer.get("bias")
    if bias is None:
        raise ValueError("popart_preserve: the layer needs a bias to absorb the mean shift")
    out = weight.shape[-2]
    mu_old, sigma_old = (t.detach().reshape(-1) for t in old)
    mu_new, sigma_new = (t.detach().reshape(-1) for t in new)
    for name, t in (("mu_old", mu_old), ("sigma_old", sigma_old), ("mu_new", mu_new)):
        if t.numel() != out:
            raise ValueError(
                f"popart_preserve: {name} has {t.numel()} elements, the layer has {out} outputs"
            )
    ratio = sigma_old / sigma_new
    return {
        **layer,
        "weight": weight * ratio.unsqueeze(-1),
        "bias": (sigma_old * bias + mu_old - mu_new) / sigma_new,
    }


def popart_update(
    vn: PopArtValueNorm, state: dict, layer: dict, value_target: torch.Tensor
) -> tuple[dict, dict]:
    """``update`` the statistics and rescale ``layer`` to preserve its denormalised outputs.

    Returns:
        ``(new_state, new_layer)``.
    """
    new_state = vn.update(state, value_target)
    return new_state, popart_preserve(layer, vn.mean_std(state), vn.mean_std(new_state))


@dataclasses.dataclass(frozen=True)
class RunningValueNorm:
    """Exact running mean and population variance (no decay).

    State: ``{"mean": [*shape], "m2": [*shape], "count": []}``. A batch of ``n`` targets with mean
    ``m_b`` and population variance ``v_b`` updates, with ``delta = m_b - mean`` and
    ``N = count + n``: ``mean += delta n / N``, ``m2 += v_b n + delta^2 count n / N``,
    ``count = N``. ``var = max(m2 / max(count, 1), eps)``.

    Args:
        shape: per-element value shape.
        epsilon: variance floor.
    """

    shape: int | tuple[int, ...] = 1
    epsilon: float = 1e-5

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", _shape(self.shape))

    def init(self, *, device: Any = None, dtype: torch.dtype = torch.float32) -> dict:
        return {
            "mean": torch.zeros(self.shape, device=device, dtype=dtype),
            "m2": torch.zeros(self.shape, device=device, dtype=dtype),
            "count": torch.zeros((), device=device, dtype=dtype),
        }

    def update(self, state: dict, value_target: torch.Tensor) -> dict:
        """Folds a batch of targets into the statistics (no gradient flows through them)."""
        g = value_target.detach()
        dims = _reduce_dims(g, self.shape, "RunningValueNorm.update")
        if dims:
            # A list, not a generator expression: dynamo cannot trace the latter here.
            n = float(math.prod([g.shape[d] for d in dims]))
            batch_mean = g.mean(dim=dims)
            batch_var = g.var(dim=dims, unbiased=False)
        else:
            n, batch_mean, batch_var = 1.0, g, torch.zeros_like(g)
        count = state["count"]
        delta = batch_mean - state["mean"]
        total = count + n
        return {
            "mean": state["mean"] + delta * (n / total),
            "m2": state["m2"] + batch_var * n + delta.pow(2) * (count * n / total),
            "count": total,
        }

    def var(self, state: dict) -> torch.Tensor:
        return (state["m2"] / state["count"].clamp(min=1.0)).clamp(min=self.epsilon)

    def mean_std(self, state: dict) -> tuple[torch.Tensor, torch.Tensor]:
        return state["mean"], self.var(state).sqrt()

    def normalize(self, state: dict, value_target: torch.Tensor) -> torch.Tensor:
        return (value_target - state["mean"]) / self.var(state).sqrt()

    def denormalize(self, state: dict, normalized_value: torch.Tensor) -> torch.Tensor:
        return normalized_value * self.var(state).sqrt() + state["mean"]

    def scale(self, state: dict) -> torch.Tensor:
        return self.var(state).sqrt()
