"""The objective protocol: the six names every funcrl objective module provides.

A user who learned one objective knows them all; a contributor adding one knows what it must
provide. Every module in :mod:`funcrl.objectives` (``funcrl.sac``, ``funcrl.dqn``, ...) has:

``Config``
    A frozen dataclass of hyperparameters with TorchRL's names and defaults, validated in
    ``__post_init__`` (a bad value raises naming ``<objective>.Config``, the field, expected and
    actual). It includes ``gamma``, ``reduction``, ``use_prioritized_weights`` and, where TorchRL
    offers ``make_value_estimator``, ``value_estimator`` (``"td0"`` by default) computed by
    :mod:`funcrl.values`.

``Nets``
    A frozen dataclass whose network fields are funcrl nets (objects with ``init`` and
    ``__call__``, e.g. :class:`funcrl.nn.MLP`, :class:`funcrl.nn.Concat` for a critic over
    ``(observation, action)``, :class:`funcrl.nn.TorchModule`), never bare functions. A field left
    at its default is built from the specs by :func:`init` and from the batch's feature sizes by
    ``loss``/``act`` with the same static config, so ``loss(init(...), batch)`` works without
    passing ``nets``.

``init(seed, observation_spec, action_spec, config=Config(), nets=Nets(), *, device=, dtype=)``
    Fresh params: a plain ``dict``. ``seed`` is an ``int``, a :mod:`funcrl.random` key or a
    ``torch.Generator``; the global RNG is never touched. Targets start as copies of their online
    params. One key name per concept across objectives (see :data:`PARAM_KEYS`).

``loss(params, batch, *, config=Config(), nets=Nets(), key=None) -> dict[str, Tensor]``
    TorchRL's loss keys (``loss_actor``, ``loss_qvalue``, ``loss``, ...) plus detached diagnostics
    (``alpha``, ``entropy``, ...). ``batch`` is a :class:`funcrl.Record` with at least one batch
    dim and TorchRL's keys. ``td_error`` is ``[*B]``: the absolute TD error, the priority TorchRL
    writes. ``batch["priority_weight"]`` (``[*B]``) weights the reduction unless
    ``config.use_prioritized_weights`` is ``False``. ``key`` (a :mod:`funcrl.random` key) makes every
    draw explicit; ``None`` draws from the global torch RNG in TorchRL's order.

``act(params, observation, *, config=Config(), nets=Nets(), mode="random", key=None, ...)``
    The action for ``observation [*B, o]``: ``mode="random"`` explores (a stochastic policy samples;
    a deterministic one adds its exploration noise; a value-based one is epsilon-greedy) and
    ``mode="deterministic"`` exploits (the mode or mean of the policy, the greedy action). Action
    masks are honoured. Returns an action in the layout ``loss`` expects in ``batch["action"]``.

``trainer(optimizer, *, config=Config(), nets=Nets(), ...) -> funcrl.training.Trainer``
    The pure ``(init, step)`` pair: ``state = trainer.init(params)`` and
    ``params, state, metrics = trainer.step(params, state, batch, key)``; ``step`` compiles with
    ``torch.compile(fullgraph=True)`` and vmaps over seeds.

:func:`check` verifies a module's names and signatures; ``tests/test_protocol_*.py`` run every
objective through the whole protocol.
"""

from __future__ import annotations

import dataclasses
import inspect
from types import ModuleType
from typing import Any

__all__ = ["NAMES", "MODES", "PARAM_KEYS", "check"]

NAMES = ("Config", "Nets", "init", "loss", "act", "trainer")

MODES = ("random", "deterministic")

# One params key per concept, whatever the objective.
PARAM_KEYS: dict[str, str] = {
    "action bounds": "action_bounds",  # {"low": [*lead, a], "high": [*lead, a]}
    "temperature": "log_alpha",  # alpha = exp(log_alpha)
    "target of params[k]": "target_<k>",  # e.g. target_qvalue, target_actor, target_value
}

_SIGNATURES: dict[str, tuple[str, ...]] = {
    "init": ("seed", "observation_spec", "action_spec", "config", "nets"),
    "loss": ("params", "batch", "config", "nets", "key"),
    "act": ("params", "observation", "config", "nets", "mode", "key"),
    "trainer": ("optimizer", "config", "nets"),
}


def check(module: ModuleType) -> list[str]:
    """What ``module`` lacks to follow the protocol: an empty list when it conforms.

    Checks the six names, that ``Config`` and ``Nets`` are frozen dataclasses constructible with
    no arguments, and that ``init``/``loss``/``act``/``trainer`` take the protocol's parameters.
    """
    problems: list[str] = []
    name = module.__name__.rsplit(".", 1)[-1]
    for attr in NAMES:
        if not hasattr(module, attr):
            problems.append(f"{name}: missing {attr}")
    for cls_name in ("Config", "Nets"):
        cls = getattr(module, cls_name, None)
        if cls is None:
            continue
        if not dataclasses.is_dataclass(cls) or not cls.__dataclass_params__.frozen:
            problems.append(f"{name}.{cls_name}: not a frozen dataclass")
            continue
        try:
            cls()
        except Exception as e:  # noqa: BLE001 - reported, not raised
            problems.append(f"{name}.{cls_name}(): {type(e).__name__}: {e}")
    for fn_name, params in _SIGNATURES.items():
        fn: Any = getattr(module, fn_name, None)
        if fn is None:
            continue
        have = inspect.signature(fn).parameters
        missing = [p for p in params if p not in have]
        if missing:
            problems.append(f"{name}.{fn_name}: lacks parameters {missing}")
    return problems
