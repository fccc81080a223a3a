"""Whole PPO training runs: funcrl (pure torch env, compiled + vmapped) vs PureJaxRL vs SB3.

Same settings for all (PureJaxRL's CartPole-v1 PPO: 4 envs x 128 steps, 4 epochs x 4
minibatches, tanh 64x64, lr 2.5e-4 annealed), one CPU thread each, each side in its own process
(all with glibc's per-thread cache enlarged, as funcrl's pure examples run: ``examples/_util.py``'s
``MALLOC_TUNABLES``):

* funcrl: :func:`funcrl.pure_train.make_train` on :mod:`funcrl.envs.pure` CartPole; the vmapped
  iteration compiled with inductor, 8 iterations per compiled call (``iterations_per_call``'s
  default for 976 iterations), the calls looped in Python.
* PureJaxRL: ``bench/purejaxrl_ppo.py`` (its ``ppo.py`` re-implemented) on gymnax CartPole;
  ``jax.jit(jax.vmap(train))`` lowered and compiled, then run.
* SB3: ``stable_baselines3.PPO`` on gymnasium's CartPole-v1 (one seed; ``--sb3-steps`` env
  steps, its env-steps/s extrapolates).

Per framework and seed count (``--seeds``, default 1 16 64): compile s, train s (wall, and the
process's CPU seconds with its compiler children: on a shared machine the wall time measures the
load, the CPU time the work), env-steps/s
(all seeds together), per-agent s, final returns (median and min over seeds: the mean of the
last 10 iterations' mean episode return, PureJaxRL's metric). Prints the ratios against the
issue's targets and writes ``bench/results/pure.json`` with the machine's load average.

    python bench/pure.py                                   # the full run (minutes to hours)
    python bench/pure.py --total-steps 20480 --seeds 1 4 --sb3-steps 4096 --no-json   # quick
    python bench/pure.py --seeds 1 --warm --repeat 5 --skip sb3   # one-seed ratio of medians

On a machine whose speed drifts (a shared VM), the one-seed training ratio of a single pair can
be off by a third: ``--repeat N`` runs N more rounds of warm runs for each of ``--repeat-seeds``
(default 1), funcrl and PureJaxRL alternating (the order swapped each round), and reports the
ratio of their medians.

    python bench/pure.py --seeds 1 16 64 --warm --repeat 3 --repeat-seeds 1 16 --pin 1
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

FINAL_ITERS = 10
ONE_THREAD = {
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    # One XLA device; the one-thread limit itself is the taskset pin (--pin). Unpinned (with or
    # without --xla_cpu_multi_thread_eigen=false) 16-seed PureJaxRL runs hung here in a futex
    # wait on the shared 2-core machine; pinned to one core they ran.
    "XLA_FLAGS": "--xla_force_host_platform_device_count=1",
    "FUNCRL_RANDOM_FUSED": "1",
}


def _final(returns: Any) -> list[float]:
    """Per seed: the mean over the last iterations of the per-iteration mean return."""
    return [float(sum(r[-FINAL_ITERS:]) / len(r[-FINAL_ITERS:])) for r in returns]


def _cpu_s() -> float:
    """CPU seconds of this process and its waited-for children (the C++ compiler runs)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def worker_funcrl(
    seeds: int, total_steps: int, algo: str = "ppo", cache: str = "", device: str = "cpu"
) -> dict[str, Any]:
    # Inductor's on-disk caches (FX graph, AOTAutograd) in `cache`: empty for a cold compile,
    # filled by an earlier worker for a warm one. A fresh temporary folder by default.
    import tempfile

    os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache or tempfile.mkdtemp(prefix="funcrl-pure-")
    import torch

    torch.set_num_threads(1)
    import funcrl
    from funcrl.envs import pure

    if algo == "dqn":
        from funcrl.pure_dqn import DQNTrainConfig, make_train

        run = make_train(DQNTrainConfig(total_timesteps=total_steps), pure.make("CartPole-v1"))
    else:
        from funcrl.pure_train import PPOTrainConfig, make_train

        run = make_train(PPOTrainConfig(total_timesteps=total_steps), pure.make("CartPole-v1"))
    keys = funcrl.random.split(funcrl.random.key(0, device=device), seeds)
    cpu: dict[str, float] = {}

    start = time.perf_counter()

    def mark(i: int, metrics: Any) -> None:
        if i == 0:
            cpu["first"] = _cpu_s()
        if i in (0, 1) or i % 100 == 0:
            # Progress on stderr, which the parent passes through: a run stopped by a time
            # limit still shows its compile time and pace.
            print(
                f"funcrl iteration {i}: {time.perf_counter() - start:.1f} s (unix {time.time():.0f})",
                file=sys.stderr,
            )

    # Host-side init first: its eager draws compile funcrl.random's fused kernels once per
    # process (seconds), which is not the training graph's compile.
    run.init(keys[0])
    cpu["start"] = _cpu_s()
    load = os.getloadavg()[0]
    out = run(keys, callback=mark)
    cpu["end"] = _cpu_s()
    iters = out.metrics["episode_return"].shape[1]
    # The first call's time is the compile + its k iterations: count the rest, scaled to all.
    k = out.iterations_per_call
    per_iter = out.train_time / max(iters - k, 1)
    cpu_per_iter = (cpu["end"] - cpu["first"]) / max(iters - k, 1)
    return {
        "compile_s": out.compile_time - k * per_iter,
        "compile_cpu_s": cpu["first"] - cpu["start"] - k * cpu_per_iter,
        "train_s": per_iter * iters,
        "train_cpu_s": cpu_per_iter * iters,
        "iterations_per_call": k,
        "final_returns": _final(out.metrics["episode_return"].tolist()),
        "iterations": iters,
        "loadavg_start": load,
        "loadavg_end": os.getloadavg()[0],
    }


def worker_jax(seeds: int, total_steps: int, cache: str = "") -> dict[str, Any]:
    import jax
    import jax.numpy as jnp

    if cache:
        # JAX's persistent compilation cache (off by default), for the warm-start comparison
        # with Inductor's on-disk caches: every executable cached, however quick to compile.
        jax.config.update("jax_compilation_cache_dir", cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)

    sys.path.insert(0, str(ROOT / "bench"))
    from purejaxrl_ppo import make_train

    train = jax.vmap(make_train({"TOTAL_TIMESTEPS": total_steps}))
    keys = jax.random.split(jax.random.PRNGKey(0), seeds)
    load = os.getloadavg()[0]
    t, c = time.perf_counter(), _cpu_s()
    compiled = jax.jit(train).lower(keys).compile()
    compile_s, compile_cpu_s = time.perf_counter() - t, _cpu_s() - c
    t, c = time.perf_counter(), _cpu_s()
    out = compiled(keys)
    jax.block_until_ready(out)
    train_s, train_cpu_s = time.perf_counter() - t, _cpu_s() - c
    per_iter = jnp.mean(out["metrics"], axis=(-1, -2))  # [S, updates]
    return {
        "compile_s": compile_s,
        "compile_cpu_s": compile_cpu_s,
        "train_s": train_s,
        "train_cpu_s": train_cpu_s,
        "final_returns": _final(per_iter.tolist()),
        "iterations": int(per_iter.shape[1]),
        "loadavg_start": load,
        "loadavg_end": os.getloadavg()[0],
    }


def worker_sb3(steps: int) -> dict[str, Any]:
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env

    torch.set_num_threads(1)
    env = make_vec_env("CartPole-v1", n_envs=4, seed=0)
    model = PPO(
        "MlpPolicy", env, learning_rate=lambda f: 2.5e-4 * f, n_steps=128, batch_size=128,
        n_epochs=4, gamma=0.99, gae_lambda=0.95, clip_range=0.2, ent_coef=0.01, vf_coef=0.5,
        max_grad_norm=0.5, seed=0, device="cpu", verbose=0,
        policy_kwargs={"net_arch": {"pi": [64, 64], "vf": [64, 64]}, "activation_fn": torch.nn.Tanh},
    )  # fmt: skip
    load = os.getloadavg()[0]
    t, c = time.perf_counter(), _cpu_s()
    model.learn(total_timesteps=steps)
    train_s, train_cpu_s = time.perf_counter() - t, _cpu_s() - c
    eps = [e["r"] for e in model.ep_info_buffer]
    return {"compile_s": 0.0, "compile_cpu_s": 0.0, "train_s": train_s, "train_cpu_s": train_cpu_s,
            "steps": steps, "loadavg_start": load, "loadavg_end": os.getloadavg()[0],
            "final_returns": [float(sum(eps) / len(eps)) if eps else float("nan")]}  # fmt: skip


def _spawn(args: list[str], pin: str | None) -> dict[str, Any]:
    cmd = [sys.executable, __file__, *args]
    if pin is not None:
        cmd = ["taskset", "-c", pin, *cmd]
    if str(ROOT / "examples") not in sys.path:
        sys.path.insert(0, str(ROOT / "examples"))
    from _util import malloc_tunables_env  # the parent only: workers import no extra torch

    # Every side, not only funcrl, runs with the larger glibc thread cache funcrl's examples
    # relaunch with (examples/_util.py: MALLOC_TUNABLES), so the allocator is the same for all.
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env = malloc_tunables_env({**os.environ, **ONE_THREAD, "PYTHONPATH": path})
    # The worker's stderr (progress, warnings, a traceback) goes straight to ours.
    proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True, check=False)
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode or not line:
        raise RuntimeError(f"bench/pure.py worker {args} failed (its stderr is above)")
    return json.loads(line[-1][len("RESULT ") :])


def _row(res: dict[str, Any], seeds: int, steps: int) -> dict[str, Any]:
    fin = sorted(res["final_returns"])
    return {
        **res,
        "seeds": seeds,
        "env_steps_per_s": seeds * steps / res["train_s"],
        "per_agent_s": res["train_s"] / seeds,
        "per_agent_cpu_s": res["train_cpu_s"] / seeds,
        "median_return": fin[len(fin) // 2],
        "min_return": fin[0],
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 16, 64])
    ap.add_argument("--total-steps", type=int, default=500_000)
    ap.add_argument("--sb3-steps", type=int, default=50_000)
    ap.add_argument("--skip", nargs="*", default=[], choices=["funcrl", "purejaxrl", "sb3"])
    ap.add_argument("--pin", default="0", help="taskset CPU list for the workers ('' = none)")
    ap.add_argument("--no-json", action="store_true")
    ap.add_argument("--out", default=None, help="results directory (default bench/results)")
    ap.add_argument(
        "--name", default="pure", help="results file bench/results/NAME.json (default: pure)"
    )
    ap.add_argument(
        "--warm",
        action="store_true",
        help="rerun the 1-seed runs of funcrl and PureJaxRL on the on-disk compile caches their "
        "cold runs left (Inductor's FX graph and AOTAutograd caches; JAX's persistent cache)",
    )
    ap.add_argument(
        "--repeat",
        type=int,
        default=0,
        help="with --warm: then N more rounds of training for each of --repeat-seeds, funcrl "
        "and PureJaxRL alternating on their warm caches (the order swapped each round), for "
        "ratios of medians that drift on a noisy machine distorts less",
    )
    ap.add_argument(
        "--repeat-seeds",
        type=int,
        nargs="+",
        default=None,
        help="the seed counts that --repeat reruns (default: 1); each must be among --seeds",
    )
    ap.add_argument(
        "--device",
        default=None,
        help="funcrl's device: cpu or cuda (default: cuda when available, else cpu). On CUDA "
        "the workers are not pinned and PureJaxRL runs on JAX's default device (its GPU)",
    )
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--algo", default="ppo", choices=["ppo", "dqn"], help=argparse.SUPPRESS)
    ap.add_argument("--cache", default="", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.device is None:
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device not in ("cpu", "cuda"):
        raise SystemExit(f"bench/pure.py: --device must be cpu or cuda, got {args.device!r}")
    if args.repeat_seeds is not None and not args.repeat:
        raise SystemExit("bench/pure.py: --repeat-seeds needs --repeat N with N >= 1")
    args.repeat_seeds = list(dict.fromkeys(args.repeat_seeds or [1]))  # each once, in order
    if args.repeat < 0 or (
        args.repeat
        and (
            not args.warm
            or not set(args.repeat_seeds) <= set(args.seeds)
            or {"funcrl", "purejaxrl"} & set(args.skip)
        )
    ):
        raise SystemExit(
            "bench/pure.py: --repeat N (N >= 0) needs --warm, every --repeat-seeds among --seeds "
            f"and neither funcrl nor purejaxrl skipped; got --repeat {args.repeat}, "
            f"--repeat-seeds {args.repeat_seeds}, --seeds {args.seeds}, --skip {args.skip}"
        )
    if args.worker is not None:
        if args.worker == "sb3":
            res = worker_sb3(args.sb3_steps)
        elif args.worker == "funcrl":
            res = worker_funcrl(args.seeds[0], args.total_steps, args.algo, args.cache, args.device)
        else:
            res = worker_jax(args.seeds[0], args.total_steps, args.cache)
        print("RESULT " + json.dumps(res))
        return res

    # One pinned core is the CPU comparison; on a GPU the host's cores compile (Triton's
    # workers) and launch, so nothing is pinned.
    pin = (args.pin or None) if args.device == "cpu" else None
    load_before = os.getloadavg()
    rows: dict[str, dict[str, Any]] = {}
    common = ["--total-steps", str(args.total_steps), "--device", args.device]
    import tempfile

    runs = [(name, s, "") for name in ("purejaxrl", "funcrl") for s in args.seeds]
    # (name, seeds) -> the compile cache its cold run leaves, for the warm runs after it.
    warm_caches: dict[tuple[str, int], str] = {}
    if args.warm:
        kept = set(args.repeat_seeds if args.repeat else []) | ({1} & set(args.seeds))
        for name in ("purejaxrl", "funcrl"):
            for s in sorted(kept):
                cache = warm_caches[name, s] = tempfile.mkdtemp(prefix=f"{name}-pure-warm-{s}-")
                at = runs.index((name, s, ""))
                runs[at] = (name, s, cache)
                if s == 1:
                    # The 1-seed run again on the caches its cold run left: the warm compile time.
                    runs.insert(at + 1, (f"{name}_warm", 1, cache))
    for name, s, cache in runs:
        if name.split("_")[0] in args.skip:
            continue
        extra = ["--cache", cache] if cache else []
        res = _spawn(["--worker", name.split("_")[0], "--seeds", str(s), *common, *extra], pin)
        rows[f"{name}_{s}"] = _row(res, s, args.total_steps)
        r = rows[f"{name}_{s}"]
        print(
            f"{name:11s} seeds={s:3d} compile {r['compile_s']:6.1f} s ({r['compile_cpu_s']:6.1f} "
            f"CPU s)  train {r['train_s']:6.1f} s ({r['train_cpu_s']:6.1f} CPU s)  "
            f"{r['env_steps_per_s']:8.0f} env-steps/s  per agent {r['per_agent_s']:6.2f} s  "
            f"return median {r['median_return']:.1f} min {r['min_return']:.1f}  load "
            f"{r['loadavg_start']:.1f}-{r['loadavg_end']:.1f}",
            flush=True,
        )
    if "sb3" not in args.skip:
        res = _spawn(["--worker", "sb3", "--sb3-steps", str(args.sb3_steps)], pin)
        rows["sb3_1"] = _row(res, 1, args.sb3_steps)
        print(f"sb3       seeds=  1 {rows['sb3_1']['env_steps_per_s']:.0f} env-steps/s", flush=True)

    # repeats[f"{name}_{seeds}"]: train seconds of each warm round.
    repeats: dict[str, list[float]] = {}
    for i in range(args.repeat):
        order = ("funcrl", "purejaxrl") if i % 2 == 0 else ("purejaxrl", "funcrl")
        for s in args.repeat_seeds:
            for name in order:
                extra = ["--cache", warm_caches[name, s]]
                res = _spawn(["--worker", name, "--seeds", str(s), *common, *extra], pin)
                repeats.setdefault(f"{name}_{s}", []).append(res["train_s"])
            print(
                f"repeat {i + 1}/{args.repeat}, seeds={s}: train funcrl "
                f"{repeats[f'funcrl_{s}'][-1]:.2f} s, purejaxrl "
                f"{repeats[f'purejaxrl_{s}'][-1]:.2f} s",
                flush=True,
            )

    for cache in set(warm_caches.values()):  # compiled programs, hundreds of MB: not kept
        shutil.rmtree(cache, ignore_errors=True)

    ratios: dict[str, float] = {}
    for s in args.repeat_seeds if args.repeat else []:
        # Same seeds and steps on both sides: the ratio of train times is the per-agent ratio.
        med = {k: statistics.median(repeats[f"{k}_{s}"]) for k in ("funcrl", "purejaxrl")}
        what = "train_time_1" if s == 1 else f"per_agent_{s}"
        target = "<= 1.5" if s == 1 else "<= 1" if s == 16 else "none"
        ratios[f"{what}_vs_purejaxrl_median_of_repeats (target {target})"] = (
            med["funcrl"] / med["purejaxrl"]
        )

    def ratio(name: str, a: str, b: str, key: str, invert: bool = False) -> None:
        if a in rows and b in rows:
            x, y = rows[a][key], rows[b][key]
            ratios[name] = y / x if invert else x / y

    ratio("train_time_1_vs_purejaxrl (target <= 1.5)", "funcrl_1", "purejaxrl_1", "train_s")
    ratio("compile_time_1_vs_purejaxrl (target <= 1.5)", "funcrl_1", "purejaxrl_1", "compile_s")
    ratio("env_steps_per_s_1_vs_sb3 (target >= 10)", "funcrl_1", "sb3_1", "env_steps_per_s")
    ratio("per_agent_16_vs_purejaxrl (target <= 1)", "funcrl_16", "purejaxrl_16", "per_agent_s")
    ratio("per_agent_16_over_64 (target >= 1.3)", "funcrl_16", "funcrl_64", "per_agent_s")
    # The same by CPU seconds (what a busy shared machine distorts least).
    ratio("train_cpu_1_vs_purejaxrl (target <= 1.5)", "funcrl_1", "purejaxrl_1", "train_cpu_s")
    ratio("compile_cpu_1_vs_purejaxrl (target <= 1.5)", "funcrl_1", "purejaxrl_1", "compile_cpu_s")
    ratio("warm_compile_1_vs_purejaxrl_cold", "funcrl_warm_1", "purejaxrl_1", "compile_s")
    ratio("warm_compile_1_vs_purejaxrl_warm", "funcrl_warm_1", "purejaxrl_warm_1", "compile_s")
    ratio(
        "per_agent_cpu_16_vs_purejaxrl (target <= 1)",
        "funcrl_16",
        "purejaxrl_16",
        "per_agent_cpu_s",
    )
    ratio("per_agent_cpu_16_over_64 (target >= 1.3)", "funcrl_16", "funcrl_64", "per_agent_cpu_s")
    for k, v in ratios.items():
        print(f"{k}: {v:.2f}")
    payload = {
        "rows": rows,
        "repeats_train_s": repeats if args.repeat else None,
        "ratios": ratios,
        "total_steps": args.total_steps,
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "pinned_cpu": pin,
        "device": args.device,
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
        "cpu_count": os.cpu_count(),
    }
    if not args.no_json:
        from bench import _harness as H

        payload["environment"] = H.environment()
        print("wrote", H.write_json(args.name, payload, args.out))
    return payload


if __name__ == "__main__":
    main()
