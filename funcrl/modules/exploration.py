"""Exploration as pure transitions of a Record (TorchRL's exploration modules).

Each module is a keyed module ``mod(state, record, interaction=None) -> Record`` whose "params"
are a small schedule state ``{"step": int64 scalar}`` (``mod.init()``); the annealed quantity is a
pure function of it (``mod.sigma(state)``, ``mod.eps(state)``) and ``mod.step(state, frames)``
returns the advanced state -- TorchRL's in-place ``module.step(frames)``. Per-environment state
(Ornstein-Uhlenbeck noise and step counts, consistent-dropout masks) lives in the record.

Exploration is on when ``interaction`` is ``None`` or ``"random"`` and off (the record is returned
unchanged) for ``"deterministic"``/``"mode"``/``"mean"``/``"median"``: TorchRL's
``exploration_type()`` as an argument. :class:`ConsistentDropout` follows ``train`` instead.

Every sampling call takes ``key=``: with a :func:`funcrl.random.key` it draws from that key only
(bitwise reproducible, eager or compiled, ``vmap`` over a batch of keys); with ``key=None`` it uses
the global torch RNG in TorchRL's draw order (``torch.manual_seed`` reproduces it; under
``torch.func.vmap`` pass ``randomness="different"``).

Schedules are closed-form: ``x_k = max(x_end, x_init - k * (x_init - x_end) / num_steps)``, the
value TorchRL reaches by repeated in-place subtraction (equal up to float32 rounding).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
import torch.nn.functional as F

from funcrl import random
from funcrl._constants import filled
from funcrl.modules.keyed import as_keys, check_interaction, read_key, spec_items
from funcrl.nn.core import Module, Params
from funcrl.record import NestedKey, Record

__all__ = [
    "linear_annealing",
    "init_step_state",
    "AdditiveGaussian",
    "EGreedy",
    "OrnsteinUhlenbeck",
    "ConsistentDropout",
    "ou_sigma",
    "ou_increment",
    "random_action",
]


def linear_annealing(step: torch.Tensor, init: float, end: float, num_steps: int) -> torch.Tensor:
    """``max(end, init - step * (init - end) / num_steps)`` as a float32 tensor.

    Args:
        step: int tensor (any shape), number of ``step()`` calls so far.
        init, end: start and final values (``end <= init``).
        num_steps: steps from ``init`` to ``end``.
    """
    value = init - step.to(torch.float32) * ((init - end) / num_steps)
    return torch.clamp_min(value, end)


def init_step_state(device: Any = None) -> dict[str, torch.Tensor]:
    """``{"step": tensor(0)}``: the annealing state of an exploration module."""
    return {"step": torch.zeros((), dtype=torch.int64, device=device)}


def _advance(state: Params, frames: int | torch.Tensor) -> dict[str, torch.Tensor]:
    if not isinstance(state, dict) or "step" not in state:
        raise KeyError(f"exploration state must be a dict with a 'step' entry, got {state!r}")
    return {**state, "step": state["step"] + frames}


class _Annealed(Module):
    """What the annealed exploration modules share: a ``{"step"}`` state, advanced purely, and
    the action written back in place of the input action."""

    action_key: NestedKey

    @property
    def out_keys(self) -> tuple[NestedKey, ...]:
        return (self.action_key,)

    def init(self, seed=0, *, device=None, dtype=torch.float32) -> Params:
        return init_step_state(device)

    def step(self, state: Params, frames: int | torch.Tensor = 1) -> Params:
        """The state after ``frames`` annealing steps."""
        return _advance(state, frames)


def _exploring(interaction: str | None, owner: str) -> bool:
    check_interaction(interaction, owner)
    return interaction in (None, "random")


def _leaf_spec(spec: Any, key: NestedKey, owner: str) -> Any:
    items = spec_items(spec, (key,), owner)
    for k, s in items:
        if k == key:
            return s
    if items:
        raise KeyError(f"{owner}: the spec has no entry for the action key {key!r}")
    return None


def _batch_of(record: Record, key: NestedKey) -> torch.Size:
    # The batch of the (possibly nested) Record holding the action, like TorchRL's
    # action_tensordict: a nested record may have more batch dims than the root.
    if isinstance(key, tuple) and len(key) > 1:
        return record[key[:-1]].batch_size
    return record.batch_size


def _expand_right(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return x.reshape(*x.shape, *([1] * (like.ndim - x.ndim)))


# ------------------------------------------------------------------------------ additive gauss


@dataclasses.dataclass(frozen=True, eq=False)
class AdditiveGaussian(_Annealed):
    """``a + sigma_k * N(mean, std)``, projected onto the spec (TorchRL's AdditiveGaussianModule).

    ``sigma_k = linear_annealing(state["step"], sigma_init, sigma_end, annealing_num_steps)``.

    Args:
        spec: the action spec; the noisy action is projected onto it (clipped for ``Bounded``).
            ``None`` skips the projection (TorchRL requires a spec).
        sigma_init, sigma_end, annealing_num_steps: the noise-scale schedule.
        mean, std: the per-element normal noise.
        action_key: the action entry.
        safe: accepted for TorchRL parity: the projection always happens when there is a spec.

    Samples from ``key`` when given (``mod(state, record, key=k)``), else the global torch RNG.
    """

    spec: Any = None
    sigma_init: float = 1.0
    sigma_end: float = 0.1
    annealing_num_steps: int = 1000
    mean: float = 0.0
    std: float = 1.0
    action_key: NestedKey = "action"
    safe: bool = False

    def __post_init__(self) -> None:
        if self.sigma_end > self.sigma_init:
            raise ValueError(
                f"AdditiveGaussian: sigma should decrease or stay constant, got sigma_init="
                f"{self.sigma_init} < sigma_end={self.sigma_end}"
            )
        if self.annealing_num_steps <= 0:
            raise ValueError(
                f"AdditiveGaussian: annealing_num_steps must be positive, got "
                f"{self.annealing_num_steps}"
            )
        object.__setattr__(
            self, "_leaf", _leaf_spec(self.spec, self.action_key, "AdditiveGaussian")
        )

    @property
    def in_keys(self) -> tuple[NestedKey, ...]:
        return (self.action_key,)

    def sigma(self, state: Params) -> torch.Tensor:
        """The current noise scale (0-dim float32)."""
        return linear_annealing(
            state["step"], self.sigma_init, self.sigma_end, self.annealing_num_steps
        )

    def __call__(
        self,
        state: Params,
        record: Record,
        *,
        interaction: str | None = None,
        key: torch.Tensor | None = None,
        **options: Any,
    ) -> Record:
        if not _exploring(interaction, "AdditiveGaussian"):
            return record
        action = read_key(record, self.action_key, "AdditiveGaussian")
        eps = torch.randn_like(action) if key is None else _normal_like(key, action)
        noise = self.mean + self.std * eps
        action = action + noise * self.sigma(state).to(action.dtype)
        if self._leaf is not None:
            action = self._leaf.project(action)
        return record.set(self.action_key, action)


# ------------------------------------------------------------------------------------ e-greedy


def _normal_like(key: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return random.normal(key, like.shape, like.dtype).to(like.device)


def _keyed_index(
    key: torch.Tensor, shape: torch.Size, n: int, mask: torch.Tensor | None, device: torch.device
) -> torch.Tensor:
    """Uniform index in ``[0, n)`` of ``shape`` from ``key``, only where ``mask[..., i]``."""
    logits = torch.zeros(n, device=key.device)
    if mask is not None:
        if mask.dtype != torch.bool or mask.shape[-1:] != (n,):
            raise ValueError(
                f"random_action: mask must be a bool tensor of shape [..., {n}], got "
                f"{mask.dtype} {list(mask.shape)}"
            )
        try:
            mask = mask.expand(*shape, n)
        except RuntimeError as err:
            raise ValueError(
                f"random_action: mask of shape {list(mask.shape)} does not broadcast to "
                f"{[*shape, n]}"
            ) from err
        logits = torch.where(mask.to(key.device), 0.0, -math.inf)
        return random.categorical(key, logits).to(device)
    return random.categorical(key, logits, shape=shape).to(device)


def _keyed_random_action(
    spec: Any, batch_shape: torch.Size, mask: torch.Tensor | None, key: torch.Tensor
) -> torch.Tensor:
    # The spec's own `rand` draws from the global RNG; these are the same laws drawn from a key.
    name = type(spec).__name__
    full = torch.Size(batch_shape) + spec.shape
    dev = spec.device
    if name == "Categorical":
        return _keyed_index(key, full, spec.n, mask, dev).to(spec.dtype)
    if name == "OneHot":
        idx = _keyed_index(key, full[:-1], spec.n, mask, dev)
        return F.one_hot(idx, spec.n).to(spec.dtype)
    if name == "MultiOneHot":
        lead = full[:-1]
        segments = [None] * len(spec.nvec) if mask is None else mask.split(list(spec.nvec), -1)
        keys = random.split(key, len(spec.nvec))
        parts = [
            F.one_hot(_keyed_index(k, lead, n, m, dev), n).to(spec.dtype)
            for k, n, m in zip(keys, spec.nvec, segments)
        ]
        return torch.cat(parts, -1)
    if mask is not None:
        raise ValueError(f"random_action: action masks are not supported for a {name} spec")
    if name == "Binary":
        return random.bernoulli(key, 0.5, full).to(device=dev, dtype=spec.dtype)
    if name == "MultiCategorical":
        n = filled(spec.nvec, torch.float64, key.device)
        u = random.uniform(key, full, torch.float64)
        return torch.minimum(torch.floor(u * n), n - 1).to(device=dev, dtype=spec.dtype)
    if name == "Bounded":
        low, high = spec.low.to(key.device), spec.high.to(key.device)
        if not spec.dtype.is_floating_point:
            low, high = low.double(), high.double()
            u = random.uniform(key, full, torch.float64)
            x = torch.minimum(low + torch.floor(u * (high - low + 1.0)), high)
            return x.to(device=dev, dtype=spec.dtype)
        if not spec._finite:
            raise ValueError(
                "random_action: drawing from a key needs finite Bounded bounds, got "
                f"low={spec.low.tolist()} high={spec.high.tolist()}"
            )
        u = random.uniform(key, full, spec.dtype)
        return torch.clamp(low + u * (high - low), low, high).to(dev)
    raise ValueError(f"random_action: drawing from a key is not supported for a {name} spec")


def random_action(
    spec: Any,
    batch_shape: torch.Size,
    mask: torch.Tensor | None = None,
    *,
    key: torch.Tensor | None = None,
) -> torch.Tensor:
    """A uniform draw from ``spec`` of shape ``[*batch_shape, *spec.shape]``, within ``mask``.

    ``mask`` (bool, ``[..., n]``) restricts Categorical / OneHot draws, and MultiOneHot draws per
    segment (``[..., sum(nvec)]``); other specs take no mask. Samples from ``key``
    (:mod:`funcrl.random`) when given, else from the global RNG (the spec's ``rand``).
    """
    name = type(spec).__name__
    if key is not None:
        return _keyed_random_action(spec, batch_shape, mask, key)
    if mask is None:
        return spec.rand(batch_shape)
    if name in ("Categorical", "OneHot"):
        return spec.rand(batch_shape, mask=mask)
    if name == "MultiOneHot":
        from funcrl.specs import OneHot

        segments = mask.split(list(spec.nvec), dim=-1)
        lead = torch.Size(batch_shape) + spec.shape[:-1]
        return torch.cat(
            [
                OneHot(n, dtype=spec.dtype, device=spec.device).rand(lead, mask=m)
                for n, m in zip(spec.nvec, segments)
            ],
            -1,
        )
    raise ValueError(f"random_action: action masks are not supported for a {name} spec")


@dataclasses.dataclass(frozen=True, eq=False)
class EGreedy(_Annealed):
    """Epsilon-greedy: with probability ``eps_k`` replace the action by a random one.

    One Bernoulli draw per batch element of the record holding the action (TorchRL's
    EGreedyModule); the random action is drawn from the spec, restricted to
    ``record[action_mask_key]`` when given (:func:`random_action`).
    ``eps_k = linear_annealing(state["step"], eps_init, eps_end, annealing_num_steps)``.

    Args:
        spec: the action spec (required): Categorical, OneHot, MultiOneHot, MultiCategorical,
            Binary or Bounded.
        eps_init, eps_end, annealing_num_steps: the schedule.
        action_key, action_mask_key: the entries read.

    Samples from ``key`` when given (``mod(state, record, key=k)``), else the global torch RNG.
    """

    spec: Any
    eps_init: float = 1.0
    eps_end: float = 0.1
    annealing_num_steps: int = 1000
    action_key: NestedKey = "action"
    action_mask_key: NestedKey | None = None

    def __post_init__(self) -> None:
        if self.eps_end > self.eps_init:
            raise ValueError(
                f"EGreedy: eps should decrease or stay constant, got eps_init={self.eps_init} < "
                f"eps_end={self.eps_end}"
            )
        if self.annealing_num_steps <= 0:
            raise ValueError(
                f"EGreedy: annealing_num_steps must be positive, got {self.annealing_num_steps}"
            )
        leaf = _leaf_spec(self.spec, self.action_key, "EGreedy")
        if leaf is None:
            raise ValueError("EGreedy: a spec is required to draw random actions")
        object.__setattr__(self, "_leaf", leaf)

    @property
    def in_keys(self) -> tuple[NestedKey, ...]:
        keys = (self.action_key,)
        return keys if self.action_mask_key is None else (*keys, self.action_mask_key)

    def eps(self, state: Params) -> torch.Tensor:
        """The current exploration probability (0-dim float32)."""
        return linear_annealing(
            state["step"], self.eps_init, self.eps_end, self.annealing_num_steps
        )

    def __call__(
        self,
        state: Params,
        record: Record,
        *,
        interaction: str | None = None,
        key: torch.Tensor | None = None,
        **options: Any,
    ) -> Record:
        if not _exploring(interaction, "EGreedy"):
            return record
        action = read_key(record, self.action_key, "EGreedy")
        spec = self._leaf
        tail = action.shape[action.ndim - spec.ndim :] if spec.ndim else torch.Size([])
        if action.ndim < spec.ndim or tail != spec.shape:
            raise ValueError(
                f"EGreedy: action shape {tuple(action.shape)} does not end with the spec shape "
                f"{tuple(spec.shape)}"
            )
        batch = _batch_of(record, self.action_key)
        eps = self.eps(state).to(action.device)
        if key is None:
            explore = torch.rand(batch, device=action.device) < eps
        else:
            key, sub = random.split(key)
            explore = random.uniform(sub, batch).to(action.device) < eps
        mask = None
        if self.action_mask_key is not None:
            mask = read_key(record, self.action_mask_key, "EGreedy")
        lead = action.shape[: action.ndim - spec.ndim]
        r = random_action(spec, lead, mask, key=key).to(action.dtype)
        return record.set(self.action_key, torch.where(_expand_right(explore, action), r, action))


# --------------------------------------------------------------------------- Ornstein-Uhlenbeck


def ou_sigma(
    n_steps: torch.Tensor, sigma: float, sigma_min: float | None, n_steps_annealing: int
) -> torch.Tensor:
    """The OU noise scale after ``n_steps`` steps of an episode.

    ``max(sigma_min, sigma - (sigma - sigma_min) * n_steps / n_steps_annealing)``; constant
    ``sigma`` when ``sigma_min`` is ``None``.
    """
    if sigma_min is None:
        return torch.full_like(n_steps, sigma, dtype=torch.float32)
    m = -float(sigma - sigma_min) / float(n_steps_annealing)
    return (m * n_steps.to(torch.float32) + sigma).clamp_min(sigma_min)


def ou_increment(
    prev: torch.Tensor,
    sigma_t: torch.Tensor,
    theta: float,
    mu: float,
    dt: float,
    eps: torch.Tensor,
) -> torch.Tensor:
    """One Euler-Maruyama step ``x + theta (mu - x) dt + sigma_t sqrt(dt) eps`` of the OU process.

    Args:
        prev: ``x_t`` ``[*batch, *action]`` (``prev_noise + x0``).
        sigma_t: noise scale broadcastable to ``prev``.
        eps: standard normal draw of ``prev``'s shape.
    """
    return prev + theta * (mu - prev) * dt + sigma_t * math.sqrt(dt) * eps


@dataclasses.dataclass(frozen=True, eq=False)
class OrnsteinUhlenbeck(_Annealed):
    """Temporally correlated OU noise added to the action (TorchRL's OrnsteinUhlenbeckProcessModule).

    Per-environment state lives in the record: ``"_ou_prev_noise"`` ``[*batch, *action]`` and
    ``"_ou_steps"`` ``[*batch]`` int64 (zeros when absent). Where ``record[is_init_key]`` is True
    both are reset to 0 first. Then, with ``x = prev_noise + x0``::

        noise = x + theta (mu - x) dt + sigma_t(steps) sqrt(dt) N(0, 1)
        action = action + eps_k * noise;  prev_noise <- noise - x0;  steps <- steps + 1

    ``eps_k`` anneals with the module state like :class:`EGreedy`, ``sigma_t`` with the episode
    step count (:func:`ou_sigma`). With ``safe`` the action is projected onto the spec.

    Args:
        spec: the action spec.
        eps_init, eps_end, annealing_num_steps: global noise-weight schedule.
        theta, mu, sigma, dt, x0, sigma_min, n_steps_annealing: TorchRL's OU parameters.
        action_key: the action entry.
        is_init_key: ``[*batch, 1]`` bool flag resetting the process (TorchRL's ``InitTracker``);
            without it the process never resets (TorchRL warns).
        safe: project the noisy action onto the spec.

    Samples from ``key`` when given (``mod(state, record, key=k)``), else the global torch RNG.
    """

    spec: Any
    eps_init: float = 1.0
    eps_end: float = 0.1
    annealing_num_steps: int = 1000
    theta: float = 0.15
    mu: float = 0.0
    sigma: float = 0.2
    dt: float = 1e-2
    x0: Any = None
    sigma_min: float | None = None
    n_steps_annealing: int = 1000
    action_key: NestedKey = "action"
    is_init_key: NestedKey = "is_init"
    safe: bool = True
    noise_key: NestedKey = "_ou_prev_noise"
    steps_key: NestedKey = "_ou_steps"

    def __post_init__(self) -> None:
        if self.eps_end > self.eps_init:
            raise ValueError(
                f"OrnsteinUhlenbeck: eps should decrease or stay constant, got eps_init="
                f"{self.eps_init} < eps_end={self.eps_end}"
            )
        if self.annealing_num_steps <= 0:
            raise ValueError(
                f"OrnsteinUhlenbeck: annealing_num_steps must be positive, got "
                f"{self.annealing_num_steps}"
            )
        object.__setattr__(
            self, "_leaf", _leaf_spec(self.spec, self.action_key, "OrnsteinUhlenbeck")
        )

    @property
    def in_keys(self) -> tuple[NestedKey, ...]:
        return (self.action_key,)

    @property
    def out_keys(self) -> tuple[NestedKey, ...]:
        return (self.action_key, self.noise_key, self.steps_key)

    def eps(self, state: Params) -> torch.Tensor:
        """The current noise weight (0-dim float32)."""
        return linear_annealing(
            state["step"], self.eps_init, self.eps_end, self.annealing_num_steps
        )

    def current_sigma(self, n_steps: torch.Tensor) -> torch.Tensor:
        return ou_sigma(n_steps, self.sigma, self.sigma_min, self.n_steps_annealing)

    def _reset_flags(self, record: Record, batch: torch.Size) -> torch.Tensor | None:
        if self.is_init_key not in record:
            return None
        is_init = record[self.is_init_key].to(torch.bool)
        if is_init.ndim > 1 and is_init.shape[-1] == 1:
            is_init = is_init.squeeze(-1)
        if is_init.ndim <= len(batch):
            is_init = is_init.reshape(*is_init.shape, *([1] * (len(batch) - is_init.ndim)))
            is_init = is_init.expand(batch)
        else:
            is_init = is_init.any(dim=tuple(range(len(batch), is_init.ndim)))
        if is_init.shape != batch:
            raise ValueError(
                f"OrnsteinUhlenbeck: {self.is_init_key!r} of shape "
                f"{tuple(record[self.is_init_key].shape)} does not match the batch {tuple(batch)}"
            )
        return is_init

    def __call__(
        self,
        state: Params,
        record: Record,
        *,
        interaction: str | None = None,
        key: torch.Tensor | None = None,
        **options: Any,
    ) -> Record:
        owner = "OrnsteinUhlenbeck"
        if not _exploring(interaction, owner):
            return record
        action = read_key(record, self.action_key, owner)
        batch = _batch_of(record, self.action_key)
        prev = record.get(self.noise_key)
        if prev is None:
            prev = torch.zeros_like(action)
        steps = record.get(self.steps_key)
        if steps is None:
            steps = torch.zeros(batch, dtype=torch.int64, device=action.device)
        is_init = self._reset_flags(record, batch)
        if is_init is not None:
            prev = prev.masked_fill(_expand_right(is_init, prev), 0)
            steps = steps.masked_fill(is_init, 0)
        x0 = 0.0 if self.x0 is None else torch.as_tensor(self.x0, dtype=action.dtype)
        x = prev + x0
        sigma_t = _expand_right(self.current_sigma(steps), x).to(x.dtype)
        eps = torch.randn_like(x) if key is None else _normal_like(key, x)
        noise = ou_increment(x, sigma_t, self.theta, self.mu, self.dt, eps)
        new_action = action + self.eps(state).to(action.dtype) * noise
        if self.safe and self._leaf is not None:
            new_action = self._leaf.project(new_action)
        return record.update(
            {self.noise_key: noise - x0, self.action_key: new_action, self.steps_key: steps + 1}
        )


# --------------------------------------------------------------------------- consistent dropout


@dataclasses.dataclass(frozen=True)
class ConsistentDropout(Module):
    """Dropout whose mask is sampled once, stored in the record and reused (Hausknecht & Wagener).

    With ``train=True`` (the default, as TorchRL's module in train mode): if ``mask_key`` is in
    the record, ``x * mask`` reuses it (e.g. in the loss, on the stored transition); otherwise a
    mask ``Bernoulli(1 - p) / (1 - p)`` of ``x``'s shape is drawn and written to ``mask_key``.
    With ``train=False`` the input passes unchanged.

    Args:
        p: drop probability in ``[0, 1)``.
        in_keys: the input key.
        out_keys: where to write the masked input (defaults to the input key).
        mask_key: where the mask lives (default ``<in_key>_dropout_mask``; TorchRL uses
            ``mask_<id(module)>``, which is not stable across processes).

    Samples from ``key`` when given, else the global torch RNG, when it draws a mask.
    """

    p: float
    in_keys: Any
    out_keys: Any = None
    mask_key: NestedKey | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.p < 1:
            raise ValueError(f"ConsistentDropout: p must be in [0, 1), got {self.p}")
        ins = as_keys(self.in_keys, "ConsistentDropout.in_keys")
        outs = ins if self.out_keys is None else as_keys(self.out_keys, "ConsistentDropout")
        if len(ins) != 1 or len(outs) != 1:
            raise ValueError(
                f"ConsistentDropout: one in_key and one out_key, got {list(ins)} and {list(outs)}"
            )
        mask_key = self.mask_key
        if mask_key is None:
            from funcrl.modules.actors import add_suffix

            mask_key = add_suffix(ins[0], "_dropout_mask")
        object.__setattr__(self, "in_keys", ins)
        object.__setattr__(self, "out_keys", outs)
        object.__setattr__(self, "mask_key", mask_key)

    def init(self, seed=0, *, device=None, dtype=torch.float32) -> Params:
        return {}

    def make_mask(self, like: torch.Tensor, *, key: torch.Tensor | None = None) -> torch.Tensor:
        """A fresh mask of ``like``'s shape: 0 with probability ``p``, else ``1 / (1 - p)``.

        From ``key`` when given (:func:`funcrl.random.bernoulli`), else the global RNG.
        """
        if key is None:
            return F.dropout(torch.ones_like(like), self.p, training=True)
        keep = random.bernoulli(key, 1.0 - self.p, like.shape).to(like.device)
        return keep.to(like.dtype) / (1.0 - self.p)

    def __call__(
        self,
        params: Params,
        record: Record,
        *,
        train: bool = True,
        key: torch.Tensor | None = None,
        **options: Any,
    ) -> Record:
        x = read_key(record, self.in_keys[0], "ConsistentDropout")
        if not train:
            return record.set(self.out_keys[0], x)
        mask = record.get(self.mask_key)
        if mask is None:
            mask = self.make_mask(x, key=key)
        elif mask.shape != x.shape:
            raise ValueError(
                f"ConsistentDropout: stored mask {self.mask_key!r} has shape {tuple(mask.shape)}, "
                f"input has {tuple(x.shape)}"
            )
        return record.update({self.out_keys[0]: x * mask, self.mask_key: mask})
