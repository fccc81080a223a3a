"""Offline RL learning targets on locally built Pendulum-v1 datasets, 3 seeds each.

    python bench/offline.py                                  # everything below, seeds 0 1 2
    python bench/offline.py --algos iql bc --kinds medium --seeds 0

1. Builds the datasets with ``examples/make_dataset.py`` (defaults: SAC with 256x256 nets; medium
   after 3,000 steps, expert after 15,000, 50k transitions each; medium-replay the buffer of a
   50k-step run making the medium policy's updates; random for the normalisation) unless they
   exist under ``--data``.
2. Trains each offline method (:data:`VARIANTS`: ``examples/bc.py`` at 64x64 and 256x256,
   ``td3_bc.py``, ``iql.py`` at 256x256, ``cql.py``; observations standardised by the dataset's
   statistics) on medium and medium-replay for ``--updates`` gradient updates (default 50,000,
   64x64 nets unless said: sized for a 2-core CPU), and the Decision Transformer (``examples/dt.py``, :data:`DT_SIZE`) on
   expert-medium for ``--dt-updates`` (default 3,000) conditioned on the expert policy's mean
   return, each seed a fresh single-thread subprocess (``--jobs`` at
   once), every final policy scored by ``funcrl.envs.evaluate`` (deterministic,
   ``--eval-episodes`` fixed-seed episodes, default 20).
3. Prints a markdown table: per-seed returns, the medians, the behaviour policy's mean return and
   each method's D4RL-normalised score ``100 (R - R_random) / (R_expert - R_random)``, and writes
   ``bench/results/<--results>.json`` (default ``offline``).

The targets (the offline issue's): on medium and medium-replay, IQL, CQL and TD3+BC each beat the
better of the two BC baselines and the behaviour policy (medians); the Decision Transformer reaches 90% of the expert's return. On
Pendulum-v1 returns are negative, so "90% of the expert return" is read as D4RL's normalised score
>= 90 (the random policy's return is 0, the expert's 100).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench import _harness as H  # noqa: E402

# Each method label: (script, flags added after --num-cells). IQL's advantage-weighted actor needs
# 256x256 nets on medium-replay (64x64 stays at the behaviour level), and "bc-256" gives the
# baseline the same size; CQL's 64x64 keeps its 10 sampled actions per state affordable.
VARIANTS = {
    "bc": ("bc", []),
    "bc-256": ("bc", ["--num-cells", "256", "256"]),
    "td3_bc": ("td3_bc", []),
    "iql": ("iql", ["--num-cells", "256", "256"]),
    "cql": ("cql", []),
}
ALGOS = tuple(VARIANTS)
# A smaller transformer than examples/dt.py's default (width 128, 3 layers, batch 64), to fit a
# 2-core CPU: width 64, 2 layers, 32 segments of 20 steps per update.
DT_SIZE = ["--n-embd", "64", "--n-layer", "2", "--batch-size", "32"]
KINDS = ("medium", "medium-replay")


def _run(cmd: list[str]) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env["PYTHONPATH"] = ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return time.perf_counter() - t0


def dataset(data: str, kind: str) -> dict:
    """The recipe of ``<data>/pendulum-<kind>``, built first if missing."""
    out = os.path.join(data, f"pendulum-{kind}")
    if not os.path.exists(os.path.join(out, "recipe.json")):
        cmd = [sys.executable, "examples/make_dataset.py", "--kind", kind, "--out", out]
        _run(cmd + ["--policy-dir", os.path.join(data, "pendulum.sac"), "--no-progress"])
    with open(os.path.join(out, "recipe.json")) as f:
        return {**json.load(f), "path": out}


def train(algo: str, path: str, seed: int, args, extra: list[str]) -> dict:
    out = os.path.join(args.runs, f"{algo}-{os.path.basename(path)}-{seed}")
    script, flags = VARIANTS.get(algo, (algo, []))
    cmd = [sys.executable, f"examples/{script}.py", "--dataset", path, "--seed", str(seed)]
    cmd += ["--total-steps", str(args.updates), "--eval-every", "0"]
    cmd += ["--eval-episodes", str(args.eval_episodes)]
    cmd += ["--out", out, "--overwrite", "--no-progress", "--device", args.device]
    if algo != "dt":  # the transformer has its own size flags
        cmd += ["--num-cells", *map(str, args.num_cells), *flags]
    wall = _run(cmd + extra)
    with open(os.path.join(out, "result.json")) as f:
        res = json.load(f)
    return {"return": res["eval_return"], "train_time": res["train_time"], "wall": wall}


def targets(rows: list[dict], expert: float, rand: float) -> list[str]:
    """The offline issue's targets against the rows: on each dataset IQL, CQL and TD3+BC beat BC
    and the behaviour policy (medians); the Decision Transformer reaches D4RL-normalised 90."""
    out = []
    by = {(r["dataset"], r["algo"]): r for r in rows}
    for kind in sorted({r["dataset"] for r in rows if r["algo"] != "dt"}):
        bcs = [r["median"] for (k, a), r in by.items() if k == kind and a.startswith("bc")]
        bc = max(bcs) if bcs else None  # the best BC baseline
        for algo in ("iql", "cql", "td3_bc"):
            r = by.get((kind, algo))
            if r is None:
                continue
            bar = r["behaviour"] if bc is None else max(r["behaviour"], bc)
            verdict = "met" if r["median"] > bar else "MISSED"
            against = "the behaviour policy" if bc is None else "BC and the behaviour policy"
            out.append(f"{kind}: {algo} {r['median']:.1f} against {against} ({bar:.1f}): {verdict}")
    dt = by.get(("expert-medium", "dt"))
    if dt is not None:
        norm = 100.0 * (dt["median"] - rand) / (expert - rand)
        verdict = "met" if norm >= 90.0 else "MISSED"
        out.append(
            f"expert-medium: dt {dt['median']:.1f}, normalised {norm:.1f} (>= 90): {verdict}"
        )
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--algos", nargs="+", default=list(ALGOS), choices=ALGOS)
    p.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    p.add_argument("--dt", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--updates", type=int, default=50_000, help="gradient updates per run")
    p.add_argument("--dt-updates", type=int, default=3_000)
    p.add_argument("--num-cells", nargs="+", type=int, default=[64, 64])
    p.add_argument("--eval-episodes", type=int, default=20)
    p.add_argument("--jobs", type=int, default=1, help="runs in parallel (one thread each)")
    p.add_argument(
        "--device",
        default="auto",
        help="each run's --device: auto (CUDA when available), cpu, cuda",
    )
    p.add_argument("--data", default="runs/datasets")
    p.add_argument("--runs", default="runs/bench_offline")
    p.add_argument("--results", default="offline", help="bench/results/<name>.json")
    args = p.parse_args(argv)

    rand = dataset(args.data, "random")["behaviour_return"]
    expert = dataset(args.data, "expert")["behaviour_return"]

    def score(r: float) -> float:
        return 100.0 * (r - rand) / (expert - rand)

    rows = []
    pool = concurrent.futures.ThreadPoolExecutor(args.jobs)

    def seeds(algo: str, path: str, a, extra: list[str]) -> list[dict]:
        return list(pool.map(lambda s: train(algo, path, s, a, extra), args.seeds))

    # Every run is submitted at once, so --jobs workers stay busy across methods and datasets.
    infos = {kind: dataset(args.data, kind) for kind in args.kinds}
    futures = {
        (kind, algo): [
            pool.submit(train, algo, infos[kind]["path"], s, args, []) for s in args.seeds
        ]
        for kind in args.kinds
        for algo in args.algos
    }
    for kind in args.kinds:
        info = infos[kind]
        for algo in args.algos:
            runs = [f.result() for f in futures[kind, algo]]
            rets = [r["return"] for r in runs]
            rows.append(
                {
                    "dataset": kind,
                    "algo": algo,
                    "returns": rets,
                    "runs": runs,
                    "median": statistics.median(rets),
                    "behaviour": info["behaviour_return"],
                    "recipe": info["recipe"],
                    "transitions": info["transitions"],
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    if args.dt:
        info = dataset(args.data, "expert-medium")
        extra = ["--no-target-from-dataset", "--target-return", repr(expert), *DT_SIZE]
        extra_args = argparse.Namespace(**{**vars(args), "updates": args.dt_updates})
        runs = seeds("dt", info["path"], extra_args, extra)
        rets = [r["return"] for r in runs]
        rows.append(
            {
                "dataset": "expert-medium",
                "algo": "dt",
                "returns": rets,
                "runs": runs,
                "median": statistics.median(rets),
                "behaviour": info["behaviour_return"],
                "recipe": info["recipe"],
                "transitions": info["transitions"],
                "target_return": expert,
            }
        )
        print(json.dumps(rows[-1]), flush=True)

    lines = [
        "| dataset | method | returns per seed | median | normalised | behaviour | train s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        secs = statistics.median(x["train_time"] for x in r["runs"])
        lines.append(
            f"| {r['dataset']} | {r['algo']} | {', '.join(f'{x:.0f}' for x in r['returns'])} | "
            f"**{r['median']:.0f}** | {score(r['median']):.0f} | {r['behaviour']:.0f} | {secs:.0f} |"
        )
    table = "\n".join(lines)
    print(table)
    print(f"random policy {rand:.1f}, expert policy {expert:.1f}")
    verdicts = targets(rows, expert, rand)
    for line in verdicts:
        print(line)
    payload = {
        "rows": rows,
        "random_return": rand,
        "expert_return": expert,
        "args": vars(args),
        "table": table,
        "targets": verdicts,
        "environment": H.environment(),
    }
    H.write_json(args.results, payload)
    return payload


if __name__ == "__main__":
    main()
