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


def _check_tau(tau: float | torch.Tensor, name: str = "tau") -> None:
    # A tensor tau is not checked: reading its value would sync inside a compiled step.
    if isinstance(tau, torch.Tensor):
        return
    if not 0.0 <= float(tau) <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {tau}")


def _check_structure(target: Params, online: Params, fn: str) -> None:
    lt, st = tree.flatten(target)
    lo, so = tree.flatten(online)
    if st != so:
        raise ValueError(f"{fn}: target and online params differ in structure:\n{st}\nvs\n{so}")
    for i, (a, b) in enumerate(zip(lt, lo)):
        if a.shape != b.shape:
            raise ValueError(
                f"{fn}: leaf {i} has shape {tuple(a.shape)} in target, {tuple(b.shape)} in online"
            )


def polyak(target: Params, online: Params, tau: float | torch.Tensor) -> Params:
    """Polyak averaging ``target <- (1 - tau) * target + tau * online``; returns a new tree.

    Gradients do not flow into the result (targets are constants to the loss).

    Args:
        target: target params.
        online: online params with the same structure and shapes.
        tau: weight of the online params in [0, 1]; 1 copies ``online``, 0 keeps ``target``.
    """
    _check_tau(tau)
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
    _check_tau(tau)
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
        _check_tau(eps, "eps")
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
    if period < 1:
        raise ValueError(f"periodic: period must be >= 1, got {period}")
    _check_structure(target, online, "periodic")
    step = torch.as_tensor(step)
    copy = (step % period) == 0
    return tree.map(lambda t, o: torch.where(copy, o.detach(), t.detach()), target, online)
