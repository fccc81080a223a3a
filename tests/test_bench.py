"""Smoke tests of the benchmark scripts: each runs end to end in its --quick mode (no timing
assertions: the numbers of a shared CI machine mean nothing), and the floor does the same maths
as funcrl (its losses are finite and its updates move the params)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

pytest.importorskip("torchrl", reason="the benchmarks compare against TorchRL")


def test_update_step_quick():
    from bench import update_step

    out = update_step.main(["--quick"])
    runs = out["runs"]
    assert {(r["algo"], r["size"]) for r in runs} == {
        ("sac", "small"),
        ("td3", "small"),
        ("dqn", "small"),
    }
    for r in runs:
        for impl in ("funcrl", "torchrl", "floor"):
            res = r["results"][f"{impl}/eager"]
            assert "error" not in res, res
            assert res["per_step_s"]["median"] > 0
        assert r["ratios"]["torchrl_over_funcrl/eager"] > 0
    assert "| sac | small | eager |" in update_step.table(runs)


def test_vmap_seeds_quick():
    from bench import vmap_seeds

    out = vmap_seeds.main(["--quick"])
    res = out["results"]
    assert "error" not in res["vmap2/eager"], res["vmap2/eager"]
    assert res["vmap2/eager"]["seeds"] == 2
    assert res["vmap2/eager"]["per_agent_s"] > 0


def test_env_steps_quick():
    pytest.importorskip("gymnasium")
    from bench import env_steps

    out = env_steps.main(["--quick"])
    for name in ("funcrl", "torchrl"):
        res = out["results"][name]
        assert "error" not in res, res
        assert res["env_steps_per_s"]["median"] > 0


@pytest.mark.parametrize("algo", ["sac", "td3", "dqn"])
def test_floor_step_updates_params(algo):
    from bench import floor
    from bench.update_step import DQN_OBS, N_ACTIONS, make_data

    torch.manual_seed(0)
    d = make_data(algo, 8)
    n = d["next"]
    data = (d["obs"], d["act"], n["reward"], n["observation"], n["terminated"])
    if algo == "dqn":
        state, step = floor.make_dqn(DQN_OBS, N_ACTIONS, hidden=(16,))
    else:
        state, step = getattr(floor, f"make_{algo}")(17, 6, hidden=(16,))
    new, loss = step(state, data)
    assert torch.isfinite(loss)
    assert any(not torch.equal(a, b) for a, b in zip(state[0], new[0]))  # Adam moved the params
    assert any(not torch.equal(a, b) for a, b in zip(state[1], new[1]))  # Polyak moved the targets
    assert new[4] == 1


def test_run_all_tables_render(tmp_path):
    from bench import run_all

    assert run_all.tables(tmp_path) == "\n"  # no results yet: nothing to render, no crash


def test_on_policy_plan_parses_on_both_sides():
    # --dry-run: every case's funcrl command parses with its script's config, and SB3's
    # keyword arguments build its model; nothing trains.
    pytest.importorskip("stable_baselines3")
    import importlib

    import stable_baselines3

    from bench import on_policy

    sys.path.insert(0, str(ROOT / "examples"))
    util = importlib.import_module("_util")
    out = on_policy.main(["--dry-run", "--seeds", "3"])
    assert ("ppo-pendulum", 3, "sb3-nosde", 102400) in out["planned"]  # 25 rollouts of 4096
    assert ("a2c-cartpole", 3, "funcrl", 500_000) in out["planned"]
    assert not any(impl == "funcrl-compile" for *_, impl, _ in out["planned"])  # asked for only
    case = on_policy.CASES["ppo-pendulum"]
    assert "--compile" in on_policy.funcrl_command(case, 0, 4096, "/unused", 1, "funcrl-compile")
    assert "--jit" in on_policy.funcrl_command(case, 0, 4096, "/unused", 1, "funcrl-jit")
    eager = on_policy.funcrl_command(case, 0, 4096, "/unused", 1)
    assert "--compile" not in eager and "--jit" not in eager
    for name, case in on_policy.CASES.items():
        cmd = on_policy.funcrl_command(case, 3, case.rollout_budget(), "/unused", 10)
        script = importlib.import_module(Path(case.script).stem)
        cfg = util.parse_config(script.Config, cmd[2:])
        assert (cfg.env, cfg.seed, cfg.num_envs, cfg.num_steps) == (
            case.env, 3, case.num_envs, case.num_steps
        )  # fmt: skip
        for k, v in case.funcrl.items():
            assert getattr(cfg, k) == pytest.approx(v), (name, k)
        if case.env.startswith("HalfCheetah"):
            continue  # needs mujoco; the kwargs are the same code path
        for impl in case.sb3_variants:
            kw = on_policy.sb3_kwargs(case, impl, 3)
            model = getattr(stable_baselines3, case.sb3_class)("MlpPolicy", case.env, **kw)
            assert model.n_steps == case.num_steps, name


def test_on_policy_summary_by_hand():
    from bench import on_policy

    runs = [
        {"case": "c", "env": "E", "impl": i, "seed": s, "steps": 10, "eval_return": r,
         "train_s": t, "wall_s": t + 1}
        for i, s, r, t in [("funcrl", 0, 5.0, 2.0), ("funcrl", 1, 1.0, 4.0),
                           ("funcrl", 2, 3.0, 9.0), ("sb3", 0, 2.0, 8.0)]
    ]  # fmt: skip
    rows = {r["impl"]: r for r in on_policy.summarize(runs)}
    assert rows["funcrl"]["returns"] == [5.0, 1.0, 3.0]
    assert rows["funcrl"]["return_median"] == 3.0
    assert rows["funcrl"]["train_s_median"] == 4.0
    assert rows["funcrl"]["train_vs_sb3"] == pytest.approx(0.5)  # 4 s against SB3's 8 s
    table = on_policy.markdown(list(rows.values()))
    assert "| c | E | 10 | funcrl | 5.0, 1.0, 3.0 | 3.0 | 2, 4, 9 | 4 | 0.50x sb3 | 5 |" in table


def test_on_policy_rejects_bad_flags(capsys):
    from bench import on_policy

    with pytest.raises(SystemExit):
        on_policy.main(["--total-steps", "0", "--dry-run"])
    assert "--total-steps must be >= 1, got 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        on_policy.main(["--eval-episodes", "0", "--dry-run"])
    assert "--eval-episodes must be >= 1, got 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        on_policy.main(["--cases", "ppo-mars"])
    assert "--cases: invalid choice: 'ppo-mars'" in capsys.readouterr().err


def test_offline_targets_verdicts():
    from bench import offline

    def row(kind, algo, median, behaviour=-655.0):
        return {"dataset": kind, "algo": algo, "median": median, "behaviour": behaviour}

    rows = [
        row("medium", "bc", -640.0),
        row("medium", "bc-256", -600.0),  # the better BC is the bar
        row("medium", "iql", -500.0),  # beats BC (-600) and the behaviour (-655)
        row("medium", "cql", -620.0),  # beats the behaviour only
        row("medium", "td3_bc", -700.0),
        row("expert-medium", "dt", -230.0, behaviour=-408.0),
    ]
    lines = offline.targets(rows, expert=-140.0, rand=-1220.0)
    assert lines[0] == "medium: iql -500.0 against BC and the behaviour policy (-600.0): met"
    assert lines[1].endswith("(-600.0): MISSED") and lines[1].startswith("medium: cql")
    assert lines[2].startswith("medium: td3_bc") and lines[2].endswith("MISSED")
    # DT: 100 (-230 + 1220) / (-140 + 1220) = 91.7.
    assert lines[3] == "expert-medium: dt -230.0, normalised 91.7 (>= 90): met"


def test_pure_iteration_inductor_options_are_checked_and_set():
    import torch._inductor.config as config

    from bench import pure_iteration

    with pytest.raises(SystemExit, match="--inductor takes KEY=VALUE, got 'cpp.vec_isa_ok'"):
        pure_iteration._set_inductor_options(["cpp.vec_isa_ok"])
    with pytest.raises(SystemExit, match="has no 'cpp.no_such_option'"):
        pure_iteration._set_inductor_options(["cpp.no_such_option=1"])
    old = config.cpp.enable_loop_tail_vec
    try:
        pure_iteration._set_inductor_options(
            [f"cpp.enable_loop_tail_vec={'false' if old else 'true'}"]
        )
        assert config.cpp.enable_loop_tail_vec is (not old)
    finally:
        config.cpp.enable_loop_tail_vec = old
    with pytest.raises(SystemExit, match="--seeds must be >= 1, got 0"):
        pure_iteration.main(["--seeds", "0"])


def test_pure_iteration_times_each_compiler_call_and_passes_errors_on():
    import types

    from bench import pure_iteration

    def run(cmd_line, cwd):
        if cmd_line == "fail":
            raise RuntimeError("g++ failed")
        return cmd_line

    builder = types.SimpleNamespace(_run_compile_cmd=run)
    seconds = pure_iteration.time_compiler_calls(builder)
    assert builder._run_compile_cmd("g++ a.cpp", "/") == "g++ a.cpp"
    with pytest.raises(RuntimeError, match="g\\+\\+ failed"):
        builder._run_compile_cmd("fail", "/")
    assert len(seconds) == 2 and all(s >= 0 for s in seconds)


def test_update_step_impls_flag_limits_the_implementations(tmp_path):
    from bench import update_step

    out = update_step.main(
        ["--algos", "dqn", "--sizes", "small", "--modes", "eager", "--impls", "funcrl",
         "--rounds", "1", "--steps", "2", "--no-memory", "--no-explain", "--device", "cpu",
         "--no-cudagraphs", "--out", str(tmp_path), "--name", "t"]
    )  # fmt: skip
    assert set(out["runs"][0]["results"]) == {"funcrl/eager"}


def test_pure_repeat_needs_warm_one_seed_runs_of_both():
    from bench import pure

    for argv in (
        ["--repeat", "3", "--seeds", "1"],  # no --warm
        ["--repeat", "3", "--warm", "--seeds", "16"],  # no one-seed run to repeat
        ["--repeat", "3", "--warm", "--seeds", "1", "--repeat-seeds", "1", "16"],  # 16 not run
        ["--repeat", "3", "--warm", "--seeds", "1", "--skip", "purejaxrl"],
        ["--repeat", "-1", "--warm", "--seeds", "1"],
    ):
        with pytest.raises(SystemExit, match=r"bench/pure.py: --repeat N \(N >= 0\) needs --warm"):
            pure.main([*argv, "--device", "cpu"])
    with pytest.raises(SystemExit, match=r"bench/pure.py: --repeat-seeds needs --repeat N"):
        pure.main(["--warm", "--seeds", "1", "16", "--repeat-seeds", "16", "--device", "cpu"])


def test_pure_repeat_alternates_warm_runs_per_seed_count(monkeypatch):
    """The orchestration alone (workers faked): cold runs keep their caches, --repeat reruns
    each of --repeat-seeds on them with the order swapped each round, and the ratios are of
    the medians."""
    from bench import pure

    calls = []
    # funcrl's train seconds are 2x PureJaxRL's on one seed and 0.5x per agent on 2 seeds.
    train = {("funcrl", "1"): 4.0, ("purejaxrl", "1"): 2.0, ("funcrl", "2"): 1.0}
    train[("purejaxrl", "2")] = 2.0

    def fake_spawn(args, pin):
        opts = dict(zip(args[::2], args[1::2]))
        calls.append((opts["--worker"], opts.get("--seeds"), opts.get("--cache", "")))
        seeds = int(opts.get("--seeds", 1))
        t = train[opts["--worker"], opts["--seeds"]] + 0.001 * len(calls)  # a drift
        return {
            "compile_s": 1.0, "compile_cpu_s": 1.0, "train_s": t, "train_cpu_s": t,
            "final_returns": [500.0] * seeds, "loadavg_start": 0.0, "loadavg_end": 0.0,
        }  # fmt: skip

    monkeypatch.setattr(pure, "_spawn", fake_spawn)
    out = pure.main(
        ["--seeds", "1", "2", "--warm", "--repeat", "3", "--repeat-seeds", "1", "2", "2",
         "--skip", "sb3", "--no-json", "--device", "cpu"]
    )  # fmt: skip
    cold = {(w, s): c for w, s, c in calls[:6]}
    assert [(w, s) for w, s, _ in calls[:6]] == [
        ("purejaxrl", "1"), ("purejaxrl", "1"), ("purejaxrl", "2"),
        ("funcrl", "1"), ("funcrl", "1"), ("funcrl", "2"),
    ]  # fmt: skip
    assert len(set(cold.values())) == 4 and "" not in cold.values()
    rounds = calls[6:]
    assert len(rounds) == 3 * 2 * 2
    assert [w for w, _, _ in rounds[:4]] == ["funcrl", "purejaxrl"] * 2
    assert [w for w, _, _ in rounds[4:8]] == ["purejaxrl", "funcrl"] * 2
    assert all(c == cold[w, s] for w, s, c in rounds)
    assert {k: len(v) for k, v in out["repeats_train_s"].items()} == dict.fromkeys(
        ("funcrl_1", "purejaxrl_1", "funcrl_2", "purejaxrl_2"), 3
    )
    ratios = out["ratios"]
    assert ratios["train_time_1_vs_purejaxrl_median_of_repeats (target <= 1.5)"] == pytest.approx(
        2.0, rel=0.02
    )
    assert ratios["per_agent_2_vs_purejaxrl_median_of_repeats (target none)"] == pytest.approx(
        0.5, rel=0.02
    )


def test_trace_cost_quick(capsys):
    from bench import trace_cost

    out = trace_cost.main(["--quick"])
    assert out["vmap_leading"] > 0 and out["torch.func.vmap"] > 0 and out["ratio"] > 0
    assert "torch.func.vmap / vmap_leading" in capsys.readouterr().out


@pytest.mark.slow  # ~20 s of dynamo tracing for a benchmark script
def test_trace_by_function_names_the_tree_work(capsys):
    from bench import trace_by_function

    out = trace_by_function.main(["--tiny", "--iterations-per-call", "1", "--top", "5"])
    printed = capsys.readouterr().out
    assert out["first_call_s"] > 0
    assert "funcrl/pure_train.py" in printed and "pytree work" in printed


def test_products_lists_the_iteration_products(capsys):
    from bench import products

    rows = products.main(["--seeds", "2", "--calls", "2"])
    shapes = [r["shapes"] for r in rows]
    # the first layer's weight gradient and the actor's head, seeds batched
    assert [(2, 64, 128), (2, 128, 4)] in shapes
    assert [(2, 128, 64), (2, 64, 2)] in shapes
    assert all(r["calls"] > 0 and r["us"] > 0 for r in rows)
    assert "all products:" in capsys.readouterr().out
