"""Advantage Actor-Critic (Mnih et al. 2016, arXiv:1602.01783): TorchRL 0.14's ``A2CLoss``::

    params = a2c.init(0, obs_spec, act_spec)      # {"actor", "critic", "action_bounds"}
    losses = a2c.loss(params, rollout)            # loss_objective, loss_critic, loss_entropy, entropy

The equations (``A`` the advantage, ``G`` the value target, both from the batch or computed by
:func:`funcrl.objectives.on_policy.advantages` with the critic frozen)::

    L_objective = -log pi(a|s) A
    L_entropy   = -entropy_coeff H[pi]            (analytic, or Monte-Carlo for a TanhNormal)
    L_critic    = critic_coeff l(V(s), G)         (clip_value: the pessimistic clipped loss)

Intentional differences from TorchRL: ``td_error`` (``[*B]``, ``|G - V(s)|``) is added;
``advantage_norm`` is not implemented; actor and critic are separate pytrees (``separate_losses``
stops the critic loss at a shared ``Nets(trunk=...)``).
"""

from __future__ import annotations

import dataclasses
from functools import partial
from typing import Any

import torch

from funcrl.objectives import on_policy
from funcrl.objectives.common import reduce_loss, require
from funcrl.record import NestedKey, Record
from funcrl.training import Trainer

__all__ = ["Config", "Nets", "init", "loss", "act", "trainer"]

Params = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Nets(on_policy.Nets):
    """a2c's nets: :class:`funcrl.objectives.on_policy.Nets` (actor, critic, optional shared
    trunk, the distribution)."""


@dataclasses.dataclass(frozen=True)
class Config:
    """A2C's hyperparameters: TorchRL 0.14's names and defaults.

    Args:
        entropy_bonus: add ``loss_entropy`` (off when ``entropy_coeff`` is 0, as TorchRL).
        samples_mc_entropy: draws for the Monte-Carlo entropy of a policy without a closed form.
        entropy_coeff: weight of the entropy bonus.
        critic_coeff: weight of ``loss_critic`` (``None``: unweighted).
        loss_critic_type: ``"l1"``, ``"l2"`` or ``"smooth_l1"``.
        clip_value: clip ``V`` to ``batch["state_value"] +- clip_value`` in the critic loss.
        separate_losses: the critic loss does not reach a shared trunk.
        gamma, lmbda, value_estimator, time_dim: the advantage estimator (see ``ppo.Config``).
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        sample_log_prob_key: accepted for symmetry with PPO (A2C does not read it).
    """

    entropy_bonus: bool = True
    samples_mc_entropy: int = 1
    entropy_coeff: float = 0.01
    critic_coeff: float | None = 1.0
    loss_critic_type: str = "smooth_l1"
    clip_value: float | None = None
    separate_losses: bool = False
    gamma: float = 0.99
    lmbda: float = 0.95
    value_estimator: str = "gae"
    time_dim: int = -1
    reduction: str = "mean"
    sample_log_prob_key: NestedKey = "action_log_prob"

    def __post_init__(self) -> None:
        if isinstance(self.clip_value, bool):
            raise TypeError(
                f"a2c.Config: clip_value must be a number or None, got {self.clip_value!r}"
            )
        on_policy.check_config("a2c.Config", self)


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
    """Fresh params: ``actor``, ``critic`` (``trunk``, ``action_bounds`` where they apply)."""
    return on_policy.init(
        seed, observation_spec, action_spec, nets=nets, owner="a2c.init", device=device, dtype=dtype
    )


def loss(
    params: Params,
    batch: Record,
    *,
    config: Config = Config(),
    nets: Nets = Nets(),
    key: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """A2C's losses. ``batch`` as :func:`funcrl.ppo.loss` reads it (no log-prob needed).

    Returns:
        ``loss_objective``, ``loss_critic``, ``loss_entropy`` (reduced), ``entropy``,
        ``value_clip_fraction`` (with ``clip_value``) and ``td_error`` (``[*B]``).
    """
    owner = "a2c.loss"
    cfg = config
    batch, adv = on_policy.loss_inputs(params, batch, config=cfg, nets=nets, owner=owner)
    dist, lp = on_policy.policy_log_prob(params, batch, nets=nets, owner=owner)
    red = cfg.reduction
    out = {"loss_objective": reduce_loss(-(lp * adv.squeeze(-1)), red)}
    if cfg.entropy_bonus and cfg.entropy_coeff:
        ent = on_policy.entropy(dist, cfg.samples_mc_entropy, key)
        out["entropy"] = ent.detach().mean()
        out["loss_entropy"] = reduce_loss(-cfg.entropy_coeff * ent, red)
    require(params, ["critic"], owner)
    lc, value_clip_fraction, v = on_policy.critic_loss(
        params,
        batch,
        loss_critic_type=cfg.loss_critic_type,
        clip_value=cfg.clip_value,
        nets=nets,
        owner=owner,
        detach_trunk=cfg.separate_losses,
    )
    coeff = 1.0 if cfg.critic_coeff is None else cfg.critic_coeff
    out["loss_critic"] = reduce_loss((coeff * lc).squeeze(-1), red)
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
) -> Trainer:
    """A2C's pure ``(init, step)``: advantages once per rollout, then one gradient step on the
    whole rollout by default (``epochs``/``num_minibatches`` as in :func:`funcrl.ppo.trainer`)."""
    trainable = ("actor", "critic") + (("trunk",) if nets.trunk is not None else ())
    return on_policy.trainer(
        partial(loss, config=config, nets=nets),
        optimizer,
        advantage_fn=partial(on_policy.advantages, config=config, nets=nets, owner="a2c.trainer"),
        epochs=epochs,
        num_minibatches=num_minibatches,
        trainable=trainable,
    )
