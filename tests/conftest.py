"""Shared test configuration: one thread, short hypothesis runs, the ``variant`` fixture."""

from __future__ import annotations

import os
import re

# funcrl.random's eager draws run as a compiled kernel whose one-time compile (seconds per kind
# and dtype, in every xdist worker) would dominate short test processes; the plain-op path gives
# the same bits. test_random.py turns the kernel back on where it tests it.
os.environ.setdefault("FUNCRL_RANDOM_FUSED", "0")

import pytest
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


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Under ``make test`` (``FUNCRL_REQUIRE_REFERENCES=1``) a test skipped because a reference
    package (TorchRL, tensordict, transformers, vmas, ...) could not be imported fails instead:
    parity must never pass by skipping."""
    outcome = yield
    report = outcome.get_result()
    if not (report.skipped and os.environ.get("FUNCRL_REQUIRE_REFERENCES")):
        return
    reason = (
        str(report.longrepr[-1]) if isinstance(report.longrepr, tuple) else str(report.longrepr)
    )
    lowered = reason.lower()
    missing_module = "could not import" in lowered or "no module named" in lowered
    names = "|".join(re.escape(name) for name in OPTIONAL_PACKAGES)
    if missing_module or re.search(rf"\bneeds?\b.*\b({names})", lowered):
        report.outcome = "failed"
        report.longrepr = f"reference package missing under make test: {reason}"


REFERENCE_PACKAGES = (
    "torchrl",
    "tensordict",
    "transformers",
    "vmas",
    "mujoco",
    "minari",
    "stable_baselines3",
)
# A skip whose reason says it "needs" one of these is a missing install: under make test it fails.
# Other skips (no CUDA device, a TorchRL build without its C++ extension) stay skips.
OPTIONAL_PACKAGES = (
    *REFERENCE_PACKAGES,
    "stable_baselines3",
    "stable-baselines3",
    "imageio",
    "h5py",
)


def pytest_sessionstart(session):
    """Under ``make test``, every reference package must import (module-level ``importorskip``
    would otherwise skip whole parity files at collection)."""
    if not os.environ.get("FUNCRL_REQUIRE_REFERENCES"):
        return
    import importlib

    missing = []
    for name in REFERENCE_PACKAGES:
        try:
            importlib.import_module(name)
        except ImportError as e:
            missing.append(f"{name} ({e})")
    if missing:
        raise pytest.UsageError(
            "make test needs the reference packages of the parity tests; missing: "
            + ", ".join(missing)
            + " (install with: pip install -e '.[test,examples,parity,multiagent,mujoco,offline]')"
        )
