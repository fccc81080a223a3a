"""Dreamer's networks (Hafner et al., 2019/2020) as static config + pure functions.

TorchRL's ``ObsEncoder``, ``ObsDecoder``, ``RSSMPrior``, ``RSSMPosterior``, ``DreamerActor``,
and ``RSSMRollout`` (``WorldModelWrapper`` is :class:`funcrl.modules.planners.WorldModelWrapper`), with the same sizes, defaults and parameter names (so
``funcrl.nn.from_module(torchrl_net)`` gives their params)::

    prior = RSSMPrior(action_dim=6)
    posterior = RSSMPosterior()
    rollout = RSSMRollout(prior, posterior)
    params = rollout.init(0)                       # {"prior": ..., "posterior": ...}
    out = rollout(params, rec)                     # rec: [*batch, T] with "state", "belief",
                                                   # "action", ("next", "encoded_latents")

The recurrent state-space model (RSSM) keeps a deterministic *belief* ``h_t`` (a GRU state) and a
stochastic *state* ``s_t``::

    h_{t+1} = GRU(ELU(W [s_t, a_t]), h_t)                      (deterministic)
    p(s_{t+1} | h_{t+1})     = N(mu_p, sigma_p)                (prior)
    q(s_{t+1} | h_{t+1}, e)  = N(mu_q, sigma_q)                (posterior, e: encoded observation)

with ``sigma = max(softplus(x), scale_lb)`` (TorchRL's ``NormalParamExtractor(scale_mapping=
"softplus", scale_lb=0.1)``; the paper adds ``min_std`` instead of clamping).

Sampling (``noise=None``) draws from the global torch RNG (``torch.randn_like``); pass ``noise``
(standard-normal draws) to make a call deterministic. Under ``torch.func.vmap`` use
``randomness="different"``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
import torch.nn.functional as F

from funcrl.distributions.mappings import NormalParamExtractor
from funcrl.nn.conv import ConvNet
from funcrl.nn.core import (
    MLP,
    Activation,
    Module,
    Params,
    Seed,
    _uniform,
    check_input,
    make_generator,
)
from funcrl.nn.rnn import GRUCell, gru_cell
from funcrl.record import NestedKey, Record

__all__ = [
    "ObsEncoder",
    "ObsDecoder",
    "RSSMPrior",
    "RSSMPosterior",
    "RSSMRollout",
    "DreamerActor",
    "gaussian_sample",
]


def gaussian_sample(
    mean: torch.Tensor, std: torch.Tensor, noise: torch.Tensor | None = None
) -> torch.Tensor:
    """``mean + std * eps`` with ``eps = noise`` or ``randn_like(std)`` (global torch RNG).

    The reparameterised sample of ``N(mean, std)``: gradients flow into ``mean`` and ``std``.
    """
    if noise is None:
        noise = torch.randn_like(std)
    elif noise.shape != std.shape:
        raise ValueError(
            f"gaussian_sample: noise must have the shape of std {tuple(std.shape)}, got "
            f"{tuple(noise.shape)}"
        )
    return mean + noise * std


# ------------------------------------------------------------------------------ ObsEncoder


@dataclasses.dataclass(frozen=True)
class ObsEncoder(Module):
    """Pixel encoder: ``num_layers`` convs (4x4, stride 2, ReLU), channels doubling, flattened.

    TorchRL's ``ObsEncoder`` (World Models / Dreamer). With the defaults a ``[3, 64, 64]``
    image gives a 1024-dim embedding (``256 x 2 x 2``).

    Params: ``{"encoder": {"layers": [{"weight": [out, in, 4, 4], "bias": [out]}, ...]}}``
    (``from_module`` of TorchRL's module).

    Args:
        channels: channels of the first conv (doubled at each layer). Default 32.
        num_layers: number of convs. Default 4.
        in_channels: image channels (TorchRL infers them lazily; here they are static). Default 3.

    Shapes:
        ``observation [*batch, C, H, W] -> [*batch, channels * 2**(num_layers-1) * H' * W']``.
    """

    channels: int = 32
    num_layers: int = 4
    in_channels: int = 3

    def __post_init__(self) -> None:
        if self.num_layers < 1:
            raise ValueError(f"ObsEncoder: num_layers must be >= 1, got {self.num_layers}")

    @property
    def convnet(self) -> ConvNet:
        return ConvNet(
            in_features=self.in_channels,
            num_cells=tuple(self.channels * 2**i for i in range(self.num_layers)),
            kernel_sizes=4,
            strides=2,
            activation="relu",
            aggregator="squash",
        )

    def output_features(self, height: int = 64, width: int = 64) -> int:
        """Embedding size for ``height x width`` images."""
        return self.convnet.output_features((height, width))

    def init(self, seed: Seed = 0, *, device=None, dtype=torch.float32) -> Params:
        return {"encoder": self.convnet.init(seed, device=device, dtype=dtype)}

    def __call__(self, params: Params, observation: torch.Tensor) -> torch.Tensor:
        self.check_params(params)
        like = params["encoder"]["layers"][0]["weight"]
        check_input(self, "observation", observation, (self.in_channels, None, None), like)
        return self.convnet(params["encoder"], observation)


# ------------------------------------------------------------------------------ ObsDecoder


@dataclasses.dataclass(frozen=True)
class ObsDecoder(Module):
    """Pixel decoder: ``[state, belief] -> Linear -> ReLU -> transposed convs -> image``.

    TorchRL's ``ObsDecoder``: the latent (``channels * 32`` features) is viewed as a ``1 x 1``
    image and upsampled by ``num_layers`` stride-2 transposed convs with ReLU in between (none
    after the last). Layer ``i < num_layers - 1`` outputs ``channels * 2**(num_layers - 2 - i)``
    channels, the last ``out_channels``. With the defaults the output is ``[3, 64, 64]``.

    Params: ``{"state_to_latent": {"layers": [linear]}, "decoder": {"layers": [{"weight":
    [in, out, k, k], "bias": [out]}, ...]}}`` (``torch.nn.ConvTranspose2d``'s weight layout).

    Args:
        channels: channels before the last layer. Default 32.
        num_layers: number of transposed convs. Default 4.
        kernel_sizes: per layer (int or sequence); default ``(5, 5, 6, 6)`` when
            ``num_layers == 4``, else 5 for every layer (TorchRL's).
        latent_dim: ``state_dim + rnn_hidden_dim`` (TorchRL infers it lazily). Default 230.
        out_channels: image channels. Default 3.

    Shapes:
        ``(state [*batch, S], belief [*batch, B]) -> [*batch, out_channels, H, W]``.
    """

    channels: int = 32
    num_layers: int = 4
    kernel_sizes: int | tuple[int, ...] | None = None
    latent_dim: int = 230
    out_channels: int = 3

    def __post_init__(self) -> None:
        if self.num_layers < 1:
            raise ValueError(f"ObsDecoder: num_layers must be >= 1, got {self.num_layers}")
        ks = self.kernel_sizes
        if ks is None:
            ks = (5, 5, 6, 6) if self.num_layers == 4 else 5
        ks = (ks,) * self.num_layers if isinstance(ks, int) else tuple(ks)
        if len(ks) != self.num_layers:
            raise ValueError(
                f"ObsDecoder: kernel_sizes has {len(ks)} entries, expected num_layers="
                f"{self.num_layers}"
            )
        object.__setattr__(self, "kernel_sizes", ks)

    @property
    def linear_out(self) -> int:
        # TorchRL's "channels * 8 * 2 * 2": the latent seen as a 1x1 image with that many channels.
        return self.channels * 8 * 2 * 2

    @property
    def layer_channels(self) -> tuple[tuple[int, int], ...]:
        """``(in, out)`` channels of each transposed conv."""
        n = self.num_layers
        outs = [self.channels * 2 ** (n - 2 - i) for i in range(n - 1)] + [self.out_channels]
        ins = [self.linear_out] + outs[:-1]
        return tuple(zip(ins, outs))

    @property
    def state_to_latent(self) -> MLP:
        return MLP(
            self.latent_dim, self.linear_out, depth=0, activation="relu", activate_last_layer=True
        )

    def output_size(self) -> int:
        """Side of the (square) decoded image: ``s -> 2 (s - 1) + k`` per layer from ``s = 1``."""
        s = 1
        for k in self.kernel_sizes:
            s = 2 * (s - 1) + k
        return s

    def init(self, seed: Seed = 0, *, device=None, dtype=torch.float32) -> Params:
        gen = make_generator(seed)
        latent = self.state_to_latent.init(gen, device=device, dtype=dtype)
        layers = []
        for (c_in, c_out), k in zip(self.layer_channels, self.kernel_sizes):
            # torch.nn.ConvTranspose2d's default init: fan_in is weight.size(1) * k * k.
            bound = 1.0 / math.sqrt(c_out * k * k)
            layers.append(
                {
                    "weight": _uniform((c_in, c_out, k, k), bound, gen, device, dtype),
                    "bias": _uniform((c_out,), bound, gen, device, dtype),
                }
            )
        return {"state_to_latent": latent, "decoder": {"layers": layers}}

    def __call__(self, params: Params, state: torch.Tensor, belief: torch.Tensor) -> torch.Tensor:
        self.check_params(params)
        like = params["state_to_latent"]["layers"][0]["weight"]
        check_input(self, "state", state, None, like)
        check_input(self, "belief", belief, None, like)
        latent_in = torch.cat([state, belief], dim=-1)
        check_input(self, "cat([state, belief])", latent_in, self.latent_dim, like)
        latent = self.state_to_latent(params["state_to_latent"], latent_in)
        batch = latent.shape[:-1]
        x = latent.reshape(-1, latent.shape[-1], 1, 1)
        layers = params["decoder"]["layers"]
        for i, p in enumerate(layers):
            x = F.conv_transpose2d(x, p["weight"], p.get("bias"), stride=2)
            if i < len(layers) - 1:
                x = torch.relu(x)
        return x.reshape(*batch, *x.shape[1:])


# ------------------------------------------------------------------------------ RSSM


@dataclasses.dataclass(frozen=True)
class RSSMPrior(Module):
    """The RSSM prior: ``(s_t, h_t, a_t) -> (mu_p, sigma_p, s_{t+1}, h_{t+1})``.

    ``h_{t+1} = GRUCell(ELU(Linear([s_t, a_t])), h_t)``; ``(mu_p, sigma_p) =
    NormalParamExtractor("softplus", scale_lb)(Linear(ELU(Linear(h_{t+1}))))``; ``s_{t+1} =
    mu_p + sigma_p * noise``.

    Params (TorchRL's names): ``{"rnn": GRUCell params, "action_state_projector": {"layers":
    [linear]}, "rnn_to_prior_projector": {"layers": [linear, linear]}}``.

    Args:
        action_dim: action size (TorchRL reads it from ``action_spec``).
        hidden_dim: width of the projections, input size of the GRU. Default 200.
        rnn_hidden_dim: belief size. Default 200.
        state_dim: stochastic state size. Default 30.
        scale_lb: lower bound of ``sigma``. Default 0.1.

    Shapes:
        ``state [*batch, S]``, ``belief [*batch, B]``, ``action [*batch, A]`` -> four tensors
        ``[*batch, S]``, ``[*batch, S]``, ``[*batch, S]``, ``[*batch, B]``.
    """

    action_dim: int
    hidden_dim: int = 200
    rnn_hidden_dim: int = 200
    state_dim: int = 30
    scale_lb: float = 0.1

    @property
    def rnn(self) -> GRUCell:
        return GRUCell(self.hidden_dim, self.rnn_hidden_dim)

    @property
    def action_state_projector(self) -> MLP:
        return MLP(
            self.state_dim + self.action_dim,
            self.hidden_dim,
            depth=0,
            activation="elu",
            activate_last_layer=True,
        )

    @property
    def rnn_to_prior_projector(self) -> MLP:
        return MLP(
            self.rnn_hidden_dim, 2 * self.state_dim, num_cells=(self.hidden_dim,), activation="elu"
        )

    @property
    def param_extractor(self) -> NormalParamExtractor:
        return NormalParamExtractor(scale_mapping="softplus", scale_lb=self.scale_lb)

    def init(self, seed: Seed = 0, *, device=None, dtype=torch.float32) -> Params:
        gen = make_generator(seed)
        kw = {"device": device, "dtype": dtype}
        return {
            "rnn": self.rnn.init(gen, **kw),
            "action_state_projector": self.action_state_projector.init(gen, **kw),
            "rnn_to_prior_projector": self.rnn_to_prior_projector.init(gen, **kw),
        }

    def belief_step(
        self, params: Params, state: torch.Tensor, belief: torch.Tensor, action: torch.Tensor
    ) -> torch.Tensor:
        """The deterministic transition ``h_{t+1} = GRU(ELU(W [s_t, a_t]), h_t)``."""
        self.check_params(params)
        like = params["rnn"]["weight_ih"]
        check_input(self, "state", state, self.state_dim, like)
        check_input(self, "action", action, self.action_dim, like)
        check_input(self, "belief", belief, self.rnn_hidden_dim, like)
        x = self.action_state_projector(
            params["action_state_projector"], torch.cat([state, action], dim=-1)
        )
        return gru_cell(params["rnn"], x, belief)

    def distribution(
        self, params: Params, state: torch.Tensor, belief: torch.Tensor, action: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(mu_p, sigma_p, h_{t+1})`` without sampling."""
        belief = self.belief_step(params, state, belief, action)
        out = self.rnn_to_prior_projector(params["rnn_to_prior_projector"], belief)
        mean, std = self.param_extractor(out)
        return mean, std, belief

    def __call__(
        self,
        params: Params,
        state: torch.Tensor,
        belief: torch.Tensor,
        action: torch.Tensor,
        noise: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns ``(prior_mean, prior_std, state, belief)``; samples when ``noise`` is None."""
        mean, std, belief = self.distribution(params, state, belief, action)
        return mean, std, gaussian_sample(mean, std, noise), belief


@dataclasses.dataclass(frozen=True)
class RSSMPosterior(Module):
    """The RSSM posterior: ``(h_{t+1}, e_{t+1}) -> (mu_q, sigma_q, s_{t+1})``.

    ``(mu_q, sigma_q) = NormalParamExtractor("softplus", scale_lb)(Linear(ELU(Linear([h, e]))))``,
    ``s = mu_q + sigma_q * noise``.

    Params: ``{"obs_rnn_to_post_projector": {"layers": [linear, linear]}}`` (TorchRL's).

    Args:
        hidden_dim: hidden width. Default 200.
        state_dim: stochastic state size. Default 30.
        scale_lb: lower bound of ``sigma``. Default 0.1.
        rnn_hidden_dim: belief size. Default 200.
        obs_embed_dim: encoded observation size (``ObsEncoder().output_features()``). Default
            1024.

    Shapes:
        ``belief [*batch, B]``, ``obs_embedding [*batch, E]`` -> three ``[*batch, S]`` tensors.
    """

    hidden_dim: int = 200
    state_dim: int = 30
    scale_lb: float = 0.1
    rnn_hidden_dim: int = 200
    obs_embed_dim: int = 1024

    @property
    def obs_rnn_to_post_projector(self) -> MLP:
        return MLP(
            self.rnn_hidden_dim + self.obs_embed_dim,
            2 * self.state_dim,
            num_cells=(self.hidden_dim,),
            activation="elu",
        )

    @property
    def param_extractor(self) -> NormalParamExtractor:
        return NormalParamExtractor(scale_mapping="softplus", scale_lb=self.scale_lb)

    def init(self, seed: Seed = 0, *, device=None, dtype=torch.float32) -> Params:
        net = self.obs_rnn_to_post_projector
        return {"obs_rnn_to_post_projector": net.init(seed, device=device, dtype=dtype)}

    def distribution(
        self, params: Params, belief: torch.Tensor, obs_embedding: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mu_q, sigma_q)`` without sampling."""
        self.check_params(params)
        like = params["obs_rnn_to_post_projector"]["layers"][0]["weight"]
        check_input(self, "belief", belief, self.rnn_hidden_dim, like)
        check_input(self, "obs_embedding", obs_embedding, self.obs_embed_dim, like)
        out = self.obs_rnn_to_post_projector(
            params["obs_rnn_to_post_projector"], torch.cat([belief, obs_embedding], dim=-1)
        )
        return self.param_extractor(out)

    def __call__(
        self,
        params: Params,
        belief: torch.Tensor,
        obs_embedding: torch.Tensor,
        noise: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns ``(posterior_mean, posterior_std, state)``; samples when ``noise`` is None."""
        mean, std = self.distribution(params, belief, obs_embedding)
        return mean, std, gaussian_sample(mean, std, noise)


def _key(k: Any) -> Any:
    return tuple(k) if isinstance(k, list) else k


def _read(record: Record, key: NestedKey, owner: str) -> torch.Tensor:
    if not isinstance(record, Record):
        raise TypeError(f"{owner}: expected a funcrl.Record, got {type(record).__name__}")
    if key not in record:
        keys = sorted(map(str, record.keys(include_nested=True)))
        raise KeyError(f"{owner}: key {key!r} not found in the record; available keys: {keys}")
    return record[key]


@dataclasses.dataclass(frozen=True)
class RSSMRollout(Module):
    """Runs prior then posterior over a ``[*batch, T]`` record (TorchRL's ``RSSMRollout``).

    A pure scan over the last batch dim (time): with ``s_0 = record["state"][..., 0, :]`` and
    ``h_0 = record["belief"][..., 0, :]``, for each ``t``::

        mu_p, sigma_p, h_{t+1} = prior(s_t, h_t, a_t)
        mu_q, sigma_q, s_{t+1} = posterior(h_{t+1}, e_{t+1})        # sampled

    and the carried ``s_{t+1}, h_{t+1}`` feed step ``t + 1``. Only the first step's
    ``"state"``/``"belief"`` are read; as in TorchRL, the returned record's ``"state"`` /
    ``"belief"`` hold the carried values (the input of each step). The prior's own state sample
    is not drawn (TorchRL discards it).

    Keys (TorchRL's Dreamer keys): reads ``"state"``, ``"belief"``, ``"action"``,
    ``("next", "encoded_latents")``; writes ``("next", "prior_mean")``, ``("next",
    "prior_std")``, ``("next", "belief")``, ``("next", "posterior_mean")``, ``("next",
    "posterior_std")``, ``("next", "state")`` (each ``[*batch, T, S or B]``).

    Params: ``{"prior": RSSMPrior params, "posterior": RSSMPosterior params}``.

    Call ``(params, record, *, noise=None)``: ``noise [*batch, T, S]`` replaces the posterior's
    standard-normal draws (global torch RNG otherwise).
    """

    prior: RSSMPrior
    posterior: RSSMPosterior
    state_key: NestedKey = "state"
    belief_key: NestedKey = "belief"
    action_key: NestedKey = "action"
    encoded_key: NestedKey = ("next", "encoded_latents")

    def __post_init__(self) -> None:
        for f in ("state_key", "belief_key", "action_key", "encoded_key"):
            object.__setattr__(self, f, _key(getattr(self, f)))
        if self.prior.rnn_hidden_dim != self.posterior.rnn_hidden_dim:
            raise ValueError(
                f"RSSMRollout: prior.rnn_hidden_dim={self.prior.rnn_hidden_dim} != "
                f"posterior.rnn_hidden_dim={self.posterior.rnn_hidden_dim}"
            )
        if self.prior.state_dim != self.posterior.state_dim:
            raise ValueError(
                f"RSSMRollout: prior.state_dim={self.prior.state_dim} != "
                f"posterior.state_dim={self.posterior.state_dim}"
            )

    @property
    def in_keys(self) -> tuple[NestedKey, ...]:
        return (self.state_key, self.belief_key, self.action_key, self.encoded_key)

    @property
    def out_keys(self) -> tuple[NestedKey, ...]:
        return tuple(("next", k) for k in _OUT_NAMES)

    def init(self, seed: Seed = 0, *, device=None, dtype=torch.float32) -> Params:
        gen = make_generator(seed)
        return {
            "prior": self.prior.init(gen, device=device, dtype=dtype),
            "posterior": self.posterior.init(gen, device=device, dtype=dtype),
        }

    def scan(
        self,
        params: Params,
        state: torch.Tensor,
        belief: torch.Tensor,
        action: torch.Tensor,
        encoded: torch.Tensor,
        noise: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """The rollout on tensors.

        Args:
            state: ``s_0`` ``[*batch, S]``; belief: ``h_0`` ``[*batch, B]``.
            action: ``[*batch, T, A]``; encoded: ``[*batch, T, E]``; noise: ``[*batch, T, S]``.

        Returns:
            ``{"prior_mean", "prior_std", "belief", "posterior_mean", "posterior_std", "state"}``
            each ``[*batch, T, .]`` (the ``("next", ...)`` values), plus ``"state_in"`` and
            ``"belief_in"``, the carried inputs of each step.
        """
        self.check_params(params)
        if action.ndim < 2 or encoded.shape[:-1] != action.shape[:-1]:
            raise ValueError(
                f"RSSMRollout: action [*batch, T, A] and encoded [*batch, T, E] must share "
                f"[*batch, T], got {tuple(action.shape)} and {tuple(encoded.shape)}"
            )
        if noise is not None and noise.shape != (*action.shape[:-1], self.prior.state_dim):
            raise ValueError(
                f"RSSMRollout: noise must be [*batch, T, S]="
                f"{(*action.shape[:-1], self.prior.state_dim)}, got {tuple(noise.shape)}"
            )
        outs: dict[str, list[torch.Tensor]] = {
            k: [] for k in (*_OUT_NAMES, "state_in", "belief_in")
        }
        for t in range(action.shape[-2]):
            outs["state_in"].append(state)
            outs["belief_in"].append(belief)
            p_mean, p_std, belief = self.prior.distribution(
                params["prior"], state, belief, action[..., t, :]
            )
            q_mean, q_std = self.posterior.distribution(
                params["posterior"], belief, encoded[..., t, :]
            )
            state = gaussian_sample(q_mean, q_std, None if noise is None else noise[..., t, :])
            for k, v in zip(_OUT_NAMES, (p_mean, p_std, belief, q_mean, q_std, state)):
                outs[k].append(v)
        return {k: torch.stack(v, dim=-2) for k, v in outs.items()}

    def __call__(
        self, params: Params, record: Record, *, noise: torch.Tensor | None = None, **options: Any
    ) -> Record:
        owner = "RSSMRollout"
        if record.batch_ndim < 1:
            raise ValueError(f"{owner}: the record needs a time batch dim ([*batch, T])")
        state = _read(record, self.state_key, owner)[..., 0, :]
        belief = _read(record, self.belief_key, owner)[..., 0, :]
        action = _read(record, self.action_key, owner)
        encoded = _read(record, self.encoded_key, owner)
        out = self.scan(params, state, belief, action, encoded, noise)
        record = record.update({self.state_key: out["state_in"], self.belief_key: out["belief_in"]})
        return record.update({("next", k): out[k] for k in _OUT_NAMES})


_OUT_NAMES = ("prior_mean", "prior_std", "belief", "posterior_mean", "posterior_std", "state")


# ------------------------------------------------------------------------------ DreamerActor


@dataclasses.dataclass(frozen=True)
class DreamerActor(Module):
    """Dreamer's actor: ``MLP([state, belief]) -> (loc, scale)`` (TorchRL's ``DreamerActor``).

    ``scale = max(softplus(x + inv_softplus(std_bias - std_min_val)) + std_min_val, 1e-4)``
    (``NormalParamExtractor("biased_softplus_{std_bias}_{std_min_val}")``). Dreamer feeds
    ``(loc, scale)`` to a ``TanhNormal``.

    Params: ``{"backbone": MLP params}``.

    Args:
        out_features: action size.
        in_features: ``state_dim + rnn_hidden_dim`` (TorchRL infers it lazily). Default 230.
        depth: hidden layers. Default 4.
        num_cells: hidden width. Default 200.
        activation: default ``"elu"``.
        std_bias: ``scale`` at ``x = 0``. Default 5.0.
        std_min_val: infimum of the softplus map. Default 1e-4.

    Shapes:
        ``(state [*batch, S], belief [*batch, B]) -> (loc, scale)`` each ``[*batch, A]``.
    """

    out_features: int
    in_features: int = 230
    depth: int = 4
    num_cells: int = 200
    activation: Activation = "elu"
    std_bias: float = 5.0
    std_min_val: float = 1e-4

    @property
    def backbone(self) -> MLP:
        return MLP(
            self.in_features,
            2 * self.out_features,
            depth=self.depth,
            num_cells=self.num_cells,
            activation=self.activation,
        )

    @property
    def param_extractor(self) -> NormalParamExtractor:
        return NormalParamExtractor(
            scale_mapping=f"biased_softplus_{self.std_bias}_{self.std_min_val}"
        )

    def init(self, seed: Seed = 0, *, device=None, dtype=torch.float32) -> Params:
        return {"backbone": self.backbone.init(seed, device=device, dtype=dtype)}

    def __call__(
        self, params: Params, state: torch.Tensor, belief: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        self.check_params(params)
        like = params["backbone"]["layers"][0]["weight"]
        check_input(self, "state", state, None, like)
        check_input(self, "belief", belief, None, like)
        latent = torch.cat([state, belief], dim=-1)
        check_input(self, "cat([state, belief])", latent, self.in_features, like)
        x = self.backbone(params["backbone"], latent)
        return self.param_extractor(x)
