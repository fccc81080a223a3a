"""Learning benchmark: funcrl's example scripts against Stable-Baselines3, same settings.

    python bench/learning.py                       # SAC on Pendulum-v1, 3 seeds each
    python bench/learning.py --algos sac td3 --seeds 0 1 --threads 1
    python bench/learning.py --impls funcrl        # one side only

Each run is a fresh subprocess (so imports, ``torch.compile`` and environment creation count in its
wall time, and thread settings cannot leak between runs) with the same network sizes, batch size,
learning rate, buffer size, warm-up steps, number of steps and torch thread count on both sides.
Both trained policies are then scored by the same code, ``funcrl.envs.evaluate``: the mean return of
the deterministic policy over ``--eval-episodes`` episodes with fixed seeds.

Both sides also evaluate every ``--eval-every`` steps (same episodes, same scorer) with the clock
paused, so each run leaves a curve of (step, training seconds, return). From those curves the
summary takes the issue's measure, *time to SB3's return*: the training seconds each run needs
before its evaluation first reaches SB3's median final return, next to the full run's time.

Results (one row per run, plus the medians) go to ``bench/results/learning.json``; a markdown
table for the README is printed.

Adding an algorithm: give :data:`ALGOS` an :class:`Algo` naming its example script
(``examples/<name>.py``, which must accept the ``_offpolicy.OffPolicyConfig`` flags plus the
shared hyperparameters below and write ``<out>/result.json``) and its SB3 class.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "bench", "results")
sys.path.insert(0, ROOT)

from bench import _harness as H  # noqa: E402


@dataclasses.dataclass(frozen=True)
class Algo:
    """One learning comparison.

    Args:
        script: funcrl's example script, relative to the repository root.
        sb3_class: the ``stable_baselines3`` class with the same algorithm.
        env: gymnasium id.
        total_steps: environment steps per run.
        hyper: shared hyperparameters, funcrl's flag names (``learning_rate``, ``batch_size``,
            ``buffer_size``, ``learning_starts``, ``tau``, ``gamma``, ``num_cells``); the same values
            are given to SB3.
        funcrl_extra: flags only funcrl's script takes.
        sb3_extra: keyword arguments only SB3's class takes.
    """

    script: str
    sb3_class: str
    env: str = "Pendulum-v1"
    total_steps: int = 15_000
    hyper: dict[str, Any] = dataclasses.field(default_factory=dict)
    funcrl_extra: tuple[str, ...] = ()
    sb3_extra: dict[str, Any] = dataclasses.field(default_factory=dict)


_OFF_POLICY = {
    "learning_rate": 1e-3,
    "batch_size": 256,
    "buffer_size": 1_000_000,
    "learning_starts": 1_000,
    "tau": 0.005,
    "gamma": 0.99,
    "num_cells": (256, 256),
}

ALGOS: dict[str, Algo] = {
    "sac": Algo("examples/sac.py", "SAC", hyper=_OFF_POLICY),
    # Scripts the table lists; they run once examples/<name>.py exists.
    "td3": Algo("examples/td3.py", "TD3", hyper=_OFF_POLICY),
    "ddpg": Algo("examples/ddpg.py", "DDPG", hyper=_OFF_POLICY),
}


# ------------------------------------------------------------------------------------- workers


def _eval_seed(seed: int) -> int:
    # The seeds examples/_offpolicy.py evaluates with, so both sides play the same episodes.
    return 1_000_000 + 1_000 * seed


# Set by main from --device / --cudagraphs (both sides train on the same device).
DEVICE = "cpu"
CUDAGRAPHS = False


def run_funcrl(
    name: str, algo: Algo, seed: int, threads: int, out: str, episodes: int, eval_every: int
) -> dict:
    """Runs funcrl's example script in a subprocess; returns its result.json plus wall time."""
    h = algo.hyper
    cmd = [sys.executable, os.path.join(ROOT, algo.script), "--env", algo.env]
    cmd += ["--total-steps", str(algo.total_steps), "--seed", str(seed), "--threads", str(threads)]
    cmd += ["--out", out, "--no-progress", "--eval-every", str(eval_every)]
    cmd += ["--eval-episodes", str(episodes)]
    cmd += ["--overwrite"]  # each benchmark run replaces the previous one in its folder
    for k, v in h.items():
        flag = "--" + k.replace("_", "-")
        cmd += [flag, *map(str, v)] if isinstance(v, (tuple, list)) else [flag, str(v)]
    cmd += list(algo.funcrl_extra)
    cmd += ["--device", DEVICE] + (["--cudagraphs"] if CUDAGRAPHS else [])
    wall, cpu = _run(cmd, threads)
    with open(os.path.join(out, "result.json")) as fh:
        res = json.load(fh)
    with open(res["csv"]) as fh:
        curve = [
            {
                "step": int(r["step"]),
                "time": float(r["time"]),
                "eval_return": float(r["eval_return"]),
            }
            for r in csv.DictReader(fh)
            if r["eval_return"]
        ]
    return {
        "eval_return": res["eval_return"],
        "train_s": res["train_time"],
        "wall_s": wall,
        "cpu_s": cpu,
        "curve": curve,
    }


def run_sb3(
    name: str, algo: Algo, seed: int, threads: int, out: str, episodes: int, eval_every: int
) -> dict:
    """Runs SB3 in a subprocess (this file with ``--worker``); returns its result plus wall time."""
    os.makedirs(out, exist_ok=True)
    spec = {"algo": name, "seed": seed, "threads": threads, "out": out, "episodes": episodes}
    spec["total_steps"], spec["eval_every"] = algo.total_steps, eval_every
    spec["device"] = DEVICE
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(spec)]
    wall, cpu = _run(cmd, threads)
    with open(os.path.join(out, "result.json")) as fh:
        res = json.load(fh)
    return {
        "eval_return": res["eval_return"],
        "train_s": res["train_time"],
        "wall_s": wall,
        "cpu_s": cpu,
        "curve": res["curve"],
    }


def _run(cmd: list[str], threads: int) -> tuple[float, float]:
    """Runs ``cmd``; returns ``(wall seconds, CPU seconds)``. The CPU time (user + system of the
    child) is the fairer number on a machine shared with other jobs."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    # The scripts import this checkout's funcrl, not whichever one is installed.
    env["PYTHONPATH"] = ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def sb3_worker(spec: dict) -> None:
    """Trains and evaluates SB3 inside the subprocess; writes ``<out>/result.json``."""
    import numpy as np
    import stable_baselines3
    import torch
    from stable_baselines3.common.callbacks import BaseCallback

    from funcrl import envs

    torch.set_num_threads(spec["threads"])
    algo = dataclasses.replace(ALGOS[spec["algo"]], total_steps=spec["total_steps"])
    h = algo.hyper
    every, curve = spec["eval_every"], []

    def evaluate(model) -> float:
        def policy(obs: torch.Tensor) -> torch.Tensor:
            action, _ = model.predict(obs.numpy(), deterministic=True)
            return torch.as_tensor(np.asarray(action))

        rets = envs.evaluate(policy, algo.env, spec["episodes"], seed=_eval_seed(spec["seed"]))
        return float(rets["return"].mean())

    class PeriodicEval(BaseCallback):
        """funcrl's schedule: evaluate every ``every`` steps, with the clock paused."""

        excluded = 0.0

        def _on_step(self) -> bool:
            n = self.num_timesteps
            if every > 0 and n % every == 0 and n < algo.total_steps:
                t = time.perf_counter()
                elapsed = t - t0 - self.excluded
                curve.append({"step": n, "time": elapsed, "eval_return": evaluate(self.model)})
                self.excluded += time.perf_counter() - t
            return True

    t0 = time.perf_counter()
    cls = getattr(stable_baselines3, algo.sb3_class)
    model = cls(
        "MlpPolicy",
        algo.env,
        learning_rate=h["learning_rate"],
        buffer_size=min(h["buffer_size"], algo.total_steps),
        learning_starts=h["learning_starts"],
        batch_size=h["batch_size"],
        tau=h["tau"],
        gamma=h["gamma"],
        train_freq=1,
        gradient_steps=1,
        policy_kwargs={"net_arch": list(h["num_cells"])},
        seed=spec["seed"],
        device=spec.get("device", "cpu"),
        verbose=0,
        **algo.sb3_extra,
    )
    callback = PeriodicEval()
    model.learn(total_timesteps=algo.total_steps, callback=callback)
    train_time = time.perf_counter() - t0 - callback.excluded
    ret = evaluate(model)
    curve.append({"step": algo.total_steps, "time": train_time, "eval_return": ret})
    result = {"eval_return": ret, "train_time": train_time, "curve": curve}
    H.write_text(os.path.join(spec["out"], "result.json"), json.dumps(result))


RUNNERS = {"funcrl": run_funcrl, "sb3": run_sb3}


# ------------------------------------------------------------------------------------- report


def time_to_return(curve: list[dict], threshold: float) -> float | None:
    """Training seconds at the first evaluation whose return is at least ``threshold``; ``None``
    when the run never gets there."""
    for point in curve:
        if point["eval_return"] >= threshold:
            return point["time"]
    return None


def summarize(runs: list[dict]) -> list[dict]:
    """Medians per (algo, impl); wall and CPU time relative to SB3's; and, when the runs carry
    curves, the training seconds each needs to reach SB3's median final return."""
    rows = []
    keys = sorted({(r["algo"], r["impl"]) for r in runs})
    for algo, impl in keys:
        rs = [r for r in runs if r["algo"] == algo and r["impl"] == impl]
        rets = [r["eval_return"] for r in rs]
        rows.append(
            {
                "algo": algo,
                "env": rs[0]["env"],
                "impl": impl,
                "seeds": [r["seed"] for r in rs],
                "return_median": statistics.median(rets),
                "return_min": min(rets),
                "return_max": max(rets),
                "wall_s_median": statistics.median(r["wall_s"] for r in rs),
                "train_s_median": statistics.median(r["train_s"] for r in rs),
                "cpu_s_median": statistics.median(r.get("cpu_s", r["wall_s"]) for r in rs),
            }
        )
    for row in rows:
        ref = [x for x in rows if x["algo"] == row["algo"] and x["impl"] == "sb3"]
        row["wall_vs_sb3"] = row["wall_s_median"] / ref[0]["wall_s_median"] if ref else None
        row["train_vs_sb3"] = row["train_s_median"] / ref[0]["train_s_median"] if ref else None
        row["cpu_vs_sb3"] = row["cpu_s_median"] / ref[0]["cpu_s_median"] if ref else None
        row["sb3_return"] = row["time_to_sb3_return_s"] = row["reach_vs_sb3_run"] = None
        rs = [r for r in runs if r["algo"] == row["algo"] and r["impl"] == row["impl"]]
        if ref and all(r.get("curve") for r in rs):
            threshold = ref[0]["return_median"]
            times = [time_to_return(r["curve"], threshold) for r in rs]
            row["sb3_return"], row["times_to_sb3_return_s"] = threshold, times
            # A run that never reaches the threshold counts as infinitely slow in the median.
            med = statistics.median(math.inf if t is None else t for t in times)
            row["time_to_sb3_return_s"] = med
            row["reach_vs_sb3_run"] = med / ref[0]["train_s_median"]
    return rows


def markdown(rows: list[dict], steps: dict[str, int], threads: int) -> str:
    lines = [
        f"| algorithm | env | steps | implementation | eval return, median [min, max] | training s "
        f"(median, {threads} thread{'s' * (threads > 1)}; evaluations excluded) | vs SB3 | process "
        "CPU s (start-up and evaluations included) | vs SB3 | training s to SB3's return | vs SB3's "
        "training s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def ratio(x):
        return "-" if x is None else ("never" if math.isinf(x) else f"{x:.2f}x")

    def secs(x):
        return "-" if x is None else ("never" if math.isinf(x) else f"{x:.0f}")

    for r in rows:
        lines.append(
            f"| {r['algo'].upper()} | {r['env']} | {steps[r['algo']]} | {r['impl']} "
            f"({len(r['seeds'])} seeds) | {r['return_median']:.0f} [{r['return_min']:.0f}, "
            f"{r['return_max']:.0f}] | {r['train_s_median']:.0f} | {ratio(r['train_vs_sb3'])} | "
            f"{r['cpu_s_median']:.0f} | {ratio(r['cpu_vs_sb3'])} | "
            f"{secs(r.get('time_to_sb3_return_s'))} | {ratio(r.get('reach_vs_sb3_run'))} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--algos", nargs="+", default=["sac"], choices=sorted(ALGOS))
    p.add_argument("--impls", nargs="+", default=["funcrl", "sb3"], choices=sorted(RUNNERS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--threads", type=int, default=1, help="torch threads on both sides")
    p.add_argument("--total-steps", type=int, default=None, help="override every algo's steps")
    p.add_argument("--eval-episodes", type=int, default=10)
    p.add_argument(
        "--eval-every", type=int, default=1000, help="steps between curve points (0: final only)"
    )
    p.add_argument("--out", default=os.path.join(RESULTS, "learning.json"))
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    H.add_device_args(p)
    args = p.parse_args(argv)
    global DEVICE, CUDAGRAPHS
    dev, CUDAGRAPHS = H.device_from_args(args)
    DEVICE = str(dev)
    if args.worker is not None:
        sb3_worker(json.loads(args.worker))
        return {}
    algos = {}
    for name in args.algos:
        algo = ALGOS[name]
        if args.total_steps is not None:
            algo = dataclasses.replace(algo, total_steps=args.total_steps)
        if not os.path.exists(os.path.join(ROOT, algo.script)):
            print(f"skipping {name}: {algo.script} does not exist yet")
            continue
        algos[name] = algo
    runs_dir = os.path.join(os.path.dirname(os.path.abspath(args.out)), "learning_runs")
    runs = []
    for name, algo in algos.items():
        for seed in args.seeds:
            for impl in args.impls:
                out = os.path.join(runs_dir, f"{name}_{impl}_seed{seed}")
                res = RUNNERS[impl](
                    name, algo, seed, args.threads, out, args.eval_episodes, args.eval_every
                )
                row = {"algo": name, "env": algo.env, "impl": impl, "seed": seed, **res}
                runs.append(row)
                print(
                    f"{name} {impl} seed {seed}: return {res['eval_return']:.1f}, "
                    f"wall {res['wall_s']:.1f} s (training {res['train_s']:.1f} s)",
                    flush=True,
                )
    rows = summarize(runs)
    report = {
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
        },
        "threads": args.threads,
        "device": DEVICE,
        "cuda_graphs": CUDAGRAPHS,
        "settings": {n: dataclasses.asdict(a) for n, a in algos.items()},
        "runs": runs,
        "summary": rows,
    }
    H.write_text(args.out, json.dumps(report, indent=2))
    print(markdown(rows, {n: a.total_steps for n, a in algos.items()}, args.threads))
    print(f"results: {args.out}")
    return report


if __name__ == "__main__":
    main()
