"""Decision Transformer (Chen et al. 2021, arXiv:2106.01345): TorchRL 0.14's ``DTLoss``.

    nets = dt.Nets(transformer_config=funcrl.nn.DTConfig(n_embd=128, n_layer=3, n_head=1))
    params = dt.init(0, obs_spec, act_spec, nets=nets)         # {"actor", "action_bounds"}
    losses = dt.loss(params, batch, nets=nets)                 # {"loss", "td_error"}
    action = dt.act(params, obs, action=a, return_to_go=rtg, nets=nets, mode="deterministic")

The actor (:class:`funcrl.nn.DTActor`) reads a context of ``T`` steps ``(R_t, s_t, a_t)`` and
predicts at every ``s_t`` the action ``a_t`` (causal attention: from ``R_{<=t}, s_{<=t}, a_{<t}``),
squashed into the action box by TorchRL's ``TanhDelta``. The loss regresses it on the data::

    L = mean_{B, T, a} l(TanhDelta(DTActor(s, a, R))_t, a_t)       (l: loss_function, "l2")

A batch is a :class:`funcrl.Record` of trajectory segments with batch dims ``[*B, T]`` (time
last): ``observation [*B, T, o]``, ``action [*B, T, a]``, ``return_to_go [*B, T, 1]``.

Intentional differences from TorchRL: the transformer's dropout is off unless
``Config(dropout=True)`` (dropout draws from the global RNG, outside ``key``); ``batch
["priority_weight"]`` (``[*B, T]``) weights the reduction; ``td_error`` (``[*B, T]``) is the
mean absolute error of the predicted actions.
"""

from __future__ import annotations

import dataclasses
from functools import partial
from typing import Any, ClassVar

import torch

from funcrl import tree
from funcrl.distributions import TanhDelta
from funcrl.nn import DTActor, make_generator
from funcrl.objectives.actor_critic import (
    act_deterministic,
    bounds,
    check_nets,
    param_dtype,
)
from funcrl.objectives.actor_critic import action_bounds as spec_bounds
from funcrl.objectives.common import (
    check_batch,
    check_loss_function,
    check_mode,
    check_observation,
    check_reduction,
    distance_loss,
    priority_weights,
    reduce_loss,
    require,
    spec_size,
)
from funcrl.objectives.offline import check_context, check_priority_flag, read_sequences
from funcrl.record import Record

__all__ = ["Config", "Nets", "init", "loss", "act", "trainer", "predict"]

Params = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Config:
    """``DTLoss``'s arguments.

    Args:
        loss_function: ``"l2"`` (TorchRL's default), ``"l1"`` or ``"smooth_l1"``.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (``[*B, T, a]``).
        use_prioritized_weights: ``"auto"``/``True``: weight the reduction by
            ``batch["priority_weight"]`` (``[*B, T]``) when present; ``False``: ignore it.
        dropout: run the transformer's dropout in the loss (global RNG, as TorchRL in train mode).
    """

    loss_function: str = "l2"
    reduction: str = "mean"
    use_prioritized_weights: bool | str = "auto"
    dropout: bool = False

    def __post_init__(self) -> None:
        check_loss_function(self.loss_function, "dt.Config")
        check_reduction(self.reduction, "dt.Config")
        check_priority_flag("dt.Config", self.use_prioritized_weights)


@dataclasses.dataclass(frozen=True)
class Nets:
    """``actor``: a funcrl net ``(params, observation [*B, T, o], action [*B, T, a],
    return_to_go [*B, T, 1]) -> [*B, T, a]`` (before the ``TanhDelta``), ``None`` for
    :class:`funcrl.nn.DTActor` with ``transformer_config`` (``None``: TorchRL's
    ``DTActor.default_config()``)."""

    ROLES: ClassVar[dict[str, str]] = {"actor": "dt_actor"}

    actor: Any = None
    transformer_config: Any = None


def _resolve(nets: Nets, obs_dim: int, act_dim: int) -> Nets:
    if nets.actor is not None:
        return nets
    cfg = nets.transformer_config or DTActor.default_config()
    return dataclasses.replace(nets, actor=DTActor(obs_dim, act_dim, cfg))


def init(
    seed: int | torch.Tensor | torch.Generator,
    observation_spec: Any,
    action_spec: Any,
    config: Config = Config(),
    nets: Nets = Nets(),
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Params:
    """Fresh params: ``actor`` and ``action_bounds`` (the ``TanhDelta``'s box, from the spec)."""
    owner = "dt.init"
    check_nets(nets, owner)
    obs_dim = spec_size(observation_spec, owner, "observation_spec")
    act_dim = spec_size(action_spec, owner, "action_spec")
    box = spec_bounds(action_spec, act_dim, device=device, dtype=dtype, owner=owner)
    nets = _resolve(nets, obs_dim, act_dim)
    actor = nets.actor.init(make_generator(seed), device=device, dtype=dtype)
    return {"actor": actor, "action_bounds": box}


def predict(
    params: Params,
    observation: torch.Tensor,
    action: torch.Tensor,
    return_to_go: torch.Tensor,
    *,
    nets: Nets = Nets(),
    train: bool = False,
) -> torch.Tensor:
    """The predicted actions ``[*B, T, a]`` in the box: ``TanhDelta(actor(...))``'s point."""
    low, high = bounds(params, "dt.predict")
    nets = _resolve(nets, observation.shape[-1], low.shape[-1])
    kw = {"train": True} if train else {}
    out = nets.actor(params["actor"], observation, action, return_to_go, **kw)
    return TanhDelta(out, low=low, high=high).deterministic_sample


def loss(
    params: Params,
    batch: Record,
    *,
    config: Config = Config(),
    nets: Nets = Nets(),
    key: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """``loss`` (reduced) and ``td_error`` ``[*B, T]`` (detached) on trajectory segments.
    ``key`` is unused (the loss draws nothing; see ``Config.dropout``)."""
    del key
    owner = "dt.loss"
    check_batch(batch, owner)
    require(params, ["actor", "action_bounds"], owner)
    low, _ = bounds(params, owner)
    obs, action, rtg = read_sequences(
        batch, owner=owner, act_dim=low.shape[-1], dtype=param_dtype(params, "actor")
    )
    weights = priority_weights(batch, config, like=action[..., 0], owner=owner)
    pred = predict(params, obs, action, rtg, nets=nets, train=config.dropout)
    per_element = distance_loss(pred, action.detach(), config.loss_function)
    w = None if weights is None else weights.unsqueeze(-1).expand_as(per_element)
    return {
        "loss": reduce_loss(per_element, config.reduction, w),
        "td_error": (pred.detach() - action).abs().mean(-1),
    }


def act(
    params: Params,
    observation: torch.Tensor,
    *,
    config: Config = Config(),
    nets: Nets = Nets(),
    mode: str = "random",
    key: torch.Tensor | None = None,
    action: torch.Tensor | None = None,
    return_to_go: torch.Tensor | None = None,
    noise_scale: float = 0.1,
) -> torch.Tensor:
    """The actions ``[*B, T, a]`` predicted over a context (``observation [*B, T, o]``, the
    ``action`` s taken ``[*B, T, a]`` -- the last one is never read -- and the ``return_to_go``
    ``[*B, T, 1]``); the next action is ``[..., -1, :]``. ``"random"`` adds clipped Gaussian noise
    of ``noise_scale`` of the half-range (``key`` or the global RNG). Detached."""
    owner = "dt.act"
    check_mode(owner, mode)
    require(params, ["actor", "action_bounds"], owner)
    low, high = bounds(params, owner)
    obs = check_observation(owner, observation, param_dtype(params, "actor"))
    check_context(owner, obs, action, return_to_go, low.shape[-1])
    pred = predict(tree.detach(params), obs, action, return_to_go, nets=nets).detach()
    return act_deterministic(pred, low, high, mode, key, noise_scale)


def trainer(optimizer: Any, *, config: Config = Config(), nets: Nets = Nets()):
    """:func:`funcrl.training.update` for the Decision Transformer: the ``actor`` on ``loss``."""
    from funcrl.training import update

    return update(partial(loss, config=config, nets=nets), optimizer, trainable=("actor",))
