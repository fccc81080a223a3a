"""examples/mappo.py: a fast smoke run of MAPPO and IPPO on VMAS (what it writes, --resume,
--overwrite) and, under ``@pytest.mark.slow``, the learning target: well above the random policy at
the 150k-step budget QMIX uses."""

from __future__ import annotations

import csv
import importlib
import json
import math
import os
import sys

import pytest

pytest.importorskip("vmas", reason="the VMAS example needs vmas")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "examples"))

mappo_example = importlib.import_module("mappo")

TINY = [
    "--num-envs", "2", "--num-steps", "10", "--minibatch-size", "10", "--epochs", "2",
    "--num-cells", "8", "--depth", "1", "--eval-envs", "2", "--max-steps", "10",
    "--eval-every", "20", "--checkpoint-every", "20", "--no-progress", "--threads", "1",
    "--device", "cpu",
]  # fmt: skip


@pytest.mark.parametrize(
    "algo,extra",
    [("mappo", []), ("ippo", ["--no-share-params"]), ("mappo", ["--no-continuous"])],
    ids=["mappo", "ippo-independent", "mappo-discrete"],
)
def test_smoke_writes_its_files_and_resumes(tmp_path, algo, extra):
    out = str(tmp_path / algo)
    flags = [*TINY, "--algo", algo, "--out", out, *extra]
    result = mappo_example.main(["--total-steps", "40", *flags])
    for f in ("log.csv", "curve.png", "checkpoint.pt", "result.json"):
        assert os.path.getsize(os.path.join(out, f)) > 0, f
    assert result["steps"] == 40  # 2 rollouts of 2 worlds x 10 steps
    assert [s for s, _ in result["curve"]] == [0, 20, 40]
    assert math.isfinite(result["eval_return"]) and math.isfinite(result["random_return"])
    with open(os.path.join(out, "result.json")) as fh:
        assert json.load(fh)["eval_return"] == pytest.approx(result["eval_return"])
    # A new run into the same folder must say what it wants.
    with pytest.raises(FileExistsError, match="--resume to continue it or --overwrite"):
        mappo_example.main(["--total-steps", "40", *flags])
    # --resume continues from the checkpoint (step 40) to 60.
    resumed = mappo_example.main(["--total-steps", "60", "--resume", *flags])
    assert resumed["steps"] == 60
    assert [s for s, _ in resumed["curve"]] == [0, 20, 40, 60]
    with open(os.path.join(out, "log.csv")) as fh:
        evals = [int(float(r["step"])) for r in csv.DictReader(fh) if r["eval_return"]]
    assert evals == [0, 20, 40, 60]


def test_resume_refuses_other_settings(tmp_path):
    out = str(tmp_path / "run")
    mappo_example.main(["--total-steps", "20", *TINY, "--out", out])
    with pytest.raises(ValueError, match="--resume: .* --algo mappo, this run has --algo ippo"):
        mappo_example.main(
            ["--total-steps", "40", *TINY, "--out", out, "--resume", "--algo", "ippo"]
        )


@pytest.mark.parametrize(
    "flags,match",
    [
        (["--algo", "vdn"], "mappo.py: --algo must be one of"),
        (["--minibatch-size", "7"], "mappo.py: a rollout of .* 20 transitions does not split"),
        (["--total-steps", "10"], "mappo.py: --total-steps 10 is less than one rollout"),
    ],
)
def test_bad_flags(tmp_path, flags, match):
    with pytest.raises(ValueError, match=match):
        mappo_example.main(["--total-steps", "40", *TINY, "--out", str(tmp_path), *flags])


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["mappo", "ippo"])
def test_navigation_learns_at_qmix_budget(tmp_path, algo):
    """The default 150k-step budget (QMIX's): well above the random policy on navigation."""
    result = mappo_example.main(["--algo", algo, "--out", str(tmp_path), "--no-progress"])
    random, final = result["random_return"], result["eval_return"]
    assert final > random + 1.0, result
