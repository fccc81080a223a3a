"""Action distributions with TorchRL 0.14's semantics, written for torch.compile and vmap.

Each distribution is a light object built inside the function that uses it; its methods are pure
tensor code. ``rsample``/``sample`` take ``key=`` (a :func:`funcrl.random.key`; reproducible and
vmappable over keys); with ``key=None`` they use the global torch RNG (``torch.manual_seed``
reproduces them; under ``torch.func.vmap`` pass ``randomness="different"``). ``log_prob`` returns
``[*sample_shape, *batch_shape]``. Every constructor takes ``validate_args=False``: set it to
check parameters and values with clear errors while debugging (it syncs with the host).
"""

from funcrl.distributions.base import Distribution
from funcrl.distributions.continuous import (
    Delta,
    IndependentNormal,
    TanhDelta,
    TanhNormal,
    TruncatedNormal,
)
from funcrl.distributions.discrete import (
    Categorical,
    MaskedCategorical,
    MaskedOneHotCategorical,
    OneHotCategorical,
    OneHotOrdinal,
    Ordinal,
    ReparamGradientStrategy,
    ordinal_logits,
)
from funcrl.distributions.mappings import (
    NormalParamExtractor,
    biased_softplus,
    expln,
    inv_softplus,
    mappings,
)

__all__ = [
    "Categorical",
    "MaskedCategorical",
    "MaskedOneHotCategorical",
    "OneHotCategorical",
    "OneHotOrdinal",
    "Ordinal",
    "ReparamGradientStrategy",
    "ordinal_logits",
    "Delta",
    "Distribution",
    "IndependentNormal",
    "NormalParamExtractor",
    "TanhDelta",
    "TanhNormal",
    "TruncatedNormal",
    "biased_softplus",
    "expln",
    "inv_softplus",
    "mappings",
]
