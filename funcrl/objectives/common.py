"""Small pieces shared by the objectives: distances, reductions, TD(0), batch checks, spec sizes."""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from funcrl._constants import filled
from funcrl.record import NestedKey, Record

Params = dict[str, Any]

__all__ = [
    "in_features",
    "distance_loss",
    "LOSS_FUNCTIONS",
    "REDUCTIONS",
    "check_batch",
    "get",
    "get_flag",
    "check_loss_function",
    "check_reduction",
    "reduce_loss",
    "spec_size",
    "require",
    "priority_weights",
    "VALUE_ESTIMATORS",
    "check_mode",
    "check_observation",
    "default_net",
    "out_features",
    "n_step_discount",
    "Params",
]

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


def check_batch(batch: Any, owner: str) -> Record:
    """``batch`` itself, after checking it is a :class:`Record` with at least one non-empty batch dim.

    A loss needs batch dims: quantities such as SAC's ``"auto"`` target entropy read the feature
    dims *after* the batch dims, so a batch left at ``batch_ndim=0`` would be silently misread,
    and an empty batch would reduce to NaN. Only static shapes are read (free under compile).

    Raises:
        TypeError: ``batch`` is not a Record.
        ValueError: ``batch.batch_ndim == 0`` or a batch dim is 0.
    """
    if not isinstance(batch, Record):
        raise TypeError(f"{owner}: batch must be a funcrl.Record, got {type(batch).__name__}")
    if batch.batch_ndim == 0:
        raise ValueError(
            f"{owner}: batch has no batch dims (batch_ndim=0); build it with the leading dims "
            "as batch dims, e.g. Record(data, batch_ndim=1), or batch.unsqueeze(0) for one "
            "transition"
        )
    if any(n == 0 for n in batch.batch_size):
        raise ValueError(f"{owner}: batch is empty (batch_size {tuple(batch.batch_size)})")
    return batch


def get(
    batch: Record,
    key: NestedKey,
    *,
    owner: str,
    shape: Sequence[int | None] | None = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """``batch[key]`` with a clear error naming ``owner``, the key and the expected shape/dtype.

    ``shape`` is matched against the trailing dims after the batch dims; ``None`` entries match
    any size. ``dtype``, when given, must equal the entry's dtype exactly (pass the params' dtype:
    a float64 batch with float32 params is an error here, not a matmul failure deep inside a net).
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
        # The trailing dims come after the batch dims: an action [B] is not [B, a] with a = B.
        fits = len(x.shape) >= batch.batch_ndim + len(shape)
        tail = tuple(x.shape[len(x.shape) - len(shape) :]) if fits else None
        ok = tail is not None and all(e is None or e == a for e, a in zip(shape, tail))
        if not ok:
            want = "[*batch, " + ", ".join("?" if e is None else str(e) for e in shape) + "]"
            raise ValueError(f"{owner}: batch[{key!r}] has shape {tuple(x.shape)}, expected {want}")
    if dtype is not None and x.dtype != dtype:
        raise TypeError(
            f"{owner}: batch[{key!r}] is {x.dtype} but the params are {dtype}; cast the batch "
            f"(batch.apply(lambda t: t.to({dtype}) if t.is_floating_point() else t)) or init "
            f"the params with dtype={x.dtype}"
        )
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


REDUCTIONS = ("mean", "sum", "none")


def check_reduction(name: str, owner: str) -> None:
    if name not in REDUCTIONS:
        raise ValueError(f"{owner}: reduction must be one of {REDUCTIONS}, got {name!r}")


def reduce_loss(
    loss: torch.Tensor, reduction: str = "mean", weights: torch.Tensor | None = None
) -> torch.Tensor:
    """TorchRL's ``_reduce``: ``"mean"``, ``"sum"`` or ``"none"`` (the element-wise loss).

    With ``weights`` (importance weights from prioritized replay, the loss's shape), the mean is
    ``sum(w * loss) / sum(w)`` and the sum ``sum(w * loss)``, as TorchRL weights its losses.
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if weights is not None:
        if weights.shape != loss.shape:
            raise ValueError(
                f"reduce_loss: weights shape {tuple(weights.shape)} != loss shape "
                f"{tuple(loss.shape)}"
            )
        if reduction == "mean":
            return (loss * weights).sum() / weights.sum()
        loss = loss * weights
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


def spec_size(spec: Any, owner: str, name: str) -> int:
    """The feature size a spec gives the default nets: its last dim (``[]`` counts as 1 for a
    continuous spec), or the integer itself (Python or NumPy).

    Raises:
        TypeError: naming ``owner`` and ``name`` when ``spec`` is a tensor, a bool, or neither an
            integer nor a spec with ``.shape``.
        ValueError: for a scalar discrete spec (``shape == ()`` with ``.n``, e.g. gymnasium's
            ``Discrete``): its size is ``.n`` actions, not 1 feature, so the caller must say which.
    """
    if isinstance(spec, numbers.Integral) and not isinstance(spec, bool):
        return int(spec)
    if isinstance(spec, torch.Tensor) or isinstance(spec, bool):
        raise TypeError(
            f"{owner}: {name} must be an int or a spec with .shape, got a {type(spec).__name__}"
        )
    shape = getattr(spec, "shape", None)
    if shape is None:
        raise TypeError(
            f"{owner}: {name} must be an int or a spec with .shape, got {type(spec).__name__}"
        )
    shape = tuple(shape)
    if not shape and getattr(spec, "n", None) is not None:
        raise ValueError(
            f"{owner}: {name} is a scalar discrete spec ({type(spec).__name__} with n={spec.n}); "
            f"this objective needs a vector spec or an int feature size"
        )
    return int(shape[-1]) if shape else 1


def require(params: Params, keys, owner: str) -> None:
    if not isinstance(params, Mapping):
        raise TypeError(f"{owner}: params must be a dict, got {type(params).__name__}")
    missing = [k for k in keys if k not in params]
    if missing:
        raise KeyError(f"{owner}: params lack {missing}; they have {sorted(params)}")


def priority_weights(
    batch: Record, cfg: Any, like: torch.Tensor, owner: str = "loss"
) -> torch.Tensor | None:
    """``batch["priority_weight"]`` (``like``'s shape and dtype) when present and enabled, else
    ``None`` (TorchRL's ``use_prioritized_weights``: ``"auto"``/``True`` use it when present)."""
    if cfg.use_prioritized_weights is False or "priority_weight" not in batch:
        return None
    w = batch["priority_weight"]
    if w.shape != like.shape:
        raise ValueError(
            f"{owner}: batch['priority_weight'] has shape {tuple(w.shape)}, expected "
            f"{tuple(like.shape)}"
        )
    if w.dtype != like.dtype:
        raise TypeError(
            f"{owner}: batch['priority_weight'] is {w.dtype}, expected the loss's {like.dtype}"
        )
    return w


VALUE_ESTIMATORS = ("td0", "td1", "td_lambda")


def check_mode(owner: str, mode: str) -> None:
    """``act``'s ``mode`` must be one of the protocol's modes (``"random"``, ``"deterministic"``)."""
    from funcrl.objectives.protocol import MODES

    if mode not in MODES:
        raise ValueError(f"{owner}: mode must be one of {MODES}, got {mode!r}")


def check_observation(owner: str, observation: Any, dtype: torch.dtype) -> torch.Tensor:
    """``observation`` after checking it is a ``[*B, o]`` tensor of the params' dtype."""
    if not isinstance(observation, torch.Tensor):
        raise TypeError(
            f"{owner}: observation must be a tensor [*B, o], got {type(observation).__name__}"
        )
    if observation.dim() == 0:
        raise ValueError(f"{owner}: observation must be a tensor [*B, o], got shape ()")
    if observation.dtype != dtype:
        raise TypeError(f"{owner}: observation is {observation.dtype} but the params are {dtype}")
    return observation


def default_net(net: Any, in_features: int, out_features: int, num_cells) -> Any:
    """``net`` itself, or (``None``) the default: a ReLU :class:`funcrl.nn.MLP` with ``num_cells``
    hidden units, TorchRL's default Q-network architecture. Static, so free under compile."""
    if net is not None:
        return net
    from funcrl.nn import MLP

    return MLP(int(in_features), int(out_features), num_cells=tuple(num_cells), activation="relu")


def out_features(params: Any, owner: str, name: str) -> int:
    """The output width of default-MLP ``params`` (``{"layers": [...]}``): its last layer's rows.

    The loss and ``act`` build the default net from the batch's feature size and this width
    (static shapes). The net then checks the rest of the params itself.
    """
    try:
        return int(params["layers"][-1]["weight"].shape[-2])
    except (TypeError, KeyError, IndexError, AttributeError):
        raise TypeError(
            f"{owner}: params[{name!r}] are not the default MLP's {{'layers': [...]}} params (got "
            f"{type(params).__name__}); pass the net they belong to in nets"
        ) from None


def n_step_discount(
    batch: Record, gamma: float, like: torch.Tensor, *, owner: str
) -> float | torch.Tensor:
    """The TD(0) discount: ``gamma``, or ``gamma ** batch["steps_to_next_obs"]`` when the batch
    holds n-step transitions (:func:`funcrl.buffers.n_step`, TorchRL's ``MultiStep``), as
    TorchRL's TD(0) estimator does; shaped like ``like`` (``[*B]`` or ``[*B, 1]``).

    Without this, an n-step batch would be bootstrapped with ``gamma`` instead of ``gamma ** n``.
    """
    if "steps_to_next_obs" not in batch:
        return gamma
    steps = get(batch, "steps_to_next_obs", owner=owner, shape=(1,))
    if steps.shape != like.shape:
        steps = steps.squeeze(-1)
    if steps.shape != like.shape:
        raise ValueError(
            f"{owner}: batch['steps_to_next_obs'] has shape {tuple(steps.shape)}, expected "
            f"{(*like.shape, 1)} (TorchRL's [*batch, 1])"
        )
    return torch.pow(filled(gamma, like.dtype, like.device), steps.to(like.dtype))


def in_features(params: Any, owner: str, name: str) -> int:
    """The input width of default-MLP ``params`` (``{"layers": [...]}``, an ensemble's stacked
    too): its first layer's columns. ``to_torchrl`` sizes the default nets with it.

    Raises:
        TypeError: naming ``owner`` and ``params[name]`` for params of another layout.
    """
    try:
        return int(params["layers"][0]["weight"].shape[-1])
    except (TypeError, KeyError, IndexError, AttributeError):
        raise TypeError(
            f"{owner}: params[{name!r}] are not the default MLP's {{'layers': [...]}} params (got "
            f"{type(params).__name__}); pass observation_dim="
        ) from None
