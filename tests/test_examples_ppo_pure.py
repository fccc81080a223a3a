"""examples/ppo_pure.py: a fast eager smoke run (what it writes, per-seed returns, --overwrite)
and the Inductor-compiled iteration in a fresh process."""

from __future__ import annotations

import csv
import importlib
import json
import os
import subprocess
import sys

import pytest

import funcrl

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "examples"))

ppo_pure = importlib.import_module("ppo_pure")

TINY = [
    "--num-envs", "2", "--num-steps", "8", "--epochs", "1", "--num-minibatches", "2",
    "--num-cells", "8", "--no-compile", "--no-progress", "--final-iterations", "2",
]  # fmt: skip


@pytest.fixture(autouse=True)
def _plain_random(monkeypatch):
    # The eager draws' compiled kernels cost seconds to build in a short test process.
    monkeypatch.setattr(funcrl.random, "_FUSED_ENV", False)


def test_smoke_three_seeds(tmp_path, capsys):
    out = str(tmp_path / "run")
    result = ppo_pure.main(["--seeds", "3", "--total-steps", "48", "--out", out, *TINY])
    for f in ("curve.png", "returns.csv", "result.json"):
        assert os.path.getsize(os.path.join(out, f)) > 0, f
    assert len(result["final_returns"]) == 3
    with open(os.path.join(out, "result.json")) as fh:
        saved = json.load(fh)
    assert saved["final_returns"] == pytest.approx(result["final_returns"])
    with open(os.path.join(out, "returns.csv")) as fh:
        rows = list(csv.DictReader(fh))
    # 48 steps of 2 envs x 8 steps: 3 iterations, one column per seed.
    assert [int(r["step"]) for r in rows] == [16, 32, 48]
    assert list(rows[0]) == ["step", "seed_0", "seed_1", "seed_2"]
    printed = capsys.readouterr().out
    assert "seed 2: final return" in printed
    with pytest.raises(FileExistsError, match="--overwrite"):
        ppo_pure.main(["--seeds", "1", "--total-steps", "16", "--out", out, *TINY])


def test_rejects_unknown_env_and_short_run(tmp_path):
    with pytest.raises(ValueError, match=r"ppo_pure.py: --env must be one of"):
        ppo_pure.main(["--env", "Hopper-v4", "--out", str(tmp_path), *TINY])
    with pytest.raises(ValueError, match=r"PPOTrainConfig: total_timesteps=8 is less than one"):
        ppo_pure.main(["--total-steps", "8", "--out", str(tmp_path), *TINY])


def test_inductor_compiled_iteration_runs_in_a_fresh_process(tmp_path):
    # The iteration compiled by Inductor (the rollout and the update as scans, vmapped over two
    # seeds), in a subprocess: a crash in the compiled code fails this test instead of the
    # test run (the update's scan body capturing an outer tensor once made it segfault).
    # ~2 min of compiling on one core.
    out = tmp_path / "run"
    cmd = [sys.executable, os.path.join(ROOT, "examples", "ppo_pure.py"), "--seeds", "2"]
    cmd += [x for x in TINY if x != "--no-compile"] + ["--total-steps", "64", "--out", str(out)]
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor")}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1200)
    assert proc.returncode == 0, f"exit {proc.returncode}: {proc.stderr[-3000:]}"
    with open(out / "result.json") as fh:
        result = json.load(fh)
    assert result["config"]["compile"] is True and result["compile_time"] > 0
    assert len(result["final_returns"]) == 2
    assert all(r > 0 for r in result["final_returns"])  # episodes ran and were counted
