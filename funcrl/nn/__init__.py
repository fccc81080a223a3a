"""Static-config networks with pure ``init(seed) -> params`` and ``net(params, x)``."""

from funcrl.nn.core import (
    MLP,
    Activation,
    LayerNorm,
    Linear,
    Module,
    Params,
    activation_fn,
    make_generator,
)
from funcrl.nn.ensemble import Ensemble

__all__ = [
    "MLP",
    "Activation",
    "Ensemble",
    "LayerNorm",
    "Linear",
    "Module",
    "Params",
    "activation_fn",
    "make_generator",
]
