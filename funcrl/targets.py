"""Target-network updates as pure maps over parameter pytrees.

``polyak(target, online, tau)`` is ``target + tau * (online - target)``: ``tau`` weights the
*online* parameters, as in the DDPG/TD3/SAC papers (TorchRL's ``SoftUpdate(eps=...)`` uses
``eps = 1 - tau``; :func:`soft_update` accepts either). The trailing-underscore variants update the
target in place with ``torch._foreach_*`` kernels, for eager loops that own their buffers.
"""

from __future__ import annotations

from typing import Any

import torch

from funcrl import tree

__all__ = ["polyak", "polyak_", "soft_update", "hard_update", "hard_update_", "periodic"]

Params = Any


def _check_tau(tau: float | torch.Tensor, owner: str, name: str = "tau") -> None:
    if isinstance(tau, torch.Tensor):
        # Only the shape is checked: reading a tensor's value would sync inside a compiled step.
        if tau.ndim != 0 or not tau.is_floating_point():
            raise ValueError(
                f"{owner}: a tensor {name} must be a 0-dim floating tensor (one per vmapped "
                f"member under vmap), got {tau.dtype} of shape {tuple(tau.shape)}"
            )
        return
    if isinstance(tau, bool) or not isinstance(tau, int | float):
        raise TypeError(
            f"{owner}: {name} must be a float or a 0-dim tensor, got {type(tau).__name__}"
        )
    if not 0.0 <= float(tau) <= 1.0:  # also rejects NaN
        raise ValueError(f"{owner}: {name} must be in [0, 1], got {tau}")


def _check_structure(target: Params, online: Params, fn: str) -> None:
    tree.check_same_structure(
        target,
        online,
        owner=fn,
        names=("target", "online"),
        dtypes=True,
        hint="target params must be a copy of the online params (same keys, shapes and dtypes)",
    )


def polyak(target: Params, online: Params, tau: float | torch.Tensor) -> Params:
    """Polyak averaging ``target <- (1 - tau) * target + tau * online``; returns a new tree.

    Gradients do not flow into the result (targets are constants to the loss).

    Args:
        target: target params.
        online: online params with the same structure and shapes.
        tau: weight of the online params in [0, 1]; 1 copies ``online``, 0 keeps ``target``.
    """
    _check_tau(tau, "polyak")
    _check_structure(target, online, "polyak")
    if isinstance(tau, (int, float)) and not tree.any_batched(target, online):
        # One foreach kernel for all leaves (one fused loop once compiled); vmap cannot batch it.
        t, treedef = tree.flatten(target)
        if not t:  # an empty tree (VDN's mixer has no params)
            return target
        o = [x.detach() for x in tree.leaves(online)]
        return tree.unflatten(treedef, torch._foreach_lerp([x.detach() for x in t], o, float(tau)))
    return tree.map(lambda t, o: torch.lerp(t.detach(), o.detach(), tau), target, online)


def polyak_(target: Params, online: Params, tau: float) -> Params:
    """In-place :func:`polyak` (``torch._foreach_lerp_``); returns ``target`` for chaining."""
    if isinstance(tau, torch.Tensor):
        raise TypeError("polyak_: tau must be a Python float (the in-place kernel takes a scalar)")
    _check_tau(tau, "polyak_")
    _check_structure(target, online, "polyak_")
    t, o = tree.leaves(target), tree.leaves(online)
    with torch.no_grad():
        torch._foreach_lerp_(t, o, tau)
    return target


def soft_update(
    target: Params, online: Params, *, tau: float | None = None, eps: float | None = None
) -> Params:
    """TorchRL's ``SoftUpdate``: give ``tau`` (online weight) or ``eps = 1 - tau``, not both."""
    if (tau is None) == (eps is None):
        raise ValueError("soft_update: pass exactly one of tau or eps (eps = 1 - tau)")
    if eps is not None:
        _check_tau(eps, "soft_update", "eps")
        tau = 1.0 - eps
    return polyak(target, online, tau)


def hard_update(target: Params, online: Params) -> Params:
    """A copy of ``online`` with ``target``'s structure (TorchRL's ``HardUpdate`` step)."""
    _check_structure(target, online, "hard_update")
    return tree.map(lambda o: o.detach().clone(), online)


def hard_update_(target: Params, online: Params) -> Params:
    """In-place :func:`hard_update` (``torch._foreach_copy_``)."""
    _check_structure(target, online, "hard_update_")
    with torch.no_grad():
        torch._foreach_copy_(tree.leaves(target), tree.leaves(online))
    return target


def periodic(target: Params, online: Params, step: torch.Tensor | int, period: int) -> Params:
    """Copies ``online`` into the target when ``step % period == 0``, else keeps ``target``.

    A pure function of the step counter (a tensor inside compiled steps, so there is no
    data-dependent branch): TorchRL's ``HardUpdate(value_network_update_interval=period)``.
    """
    if not isinstance(period, int) or isinstance(period, bool) or period < 1:
        raise ValueError(f"periodic: period must be an int >= 1, got {period!r}")
    _check_structure(target, online, "periodic")
    step = torch.as_tensor(step)
    if step.ndim != 0 or step.is_floating_point() or step.dtype == torch.bool:
        raise ValueError(
            f"periodic: step must be an int or a 0-dim integer tensor, got {step.dtype} of shape "
            f"{tuple(step.shape)}"
        )
    copy = (step % period) == 0
    return tree.map(lambda t, o: torch.where(copy, o.detach(), t.detach()), target, online)
