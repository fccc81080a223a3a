"""Discrete distributions: Categorical, OneHotCategorical, masked variants, Ordinal.

TorchRL 0.14's semantics (``torchrl/modules/distributions/discrete.py``). Sampling is Gumbel-max
(``argmax(logits + Gumbel noise)``) instead of ``torch.multinomial``: same distribution, no host
sync, traces under ``torch.compile(fullgraph=True)`` and batches under ``vmap``. The draws
therefore differ from TorchRL's for the same seed; the log-probabilities match.
"""

from __future__ import annotations

import enum
import math

import torch
import torch.nn.functional as F

from funcrl.distributions._utils import check_floating
from funcrl.distributions.base import Distribution, ShapeLike, as_size

__all__ = [
    "ReparamGradientStrategy",
    "Categorical",
    "OneHotCategorical",
    "MaskedCategorical",
    "MaskedOneHotCategorical",
    "Ordinal",
    "OneHotOrdinal",
    "ordinal_logits",
    "gumbel",
]


class ReparamGradientStrategy(enum.Enum):
    """How ``rsample`` of a one-hot distribution gets gradients (TorchRL's enum).

    ``PassThrough``: the hard one-hot sample plus ``probs - probs.detach()`` (straight-through,
    value unchanged, gradient of the probabilities). ``RelaxedOneHot``: the hard one-hot of a
    Gumbel-softmax (temperature 1) draw, with the relaxed sample's gradient.
    """

    PassThrough = 1
    RelaxedOneHot = 2


def gumbel(shape: torch.Size, like: torch.Tensor, key: torch.Tensor | None = None) -> torch.Tensor:
    """Standard Gumbel noise ``-log(-log(U))`` of ``shape``, dtype/device of ``like``. Samples.

    ``U`` is kept in ``[tiny, 1 - eps]`` so the noise is finite. With a key the noise is
    :func:`funcrl.random.gumbel` (``U`` in ``[tiny, 1)``, JAX's); without, the global RNG.
    """
    if key is not None:
        from funcrl import random

        return random.gumbel(key, shape, like.dtype).to(like.device)
    finfo = torch.finfo(like.dtype)
    u = torch.rand(shape, dtype=like.dtype, device=like.device).clamp(finfo.tiny, 1 - finfo.eps)
    return -torch.log(-torch.log(u))


def _normalize_logits(logits: torch.Tensor) -> torch.Tensor:
    # torch.distributions.Categorical stores logits - logsumexp(logits).
    return logits - logits.logsumexp(-1, keepdim=True)


def _probs_to_logits(probs: torch.Tensor) -> torch.Tensor:
    # torch.distributions' probs_to_logits: log of probs clamped to [eps, 1 - eps].
    eps = torch.finfo(probs.dtype).eps
    return torch.log(probs.clamp(eps, 1 - eps))


def _entropy(logits: torch.Tensor) -> torch.Tensor:
    # -sum p log p with -inf logits replaced by the smallest float, so 0 * log 0 counts as 0.
    logits = logits.clamp(min=torch.finfo(logits.dtype).min)
    logits = _normalize_logits(logits)
    return -(logits.exp() * logits).sum(-1)


def _check_logits_probs(logits, probs, owner: str) -> None:
    if (logits is None) == (probs is None):
        raise ValueError(f"{owner}: pass exactly one of logits or probs")
    t = logits if logits is not None else probs
    check_floating(t, name="logits" if logits is not None else "probs", owner=owner)
    if t.ndim < 1:
        raise ValueError(f"{owner}: logits/probs must be [*batch, n], got a 0-d tensor")


def _check_grad_method(grad_method, owner: str) -> None:
    if not isinstance(grad_method, ReparamGradientStrategy):
        raise ValueError(
            f"{owner}: grad_method must be a ReparamGradientStrategy, got {grad_method!r}"
        )


def _straight_through_one_hot(index: torch.Tensor, probs: torch.Tensor, n: int) -> torch.Tensor:
    """``one_hot(index) + probs - probs.detach()``: the hard value, the softmax's gradient."""
    hard = F.one_hot(index, n).to(probs.dtype)
    return hard + (probs - probs.detach())


def _relaxed_one_hot(
    logits: torch.Tensor, sample_shape: torch.Size, key: torch.Tensor | None = None
) -> torch.Tensor:
    """Hard one-hot of a Gumbel-softmax (temperature 1) draw, with the relaxed gradient. Samples."""
    g = gumbel(sample_shape + logits.shape, logits, key)
    y = torch.softmax(logits + g, dim=-1)
    hard = (y == y.amax(-1, keepdim=True)).to(y.dtype)
    return hard.detach() + (y - y.detach())


class Categorical(Distribution):
    """Integer-valued categorical over ``n`` classes (``torch.distributions.Categorical``).

    Args:
      logits: unnormalised log-probabilities ``[*batch, n]``; or
      probs: non-negative weights ``[*batch, n]`` (normalised along the last dim).
      validate_args: check dtypes and that ``log_prob`` values are in ``[0, n)`` (host syncs).

    Attributes:
      logits: normalised log-probabilities ``[*batch, n]``. probs: ``[*batch, n]``.
    """

    has_rsample = False

    def __init__(
        self,
        logits: torch.Tensor | None = None,
        probs: torch.Tensor | None = None,
        *,
        validate_args: bool = False,
    ):
        owner = type(self).__name__
        if validate_args:
            _check_logits_probs(logits, probs, owner)
        elif (logits is None) == (probs is None):
            raise ValueError(f"{owner}: pass exactly one of logits or probs")
        if logits is not None:
            self.logits = _normalize_logits(logits)
            self.probs = torch.softmax(logits, dim=-1)
        else:
            self.probs = probs / probs.sum(-1, keepdim=True)
            self.logits = _probs_to_logits(self.probs)
        self.num_samples = self.logits.shape[-1]
        self.batch_shape = self.logits.shape[:-1]
        self.event_shape = torch.Size(())
        self.validate_args = validate_args

    def _check_index(self, value: torch.Tensor, owner: str) -> None:
        if value.dtype.is_floating_point or value.dtype == torch.bool:
            raise TypeError(f"{owner}: value must be an integer tensor, got dtype {value.dtype}")
        if value.numel() and bool(((value < 0) | (value >= self.num_samples)).any()):
            raise ValueError(f"{owner}: value entries must be in [0, {self.num_samples})")

    def _sample_index(
        self, sample_shape: ShapeLike = (), *, key: torch.Tensor | None = None
    ) -> torch.Tensor:
        shape = as_size(sample_shape) + self.logits.shape
        return (self.logits + gumbel(shape, self.logits, key)).argmax(-1)

    def sample(
        self, sample_shape: ShapeLike = (), *, key: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Class indices ``[*sample_shape, *batch]`` (int64), by Gumbel-max. Samples."""
        return self._sample_index(sample_shape, key=key)

    @staticmethod
    def _gather(logits: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        # logits[..., index], with logits broadcast against leading sample dims of `index`.
        index = index.long()
        shape = torch.broadcast_shapes(index.shape, logits.shape[:-1])
        logits = logits.expand(shape + logits.shape[-1:])
        return logits.gather(-1, index.expand(shape).unsqueeze(-1)).squeeze(-1)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """``logits[..., value]``: ``[*sample, *batch]``."""
        if self.validate_args:
            self._check_index(value, f"{type(self).__name__}.log_prob")
        return self._gather(self.logits, value)

    def entropy(self) -> torch.Tensor:
        """``-sum p log p`` over classes: ``[*batch]``."""
        return _entropy(self.logits)

    @property
    def mode(self) -> torch.Tensor:
        """``argmax probs`` (int64), ``[*batch]``."""
        return self.probs.argmax(-1)

    @property
    def deterministic_sample(self) -> torch.Tensor:
        return self.mode


class OneHotCategorical(Categorical):
    """Categorical that reads and writes one-hot vectors ``[*batch, n]`` (TorchRL's).

    Args:
      logits, probs: as ``Categorical``.
      grad_method: ``ReparamGradientStrategy.PassThrough`` (default) or ``RelaxedOneHot``;
        how ``rsample`` passes gradients (see ``ReparamGradientStrategy``).

    ``sample`` returns int64 one-hots (TorchRL's ``F.one_hot``); ``rsample`` float one-hots
    carrying the straight-through gradient; ``log_prob(one_hot)`` reads ``argmax(one_hot)``;
    ``mode`` is ``(logits == max logits)`` as int64 (several ones on exact ties, as TorchRL).
    """

    has_rsample = True

    def __init__(
        self,
        logits: torch.Tensor | None = None,
        probs: torch.Tensor | None = None,
        grad_method: ReparamGradientStrategy = ReparamGradientStrategy.PassThrough,
        *,
        validate_args: bool = False,
    ):
        super().__init__(logits, probs, validate_args=validate_args)
        _check_grad_method(grad_method, type(self).__name__)
        self.grad_method = grad_method
        self.event_shape = self.logits.shape[-1:]

    def sample(
        self, sample_shape: ShapeLike = (), *, key: torch.Tensor | None = None
    ) -> torch.Tensor:
        """One-hot int64 ``[*sample_shape, *batch, n]``. Samples."""
        return F.one_hot(self._sample_index(sample_shape, key=key), self.num_samples)

    def rsample(
        self, sample_shape: ShapeLike = (), *, key: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Float one-hot ``[*sample_shape, *batch, n]``, straight-through gradient. Samples."""
        if self.grad_method is ReparamGradientStrategy.RelaxedOneHot:
            return _relaxed_one_hot(self.logits, as_size(sample_shape), key)
        index = self._sample_index(sample_shape, key=key)
        return _straight_through_one_hot(index, self.probs, self.num_samples)

    def _check_one_hot(self, value: torch.Tensor) -> None:
        if value.shape[-1:] != (self.num_samples,):
            raise ValueError(
                f"{type(self).__name__}.log_prob: value must be one-hot [..., "
                f"{self.num_samples}], got shape {tuple(value.shape)}"
            )

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """``logits[..., argmax(value)]``: ``[*sample, *batch]``."""
        if self.validate_args:
            self._check_one_hot(value)
        return self._gather(self.logits, value.argmax(-1))

    @property
    def mode(self) -> torch.Tensor:
        return (self.logits == self.logits.amax(-1, keepdim=True)).long()

    @property
    def mean(self) -> torch.Tensor:
        """``probs``, the expected one-hot vector."""
        return self.probs


class MaskedCategorical(Categorical):
    """Categorical restricted to valid actions (TorchRL's ``MaskedCategorical``).

    Exactly one of:

    * ``mask``: bool ``[*batch, n]``, ``False`` marks invalid actions; their logits become
      ``neg_inf``.
    * ``indices``: int64 ``[*batch, k]``, the valid action ids (a sparse mask). The
      distribution lives on the ``k`` slots; ``sample``/``mode`` map back to action ids and
      ``log_prob`` looks the id up among ``indices`` (``neg_inf`` when absent). Rows with fewer
      valid actions are padded with ``padding_value``: padded slots get ``neg_inf`` logits.

    Args:
      logits: ``[*batch, n]`` unnormalised log-probabilities; or
      probs: ``[*batch, n]`` weights: zeroed on invalid actions and renormalised, then
        ``logits = log(probs)`` (``-inf`` where zero), as TorchRL.
      mask, indices: see above.
      neg_inf: the logit / log-probability given to invalid actions. Default ``-inf``.
      padding_value: padding id in ``indices`` (ignored for a dense ``mask``).
      use_cross_entropy, padding_side: accepted for TorchRL compatibility; the result is the
        same either way (``log_prob`` is a gather of normalised logits).

    ``log_prob`` of an invalid action is ``neg_inf``; ``entropy`` counts valid actions only.
    """

    def __init__(
        self,
        logits: torch.Tensor | None = None,
        probs: torch.Tensor | None = None,
        *,
        mask: torch.Tensor | None = None,
        indices: torch.Tensor | None = None,
        neg_inf: float = float("-inf"),
        padding_value: int | None = None,
        use_cross_entropy: bool = True,
        padding_side: str = "left",
        validate_args: bool = False,
    ):
        owner = type(self).__name__
        if (mask is None) == (indices is None):
            raise ValueError(f"{owner}: pass exactly one of mask or indices")
        if (logits is None) == (probs is None):
            raise ValueError(f"{owner}: pass exactly one of logits or probs")
        sparse = indices is not None
        m = indices if sparse else mask
        ref = logits if logits is not None else probs
        if validate_args:
            _check_logits_probs(logits, probs, owner)
        n = ref.shape[-1]
        if sparse:
            if m.dtype.is_floating_point or m.dtype == torch.bool:
                raise TypeError(f"{owner}: indices must be an integer tensor, got {m.dtype}")
            if validate_args:
                ok = (m >= 0) & (m < n)
                if padding_value is not None:
                    ok = ok | (m == padding_value)
                if not bool(ok.all()):
                    raise ValueError(f"{owner}: indices must be in [0, {n}) or padding_value")
        else:
            if m.dtype != torch.bool:
                raise TypeError(f"{owner}: mask must be a bool tensor, got {m.dtype}")
            if validate_args:
                try:
                    torch.broadcast_shapes(m.shape, ref.shape)
                except RuntimeError:
                    raise ValueError(
                        f"{owner}: mask shape {tuple(m.shape)} does not broadcast to "
                        f"logits/probs shape {tuple(ref.shape)}"
                    ) from None
                if not bool(m.any(-1).all()):
                    raise ValueError(f"{owner}: every row of mask needs at least one valid action")
        safe_idx = None
        if sparse:
            padding = (m == padding_value) if padding_value is not None else None
            # Padded slots read action 0 (a valid index) and are then masked to neg_inf.
            safe_idx = m.masked_fill(padding, 0) if padding is not None else m
            batch = torch.broadcast_shapes(ref.shape[:-1], m.shape[:-1])
            safe_idx = safe_idx.expand(batch + m.shape[-1:])
        if probs is not None:
            if sparse:
                probs = probs.expand(safe_idx.shape[:-1] + (n,))
                keep = torch.zeros_like(probs).scatter(-1, safe_idx, probs.gather(-1, safe_idx))
            else:
                keep = probs.masked_fill(~m, 0)
            logits = (keep / keep.sum(-1, keepdim=True)).log()
        if sparse:
            masked = logits.expand(safe_idx.shape[:-1] + (n,)).gather(-1, safe_idx)
            if padding is not None:
                masked = masked.masked_fill(padding, neg_inf)
        else:
            masked = logits.masked_fill(~m, neg_inf)
        super().__init__(logits=masked)
        self.num_samples = n  # the number of actions, not of slots
        self.neg_inf = neg_inf
        self._mask = m
        self._sparse_mask = sparse
        self._safe_idx = safe_idx
        self._padding_value = padding_value
        self.use_cross_entropy = use_cross_entropy
        self.padding_side = padding_side
        self.validate_args = validate_args

    @property
    def mask(self) -> torch.Tensor:
        if self._sparse_mask:
            raise ValueError(f"{type(self).__name__}.mask is undefined for a sparse (indices) mask")
        return self._mask

    @property
    def padding_value(self) -> int:
        return self._padding_value if self._padding_value is not None else 0

    def _slot_to_action(self, slot: torch.Tensor) -> torch.Tensor:
        if not self._sparse_mask:
            return slot
        idx = self._mask.expand(slot.shape + self._mask.shape[-1:])
        return idx.gather(-1, slot.unsqueeze(-1)).squeeze(-1)

    def sample(
        self, sample_shape: ShapeLike = (), *, key: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Action ids ``[*sample_shape, *batch]`` (never an invalid one). Samples."""
        return self._slot_to_action(self._sample_index(sample_shape, key=key))

    def _action_log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if not self._sparse_mask:
            lp = self._gather(self.logits, value)
            # TorchRL maps every non-finite log-prob (an invalid action) to neg_inf.
            return torch.where(torch.isfinite(lp), lp, torch.full_like(lp, self.neg_inf))
        hit = self._mask == value.unsqueeze(-1)  # [*sample, *batch, k]
        slot = hit.int().argmax(-1)
        lp = self._gather(self.logits, slot)
        return lp.masked_fill(~hit.any(-1), self.neg_inf)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """``[*sample, *batch]``; ``neg_inf`` for invalid actions."""
        if self.validate_args:
            self._check_index(value, f"{type(self).__name__}.log_prob")
        return self._action_log_prob(value)

    @property
    def mode(self) -> torch.Tensor:
        return self._slot_to_action(self.probs.argmax(-1))


class MaskedOneHotCategorical(MaskedCategorical):
    """One-hot version of ``MaskedCategorical`` (TorchRL's ``MaskedOneHotCategorical``).

    One-hots are over all ``n`` actions, also with a sparse ``indices`` mask. ``rsample`` passes
    gradients as ``grad_method`` says (straight-through by default); for a sparse mask the
    ``k`` slot probabilities are scattered back onto the ``n`` actions first.
    """

    has_rsample = True

    def __init__(
        self,
        logits: torch.Tensor | None = None,
        probs: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        indices: torch.Tensor | None = None,
        neg_inf: float = float("-inf"),
        padding_value: int | None = None,
        grad_method: ReparamGradientStrategy = ReparamGradientStrategy.PassThrough,
        *,
        validate_args: bool = False,
    ):
        super().__init__(
            logits,
            probs,
            mask=mask,
            indices=indices,
            neg_inf=neg_inf,
            padding_value=padding_value,
            validate_args=validate_args,
        )
        _check_grad_method(grad_method, type(self).__name__)
        self.grad_method = grad_method
        self.event_shape = torch.Size((self.num_samples,))

    def _to_actions(self, slots: torch.Tensor, fill: float, reduce: str) -> torch.Tensor:
        # [*batch, k] slot values -> [*batch, n] action values (`fill` elsewhere). Padded slots
        # point at action 0 carrying a neutral value (0 prob / -inf logit), so the reduction
        # ("sum" for probs, "amax" for logits) leaves action 0's own value intact.
        if not self._sparse_mask:
            return slots
        full = torch.full(
            slots.shape[:-1] + (self.num_samples,), fill, dtype=slots.dtype, device=slots.device
        )
        return full.scatter_reduce(-1, self._safe_idx, slots, reduce=reduce, include_self=True)

    def sample(
        self, sample_shape: ShapeLike = (), *, key: torch.Tensor | None = None
    ) -> torch.Tensor:
        """One-hot int64 ``[*sample_shape, *batch, n]``. Samples."""
        return F.one_hot(MaskedCategorical.sample(self, sample_shape, key=key), self.num_samples)

    def rsample(
        self, sample_shape: ShapeLike = (), *, key: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Float one-hot ``[*sample_shape, *batch, n]``, straight-through gradient. Samples."""
        if self.grad_method is ReparamGradientStrategy.RelaxedOneHot:
            logits = self._to_actions(self.logits, -math.inf, "amax")
            return _relaxed_one_hot(logits, as_size(sample_shape), key)
        action = MaskedCategorical.sample(self, sample_shape, key=key)
        probs = self._to_actions(self.probs, 0.0, "sum")
        return _straight_through_one_hot(action, probs, self.num_samples)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """``[*sample, *batch]`` for one-hot ``value [..., n]``; ``neg_inf`` for invalid actions."""
        if self.validate_args and value.shape[-1:] != self.event_shape:
            raise ValueError(
                f"{type(self).__name__}.log_prob: value must be one-hot [..., "
                f"{self.num_samples}], got shape {tuple(value.shape)}"
            )
        return self._action_log_prob(value.argmax(-1))

    @property
    def mode(self) -> torch.Tensor:
        if self._sparse_mask:
            return F.one_hot(MaskedCategorical.mode.fget(self), self.num_samples)
        return (self.logits == self.logits.amax(-1, keepdim=True)).long()

    @property
    def mean(self) -> torch.Tensor:
        """The action probabilities ``[*batch, n]`` (the expected one-hot)."""
        return self._to_actions(self.probs, 0.0, "sum")


def ordinal_logits(scores: torch.Tensor) -> torch.Tensor:
    """Eq. 4 of Tang & Agrawal (2020): ordinal logits from ``scores [..., n]``.

    ``logit_k = sum_{j<=k} log sigmoid(s_j) + sum_{j>k} log sigmoid(-s_j)``: class ``k`` passes
    the first ``k + 1`` Bernoulli tests and fails the rest.
    """
    log_p = F.logsigmoid(scores)
    log_q = F.logsigmoid(-scores)
    larger = log_p.cumsum(-1)
    smaller = log_q.flip(-1).cumsum(-1).flip(-1) - log_q
    return larger + smaller


class Ordinal(Categorical):
    """Categorical over an ordered set, ``logits = ordinal_logits(scores)`` (TorchRL's).

    Args:
      scores: ``[*batch, n]``, typically a network's output.
    """

    def __init__(self, scores: torch.Tensor, *, validate_args: bool = False):
        super().__init__(logits=ordinal_logits(scores), validate_args=validate_args)


class OneHotOrdinal(OneHotCategorical):
    """One-hot ``Ordinal`` (TorchRL's ``OneHotOrdinal``), straight-through ``rsample``."""

    def __init__(
        self,
        scores: torch.Tensor,
        grad_method: ReparamGradientStrategy = ReparamGradientStrategy.PassThrough,
        *,
        validate_args: bool = False,
    ):
        super().__init__(
            logits=ordinal_logits(scores), grad_method=grad_method, validate_args=validate_args
        )
