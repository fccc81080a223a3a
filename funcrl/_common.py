"""Small pieces shared by the objectives: distances, batch key checks."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from funcrl.record import NestedKey, Record

__all__ = ["distance_loss", "LOSS_FUNCTIONS", "get", "get_flag", "check_loss_function"]

LOSS_FUNCTIONS = ("l1", "l2", "smooth_l1")


def check_loss_function(name: str, owner: str) -> None:
    if name not in LOSS_FUNCTIONS:
        raise ValueError(f"{owner}: loss_function must be one of {LOSS_FUNCTIONS}, got {name!r}")


def distance_loss(
    prediction: torch.Tensor, target: torch.Tensor, loss_function: str = "l2"
) -> torch.Tensor:
    """Element-wise TorchRL ``distance_loss``: ``l1``, ``l2`` (squared error) or ``smooth_l1``.

    No reduction and no broadcasting: the shapes must match.
    """
    if prediction.shape != target.shape:
        raise ValueError(
            f"distance_loss: prediction shape {tuple(prediction.shape)} != target shape "
            f"{tuple(target.shape)}"
        )
    if loss_function == "l2":
        return (prediction - target).pow(2)
    if loss_function == "l1":
        return (prediction - target).abs()
    if loss_function == "smooth_l1":
        return F.smooth_l1_loss(prediction, target, reduction="none")
    raise ValueError(f"loss_function must be one of {LOSS_FUNCTIONS}, got {loss_function!r}")


def get(
    batch: Record,
    key: NestedKey,
    *,
    owner: str,
    shape: Sequence[int | None] | None = None,
) -> torch.Tensor:
    """``batch[key]`` with a clear error naming ``owner``, the key and the expected shape.

    ``shape`` is matched against the trailing dims; ``None`` entries match any size.
    """
    if not isinstance(batch, Record):
        raise TypeError(f"{owner}: batch must be a funcrl.Record, got {type(batch).__name__}")
    if key not in batch:
        raise KeyError(
            f"{owner}: batch has no key {key!r}; it has "
            f"{sorted(map(str, batch.keys(include_nested=True, leaves_only=True)))}"
        )
    x = batch[key]
    if shape is not None:
        tail = tuple(x.shape[len(x.shape) - len(shape) :]) if len(x.shape) >= len(shape) else None
        ok = tail is not None and all(e is None or e == a for e, a in zip(shape, tail))
        if not ok:
            want = "[*batch, " + ", ".join("?" if e is None else str(e) for e in shape) + "]"
            raise ValueError(f"{owner}: batch[{key!r}] has shape {tuple(x.shape)}, expected {want}")
    return x


def get_flag(batch: Record, key: NestedKey, *, owner: str, like: torch.Tensor) -> torch.Tensor:
    """A ``[*batch, 1]`` done/terminated/reward-like entry, checked against ``like``'s shape."""
    x = get(batch, key, owner=owner, shape=(1,))
    if x.shape != like.shape:
        raise ValueError(
            f"{owner}: batch[{key!r}] has shape {tuple(x.shape)}, expected {tuple(like.shape)} "
            "(TorchRL's layout: [*batch, 1])"
        )
    return x
