"""Shared test configuration: one thread, short hypothesis runs, the ``variant`` fixture."""

from __future__ import annotations

import os

import torch
from hypothesis import HealthCheck, settings

from funcrl.testing import variant  # noqa: F401  (the eager / vmap / compile fixture)

# The CI machine is small and shared: one intra-op thread per worker keeps -n 2 from thrashing.
torch.set_num_threads(1)

settings.register_profile(
    "default",
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("thorough", max_examples=500, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
