"""A small GPT-2-style causal transformer and the Decision Transformer policies built on it.

TorchRL's ``DecisionTransformer`` wraps Hugging Face's ``GPT2Model``; funcrl writes the same
architecture as pure functions (no ``transformers`` dependency)::

    x = inputs + wpe[positions]                           # learned position embeddings
    for each block:                                       # pre-LayerNorm blocks
        x = x + Attn(LN_1(x))                             # causal multi-head self-attention
        x = x + MLP(LN_2(x))                              # Linear -> act -> Linear
    y = LN_f(x)

:class:`DecisionTransformer` embeds returns-to-go, states and actions with one linear layer each,
interleaves them as tokens ``(R_1, s_1, a_1, R_2, s_2, a_2, ...)``, applies ``embed_ln`` and the
transformer, and returns the outputs at the *state* tokens (which see ``R_{<=t}``, ``s_{<=t}``
and ``a_{<t}``: the tokens an action is predicted from). :class:`DTActor` adds a linear action
head, :class:`OnlineDTActor` a Gaussian head with a bounded log-std.

Parameter names follow TorchRL/HF (``transformer.h[i].attn.c_attn`` ...), but every linear layer
uses ``torch.nn.Linear``'s ``{"weight": [out, in], "bias": [out]}`` layout: HF's ``Conv1D``
stores ``[in, out]``, so transpose its weights when converting.

Dropout is active only with ``train=True``; its masks come from ``key=`` (one ``fold_in`` per
dropout site) or, without a key, from the global torch RNG.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
import torch.nn.functional as F

from funcrl.nn.core import (
    Activation,
    LayerNorm,
    Linear,
    Module,
    Params,
    Seed,
    _fold,
    activation_fn,
    check_input,
    dropout,
    make_generator,
    net_name,
)

__all__ = [
    "DTConfig",
    "CausalTransformer",
    "DecisionTransformer",
    "DTActor",
    "OnlineDTActor",
    "bounded_log_std",
    "causal_self_attention",
    "causal_mask",
]


@dataclasses.dataclass(frozen=True)
class DTConfig:
    """Transformer configuration (TorchRL's ``DecisionTransformer.DTConfig`` and GPT-2's).

    Args:
        n_embd: model width. Default 256.
        n_layer: number of blocks. Default 4.
        n_head: attention heads (must divide ``n_embd``). Default 4.
        n_inner: MLP hidden width (``None``: ``4 * n_embd``, GPT-2's). Default 1024.
        activation: MLP activation: a name :func:`funcrl.nn.core.activation_fn` knows, or GPT-2's
            ``"gelu_new"`` / ``"gelu_pytorch_tanh"`` (GELU's tanh approximation). Default
            ``"relu"``.
        n_positions: maximum number of tokens (``3 * T`` for a Decision Transformer). Default 1024.
        resid_pdrop: dropout after attention / MLP projections. Default 0.1.
        attn_pdrop: dropout on attention probabilities. Default 0.1.
        embd_pdrop: dropout on the input embeddings (GPT-2's default, which TorchRL keeps). 0.1.
        layer_norm_epsilon: LayerNorm epsilon. Default 1e-5.
        initializer_range: std of GPT-2's normal init. Default 0.02.
    """

    n_embd: int = 256
    n_layer: int = 4
    n_head: int = 4
    n_inner: int | None = 1024
    activation: Activation = "relu"
    n_positions: int = 1024
    resid_pdrop: float = 0.1
    attn_pdrop: float = 0.1
    embd_pdrop: float = 0.1
    layer_norm_epsilon: float = 1e-5
    initializer_range: float = 0.02

    def __post_init__(self) -> None:
        if self.n_embd % self.n_head:
            raise ValueError(f"DTConfig: n_head={self.n_head} must divide n_embd={self.n_embd}")
        for name in ("resid_pdrop", "attn_pdrop", "embd_pdrop"):
            p = getattr(self, name)
            if not 0.0 <= p < 1.0:
                raise ValueError(f"DTConfig: {name} must be in [0, 1), got {p}")
        _activation(self.activation)

    @property
    def inner(self) -> int:
        return 4 * self.n_embd if self.n_inner is None else self.n_inner


# GPT-2's own activation names (transformers' ``ACT2FN``), which TorchRL's config passes through:
# ``"gelu_new"`` (GPT-2's default) and ``"gelu_pytorch_tanh"`` are GELU's tanh approximation.
_GPT2_ACTIVATIONS = {
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
}


def _activation(activation: Activation):
    if isinstance(activation, str) and activation.lower() in _GPT2_ACTIVATIONS:
        return _GPT2_ACTIVATIONS[activation.lower()]
    return activation_fn(activation)


def _as_config(config: Any) -> DTConfig:
    if config is None:
        return DTConfig()
    if isinstance(config, DTConfig):
        return config
    if isinstance(config, dict):
        return DTConfig(**config)
    raise TypeError(f"config must be a DTConfig or a dict, got {type(config).__name__}")


def causal_mask(length: int, device: Any = None) -> torch.Tensor:
    """``[L, L]`` bool, True where query ``i`` may attend key ``j`` (``j <= i``)."""
    return torch.ones(length, length, dtype=torch.bool, device=device).tril()


def causal_self_attention(
    params: Params,
    x: torch.Tensor,
    n_head: int,
    *,
    attention_mask: torch.Tensor | None = None,
    attn_pdrop: float = 0.0,
    resid_pdrop: float = 0.0,
    train: bool = False,
    key: torch.Tensor | None = None,
) -> torch.Tensor:
    """GPT-2's masked multi-head self-attention.

    ``softmax(Q K^T / sqrt(d) + mask) V`` per head, then the output projection. Masked scores get
    ``finfo.min`` (as GPT-2), so a fully masked row attends uniformly instead of giving NaN.

    Args:
        params: ``{"c_attn": Linear(E, 3E), "c_proj": Linear(E, E)}`` (q, k, v stacked in order).
        x: ``[*batch, L, E]``.
        n_head: number of heads.
        attention_mask: optional bool ``[*batch, L]``, False for padding keys.

    Returns:
        ``[*batch, L, E]``.
    """
    *batch, length, width = x.shape
    d = width // n_head
    qkv = F.linear(x, params["c_attn"]["weight"], params["c_attn"].get("bias"))
    # [*batch, L, 3E] -> 3 x [*batch, heads, L, d]
    q, k, v = (
        t.reshape(*batch, length, n_head, d).transpose(-3, -2) for t in qkv.split(width, dim=-1)
    )
    scores = q @ k.transpose(-2, -1) / math.sqrt(d)
    allowed = causal_mask(length, x.device)
    if attention_mask is not None:
        allowed = allowed & attention_mask[..., None, None, :].to(torch.bool)
    scores = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min)
    probs = torch.softmax(scores, dim=-1)
    probs = dropout(probs, attn_pdrop, train=train, key=_fold(key, 0))
    out = (probs @ v).transpose(-3, -2).reshape(*batch, length, width)
    out = F.linear(out, params["c_proj"]["weight"], params["c_proj"].get("bias"))
    return dropout(out, resid_pdrop, train=train, key=_fold(key, 1))


@dataclasses.dataclass(frozen=True)
class CausalTransformer(Module):
    """GPT-2's ``GPT2Model`` fed input embeddings (``inputs_embeds``), as a pure function.

    Params::

        {"wpe": [n_positions, E],
         "h": [{"ln_1": LN, "attn": {"c_attn": Linear(E, 3E), "c_proj": Linear(E, E)},
                "ln_2": LN, "mlp": {"c_fc": Linear(E, inner), "c_proj": Linear(inner, E)}}, ...],
         "ln_f": LN}

    Init (GPT-2's): linear weights and ``wpe`` ~ N(0, 0.02), biases 0, LayerNorms (1, 0), and
    the residual projections ``c_proj`` ~ N(0, 0.02 / sqrt(2 n_layer)).

    Shapes:
        ``x [*batch, L, E] -> [*batch, L, E]`` with ``L <= n_positions``; the output at ``t``
        depends only on inputs ``<= t``.
    """

    # None, not a DTConfig instance, as the default: dynamo before torch 2.13 cannot trace the
    # construction of a dataclass whose __init__ defaults hold an object it cannot rebuild.
    config: DTConfig | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "config", _as_config(self.config))

    def init(self, seed: Seed = 0, *, device=None, dtype=torch.float32) -> Params:
        gen = make_generator(seed)
        c = self.config
        std = c.initializer_range
        proj_std = std / math.sqrt(2 * c.n_layer)

        def normal(shape, s):
            return (torch.randn(shape, generator=gen, dtype=torch.float64) * s).to(
                device=device, dtype=dtype
            )

        def linear(n_in, n_out, s):
            return {
                "weight": normal((n_out, n_in), s),
                "bias": torch.zeros(n_out, device=device, dtype=dtype),
            }

        ln = LayerNorm(c.n_embd, c.layer_norm_epsilon)
        e = c.n_embd
        blocks = [
            {
                "ln_1": ln.init(device=device, dtype=dtype),
                "attn": {"c_attn": linear(e, 3 * e, std), "c_proj": linear(e, e, proj_std)},
                "ln_2": ln.init(device=device, dtype=dtype),
                "mlp": {"c_fc": linear(e, c.inner, std), "c_proj": linear(c.inner, e, proj_std)},
            }
            for _ in range(c.n_layer)
        ]
        return {
            "wpe": normal((c.n_positions, e), std),
            "h": blocks,
            "ln_f": ln.init(device=device, dtype=dtype),
        }

    def block(
        self,
        params: Params,
        x: torch.Tensor,
        *,
        attention_mask: torch.Tensor | None = None,
        train: bool = False,
        key: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """One pre-LayerNorm block: ``x + attn(ln_1(x))`` then ``x + mlp(ln_2(x))``."""
        c = self.config
        eps = c.layer_norm_epsilon
        h = F.layer_norm(x, (c.n_embd,), params["ln_1"]["weight"], params["ln_1"]["bias"], eps)
        x = x + causal_self_attention(
            params["attn"],
            h,
            c.n_head,
            attention_mask=attention_mask,
            attn_pdrop=c.attn_pdrop,
            resid_pdrop=c.resid_pdrop,
            train=train,
            key=_fold(key, 0),
        )
        h = F.layer_norm(x, (c.n_embd,), params["ln_2"]["weight"], params["ln_2"]["bias"], eps)
        mlp = params["mlp"]
        h = _activation(c.activation)(F.linear(h, mlp["c_fc"]["weight"], mlp["c_fc"]["bias"]))
        h = F.linear(h, mlp["c_proj"]["weight"], mlp["c_proj"]["bias"])
        return x + dropout(h, c.resid_pdrop, train=train, key=_fold(key, 1))

    def __call__(
        self,
        params: Params,
        x: torch.Tensor,
        *,
        attention_mask: torch.Tensor | None = None,
        train: bool = False,
        key: torch.Tensor | None = None,
    ) -> torch.Tensor:
        c = self.config
        self.check_params(params)
        check_input(self, "x", x, (None, c.n_embd), params["wpe"])
        length = x.shape[-2]
        if length > c.n_positions:
            raise ValueError(
                f"CausalTransformer: {length} tokens exceed n_positions={c.n_positions}"
            )
        if attention_mask is not None and attention_mask.shape != x.shape[:-1]:
            raise ValueError(
                f"CausalTransformer: attention_mask must be [*batch, L]={tuple(x.shape[:-1])}, "
                f"got {tuple(attention_mask.shape)}"
            )
        x = x + params["wpe"][:length]
        x = dropout(x, c.embd_pdrop, train=train, key=_fold(key, 0))
        for i, p in enumerate(params["h"]):
            x = self.block(p, x, attention_mask=attention_mask, train=train, key=_fold(key, i + 1))
        ln_f = params["ln_f"]
        return F.layer_norm(x, (c.n_embd,), ln_f["weight"], ln_f["bias"], c.layer_norm_epsilon)


def _check_inputs(
    net: Module,
    like: torch.Tensor,
    state_dim: int,
    action_dim: int,
    observation: torch.Tensor,
    action: torch.Tensor,
    return_to_go: torch.Tensor,
) -> None:
    """``observation [*b, T, S]``, ``action [*b, T, A]``, ``return_to_go [*b, T, 1]`` of
    ``like``'s dtype, sharing ``[*b, T]``."""
    check_input(net, "observation", observation, (None, state_dim), like)
    check_input(net, "action", action, (None, action_dim), like)
    check_input(net, "return_to_go", return_to_go, (None, 1), like)
    if not observation.shape[:-1] == action.shape[:-1] == return_to_go.shape[:-1]:
        raise ValueError(
            f"{net_name(net)}: observation {tuple(observation.shape)}, action "
            f"{tuple(action.shape)} and return_to_go {tuple(return_to_go.shape)} must share "
            f"[*batch, T]"
        )


@dataclasses.dataclass(frozen=True)
class DecisionTransformer(Module):
    """Decision Transformer trunk (Chen et al., 2021; TorchRL's ``DecisionTransformer``).

    Tokens ``(R_t, s_t, a_t)`` for ``t = 1..T`` are embedded by ``embed_return``,
    ``embed_state``, ``embed_action`` (plus, with ``max_ep_len``, a learned per-timestep
    embedding added to all three, as the original paper), interleaved into ``3T`` tokens,
    layer-normed by ``embed_ln`` and run through a :class:`CausalTransformer` (which adds GPT-2's
    position embeddings over the ``3T`` tokens, as TorchRL does). The outputs at the state tokens
    are returned.

    Params: ``{"transformer": CausalTransformer params, "embed_return": Linear(1, E),
    "embed_state": Linear(S, E), "embed_action": Linear(A, E), "embed_ln": LN(E)}`` and
    ``"embed_timestep": [max_ep_len, E]`` when ``max_ep_len`` is set.

    Args:
        state_dim: observation size ``S``.
        action_dim: action size ``A``.
        config: a :class:`DTConfig` (or dict; default ``DTConfig()``). Needs
            ``n_positions >= 3T``.
        max_ep_len: number of timestep embeddings (``None``: none, TorchRL's model).

    Call ``(params, observation [*batch, T, S], action [*batch, T, A], return_to_go
    [*batch, T, 1], *, timesteps=None [*batch, T] int, attention_mask=None [*batch, T] bool,
    train=False) -> [*batch, T, E]``.
    """

    state_dim: int
    action_dim: int
    config: DTConfig | None = None  # None: DTConfig() (see CausalTransformer)
    max_ep_len: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "config", _as_config(self.config))

    @property
    def transformer(self) -> CausalTransformer:
        return CausalTransformer(self.config)

    @property
    def hidden_size(self) -> int:
        return self.config.n_embd

    def init(self, seed: Seed = 0, *, device=None, dtype=torch.float32) -> Params:
        gen = make_generator(seed)
        kw = {"device": device, "dtype": dtype}
        e = self.config.n_embd
        params = {
            "transformer": self.transformer.init(gen, **kw),
            # torch.nn.Linear's default init (these live outside GPT2Model in TorchRL).
            "embed_return": Linear(1, e).init(gen, **kw),
            "embed_state": Linear(self.state_dim, e).init(gen, **kw),
            "embed_action": Linear(self.action_dim, e).init(gen, **kw),
            "embed_ln": LayerNorm(e).init(**kw),
        }
        if self.max_ep_len is not None:
            params["embed_timestep"] = torch.randn(
                self.max_ep_len, e, generator=gen, dtype=torch.float64
            ).to(device=device, dtype=dtype)
        return params

    def __call__(
        self,
        params: Params,
        observation: torch.Tensor,
        action: torch.Tensor,
        return_to_go: torch.Tensor,
        *,
        timesteps: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        train: bool = False,
        key: torch.Tensor | None = None,
    ) -> torch.Tensor:
        self.check_params(params)
        like = params["embed_state"]["weight"]
        _check_inputs(
            self, like, self.state_dim, self.action_dim, observation, action, return_to_go
        )
        *batch, steps, _ = observation.shape
        e = self.config.n_embd
        state_emb = F.linear(observation, **params["embed_state"])
        action_emb = F.linear(action, **params["embed_action"])
        return_emb = F.linear(return_to_go, **params["embed_return"])
        if self.max_ep_len is not None:
            if timesteps is None or timesteps.shape != observation.shape[:-1]:
                raise ValueError(
                    f"{net_name(self)}: with max_ep_len, timesteps must be [*batch, T]="
                    f"{tuple(observation.shape[:-1])}, got "
                    f"{None if timesteps is None else tuple(timesteps.shape)}"
                )
            time_emb = params["embed_timestep"][timesteps]
            state_emb, action_emb, return_emb = (
                state_emb + time_emb,
                action_emb + time_emb,
                return_emb + time_emb,
            )
        elif timesteps is not None:
            raise ValueError(f"{net_name(self)}: timesteps given but max_ep_len is None")
        # (R_1, s_1, a_1, R_2, s_2, a_2, ...): [*batch, T, 3, E] -> [*batch, 3T, E].
        tokens = torch.stack([return_emb, state_emb, action_emb], dim=-2)
        tokens = tokens.reshape(*batch, 3 * steps, e)
        tokens = F.layer_norm(
            tokens, (e,), params["embed_ln"]["weight"], params["embed_ln"]["bias"]
        )
        token_mask = None
        if attention_mask is not None:
            if attention_mask.shape != observation.shape[:-1]:
                raise ValueError(
                    f"{net_name(self)}: attention_mask must be [*batch, T]={tuple(observation.shape[:-1])},"
                    f" got {tuple(attention_mask.shape)}"
                )
            token_mask = attention_mask.unsqueeze(-1).expand(*attention_mask.shape, 3)
            token_mask = token_mask.reshape(*batch, 3 * steps)
        x = self.transformer(
            params["transformer"], tokens, attention_mask=token_mask, train=train, key=key
        )
        # Token 3t + 1 is s_t: it has seen R_{<=t}, s_{<=t}, a_{<t}.
        return x.reshape(*batch, steps, 3, e)[..., 1, :]


_DT_ACTOR_CONFIG = DTConfig(n_embd=512, n_layer=4, n_head=4, n_inner=2048)


def _orthogonal_linear(n_in: int, n_out: int, gen: torch.Generator, device, dtype) -> Params:
    # TorchRL's DT heads: orthogonal weights (gain 1), zero bias.
    return Linear(n_in, n_out, init_method="orthogonal").init(gen, device=device, dtype=dtype)


@dataclasses.dataclass(frozen=True)
class DTActor(Module):
    """Decision Transformer actor: a linear head on the state tokens (TorchRL's ``DTActor``).

    Params: ``{"transformer": DecisionTransformer params, "action_layer": Linear(E, A)}``
    (``action_layer`` orthogonal, zero bias).

    Args:
        state_dim, action_dim: sizes.
        transformer_config: default TorchRL's ``DTActor.default_config()`` (``n_embd=512``,
            ``n_inner=2048``, 4 layers, 4 heads).
        max_ep_len: see :class:`DecisionTransformer`.

    Shapes:
        ``(observation, action, return_to_go) -> action [*batch, T, A]`` (the action predicted
        at each step; TorchRL squashes it with a ``TanhDelta``).
    """

    state_dim: int
    action_dim: int
    transformer_config: DTConfig | None = None  # None: default_config() (see CausalTransformer)
    max_ep_len: int | None = None

    def __post_init__(self) -> None:
        config = _DT_ACTOR_CONFIG if self.transformer_config is None else self.transformer_config
        object.__setattr__(self, "transformer_config", _as_config(config))

    @staticmethod
    def default_config() -> DTConfig:
        return _DT_ACTOR_CONFIG

    @property
    def transformer(self) -> DecisionTransformer:
        return DecisionTransformer(
            self.state_dim, self.action_dim, self.transformer_config, self.max_ep_len
        )

    def init(self, seed: Seed = 0, *, device=None, dtype=torch.float32) -> Params:
        gen = make_generator(seed)
        e = self.transformer_config.n_embd
        return {
            "transformer": self.transformer.init(gen, device=device, dtype=dtype),
            "action_layer": _orthogonal_linear(e, self.action_dim, gen, device, dtype),
        }

    def __call__(
        self,
        params: Params,
        observation: torch.Tensor,
        action: torch.Tensor,
        return_to_go: torch.Tensor,
        **kwargs: Any,
    ) -> torch.Tensor:
        self.check_params(params)
        hidden = self.transformer(
            params["transformer"], observation, action, return_to_go, **kwargs
        )
        return F.linear(hidden, **params["action_layer"])


def bounded_log_std(
    x: torch.Tensor, log_std_min: float = -5.0, log_std_max: float = 2.0
) -> torch.Tensor:
    """``log_std_min + (log_std_max - log_std_min) * (tanh(x) + 1) / 2`` (Online DT's)."""
    return log_std_min + 0.5 * (log_std_max - log_std_min) * (torch.tanh(x) + 1.0)


@dataclasses.dataclass(frozen=True)
class OnlineDTActor(Module):
    """Online Decision Transformer actor (Zheng et al., 2022; TorchRL's ``OnlineDTActor``).

    Two linear heads on the state tokens give ``mu`` and ``log_std``; ``log_std`` is squashed
    into ``[log_std_min, log_std_max]`` by :func:`bounded_log_std` and ``std = exp(log_std)``.
    Feed ``(loc, scale)`` to a :class:`funcrl.distributions.TanhNormal` (TorchRL's online DT
    script does).

    Params: ``{"transformer": ..., "action_layer_mean": Linear(E, A), "action_layer_logstd":
    Linear(E, A)}`` (orthogonal, zero bias).

    Args:
        state_dim, action_dim: sizes.
        transformer_config: default as :class:`DTActor`.
        log_std_min, log_std_max: bounds of the log-std. Defaults -5 and 2.
        max_ep_len: see :class:`DecisionTransformer`.

    Shapes:
        ``(observation, action, return_to_go) -> (mu, std)`` each ``[*batch, T, A]``.
    """

    state_dim: int
    action_dim: int
    transformer_config: DTConfig | None = None  # None: DTActor.default_config()
    log_std_min: float = -5.0
    log_std_max: float = 2.0
    max_ep_len: int | None = None

    def __post_init__(self) -> None:
        config = _DT_ACTOR_CONFIG if self.transformer_config is None else self.transformer_config
        object.__setattr__(self, "transformer_config", _as_config(config))
        if not self.log_std_min < self.log_std_max:
            raise ValueError(
                f"OnlineDTActor: need log_std_min < log_std_max, got {self.log_std_min} and "
                f"{self.log_std_max}"
            )

    @staticmethod
    def default_config() -> DTConfig:
        return _DT_ACTOR_CONFIG

    @property
    def transformer(self) -> DecisionTransformer:
        return DecisionTransformer(
            self.state_dim, self.action_dim, self.transformer_config, self.max_ep_len
        )

    def init(self, seed: Seed = 0, *, device=None, dtype=torch.float32) -> Params:
        gen = make_generator(seed)
        e = self.transformer_config.n_embd
        return {
            "transformer": self.transformer.init(gen, device=device, dtype=dtype),
            "action_layer_mean": _orthogonal_linear(e, self.action_dim, gen, device, dtype),
            "action_layer_logstd": _orthogonal_linear(e, self.action_dim, gen, device, dtype),
        }

    def __call__(
        self,
        params: Params,
        observation: torch.Tensor,
        action: torch.Tensor,
        return_to_go: torch.Tensor,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        self.check_params(params)
        hidden = self.transformer(
            params["transformer"], observation, action, return_to_go, **kwargs
        )
        mu = F.linear(hidden, **params["action_layer_mean"])
        log_std = bounded_log_std(
            F.linear(hidden, **params["action_layer_logstd"]), self.log_std_min, self.log_std_max
        )
        return mu, log_std.exp()
