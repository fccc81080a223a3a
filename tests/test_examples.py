"""Smoke tests of the example scripts and the learning benchmark; slow tests train to thresholds.

The fast tests run each script for a few hundred steps with tiny networks (eager, no compile) and
check what it writes -- log.csv, curve.png, checkpoint.pt, result.json -- and that ``--resume``
continues the run from the checkpoint. The slow tests (``make test-slow``) train Pendulum-v1 for
real with the scripts' defaults.
"""

from __future__ import annotations

import csv
import dataclasses
import importlib
import json
import os
import statistics
import sys

import pytest
import torch

from funcrl import random as fr

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "examples"))
sys.path.insert(0, os.path.join(ROOT, "bench"))

_util = importlib.import_module("_util")

TINY = [
    "--num-cells", "16", "16", "--batch-size", "32", "--learning-starts", "100",
    "--eval-episodes", "2", "--eval-every", "200", "--checkpoint-every", "200",
    "--no-compile", "--no-progress", "--threads", "1",
]  # fmt: skip


def _rows(path):
    with open(path) as fh:
        return list(csv.DictReader(fh))


def _check_outputs(out):
    for f in ("log.csv", "curve.png", "checkpoint.pt"):
        assert os.path.getsize(os.path.join(out, f)) > 0, f


# ------------------------------------------------------------------------------------ _util


def test_flush_denormal_is_scoped_and_restored():
    tiny = torch.tensor([1e-39])  # a float32 denormal
    assert not _util.flushes_denormals() and float(tiny * 1.0) > 0
    with _util.flush_denormal(True):
        assert _util.flushes_denormals() and float(tiny * 1.0) == 0.0
        with _util.flush_denormal(False):
            assert not _util.flushes_denormals()
        assert _util.flushes_denormals()
    assert not _util.flushes_denormals() and float(tiny * 1.0) > 0
    with pytest.raises(RuntimeError, match="inside"), _util.flush_denormal(True):
        raise RuntimeError("inside")
    assert not _util.flushes_denormals()


def test_heap_freezer_freezes_once_and_unfreezes_on_exit(monkeypatch):
    import gc

    # Counted by calls, not by the frozen count: other threads (xdist's) may free frozen objects
    # between two reads of the count.
    calls = []
    real_freeze = gc.freeze
    monkeypatch.setattr(gc, "freeze", lambda: (calls.append(1), real_freeze())[1])
    with _util.heap_freezer() as freeze:
        assert gc.get_freeze_count() == 0 and not calls  # nothing until the loop asks
        freeze()
        assert gc.get_freeze_count() > 0 and len(calls) == 1
        freeze()  # a second call is a no-op
        assert len(calls) == 1
    assert gc.get_freeze_count() == 0
    with pytest.raises(RuntimeError, match="inside"), _util.heap_freezer() as freeze:
        freeze()
        raise RuntimeError("inside")
    assert gc.get_freeze_count() == 0


def test_malloc_tunables_env_adds_the_tcache_count_once():
    env = _util.malloc_tunables_env({"A": "1"})
    assert env == {"A": "1", "GLIBC_TUNABLES": _util.MALLOC_TUNABLES}
    kept = _util.malloc_tunables_env({"GLIBC_TUNABLES": "glibc.malloc.mxfast=0"})
    assert kept["GLIBC_TUNABLES"] == "glibc.malloc.mxfast=0:" + _util.MALLOC_TUNABLES
    own = {"GLIBC_TUNABLES": "glibc.malloc.tcache_count=7"}
    assert _util.malloc_tunables_env(own) == own  # the user's own count wins


@pytest.mark.skipif(
    __import__("platform").libc_ver()[0] != "glibc", reason="glibc's tunables only exist on glibc"
)
def test_relaunch_with_malloc_tunables_reexecutes_once_with_them(tmp_path):
    import subprocess

    script = tmp_path / "s.py"
    script.write_text(
        "import os, sys\n"
        f"sys.path.insert(0, {os.path.join(ROOT, 'examples')!r})\n"
        "import _util\n"
        "print('start', flush=True)\n"
        "_util.relaunch_with_malloc_tunables()\n"
        "print('run', os.environ.get('GLIBC_TUNABLES'), sys.argv[1:])\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "FUNCRL_NO_RELAUNCH")}
    out = subprocess.run(
        [sys.executable, str(script), "--x", "1"], env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    # Started twice (the relaunch), ran once, with the tunables and the same arguments.
    assert out.stdout.splitlines() == [
        "start",
        "start",
        f"run {_util.MALLOC_TUNABLES} ['--x', '1']",
    ]
    env["FUNCRL_NO_RELAUNCH"] = "1"
    out = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True)
    assert out.stdout.splitlines() == ["start", "run None []"]


def test_parse_config_tuples_bools_and_defaults():
    @dataclasses.dataclass
    class C:
        hidden: tuple[int, ...] = (4, 5)
        lr: float = 0.1
        flag: bool = True
        name: str | None = None

    c = _util.parse_config(C, ["--hidden", "7", "8", "9", "--no-flag", "--lr", "0.5"])
    assert c == C(hidden=(7, 8, 9), lr=0.5, flag=False, name=None)
    assert _util.parse_config(C, []) == C()
    with pytest.raises(SystemExit):
        _util.parse_config(C, ["--lr", "abc"])


# ------------------------------------------------------------------------------------ sac.py


def test_sac_runs_writes_outputs_and_resumes(tmp_path, capsys):
    sac_example = importlib.import_module("sac")
    out = str(tmp_path / "run")
    res = sac_example.main([*TINY, "--total-steps", "300", "--out", out, "--seed", "3"])
    _check_outputs(out)
    assert res["steps"] == 300
    assert res["updates"] == 300 - 100 + 1  # one update per step from learning_starts on
    assert len(res["eval_returns"]) == 2 and all(-2000 < r <= 0 for r in res["eval_returns"])
    printed = capsys.readouterr().out
    assert "final deterministic evaluation over 2 episodes" in printed
    assert os.path.join(out, "curve.png") in printed
    rows = _rows(os.path.join(out, "log.csv"))
    assert [int(r["step"]) for r in rows if r["episode_return"]] == [200]  # one 200-step episode
    assert [int(r["step"]) for r in rows if r["eval_return"]] == [200, 300]
    with open(os.path.join(out, "result.json")) as fh:
        assert json.load(fh)["eval_return"] == pytest.approx(res["eval_return"])

    ck, meta = _util.load_checkpoint(os.path.join(out, "checkpoint.pt"))
    assert meta["config"]["num_cells"] == [16, 16]
    assert ck["step"] == 300 and int(ck["buffer"].size) == 300
    assert int(ck["opt_state"].step) == 201
    assert torch.equal(ck["key"], fr.key(3))  # the root key: resume continues its streams
    # Resume to 500 steps: the counters, buffer and optimizer continue where they stopped.
    res2 = sac_example.main(
        [*TINY, "--total-steps", "500", "--out", out, "--seed", "3", "--resume"]
    )
    assert res2["steps"] == 500 and res2["updates"] == 401
    ck2 = _util.load_checkpoint(os.path.join(out, "checkpoint.pt")).tree
    assert int(ck2["buffer"].size) == 500 and int(ck2["opt_state"].step) == 401
    # The first 300 stored transitions are the ones of the first run.
    first = ck["buffer"].storage["observation"][:300]
    torch.testing.assert_close(ck2["buffer"].storage["observation"][:300], first)
    steps = [int(r["step"]) for r in _rows(os.path.join(out, "log.csv"))]
    assert steps == sorted(steps) and steps[-1] == 500 and steps.count(300) == 1


def test_sac_resume_draws_what_the_uninterrupted_run_draws(tmp_path, monkeypatch):
    # Every draw's key is fold_in(stream, counter) of the checkpointed root key: a run stopped at
    # step 120 and resumed to 150 gives its updates and its exploration the same keys as one run
    # to 150. (Its transitions differ: gymnasium's env state is not saved, episodes restart.)
    sac_example = importlib.import_module("sac")
    real = sac_example.make_agent

    def run(out, steps, log, resume=False):
        def spying(*a, **kw):
            agent = real(*a, **kw)

            def update(params, opt_state, buf, key):
                log.append(("update", key))
                return agent.update(params, opt_state, buf, key)

            def explore(params, observation, key):
                log.append(("explore", key))
                return agent.explore(params, observation, key)

            return agent._replace(update=update, explore=explore)

        monkeypatch.setattr(sac_example, "make_agent", spying)
        args = [*TINY, "--total-steps", str(steps), "--out", str(tmp_path / out), "--seed", "5"]
        args += ["--eval-every", "0", "--checkpoint-every", "120"]
        return sac_example.main(args + (["--resume"] if resume else []))

    whole, parts = [], []
    run("whole", 150, whole)
    run("parts", 120, parts)
    run("parts", 150, parts, resume=True)
    assert len(whole) == len(parts) == (150 - 100) + (150 - 100 + 1)
    for (kind_a, key_a), (kind_b, key_b) in zip(whole, parts):
        assert kind_a == kind_b and torch.equal(key_a, key_b)
    assert len({tuple(k.tolist()) for _, k in whole}) == len(whole)  # never reused


def test_sac_resume_without_checkpoint_is_a_clear_error(tmp_path):
    sac_example = importlib.import_module("sac")
    with pytest.raises(FileNotFoundError, match="checkpoint"):
        sac_example.main([*TINY, "--total-steps", "10", "--out", str(tmp_path), "--resume"])


def test_sac_fractional_updates_and_vector_envs(tmp_path):
    sac_example = importlib.import_module("sac")
    args = [*TINY, "--total-steps", "300", "--num-envs", "2", "--updates-per-step", "0.5"]
    res = sac_example.main([*args, "--out", str(tmp_path), "--eval-every", "0"])
    # 2 envs: the vector steps ending at steps 100, 102, ..., 300 (from learning_starts on)
    # collected 202 transitions -> 101 updates at 0.5 per transition.
    assert res["steps"] == 300 and res["updates"] == 101


def test_sac_halfcheetah_starts(tmp_path):
    pytest.importorskip("mujoco", reason="HalfCheetah-v5 needs gymnasium[mujoco]")
    pytest.importorskip("imageio", reason="HalfCheetah-v5 needs gymnasium[mujoco]")
    sac_example = importlib.import_module("sac")
    args = [*TINY, "--env", "HalfCheetah-v5", "--total-steps", "300", "--eval-every", "0"]
    res = sac_example.main([*args, "--eval-episodes", "1", "--out", str(tmp_path)])
    assert res["steps"] == 300 and res["updates"] == 201
    assert torch.tensor(res["eval_returns"]).isfinite().all()


# ------------------------------------------------------------------------------- sac_seeds.py


def test_sac_seeds_trains_independent_agents_and_resumes(tmp_path, capsys):
    seeds_example = importlib.import_module("sac_seeds")
    out = str(tmp_path)
    res = seeds_example.main([*TINY, "--agents", "3", "--total-steps", "300", "--out", out])
    _check_outputs(out)
    assert res["steps"] == 300 and len(res["eval_returns"]) == 3
    assert "median" in capsys.readouterr().out
    ck = _util.load_checkpoint(os.path.join(out, "checkpoint.pt")).tree
    # Stacked state: every agent has its own params, optimizer state and buffer.
    w = ck["params"]["actor"]["layers"][0]["weight"]
    assert w.shape[0] == 3 and not torch.equal(w[0], w[1])
    assert ck["opt_state"].step.tolist() == [201, 201, 201]
    assert torch.equal(ck["key"], fr.key(0))  # the root key of --seed 0, for --resume
    obs = [b.storage["observation"] for b in ck["buffers"]]
    assert all(int(b.size) == 300 for b in ck["buffers"]) and not torch.equal(obs[0], obs[1])
    res2 = seeds_example.main(
        [*TINY, "--agents", "3", "--total-steps", "400", "--out", out, "--resume"]
    )
    assert res2["steps"] == 400
    ck2 = _util.load_checkpoint(os.path.join(out, "checkpoint.pt")).tree
    assert ck2["opt_state"].step.tolist() == [301, 301, 301]
    torch.testing.assert_close(ck2["buffers"][1].storage["observation"][:300], obs[1][:300])


# ------------------------------------------------------------------------------ bench/learning


def test_learning_summary_and_table():
    learning = importlib.import_module("learning")
    runs = [
        {"algo": "sac", "env": "E", "impl": "sb3", "seed": s, "eval_return": r, "wall_s": w, "train_s": w}
        for s, r, w in [(0, -150.0, 100.0), (1, -170.0, 120.0), (2, -160.0, 110.0)]
    ] + [
        {"algo": "sac", "env": "E", "impl": "funcrl", "seed": s, "eval_return": r, "wall_s": w, "train_s": w}
        for s, r, w in [(0, -140.0, 50.0), (1, -180.0, 60.0), (2, -145.0, 70.0)]
    ]  # fmt: skip
    rows = {r["impl"]: r for r in learning.summarize(runs)}
    assert rows["funcrl"]["return_median"] == -145.0 and rows["sb3"]["return_median"] == -160.0
    assert rows["funcrl"]["wall_vs_sb3"] == pytest.approx(60.0 / 110.0)
    assert rows["funcrl"]["time_to_sb3_return_s"] is None  # no curves, no time-to-return
    table = learning.markdown(list(rows.values()), {"sac": 15000}, 1)
    assert (
        "| SAC | E | 15000 | funcrl (3 seeds) | -145 [-180, -140] | 60 | 0.55x | 60 | 0.55x | - | - |"
        # train_s == wall_s == cpu_s in these rows
        in table
    )


def test_learning_time_to_sb3_return():
    learning = importlib.import_module("learning")

    def curve(points):
        return [
            {"step": 1000 * (i + 1), "time": t, "eval_return": r} for i, (t, r) in enumerate(points)
        ]

    runs = [
        {"algo": "sac", "env": "E", "impl": "sb3", "seed": 0, "eval_return": -150.0, "wall_s": 110.0,
         "train_s": 100.0, "curve": curve([(40.0, -400.0), (70.0, -149.0), (100.0, -150.0)])},
        # Reaches -150 at 20 s; at 25 s; never (its best is -151).
        {"algo": "sac", "env": "E", "impl": "funcrl", "seed": 0, "eval_return": -140.0, "wall_s": 60.0,
         "train_s": 50.0, "curve": curve([(10.0, -300.0), (20.0, -150.0), (50.0, -140.0)])},
        {"algo": "sac", "env": "E", "impl": "funcrl", "seed": 1, "eval_return": -145.0, "wall_s": 60.0,
         "train_s": 50.0, "curve": curve([(10.0, -200.0), (25.0, -130.0), (50.0, -145.0)])},
        {"algo": "sac", "env": "E", "impl": "funcrl", "seed": 2, "eval_return": -151.0, "wall_s": 60.0,
         "train_s": 50.0, "curve": curve([(10.0, -900.0), (30.0, -160.0), (50.0, -151.0)])},
    ]  # fmt: skip
    assert learning.time_to_return(runs[1]["curve"], -150.0) == 20.0
    assert learning.time_to_return(runs[3]["curve"], -150.0) is None
    rows = {r["impl"]: r for r in learning.summarize(runs)}
    assert rows["funcrl"]["sb3_return"] == -150.0
    assert rows["funcrl"]["times_to_sb3_return_s"] == [20.0, 25.0, None]
    assert rows["funcrl"]["time_to_sb3_return_s"] == 25.0
    assert rows["funcrl"]["reach_vs_sb3_run"] == pytest.approx(0.25)
    assert rows["sb3"]["time_to_sb3_return_s"] == 70.0
    table = learning.markdown(list(rows.values()), {"sac": 3000}, 2)
    assert "| 25 | 0.25x |" in table and "| 70 | 0.70x |" in table
    # The cost columns are training seconds (evaluations excluded), not the process's wall time.
    assert "| -145 [-151, -140] | 50 | 0.50x |" in table


@pytest.mark.parametrize("impl", ["funcrl", pytest.param("sb3", marks=pytest.mark.slow)])
def test_learning_benchmark_runs(tmp_path, impl):
    learning = importlib.import_module("learning")
    if impl == "sb3":
        pytest.importorskip("stable_baselines3", reason="the SB3 side needs stable-baselines3")
    out = str(tmp_path / "learning.json")
    # 300 steps < learning_starts: no update, so this checks the plumbing only.
    args = ["--impls", impl, "--seeds", "0", "--total-steps", "300", "--eval-episodes", "1"]
    args += ["--eval-every", "100"]
    report = learning.main([*args, "--out", out])
    with open(out) as fh:
        saved = json.load(fh)
    assert [r["impl"] for r in saved["runs"]] == [impl]
    assert saved["settings"]["sac"]["total_steps"] == 300
    run = report["runs"][0]
    assert run["wall_s"] > 0 and run["cpu_s"] > 0 and -2000 < run["eval_return"] <= 0
    # Evaluations at 100 and 200 steps, then the final one; the clock never runs backwards.
    assert [p["step"] for p in run["curve"]] == [100, 200, 300]
    times = [p["time"] for p in run["curve"]]
    assert times == sorted(times) and times[-1] == pytest.approx(run["train_s"])
    assert run["curve"][-1]["eval_return"] == pytest.approx(run["eval_return"])


# ------------------------------------------------------------------------------------ slow


@pytest.mark.slow
def test_sac_pendulum_learns_median_of_three_seeds(tmp_path):
    sac_example = importlib.import_module("sac")
    rets = []
    for seed in range(3):
        out = str(tmp_path / f"s{seed}")
        res = sac_example.main(
            [
                "--env",
                "Pendulum-v1",
                "--total-steps",
                "15000",
                "--seed",
                str(seed),
                "--out",
                out,
                "--no-progress",
            ]
        )
        rets.append(res["eval_return"])
    assert statistics.median(rets) >= -200, rets


@pytest.mark.slow
def test_sac_seeds_eight_agents_learn_pendulum(tmp_path):
    seeds_example = importlib.import_module("sac_seeds")
    res = seeds_example.main(
        ["--agents", "8", "--total-steps", "15000", "--out", str(tmp_path), "--no-progress"]
    )
    assert min(res["eval_returns"]) >= -250, res["eval_returns"]


def test_csv_logger_fresh_run_truncates_and_resume_appends(tmp_path):
    util = importlib.import_module("_util")
    log = util.CSVLogger(str(tmp_path), ["step", "x"])
    log.log({"step": 1, "x": 1.0})
    log.close()
    log = util.CSVLogger(str(tmp_path), ["step", "x"], resume=True)
    log.log({"step": 2, "x": 2.0})
    log.close()
    assert [r["step"] for r in util.read_csv(log.path)] == [1.0, 2.0]
    # A new run into the same folder starts a new log instead of mixing with the old one.
    log = util.CSVLogger(str(tmp_path), ["step", "x"])
    log.log({"step": 7, "x": 0.0})
    log.close()
    assert [r["step"] for r in util.read_csv(log.path)] == [7.0]
