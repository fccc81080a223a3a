"""examples/dqn_pure.py: a fast eager smoke run (what it writes, per-seed returns, bad flags)."""

from __future__ import annotations

import csv
import importlib
import os
import sys

import pytest

import funcrl

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "examples"))

dqn_pure = importlib.import_module("dqn_pure")

TINY = [
    "--num-envs", "2", "--buffer-size", "16", "--batch-size", "4", "--learning-starts", "4",
    "--target-update-interval", "4", "--epsilon-anneal-time", "8", "--num-cells", "8",
    "--steps-per-iteration", "2", "--no-compile", "--no-progress", "--final-iterations", "2",
]  # fmt: skip


@pytest.fixture(autouse=True)
def _plain_random(monkeypatch):
    # The eager draws' compiled kernels cost seconds to build in a short test process.
    monkeypatch.setattr(funcrl.random, "_FUSED_ENV", False)


def test_smoke_two_seeds(tmp_path, capsys):
    out = str(tmp_path / "run")
    result = dqn_pure.main(["--seeds", "2", "--total-steps", "12", "--out", out, *TINY])
    for f in ("curve.png", "returns.csv", "result.json"):
        assert os.path.getsize(os.path.join(out, f)) > 0, f
    assert len(result["final_returns"]) == 2
    with open(os.path.join(out, "returns.csv")) as fh:
        rows = list(csv.DictReader(fh))
    # 12 steps of 2 envs x 2 steps per iteration: 3 iterations, one column per seed.
    assert [int(r["step"]) for r in rows] == [4, 8, 12]
    assert list(rows[0]) == ["step", "seed_0", "seed_1"]
    assert "seed 1: final return" in capsys.readouterr().out


def test_rejects_unknown_env_and_bad_intervals(tmp_path):
    with pytest.raises(ValueError, match=r"dqn_pure.py: --env must be one of"):
        dqn_pure.main(["--env", "Hopper-v4", "--out", str(tmp_path), *TINY])
    with pytest.raises(ValueError, match=r"DQNTrainConfig: target_update_interval=5 is not a"):
        dqn_pure.main(["--out", str(tmp_path), *TINY, "--target-update-interval", "5"])
