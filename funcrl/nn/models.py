"""TorchRL's ready-made nets (DDPG actors/critics, dueling and distributional DQN heads).

Same sub-net names, defaults and inits as ``torchrl.modules.models``; parameter trees are keyed
like the TorchRL modules' children (``"mlp"``, ``"convnet"``, ``"features"``, ...), so
``funcrl.nn.from_module(torchrl_net)`` loads straight into them. funcrl nets need their input
sizes up front (no lazy layers): ``in_features`` for MLP nets, ``in_shape = (C, H, W)`` for CNNs.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.nn.functional as F

from funcrl.nn.conv import ConvNet
from funcrl.nn.core import (
    MLP,
    Activation,
    Module,
    Params,
    Seed,
    check_input,
    make_generator,
)

__all__ = [
    "DdpgMlpActor",
    "DdpgMlpQNet",
    "DdpgCnnActor",
    "DdpgCnnQNet",
    "DuelingMlpDQNet",
    "DuelingCnnDQNet",
    "DistributionalDQNnet",
    "ddpg_init_last_layer",
    "dueling_combine",
    "distributional_log_softmax",
    "StateIndependentScale",
]


def ddpg_init_last_layer(mlp_params: Params, scale: float, gen: torch.Generator) -> Params:
    """The DDPG paper's last-layer init, ``U(-scale/2, scale/2)`` for its weight and bias.

    Returns a new MLP params tree (``{"layers": [...]}``) with the last layer redrawn.
    """
    last = mlp_params["layers"][-1]
    new_last = {
        k: ((torch.rand(v.shape, generator=gen, dtype=torch.float64) * scale - scale / 2).to(v))
        for k, v in last.items()
    }
    return {**mlp_params, "layers": [*mlp_params["layers"][:-1], new_last]}


def dueling_combine(value: torch.Tensor, advantage: torch.Tensor) -> torch.Tensor:
    """``Q = V + A - mean_a A`` (Wang et al., 2016, eq. 9). ``value: [*b, 1]``, ``advantage:
    [*b, n]`` -> ``[*b, n]``."""
    return value + advantage - advantage.mean(dim=-1, keepdim=True)


def distributional_log_softmax(logits: torch.Tensor) -> torch.Tensor:
    """Log-probabilities over atoms, the ``-2`` dim of ``[*batch, atoms, actions]`` (TorchRL's
    ``DistributionalDQNnet``)."""
    if logits.dim() < 2:
        raise ValueError(
            f"DistributionalDQNnet: logits must be [*batch, atoms, actions], got shape "
            f"{tuple(logits.shape)}"
        )
    return F.log_softmax(logits, dim=-2)


def _zero_biases(params: Any) -> Any:
    if isinstance(params, dict):
        return {
            k: torch.zeros_like(v) if k == "bias" else _zero_biases(v) for k, v in params.items()
        }
    if isinstance(params, list):
        return [_zero_biases(v) for v in params]
    return params


@dataclasses.dataclass(frozen=True)
class DdpgMlpActor(Module):
    """DDPG's MLP actor: ``MLP(in_features, action_dim, num_cells=(400, 300), activation="elu")``
    with the last layer drawn from ``U(-3e-3, 3e-3)``.

    Params: ``{"mlp": MLP params}``. Shapes: ``[*b, in_features] -> [*b, action_dim]``.
    """

    in_features: int
    action_dim: int
    num_cells: tuple[int, ...] = (400, 300)
    activation: Activation = "elu"
    last_layer_scale: float = 6e-3

    @property
    def mlp(self) -> MLP:
        return MLP(
            self.in_features,
            self.action_dim,
            num_cells=tuple(self.num_cells),
            activation=self.activation,
        )

    def init(self, seed: Seed = 0, *, device=None, dtype=torch.float32) -> Params:
        gen = make_generator(seed)
        mlp = self.mlp.init(gen, device=device, dtype=dtype)
        return {"mlp": ddpg_init_last_layer(mlp, self.last_layer_scale, gen)}

    def __call__(self, params: Params, observation: torch.Tensor) -> torch.Tensor:
        self.check_params(params)
        return self.mlp(params["mlp"], observation)


@dataclasses.dataclass(frozen=True)
class DdpgMlpQNet(Module):
    """DDPG's MLP critic: ``mlp1`` embeds the observation (one ELU layer of 400), ``mlp2`` maps
    ``[embedding, action]`` through 300 units to a scalar (last layer ``U(-3e-3, 3e-3)``).

    Params: ``{"mlp1": ..., "mlp2": ...}``. Shapes: ``([*b, obs], [*b, act]) -> [*b, 1]``.
    """

    in_features: int
    action_dim: int
    num_cells_1: int = 400
    num_cells_2: tuple[int, ...] = (300,)
    activation: Activation = "elu"
    last_layer_scale: float = 6e-3

    @property
    def mlp1(self) -> MLP:
        return MLP(
            self.in_features,
            self.num_cells_1,
            num_cells=(),
            activation=self.activation,
            activate_last_layer=True,
        )

    @property
    def mlp2(self) -> MLP:
        return MLP(
            self.num_cells_1 + self.action_dim,
            1,
            num_cells=tuple(self.num_cells_2),
            activation=self.activation,
        )

    def init(self, seed: Seed = 0, *, device=None, dtype=torch.float32) -> Params:
        gen = make_generator(seed)
        mlp1 = self.mlp1.init(gen, device=device, dtype=dtype)
        mlp2 = self.mlp2.init(gen, device=device, dtype=dtype)
        return {"mlp1": mlp1, "mlp2": ddpg_init_last_layer(mlp2, self.last_layer_scale, gen)}

    def __call__(
        self, params: Params, observation: torch.Tensor, action: torch.Tensor
    ) -> torch.Tensor:
        self.check_params(params)
        check_input(self, "action", action, self.action_dim, params["mlp2"]["layers"][0]["weight"])
        hidden = self.mlp1(params["mlp1"], observation)
        return self.mlp2(params["mlp2"], torch.cat([hidden, action], -1))


def _ddpg_convnet(in_shape, num_cells, activation, use_avg_pooling) -> ConvNet:
    return ConvNet(
        in_shape[0],
        num_cells=tuple(num_cells),
        kernel_sizes=(8, 4, 3),
        strides=(4, 2, 1),
        paddings=(0, 0, 1),
        activation=activation,
        aggregator="avg_pool" if use_avg_pooling else "squash",
        squeeze_output=use_avg_pooling,
    )


@dataclasses.dataclass(frozen=True)
class DdpgCnnActor(Module):
    """DDPG's CNN actor: a ConvNet (32-64-64 channels, kernels 8-4-3, strides 4-2-1, paddings
    0-0-1, ELU, flattened) then an MLP (2 x 200, ELU; last layer ``U(-3e-4, 3e-4)``).

    Params: ``{"convnet": ..., "mlp": ...}``.
    Shapes: ``[*b, C, H, W] -> (action [*b, action_dim], hidden [*b, F])``.
    """

    in_shape: tuple[int, int, int]
    action_dim: int
    conv_num_cells: tuple[int, ...] = (32, 64, 64)
    mlp_num_cells: tuple[int, ...] = (200, 200)
    activation: Activation = "elu"
    use_avg_pooling: bool = False
    last_layer_scale: float = 6e-4

    def __post_init__(self) -> None:
        object.__setattr__(self, "in_shape", tuple(self.in_shape))

    @property
    def convnet(self) -> ConvNet:
        return _ddpg_convnet(
            self.in_shape, self.conv_num_cells, self.activation, self.use_avg_pooling
        )

    @property
    def mlp(self) -> MLP:
        n_in = self.convnet.output_features(self.in_shape[1:])
        return MLP(
            n_in, self.action_dim, num_cells=tuple(self.mlp_num_cells), activation=self.activation
        )

    def init(self, seed: Seed = 0, *, device=None, dtype=torch.float32) -> Params:
        gen = make_generator(seed)
        conv = self.convnet.init(gen, device=device, dtype=dtype)
        mlp = self.mlp.init(gen, device=device, dtype=dtype)
        return {"convnet": conv, "mlp": ddpg_init_last_layer(mlp, self.last_layer_scale, gen)}

    def __call__(
        self, params: Params, observation: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        self.check_params(params)
        hidden = self.convnet(params["convnet"], observation)
        return self.mlp(params["mlp"], hidden), hidden


@dataclasses.dataclass(frozen=True)
class DdpgCnnQNet(Module):
    """DDPG's CNN critic: a ConvNet (32-64-128, average-pooled) whose features are concatenated
    with the action, then an MLP (2 x 200, ELU) to a scalar (last layer ``U(-3e-4, 3e-4)``).

    Params: ``{"convnet": ..., "mlp": ...}``. Shapes: ``([*b, C, H, W], [*b, act]) -> [*b, 1]``.
    """

    in_shape: tuple[int, int, int]
    action_dim: int
    conv_num_cells: tuple[int, ...] = (32, 64, 128)
    mlp_num_cells: tuple[int, ...] = (200, 200)
    activation: Activation = "elu"
    use_avg_pooling: bool = True
    last_layer_scale: float = 6e-4

    def __post_init__(self) -> None:
        object.__setattr__(self, "in_shape", tuple(self.in_shape))

    @property
    def convnet(self) -> ConvNet:
        return _ddpg_convnet(
            self.in_shape, self.conv_num_cells, self.activation, self.use_avg_pooling
        )

    @property
    def mlp(self) -> MLP:
        n_in = self.convnet.output_features(self.in_shape[1:]) + self.action_dim
        return MLP(n_in, 1, num_cells=tuple(self.mlp_num_cells), activation=self.activation)

    def init(self, seed: Seed = 0, *, device=None, dtype=torch.float32) -> Params:
        gen = make_generator(seed)
        conv = self.convnet.init(gen, device=device, dtype=dtype)
        mlp = self.mlp.init(gen, device=device, dtype=dtype)
        return {"convnet": conv, "mlp": ddpg_init_last_layer(mlp, self.last_layer_scale, gen)}

    def __call__(
        self, params: Params, observation: torch.Tensor, action: torch.Tensor
    ) -> torch.Tensor:
        self.check_params(params)
        check_input(self, "action", action, self.action_dim, params["mlp"]["layers"][0]["weight"])
        hidden = torch.cat([self.convnet(params["convnet"], observation), action], -1)
        return self.mlp(params["mlp"], hidden)


class _Dueling(Module):
    """Shared by the dueling nets: a feature trunk (``features``) feeding an advantage head and a
    value head (``_head(out)``), combined by :func:`dueling_combine`; biases start at zero."""

    out_features: int
    out_features_value: int
    features: Module  # a property of each subclass, as is ``_head(out) -> MLP``

    def init(self, seed: Seed = 0, *, device=None, dtype=torch.float32) -> Params:
        gen = make_generator(seed)
        kw = dict(device=device, dtype=dtype)
        return _zero_biases(
            {
                "features": self.features.init(gen, **kw),
                "advantage": self._head(self.out_features).init(gen, **kw),
                "value": self._head(self.out_features_value).init(gen, **kw),
            }
        )

    def __call__(self, params: Params, x: torch.Tensor) -> torch.Tensor:
        self.check_params(params)
        h = self.features(params["features"], x)
        advantage = self._head(self.out_features)(params["advantage"], h)
        value = self._head(self.out_features_value)(params["value"], h)
        return dueling_combine(value, advantage)


@dataclasses.dataclass(frozen=True)
class DuelingMlpDQNet(_Dueling):
    """Dueling Q-network on vectors: features (256-256 ELU, activated 256 output), advantage and
    value heads (one ELU layer of 512 each); every bias starts at zero (TorchRL's init).

    Params: ``{"features": ..., "advantage": ..., "value": ...}``.
    Shapes: ``[*b, in_features] -> [*b, out_features]``.
    """

    in_features: int
    out_features: int
    out_features_value: int = 1
    feature_num_cells: tuple[int, ...] = (256, 256)
    feature_out: int = 256
    head_num_cells: tuple[int, ...] = (512,)
    activation: Activation = "elu"

    @property
    def features(self) -> MLP:
        return MLP(
            self.in_features,
            self.feature_out,
            num_cells=tuple(self.feature_num_cells),
            activation=self.activation,
            activate_last_layer=True,
        )

    def _head(self, out: int) -> MLP:
        return MLP(
            self.feature_out, out, num_cells=tuple(self.head_num_cells), activation=self.activation
        )


@dataclasses.dataclass(frozen=True)
class DuelingCnnDQNet(_Dueling):
    """Dueling Q-network on images: the DQN ConvNet (32-64-64, kernels 8-4-3, strides 4-2-1,
    ELU, flattened) then advantage and value heads (one ELU layer of 512); biases start at zero.

    Params: ``{"features": ..., "advantage": ..., "value": ...}``.
    Shapes: ``[*b, C, H, W] -> [*b, out_features]``.
    """

    in_shape: tuple[int, int, int]
    out_features: int
    out_features_value: int = 1
    conv_num_cells: tuple[int, ...] = (32, 64, 64)
    kernel_sizes: tuple[int, ...] = (8, 4, 3)
    strides: tuple[int, ...] = (4, 2, 1)
    head_num_cells: tuple[int, ...] = (512,)
    activation: Activation = "elu"

    def __post_init__(self) -> None:
        object.__setattr__(self, "in_shape", tuple(self.in_shape))

    @property
    def features(self) -> ConvNet:
        return ConvNet(
            self.in_shape[0],
            num_cells=tuple(self.conv_num_cells),
            kernel_sizes=tuple(self.kernel_sizes),
            strides=tuple(self.strides),
            activation=self.activation,
        )

    def _head(self, out: int) -> MLP:
        n_in = self.features.output_features(self.in_shape[1:])
        return MLP(n_in, out, num_cells=tuple(self.head_num_cells), activation=self.activation)


@dataclasses.dataclass(frozen=True)
class DistributionalDQNnet(Module):
    """Log-softmax over the atom dim (``-2``) of ``[*batch, atoms, actions]`` logits; no params.

    Put it after a net whose output is ``(atoms, actions)``-shaped (e.g. ``MLP(out_features=
    (n_atoms, n_actions))``) to get C51's log-probabilities.
    """

    def init(self, seed: Seed = 0, *, device=None, dtype=torch.float32) -> Params:
        return {}

    def __call__(self, params: Params, logits: torch.Tensor) -> torch.Tensor:
        self.check_params(params)
        return distributional_log_softmax(logits)


@dataclasses.dataclass(frozen=True)
class StateIndependentScale(Module):
    """A location net plus a learned scale that does not depend on the input
    (``tensordict.nn.AddStateIndependentNormalScale``, which TorchRL's PPO examples use; SB3's
    and the PPO paper's MuJoCo policies).

    ``net`` maps the input to the location ``[*b, action_dim]``; the output is ``[loc, s]`` with
    ``s = params["scale"]`` broadcast to ``loc``'s shape, ``[*b, 2 action_dim]``, for a
    ``NormalParamExtractor`` to map: with ``scale_mapping="exp"`` the std is ``exp(s)``, so
    ``init_value`` is SB3's ``log_std_init``.

    Params: ``{"net": net's params, "scale": [action_dim]}``.

    Args:
        net: a funcrl net ``(params, x [*b, f]) -> [*b, action_dim]``.
        action_dim: the location's (and the scale's) last dim.
        init_value: the scale parameter's initial value (before the mapping).
    """

    net: Any
    action_dim: int
    init_value: float = 0.0

    def __post_init__(self) -> None:
        if isinstance(self.action_dim, bool) or not isinstance(self.action_dim, int):
            raise TypeError(
                f"StateIndependentScale: action_dim must be an int, got {self.action_dim!r}"
            )
        if self.action_dim < 1:
            raise ValueError(
                f"StateIndependentScale: action_dim must be >= 1, got {self.action_dim}"
            )
        if not hasattr(self.net, "init"):
            raise TypeError(
                f"StateIndependentScale: net must be a funcrl net, got {type(self.net).__name__}"
            )

    def init(self, seed: Seed = 0, *, device=None, dtype=torch.float32) -> Params:
        return {
            "net": self.net.init(seed, device=device, dtype=dtype),
            "scale": torch.full(
                (self.action_dim,), float(self.init_value), device=device, dtype=dtype
            ),
        }

    def __call__(self, params: Params, x: torch.Tensor) -> torch.Tensor:
        self.check_params(params)
        loc = self.net(params["net"], x)
        if loc.shape[-1:] != (self.action_dim,):
            raise ValueError(
                f"StateIndependentScale: net's output has shape {tuple(loc.shape)}, expected "
                f"[..., {self.action_dim}] (action_dim)"
            )
        return torch.cat([loc, params["scale"].expand_as(loc)], dim=-1)
