"""Batch renormalisation (Ioffe, 2017, https://arxiv.org/abs/1702.03275) with explicit state.

TorchRL's ``BatchRenorm1d`` keeps its running statistics in module buffers and mutates them in
``forward``. Here they live in a ``state`` pytree that the call takes and returns, so a training
step stays a pure function (CrossQ threads the state through its loss)::

    bn = BatchRenorm1d(64)
    params, state = bn.init(0), bn.init_state()
    y, state = bn(params, state, x, train=True)    # batch statistics, renormalised
    y, _ = bn(params, state, x, train=False)       # running statistics only
"""

from __future__ import annotations

import dataclasses

import torch

from funcrl.nn.core import (
    Module,
    Params,
    Seed,
    _first_difference,
    _signature,
    check_input,
    net_name,
)

__all__ = ["BatchRenorm1d", "renorm_factors", "warmup_factor"]


def renorm_factors(
    batch_mean: torch.Tensor,
    batch_std: torch.Tensor,
    running_mean: torch.Tensor,
    running_std: torch.Tensor,
    max_r: float,
    max_d: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The renormalisation factors ``r`` and ``d`` of the paper (Algorithm 1).

    ``r = clip(sigma_B / sigma, 1/r_max, r_max)`` and ``d = clip((mu_B - mu) / sigma, -d_max,
    d_max)``. Both are treated as constants in the backward pass (the paper's ``stop_gradient``).

    Shapes: all inputs ``[C]``; returns two ``[C]`` tensors.
    """
    r = torch.clamp(batch_std.detach() / running_std, 1.0 / max_r, max_r)
    d = torch.clamp((batch_mean.detach() - running_mean) / running_std, -max_d, max_d)
    return r, d


def warmup_factor(steps: torch.Tensor, warmup_steps: int, smooth: bool) -> torch.Tensor:
    """0 during warm-up (plain batch norm), 1 after it (batch renorm); linear ramp if ``smooth``.

    TorchRL clamps its step counter with a non in-place ``clamp_max`` that has no effect, so past
    ``2 * warmup_steps`` its factor grows to 2, 3, ...; the factor here is capped at 1 as intended.
    """
    if smooth:
        factor = steps.to(torch.float32) / warmup_steps
    else:
        factor = torch.div(steps, warmup_steps, rounding_mode="floor").to(torch.float32)
    return factor.clamp(max=1.0)


@dataclasses.dataclass(frozen=True)
class BatchRenorm1d(Module):
    """BatchRenorm over the channel dim 1 of ``[N, C]`` or ``[N, C, L]`` inputs (TorchRL's layout).

    Training: ``y = (x - mu_B) / sigma_B * r + d`` with ``r, d`` from :func:`renorm_factors`, scaled
    toward ``(1, 0)`` during warm-up, then ``weight * y + bias``; the running statistics move by
    ``momentum`` toward the batch mean and the unbiased batch variance (TorchRL's ``N / (N - 1)``
    correction with ``N = x.shape[0]``). Evaluation: ``(x - mu) / sqrt(var + eps)``, affine.

    Params: ``{"weight": [C], "bias": [C]}`` (ones and zeros).
    State: ``{"running_mean": [C] (zeros), "running_var": [C] (ones), "steps": [] int64}``.

    Args:
        num_features: ``C``.
        momentum: running-statistics update rate.
        eps: added to variances before the square root.
        max_r: ``r`` is clipped to ``[1 / max_r, max_r]``.
        max_d: ``d`` is clipped to ``[-max_d, max_d]``.
        warmup_steps: training calls that behave as batch norm before ``r, d`` are used
            (``0``: renormalise from the first call).
        smooth: ramp ``r, d`` in linearly over the warm-up instead of switching at its end.

    Shapes:
        ``x: [N, C, *L] -> y: [N, C, *L]``; ``N >= 2`` when ``train=True``.
    """

    num_features: int
    momentum: float = 0.01
    eps: float = 1e-5
    max_r: float = 3.0
    max_d: float = 5.0
    warmup_steps: int = 10000
    smooth: bool = False

    def __post_init__(self) -> None:
        if self.num_features <= 0:
            raise ValueError(
                f"BatchRenorm1d: num_features must be positive, got {self.num_features}"
            )
        if self.max_r < 1.0 or self.max_d < 0.0:
            raise ValueError(
                f"BatchRenorm1d: need max_r >= 1 and max_d >= 0, got max_r={self.max_r}, "
                f"max_d={self.max_d}"
            )
        if self.warmup_steps < 0:
            raise ValueError(f"BatchRenorm1d: warmup_steps must be >= 0, got {self.warmup_steps}")

    def init(self, seed: Seed = 0, *, device=None, dtype=torch.float32) -> Params:
        c = self.num_features
        return {
            "weight": torch.ones(c, device=device, dtype=dtype),
            "bias": torch.zeros(c, device=device, dtype=dtype),
        }

    def init_state(self, *, device=None, dtype=torch.float32) -> Params:
        c = self.num_features
        return {
            "running_mean": torch.zeros(c, device=device, dtype=dtype),
            "running_var": torch.ones(c, device=device, dtype=dtype),
            "steps": torch.zeros((), device=device, dtype=torch.int64),
        }

    def _check_state(self, state: Params) -> None:
        """``state`` must have :meth:`init_state`'s keys and shapes (steps a scalar integer)."""
        c = self.num_features
        expected = {
            "running_mean": (torch.Size([c]), True),
            "running_var": (torch.Size([c]), True),
            "steps": (torch.Size([]), False),
        }
        if _signature(state) != expected:
            diff = _first_difference(expected, state) or "state differs"
            raise ValueError(
                f"{net_name(self)}: {diff.replace('params', 'state', 1)} (build it with init_state)"
            )

    def __call__(
        self, params: Params, state: Params, x: torch.Tensor, *, train: bool
    ) -> tuple[torch.Tensor, Params]:
        self.check_params(params)
        self._check_state(state)
        check_input(self, "x", x, None, params["weight"])
        if x.dim() < 2 or x.shape[1] != self.num_features:
            raise ValueError(
                f"{net_name(self)}: input x must be [N, C, *L] with C=num_features="
                f"{self.num_features}, got shape {tuple(x.shape)}"
            )
        view = (1, self.num_features) + (1,) * (x.dim() - 2)
        running_mean, running_var = state["running_mean"], state["running_var"]
        running_std = torch.sqrt(running_var + self.eps)
        if train:
            if x.shape[0] < 2:
                raise ValueError(
                    f"BatchRenorm1d: train=True needs a batch of at least 2, got shape "
                    f"{tuple(x.shape)}"
                )
            reduce = [i for i in range(x.dim()) if i != 1]
            b_mean = x.mean(reduce)
            b_var = x.var(reduce, unbiased=False)
            b_std = torch.sqrt(b_var + self.eps)
            r, d = renorm_factors(b_mean, b_std, running_mean, running_std, self.max_r, self.max_d)
            if self.warmup_steps > 0:
                w = warmup_factor(state["steps"], self.warmup_steps, self.smooth).to(r.dtype)
                r = 1.0 + (r - 1.0) * w
                d = d * w
            y = (x - b_mean.view(view)) / b_std.view(view) * r.view(view) + d.view(view)
            n = x.shape[0]
            unbiased_var = b_var.detach() * (n / (n - 1))
            new_state = {
                "running_mean": running_mean + self.momentum * (b_mean.detach() - running_mean),
                "running_var": running_var + self.momentum * (unbiased_var - running_var),
                "steps": torch.clamp(state["steps"] + 1, max=max(self.warmup_steps, 1)),
            }
        else:
            y = (x - running_mean.view(view)) / running_std.view(view)
            new_state = state
        y = params["weight"].view(view) * y + params["bias"].view(view)
        return y, new_state
