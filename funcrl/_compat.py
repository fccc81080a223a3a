"""Work-arounds for bugs of older torch releases that funcrl's supported range includes.

Each is applied once, at ``import funcrl``, only on the releases that need it, and leaves
torch's behaviour unchanged apart from the bug.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["patch_dynamo_random_check", "torch_release"]


def torch_release() -> tuple[int, int]:
    """The running torch's ``(major, minor)``."""
    major, minor = torch.__version__.split(".")[:2]
    return int(major), int(minor)


def patch_dynamo_random_check(force: bool = False) -> bool:
    """dynamo on torch < 2.13 fails on a call of an object built inside the compiled function.

    ``UserDefinedObjectVariable.is_supported_random`` asks whether the called object is one of
    ``random``'s functions by hashing it. An object constructed during tracing (an
    ``nn.MLP``, a ``TanhBounded``: funcrl's default nets are built inside the loss) is still
    empty there, so its dataclass ``__hash__`` raises ``AttributeError``, which torch < 2.13
    does not catch (``InternalTorchDynamoError: 'MLP' object has no attribute 'in_features'``,
    seen on torch 2.11 + CUDA). torch 2.13 catches it and answers False; this does the same.

    Args:
        force: patch whatever the torch release (for the test on a torch without the bug).

    Returns:
        Whether a method was patched.
    """
    if torch_release() >= (2, 13) and not force:
        return False
    try:
        from torch._dynamo.variables import user_defined
    except ImportError:  # pragma: no cover - a torch without dynamo
        return False
    return _catch_attribute_errors(user_defined)


def _catch_attribute_errors(module: Any) -> bool:
    """Every ``is_supported_random`` defined by a class of ``module`` answers False where it
    raised ``AttributeError``; returns whether one was wrapped (each is wrapped once)."""
    patched = False
    for cls in vars(module).values():
        original = vars(cls).get("is_supported_random") if isinstance(cls, type) else None
        if original is None or getattr(original, "_funcrl_patched", False):
            continue

        def is_supported_random(self: Any, _original: Any = original) -> bool:
            try:
                return _original(self)
            except AttributeError:  # an object still being built while traced
                return False

        is_supported_random._funcrl_patched = True  # type: ignore[attr-defined]
        cls.is_supported_random = is_supported_random
        patched = True
    return patched
