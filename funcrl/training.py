"""A generic pure training step: loss -> gradients -> optimizer -> target maps.

    train = funcrl.update(sac.loss, optim.adam(3e-4), trainable=("actor", "qvalue", "log_alpha"),
                          targets={"target_qvalue": "qvalue"}, tau=0.005)
    opt_state = train.init(params)
    params, opt_state, metrics = train.step(params, opt_state, batch)
    params, opt_state, metrics = train.step(params, opt_state, batch, key)   # explicit draws

``step`` is a pure function of its inputs (the step counter lives in ``opt_state``), so it can be
wrapped in ``torch.compile(fullgraph=True)`` and ``torch.func.vmap`` over seeds (one key per seed).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import torch

from funcrl import targets as _targets
from funcrl import tree
from funcrl.autodiff import grad as _grad
from funcrl.optim import GradientTransformation, apply_updates, multi_transform

__all__ = ["TrainState", "Trainer", "update", "total_loss"]

Params = dict[str, Any]


class TrainState(NamedTuple):
    """Optimizer state plus the number of steps taken (a 0-d int64 tensor)."""

    opt: Any
    step: torch.Tensor


class Trainer(NamedTuple):
    init: Callable[[Params], TrainState]
    step: Callable[..., tuple[Params, TrainState, dict[str, torch.Tensor]]]


def total_loss(losses: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """The sum of the ``loss`` and ``loss_*`` entries of a loss dict (TorchRL's convention).

    DQN-style objectives return a single ``"loss"``; actor-critic ones ``loss_actor``, ...
    """
    terms = [v for k, v in losses.items() if k == "loss" or k.startswith("loss_")]
    if not terms:
        raise ValueError(f"total_loss: no 'loss' or 'loss_*' entry in {sorted(losses)}")
    return sum(terms[1:], terms[0])


def update(
    loss_fn: Callable[[Params, Any], Mapping[str, torch.Tensor]],
    optimizer: GradientTransformation | Mapping[str, GradientTransformation],
    *,
    trainable: Sequence[str],
    targets: Mapping[str, str] | None = None,
    tau: float | torch.Tensor = 0.005,
    every: Mapping[str, int] | None = None,
    target_every: int = 1,
    hard_target_period: int | None = None,
    has_state: bool = False,
    project: Callable[[Params], Params] | None = None,
) -> Trainer:
    """Builds ``Trainer(init, step)`` for ``loss_fn(params, batch) -> loss dict``.

    Args:
        loss_fn: a funcrl loss, e.g. ``funcrl.sac.loss`` or a ``functools.partial`` of it.
        optimizer: one transform for all trainable params, or a dict of transforms per key
            (wrapped in :func:`funcrl.optim.multi_transform`).
        trainable: the top-level keys of ``params`` that receive gradients.
        targets: ``{target_key: online_key}`` updated by Polyak averaging after each step.
        tau: Polyak weight of the online params.
        every: ``{key: k}``: update ``key`` only on steps where ``step % k == 0`` (TD3's delayed
            actor). Gradients are computed every step; the update and optimizer state of a
            skipped key are kept as they were (a ``torch.where``, no Python branch).
        target_every: apply the target map only every ``target_every`` steps (TD3 updates targets
            with the actor).
        hard_target_period: copy targets every ``k`` steps instead of Polyak averaging (DQN's
            ``HardUpdate``).
        has_state: ``loss_fn`` returns ``(losses, new_state)``, a dict of non-trainable params
            entries (CrossQ's ``{"batch_stats": ...}``) written, detached, into the new params.
        project: a pure map applied to the new params after the optimizer and before the target
            maps, e.g. ``functools.partial(sac.project, config=cfg)`` to keep ``log_alpha`` inside
            ``[log min_alpha, log max_alpha]`` as TorchRL's in-place clamp does.

    Returns:
        ``Trainer(init, step)`` with ``step(params, opt_state, batch, key=None) -> (params,
        opt_state, metrics)``; ``metrics`` is the detached loss dict. A ``key`` (a
        :mod:`funcrl.random` key, a fresh one per step: the caller splits) is passed on as
        ``loss_fn(params, batch, key=key)``; with ``key=None`` the loss is called without it
        (global RNG), so losses without a ``key`` parameter keep working.
    """
    trainable = tuple(trainable)
    targets = dict(targets or {})
    every = dict(every or {})
    unknown = set(every) - set(trainable)
    if unknown:
        raise KeyError(f"update: every= names {sorted(unknown)}, which are not trainable")
    for t, o in targets.items():
        if o not in trainable:
            raise KeyError(f"update: target {t!r} follows {o!r}, which is not trainable")
    # A period of 1 updates every step: no mask needed (saves a where per leaf and state entry).
    every = {k: p for k, p in every.items() if p != 1}
    opt = multi_transform(optimizer) if isinstance(optimizer, Mapping) else optimizer

    def init(params: Params) -> TrainState:
        _check_params(params, trainable, targets)
        first = tree.leaves({k: params[k] for k in trainable})[0]
        return TrainState(
            opt.init({k: params[k] for k in trainable}),
            torch.zeros((), dtype=torch.int64, device=first.device),
        )

    def step(params: Params, state: TrainState, batch: Any, key: torch.Tensor | None = None):
        train_params = {k: params[k] for k in trainable}
        # Only pass key= when given: a loss without a key parameter keeps working without one.
        extra = {} if key is None else {"key": key}

        def objective(p):
            out = loss_fn({**params, **p}, batch, **extra)
            losses, new_state = out if has_state else (out, {})
            return total_loss(losses), (losses, new_state)

        grads, (losses, new_state) = _grad(objective, has_aux=True)(train_params)
        clash = set(new_state) & set(trainable)
        if clash:
            raise KeyError(f"update: loss_fn's new state overwrites trainable keys {sorted(clash)}")
        updates, opt_state = opt.update(grads, state.opt, train_params)
        new = apply_updates(train_params, updates)
        if every:
            new, opt_state = _mask_delayed(new, train_params, opt_state, state, every)
        if project is not None:
            new = {k: v for k, v in project({**params, **new}).items() if k in new}
        out = {**params, **new, **tree.detach(dict(new_state))}
        if targets:
            if hard_target_period is not None:
                for t, o in targets.items():
                    out[t] = _targets.periodic(
                        params[t], new[o], state.step + 1, hard_target_period
                    )
            else:
                due = (state.step % target_every) == 0 if target_every > 1 else None
                for t, o in targets.items():
                    moved = _targets.polyak(params[t], new[o], tau)
                    out[t] = moved if due is None else tree.where(due, moved, params[t])
        metrics = {k: v.detach() for k, v in losses.items()}
        return out, TrainState(opt_state, state.step + 1), metrics

    return Trainer(init, step)


def _mask_delayed(new, old, opt_state, state, every):
    from funcrl.optim import MultiTransformState

    if not isinstance(opt_state, MultiTransformState):
        raise TypeError("update: every= needs a dict of optimizers (one per trainable key)")
    inner = dict(opt_state.inner)
    for k, period in every.items():
        due = (state.step % period) == 0
        new[k] = tree.where(due, new[k], old[k])
        inner[k] = tree.where(due, inner[k], state.opt.inner[k])
    return new, MultiTransformState(inner)


def _check_params(params: Params, trainable, targets) -> None:
    if not isinstance(params, Mapping):
        raise TypeError(f"update: params must be a dict, got {type(params).__name__}")
    missing = [k for k in (*trainable, *targets) if k not in params]
    if missing:
        raise KeyError(f"update: params lack keys {missing}; they have {sorted(params)}")
