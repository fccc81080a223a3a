"""Proximal Policy Optimization (Schulman et al. 2017, arXiv:1707.06347): TorchRL 0.14's
``PPOLoss`` (``variant="plain"``), ``ClipPPOLoss`` (``"clip"``, the default) and ``KLPENPPOLoss``
(``"kl"``) as one pure loss::

    params = ppo.init(0, obs_spec, act_spec)         # {"actor", "critic", "action_bounds"}
    rollout = ...                                     # [E, T] with action_log_prob, loc/scale|logits
    losses = ppo.loss(params, rollout)                # loss_objective, loss_critic, loss_entropy, ...
    train = ppo.trainer(optim.adam(3e-4), epochs=4, num_minibatches=4)

The equations (``r = pi_theta(a|s) / pi_old(a|s)``, ``A`` the (normalised) advantage)::

    plain:  L = -r A
    clip:   L = -min(r A, clip(r, 1 - eps_low, 1 + eps_high) A)
    kl:     L = -(r A - beta KL(pi_old || pi_theta)),
            beta <- beta * increment if mean KL > 1.5 dtarg, beta * decrement if < dtarg / 1.5
    L_entropy = -entropy_coeff H[pi_theta]       L_critic = critic_coeff l(V(s), G)

The advantage and the value target ``G`` come from the batch (``"advantage"``,
``"value_target"``) or, when absent, from :func:`funcrl.objectives.on_policy.advantages` (the
critic frozen, ``config.value_estimator``). Normalisation happens per minibatch, as in TorchRL.

The KL penalty's adaptive ``beta`` is explicit state: it lives in ``params["kl_beta"]`` (made by
:func:`init`, never trained), the loss uses it and returns the adapted value as ``"kl_beta"``,
and :func:`trainer` writes that back into ``params`` after every minibatch (TorchRL updates its
``beta`` buffer in place in ``forward``). A hand-written loop does the same:
``params = {**params, "kl_beta": losses["kl_beta"]}``.

Intentional differences from TorchRL:

* ``kl`` (KL penalty) is ``[*B]``, not ``[*B, 1]``; ``td_error`` (``[*B]``, ``|G - V(s)|``) is
  added when there is a critic.
* Actor and critic are separate pytrees; ``separate_losses`` stops the critic loss's gradient
  into a shared trunk (``Nets(trunk=...)``), TorchRL's meaning.
* ``delay_actor``, ``max_importance_ratio``, ``advantage_norm`` and per-head entropy
  coefficients are not implemented.
"""

from __future__ import annotations

import dataclasses
import math
from functools import partial
from typing import Any

import torch

from funcrl.objectives import on_policy
from funcrl.objectives.common import reduce_loss, require
from funcrl.record import NestedKey, Record
from funcrl.training import Trainer

__all__ = [
    "make_train",
    "Config",
    "Nets",
    "VARIANTS",
    "init",
    "loss",
    "act",
    "trainer",
    "clipped_surrogate",
    "adapt_beta",
    "clip_bounds",
]

VARIANTS = ("clip", "kl", "plain")
Params = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Nets(on_policy.Nets):
    """ppo's nets: :class:`funcrl.objectives.on_policy.Nets` (actor, critic, optional shared
    trunk, the distribution)."""


@dataclasses.dataclass(frozen=True)
class Config:
    """PPO's hyperparameters: TorchRL 0.14's names and defaults.

    Args:
        variant: ``"clip"`` (``ClipPPOLoss``), ``"kl"`` (``KLPENPPOLoss``) or ``"plain"``
            (``PPOLoss``).
        clip_epsilon: ``eps``, or ``(eps_low, eps_high)`` (DAPO's asymmetric clip); clip only.
        entropy_bonus: add ``loss_entropy``.
        samples_mc_entropy: draws for the Monte-Carlo entropy of a policy without a closed form.
        entropy_coeff: weight of the entropy bonus.
        critic_coeff: weight of ``loss_critic``; ``None`` or ``0`` drops the critic loss.
        loss_critic_type: ``"l1"``, ``"l2"`` or ``"smooth_l1"``.
        normalize_advantage: standardise the advantage over the (mini)batch.
        normalize_advantage_exclude_dims: dims kept independent by the standardisation.
        clip_value: clip ``V`` to ``V_old +- clip_value`` in the critic loss; ``True`` means
            ``clip_epsilon`` (clip variant only, as TorchRL).
        log_explained_variance: report ``explained_variance``.
        separate_losses: the critic loss does not reach a shared trunk.
        dtarg, beta, increment, decrement: the KL penalty (``variant="kl"``).
        samples_mc_kl: TorchRL's draws for a Monte-Carlo KL; accepted and validated, but every
            funcrl policy has a closed-form KL (two TanhNormals on the same bounds: the KL of
            their pre-tanh normals, as TorchRL computes it too), so no draw is made.
        gamma, lmbda, value_estimator: the advantage estimator (``"gae"``, ``"td_lambda"``,
            ``"td0"``, ``"td1"``), TorchRL's defaults.
        time_dim: the rollout's time dim: ``-1`` (``[E, T]``, TorchRL's) or ``0`` (``[T, E]``).
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        sample_log_prob_key: the batch key of the behaviour log-prob (TorchRL 0.14:
            ``"action_log_prob"``).
    """

    variant: str = "clip"
    clip_epsilon: float | tuple[float, float] = 0.2
    entropy_bonus: bool = True
    samples_mc_entropy: int = 1
    entropy_coeff: float = 0.01
    critic_coeff: float | None = 1.0
    loss_critic_type: str = "smooth_l1"
    normalize_advantage: bool = False
    normalize_advantage_exclude_dims: tuple[int, ...] = ()
    clip_value: bool | float | None = None
    log_explained_variance: bool = True
    separate_losses: bool = False
    dtarg: float = 0.01
    beta: float = 1.0
    increment: float = 2.0
    decrement: float = 0.5
    samples_mc_kl: int = 1
    gamma: float = 0.99
    lmbda: float = 0.95
    value_estimator: str = "gae"
    time_dim: int = -1
    reduction: str = "mean"
    sample_log_prob_key: NestedKey = "action_log_prob"

    def __post_init__(self) -> None:
        owner = "ppo.Config"
        if self.variant not in VARIANTS:
            raise ValueError(f"{owner}: variant must be one of {VARIANTS}, got {self.variant!r}")
        on_policy.check_config(owner, self)
        clip_bounds(self.clip_epsilon)  # validates
        if isinstance(self.clip_value, bool) and self.clip_value:
            if self.variant != "clip":
                raise ValueError(
                    f"{owner}: clip_value=True means clip_value=clip_epsilon, which only the "
                    f"clip variant has (variant={self.variant!r}); pass a number"
                )
            if isinstance(self.clip_epsilon, tuple):
                raise ValueError(
                    f"{owner}: clip_value=True cannot take its threshold from the asymmetric "
                    f"clip_epsilon {self.clip_epsilon}; pass a number"
                )
        if self.increment < 1.0:
            raise ValueError(f"{owner}: increment must be >= 1.0, got {self.increment}")
        if not 0.0 < self.decrement <= 1.0:
            raise ValueError(f"{owner}: decrement must be in (0, 1], got {self.decrement}")
        if not self.beta >= 0.0:
            raise ValueError(f"{owner}: beta must be >= 0, got {self.beta}")
        if not self.dtarg > 0.0:
            raise ValueError(f"{owner}: dtarg must be > 0, got {self.dtarg}")
        n = self.samples_mc_kl
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"{owner}: samples_mc_kl must be an int >= 1, got {n!r}")

    @property
    def value_clip(self) -> float | None:
        """The critic's clip threshold: ``clip_value``, with ``True`` meaning ``clip_epsilon``."""
        if isinstance(self.clip_value, bool):
            return float(self.clip_epsilon) if self.clip_value else None
        return self.clip_value

    @property
    def has_critic(self) -> bool:
        return self.critic_coeff is not None and self.critic_coeff > 0


# -- the equations ---------------------------------------------------------------------------------


def clip_bounds(clip_epsilon: float | tuple[float, float]) -> tuple[float, float]:
    """``(log(1 - eps_low), log(1 + eps_high))``: the bounds of the clipped log-ratio."""
    if isinstance(clip_epsilon, (tuple, list)):
        if len(clip_epsilon) != 2:
            raise ValueError(
                f"ppo.Config: clip_epsilon must be a number or a pair (eps_low, eps_high), got "
                f"{clip_epsilon!r}"
            )
        low, high = clip_epsilon
    else:
        low = high = clip_epsilon
    for name, e in (("eps_low", low), ("eps_high", high)):
        if isinstance(e, bool) or not isinstance(e, (int, float)):
            raise TypeError(f"ppo.Config: clip_epsilon's {name} must be a number, got {e!r}")
    if not 0.0 <= low < 1.0 or not high >= 0.0:
        raise ValueError(
            f"ppo.Config: clip_epsilon must satisfy 0 <= eps_low < 1 and eps_high >= 0, got "
            f"{clip_epsilon!r}"
        )
    return math.log1p(-low), math.log1p(high)


def clipped_surrogate(
    log_weight: torch.Tensor, advantage: torch.Tensor, bounds: tuple[float, float]
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(min(r A, clip(r) A), clip_fraction)`` with ``r = exp(log_weight)``, element-wise.

    The log-ratio is clipped to ``bounds`` (TorchRL clamps the log-ratio, the same as clamping
    ``r`` to ``[1 - eps_low, 1 + eps_high]``); ``clip_fraction`` is the share of clipped samples.
    """
    if log_weight.shape != advantage.shape:
        raise ValueError(
            f"ppo.clipped_surrogate: log_weight {tuple(log_weight.shape)} and advantage "
            f"{tuple(advantage.shape)} must have the same shape"
        )
    clipped = log_weight.clamp(*bounds)
    frac = (clipped != log_weight).to(log_weight.dtype).mean()
    gain = torch.minimum(log_weight.exp() * advantage, clipped.exp() * advantage)
    return gain, frac


def adapt_beta(
    beta: torch.Tensor, kl_mean: torch.Tensor, dtarg: float, increment: float, decrement: float
) -> torch.Tensor:
    """KL-penalty adaptation: ``beta * increment`` when ``kl > 1.5 dtarg``, ``beta * decrement``
    when ``kl < dtarg / 1.5``, else ``beta`` (a ``torch.where``: no host sync)."""
    up = torch.where(kl_mean > dtarg * 1.5, beta * increment, beta)
    return torch.where(kl_mean < dtarg / 1.5, beta * decrement, up)


# -- init, loss, act, trainer ---------------------------------------------------------------------


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
    for the KL penalty, ``kl_beta = config.beta``. Never touches the global RNG."""
    params = on_policy.init(
        seed, observation_spec, action_spec, nets=nets, owner="ppo.init", device=device, dtype=dtype
    )
    if config.variant == "kl":
        params["kl_beta"] = torch.tensor(config.beta, device=device, dtype=dtype)
    return params


def loss(
    params: Params,
    batch: Record,
    *,
    config: Config = Config(),
    nets: Nets = Nets(),
    key: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """PPO's losses on a batch of on-policy transitions.

    Args:
        params: from :func:`init`.
        batch: ``observation [*B, o]``, ``action`` (``[*B, a]``, or int64 ``[*B]`` discrete),
            ``config.sample_log_prob_key [*B]``, and either ``advantage``/``value_target``
            ``[*B, 1]`` or what :func:`~funcrl.objectives.on_policy.advantages` reads (``[E,
            T]``); ``state_value [*B, 1]`` with ``clip_value``; ``loc``/``scale`` or ``logits``
            for the KL penalty; ``action_mask [*B, n]`` for a masked policy.
        key: a :mod:`funcrl.random` key for the Monte-Carlo entropy draws (TanhNormal); ``None``
            draws from the global torch RNG as TorchRL does.

    Multi-agent nets (MAPPO / IPPO, :func:`funcrl.objectives.multiagent.ppo_nets`) put an agent
    dim after ``*B`` in every per-sample entry (``[*B, n_agents, ...]``, a group-viewed rollout);
    the losses average over it and ``td_error``, ``kl``, ``ESS`` and ``explained_variance`` keep
    it, as TorchRL's.

    Returns:
        ``loss_objective``, ``loss_entropy``, ``loss_critic`` (reduced), ``entropy``,
        ``kl_approx``, ``explained_variance``, ``value_clip_fraction`` and ``td_error`` where
        they apply; clip: ``clip_fraction``, ``ESS``, ``max_ratio``, ``mean_ratio``; kl: ``kl``
        (``[*B]``) and ``kl_beta`` (the adapted beta to write back).
    """
    owner = "ppo.loss"
    cfg = config
    if cfg.variant == "kl":
        require(params, ["kl_beta"], owner)
    batch, adv = on_policy.loss_inputs(params, batch, config=cfg, nets=nets, owner=owner)
    if cfg.normalize_advantage and adv.numel() > 1:
        adv = on_policy.normalize_advantage(adv, cfg.normalize_advantage_exclude_dims)
    dist, lp = on_policy.policy_log_prob(params, batch, nets=nets, owner=owner)
    prev = on_policy.behaviour_log_prob(
        batch, cfg.sample_log_prob_key, owner=owner, agent_shape=nets.agent_shape
    )
    log_weight = (lp - prev).unsqueeze(-1)
    red = cfg.reduction
    out: dict[str, torch.Tensor] = {}
    if cfg.variant == "clip":
        gain, clip_fraction = clipped_surrogate(log_weight, adv, clip_bounds(cfg.clip_epsilon))
        out["loss_objective"] = reduce_loss(-gain.squeeze(-1), red)
        out["clip_fraction"] = clip_fraction.detach()
    elif cfg.variant == "plain":
        out["loss_objective"] = reduce_loss(-(log_weight.exp() * adv).squeeze(-1), red)
    else:
        old = on_policy.old_policy(params, batch, nets=nets, owner=owner)
        kl = on_policy.kl_divergence(old, dist)
        beta = params["kl_beta"].detach()
        neg = log_weight.exp().squeeze(-1) * adv.squeeze(-1) - beta * kl
        out["loss_objective"] = reduce_loss(-neg, red)
        out["kl"] = kl.detach()
        out["kl_beta"] = adapt_beta(
            beta, kl.detach().mean(), cfg.dtarg, cfg.increment, cfg.decrement
        )
    out["kl_approx"] = (-log_weight).detach().mean()
    if cfg.entropy_bonus:
        ent = on_policy.entropy(dist, cfg.samples_mc_entropy, key)
        out["entropy"] = ent.detach().mean()
        out["loss_entropy"] = reduce_loss(-cfg.entropy_coeff * ent, red)
    if cfg.has_critic:
        lc, value_clip_fraction, v = on_policy.critic_loss(
            params,
            batch,
            loss_critic_type=cfg.loss_critic_type,
            clip_value=cfg.value_clip,
            nets=nets,
            owner=owner,
            detach_trunk=cfg.separate_losses,
        )
        out["loss_critic"] = reduce_loss((cfg.critic_coeff * lc).squeeze(-1), red)
        if value_clip_fraction is not None:
            out["value_clip_fraction"] = value_clip_fraction
        target = batch["value_target"].detach()
        if cfg.log_explained_variance:
            out["explained_variance"] = on_policy.explained_variance(target, v)
        out["td_error"] = (target - v).abs().squeeze(-1)
    if cfg.variant == "clip":
        with torch.no_grad():
            lw = log_weight.squeeze(-1)
            ess = (2 * lw.logsumexp(0) - (2 * lw).logsumexp(0)).exp()
            out["ESS"] = ess / log_weight.shape[0]
            ratio = log_weight.exp()
            out["max_ratio"] = ratio.max()
            out["mean_ratio"] = ratio.mean()
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
    """The policy's action (see :func:`funcrl.objectives.on_policy.act`); for a rollout, use
    :func:`funcrl.objectives.on_policy.explore`, which also returns the log-prob and the
    distribution params the loss reads."""
    return on_policy.act(params, observation, nets=nets, mode=mode, key=key, mask=mask)


def trainer(
    optimizer: Any,
    *,
    config: Config = Config(),
    nets: Nets = Nets(),
    epochs: int = 4,
    num_minibatches: int = 4,
    kl_adaptive_lr: on_policy.KLAdaptiveLR | None = None,
) -> Trainer:
    """PPO's pure ``(init, step)``: advantages once per rollout, then ``epochs`` x
    ``num_minibatches`` shuffled minibatch steps (:func:`funcrl.objectives.on_policy.trainer`).

    Trains ``actor``, ``critic`` (and ``trunk``); the KL penalty's ``kl_beta`` is written back
    after each minibatch. ``optimizer`` is one transform or ``{"actor": ..., "critic": ...}``;
    ``kl_adaptive_lr``, the :class:`~funcrl.objectives.on_policy.KLAdaptiveLR` used inside it,
    adapts its rate to each minibatch's ``kl_approx`` (TorchRL's ``KLAdaptiveLR.step``).
    """
    trainable = ("actor", "critic") + (("trunk",) if nets.trunk is not None else ())
    return on_policy.trainer(
        partial(loss, config=config, nets=nets),
        optimizer,
        advantage_fn=partial(on_policy.advantages, config=config, nets=nets, owner="ppo.trainer"),
        epochs=epochs,
        num_minibatches=num_minibatches,
        trainable=trainable,
        state_keys=("kl_beta",) if config.variant == "kl" else (),
        kl_adaptive_lr=kl_adaptive_lr,
    )


def make_train(config: Any, env: Any) -> Any:
    """A whole PPO run on a pure environment as one compiled, vmappable function of a key
    (PureJaxRL's design): :func:`funcrl.pure_train.make_train`, re-exported here."""
    from funcrl.pure_train import make_train as _make_train

    return _make_train(config, env)
