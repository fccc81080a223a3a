"""REINFORCE with a learned baseline (Williams 1992): TorchRL 0.14's ``ReinforceLoss``::

    params = reinforce.init(0, obs_spec, act_spec)   # {"actor", "critic", "action_bounds"}
    losses = reinforce.loss(params, rollout)         # loss_actor, loss_value

The equations (``A``, ``G`` from the batch or :func:`funcrl.objectives.on_policy.advantages`,
the critic frozen; with ``delay_value`` the next-state values come from
``params["target_critic"]``)::

    L_actor = -log pi(a|s) A        (A gradient-stopped)
    L_value = l(V(s), G)            (clip_value: the pessimistic clipped loss)

Intentional differences from TorchRL: ``td_error`` (``[*B]``, ``|G - V(s)|``) is added; the
target critic is a plain ``params["target_critic"]`` entry that :func:`trainer` Polyak-averages
(``tau``), where TorchRL leaves the update to a separate ``SoftUpdate``.
"""

from __future__ import annotations

import dataclasses
from functools import partial
from typing import Any

import torch

from funcrl import targets as _targets
from funcrl import tree
from funcrl.objectives import on_policy
from funcrl.objectives.common import reduce_loss, require
from funcrl.record import NestedKey, Record
from funcrl.training import Trainer

__all__ = ["Config", "Nets", "init", "loss", "act", "trainer"]

Params = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Nets(on_policy.Nets):
    """reinforce's nets: :class:`funcrl.objectives.on_policy.Nets` (actor, critic, optional shared
    trunk, the distribution)."""


@dataclasses.dataclass(frozen=True)
class Config:
    """REINFORCE's hyperparameters: TorchRL 0.14's names and defaults.

    Args:
        delay_value: next-state values (in the advantage) from ``params["target_critic"]``.
        loss_critic_type: ``"l1"``, ``"l2"`` or ``"smooth_l1"``.
        clip_value: clip ``V`` to ``batch["state_value"] +- clip_value`` in the value loss.
        gamma, lmbda, value_estimator, time_dim: the advantage estimator (see ``ppo.Config``).
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        sample_log_prob_key: accepted for symmetry with PPO (REINFORCE does not read it).
    """

    delay_value: bool = False
    loss_critic_type: str = "smooth_l1"
    clip_value: float | None = None
    gamma: float = 0.99
    lmbda: float = 0.95
    value_estimator: str = "gae"
    time_dim: int = -1
    reduction: str = "mean"
    sample_log_prob_key: NestedKey = "action_log_prob"

    def __post_init__(self) -> None:
        if isinstance(self.clip_value, bool):
            raise TypeError(
                f"reinforce.Config: clip_value must be a number or None, got {self.clip_value!r}"
            )
        on_policy.check_config("reinforce.Config", self)


def init(
    seed: Any,
    observation_spec: Any,
    action_spec: Any,
    config: Config = Config(),
    nets: Nets = Nets(),
    *,
    device: Any = None,
    dtype: torch.dtype = torch.float32,
) -> Params:
    """Fresh params: ``actor``, ``critic`` (``trunk``, ``action_bounds`` where they apply) and,
    with ``delay_value``, ``target_critic`` (a copy of ``critic``)."""
    params = on_policy.init(
        seed,
        observation_spec,
        action_spec,
        nets=nets,
        owner="reinforce.init",
        device=device,
        dtype=dtype,
    )
    if config.delay_value:
        params["target_critic"] = tree.clone(params["critic"])
    return params


def loss(
    params: Params,
    batch: Record,
    *,
    config: Config = Config(),
    nets: Nets = Nets(),
    key: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """REINFORCE's losses. ``batch`` as :func:`funcrl.ppo.loss` reads it (no log-prob needed).

    ``key`` is accepted for the protocol: the loss draws nothing.

    Returns:
        ``loss_actor``, ``loss_value`` (reduced), ``value_clip_fraction`` (with ``clip_value``)
        and ``td_error`` (``[*B]``).
    """
    owner = "reinforce.loss"
    cfg = config
    require(params, ["actor", "critic"] + (["target_critic"] if cfg.delay_value else []), owner)
    batch, adv = on_policy.loss_inputs(params, batch, config=cfg, nets=nets, owner=owner)
    _, lp = on_policy.policy_log_prob(params, batch, nets=nets, owner=owner)
    red = cfg.reduction
    out = {"loss_actor": reduce_loss(-(lp * adv.squeeze(-1).detach()), red)}
    lv, value_clip_fraction, v = on_policy.critic_loss(
        params,
        batch,
        loss_critic_type=cfg.loss_critic_type,
        clip_value=cfg.clip_value,
        nets=nets,
        owner=owner,
    )
    out["loss_value"] = reduce_loss(lv.squeeze(-1), red)
    if value_clip_fraction is not None:
        out["value_clip_fraction"] = value_clip_fraction
    out["td_error"] = (batch["value_target"].detach() - v).abs().squeeze(-1)
    return out


def act(
    params: Params,
    observation: torch.Tensor,
    *,
    config: Config = Config(),
    nets: Nets = Nets(),
    mode: str = "random",
    key: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """The policy's action (see :func:`funcrl.objectives.on_policy.act`)."""
    return on_policy.act(params, observation, nets=nets, mode=mode, key=key, mask=mask)


def trainer(
    optimizer: Any,
    *,
    config: Config = Config(),
    nets: Nets = Nets(),
    epochs: int = 1,
    num_minibatches: int = 1,
    tau: float = 0.005,
) -> Trainer:
    """REINFORCE's pure ``(init, step)``: advantages once per rollout, then ``epochs`` x
    ``num_minibatches`` gradient steps (one on the whole rollout by default); with
    ``delay_value``, ``target_critic`` follows ``critic`` by Polyak averaging (``tau``) after
    each step."""
    trainable = ("actor", "critic") + (("trunk",) if nets.trunk is not None else ())
    inner = on_policy.trainer(
        partial(loss, config=config, nets=nets),
        optimizer,
        advantage_fn=partial(
            on_policy.advantages, config=config, nets=nets, owner="reinforce.trainer"
        ),
        epochs=epochs,
        num_minibatches=num_minibatches,
        trainable=trainable,
    )
    if not config.delay_value:
        return inner

    def step(params, state, rollout, key=None):
        new, state, metrics = inner.step(params, state, rollout, key)
        new = {**new, "target_critic": _targets.polyak(params["target_critic"], new["critic"], tau)}
        return new, state, metrics

    return Trainer(inner.init, step)
