"""Noisy linear layers (Fortunato et al., 2017, https://arxiv.org/abs/1706.10295) with explicit noise.

TorchRL's ``NoisyLinear`` keeps factorised noise in buffers that ``reset_noise()`` overwrites. Here
the noise is a value: :func:`sample_noise` draws it, the call takes it, and ``noise=None`` means the
mean weights only (TorchRL's deterministic / eval behaviour)::

    layer = NoisyLinear(4, 2)
    params = layer.init(0)
    noise = sample_noise(layer)               # global RNG (or pass a torch.Generator)
    y = layer(params, x, noise)               # W = W_mu + W_sigma * (eps_out eps_in^T)
    y_mean = layer(params, x)                 # W = W_mu
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
import torch.nn.functional as F

from funcrl._tracing import is_tracing
from funcrl.nn.core import (
    Module,
    Params,
    Seed,
    _first_difference,
    _hashed_by_fields,
    _keyed_by_value,
    _signature,
    _uniform,
    check_input,
    make_generator,
    net_name,
)

__all__ = ["NoisyLinear", "sample_noise", "scale_noise", "noisy_weights", "check_noise"]


def scale_noise(x: torch.Tensor) -> torch.Tensor:
    """The factorised-noise scaling ``f(x) = sign(x) * sqrt(|x|)`` of the paper (eq. 11)."""
    return x.sign() * x.abs().sqrt()


def noisy_weights(params: Params, noise: Params | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Effective ``(weight, bias)``: ``mu + sigma * eps`` with factorised ``eps``, or ``mu``.

    ``eps_W = eps_out eps_in^T`` and ``eps_b = eps_out`` (the paper's factorised Gaussian noise).
    """
    weight, bias = params["weight_mu"], params.get("bias_mu")
    if noise is None:
        return weight, bias
    eps_in, eps_out = noise["epsilon_in"], noise["epsilon_out"]
    weight = weight + params["weight_sigma"] * torch.outer(eps_out, eps_in)
    if bias is not None:
        bias = bias + params["bias_sigma"] * eps_out
    return weight, bias


@dataclasses.dataclass(frozen=True)
class NoisyLinear(Module):
    """A linear layer with learned factorised Gaussian noise on its weights (TorchRL's layout).

    Params: ``{"weight_mu": [out, in], "weight_sigma": [out, in], "bias_mu": [out],
    "bias_sigma": [out]}`` (no bias entries when ``bias=False``). Init as TorchRL:
    ``mu ~ U(-1/sqrt(in), 1/sqrt(in))``, ``weight_sigma = std_init / sqrt(in)``,
    ``bias_sigma = std_init / sqrt(out)``.

    Noise: ``{"epsilon_in": [in], "epsilon_out": [out]}`` from :func:`sample_noise`.

    Args:
        in_features: input size.
        out_features: output size.
        bias: whether the layer has a (noisy) bias.
        std_init: initial noise scale (TorchRL's default 0.5, as in the paper).

    Shapes:
        ``x: [*batch, in] -> [*batch, out]``.
    """

    in_features: int
    out_features: int
    bias: bool = True
    std_init: float = 0.5

    def __post_init__(self) -> None:
        if self.in_features <= 0 or self.out_features <= 0:
            raise ValueError(
                f"NoisyLinear: in_features and out_features must be positive, got "
                f"{self.in_features} and {self.out_features}"
            )

    def init(self, seed: Seed = 0, *, device=None, dtype=torch.float32) -> Params:
        gen = make_generator(seed)
        bound = 1.0 / math.sqrt(self.in_features)
        shape = (self.out_features, self.in_features)
        params = {
            "weight_mu": _uniform(shape, bound, gen, device, dtype),
            "weight_sigma": torch.full(
                shape, self.std_init / math.sqrt(self.in_features), device=device, dtype=dtype
            ),
        }
        if self.bias:
            params["bias_mu"] = _uniform((self.out_features,), bound, gen, device, dtype)
            params["bias_sigma"] = torch.full(
                (self.out_features,),
                self.std_init / math.sqrt(self.out_features),
                device=device,
                dtype=dtype,
            )
        return params

    def __call__(
        self, params: Params, x: torch.Tensor, noise: Params | None = None
    ) -> torch.Tensor:
        """``x W^T + b`` with the noisy weights, or the mean weights when ``noise`` is ``None``."""
        self.check_params(params)
        check_input(self, "x", x, self.in_features, params["weight_mu"])
        if noise is not None:
            check_noise(self, noise)
        weight, bias = noisy_weights(params, noise)
        return F.linear(x, weight, bias)


def _layer_noise(layer: NoisyLinear, generator, device, dtype) -> Params:
    def draw(n: int) -> torch.Tensor:
        if generator is None:
            eps = torch.randn(n, device=device, dtype=dtype)
        else:
            # Draw on the generator's device, then move: one seed, same noise on every device.
            eps = torch.randn(n, generator=generator, device=generator.device, dtype=dtype)
            eps = eps.to(device)
        return scale_noise(eps)

    return {"epsilon_in": draw(layer.in_features), "epsilon_out": draw(layer.out_features)}


def sample_noise(
    net: Any,
    generator: torch.Generator | int | None = None,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Params:
    """Draws fresh factorised noise for a :class:`NoisyLinear` or a noisy net: TorchRL's
    ``reset_noise`` as a pure function returning the noise instead of writing buffers.

    Samples from the global torch RNG when ``generator`` is ``None`` (so it works under
    ``vmap(..., randomness="different")`` and ``torch.compile``), else from the given generator
    (an int seeds a new CPU one).

    Args:
        net: a :class:`NoisyLinear`, or any net with a ``noise_layers`` property returning a
            pytree of :class:`NoisyLinear` (e.g. ``MLP(layer_class="noisy")``: ``{"layers": [...]}``).

    Returns:
        the noise pytree that ``net(params, x, noise=...)`` takes.
    """
    if isinstance(generator, int):
        generator = make_generator(generator)
    if isinstance(net, NoisyLinear):
        return _layer_noise(net, generator, device, dtype)
    layers = getattr(net, "noise_layers", None)
    if layers is None:
        raise TypeError(
            f"sample_noise: net must be a NoisyLinear or have noisy layers (noise_layers), got "
            f"{type(net).__name__}"
        )
    return _map_layers(lambda layer: _layer_noise(layer, generator, device, dtype), layers)


# Expected noise layout per net (pure Python, built from the config alone).
_NOISE_SIGNATURES: dict[Any, Any] = {}


def _noise_signature(net: Any) -> Any:
    # Cached only for nets hashed by value (see funcrl.nn.core._keyed_by_value).
    sig = None
    if _hashed_by_fields(type(net)):
        try:
            sig = _NOISE_SIGNATURES.get(net)
        except TypeError:  # an unhashable field
            pass
    if sig is None:

        def layer(lin: NoisyLinear) -> Any:
            size = torch.Size
            return {
                "epsilon_in": (size([lin.in_features]), True),
                "epsilon_out": (size([lin.out_features]), True),
            }

        sig = layer(net) if isinstance(net, NoisyLinear) else _map_layers(layer, net.noise_layers)
        if not is_tracing() and _keyed_by_value(net):
            _NOISE_SIGNATURES[net] = sig
    return sig


def check_noise(net: Any, noise: Params) -> None:
    """Raises ``ValueError`` unless ``noise`` has the layout :func:`sample_noise` gives ``net``
    (``{"epsilon_in": [in], "epsilon_out": [out]}`` per noisy layer), naming the first difference.
    """
    expected = _noise_signature(net)
    if _signature(noise) != expected:
        diff = _first_difference(expected, noise) or "noise differs"
        raise ValueError(
            f"{net_name(net)}: {diff.replace('params', 'noise', 1)}; draw it with "
            f"funcrl.nn.sample_noise(net)"
        )


def _map_layers(fn, layers: Any) -> Any:
    if isinstance(layers, NoisyLinear):
        return fn(layers)
    if isinstance(layers, dict):
        return {k: _map_layers(fn, v) for k, v in layers.items()}
    if isinstance(layers, (list, tuple)):
        return [_map_layers(fn, v) for v in layers]
    raise TypeError(f"sample_noise: unexpected entry {type(layers).__name__} in noise_layers")
