"""Scale-out: 1 against W processes (``torchrun``, gloo on CPU), and a GPU table when CUDA is there.

Two workloads, each timed with 1 process and with ``--world`` processes (one intra-op thread
each), launched as ``torchrun --standalone --nproc-per-node W bench/scaling.py --worker ...``:

* ``data_parallel``: SAC updates (:func:`funcrl.distributed.data_parallel`, gradients averaged by
  one functional all-reduce inside the step, compiled as one graph by :func:`funcrl.jit`: one
  trace, where ``torch.compile`` recompiles once on the step's own outputs), the size's batch per
  rank (weak scaling: W ranks learn from W times the samples per update). Reported: updates/s and
  samples/s (updates/s x W x batch); the ideal samples/s ratio is W.
* ``population``: ``--seeds`` SAC agents, one vmapped step per rank (:func:`funcrl.jit`) over its share of the
  seeds (:func:`funcrl.distributed.shard`); no communication. Reported: agent-updates/s (seeds x
  steps / s); the ideal ratio is W.

The load average is recorded before and after: on a shared machine the ratios are noisy (another
job on a core halves a rank's speed).

``--gpu`` (CUDA only) instead writes ``bench/results/update_step_gpu.json``: the update-step table
of :mod:`bench.update_step` on the GPU -- funcrl ``funcrl.jit`` + CUDA graphs and
``torch.compile(mode="reduce-overhead")`` against TorchRL compiled and the floor; SAC/TD3/DQN,
small and standard. Usage::

    python bench/scaling.py                      # 1 vs 2 processes on CPU, bench/results/scaling.json
    python bench/scaling.py --world 4 --steps 300
    python bench/scaling.py --gpu                # the GPU table (needs CUDA)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import _harness as H  # noqa: E402

SIZES = {"small": ((64, 64), 64), "standard": ((256, 256), 256)}
OBS, ACT = 17, 6


def _batch(n: int, seed: int):
    import torch

    from funcrl import Record

    g = torch.Generator().manual_seed(seed)
    return Record(
        {
            "observation": torch.randn(n, OBS, generator=g),
            "action": torch.rand(n, ACT, generator=g) * 2 - 1,
            "next": {
                "observation": torch.randn(n, OBS, generator=g),
                "reward": torch.randn(n, 1, generator=g),
                "terminated": torch.rand(n, 1, generator=g) < 0.05,
            },
        },
        batch_ndim=1,
    )


def _timed(step, args, steps: int, barrier) -> float:
    """Seconds per call of ``step`` after two warm-up calls (the compile), all ranks in step."""
    state = list(args)
    for _ in range(2):
        state[:3] = step(*state)
    barrier()
    t0 = time.perf_counter()
    for _ in range(steps):
        state[:3] = step(*state)
    barrier()
    return (time.perf_counter() - t0) / steps


def worker(a: argparse.Namespace) -> None:
    """One rank: times both workloads, rank 0 writes ``a.out``."""
    import torch
    import torch.distributed as dist

    from funcrl import distributed, optim, random, sac, tree
    from funcrl.jit import jit

    torch.set_num_threads(1)
    rank, world = distributed.setup(device="cpu")

    def barrier():
        if world > 1:
            dist.barrier()

    hidden, batch = SIZES[a.size]
    nets = sac.Nets(num_cells=hidden)
    out = {"world": world, "size": a.size, "batch_per_rank": batch}

    # Data parallel: the same params everywhere, each rank its own batch and keys.
    params = sac.init(0, OBS, ACT, nets=nets)
    train = sac.trainer(distributed.data_parallel(optim.adam(3e-4, foreach=True)), nets=nets)
    rec = _batch(batch, seed=rank)
    key = distributed.rank_key(random.key(0))
    step = jit(train.step)
    dt = _timed(
        lambda p, s, m: step(p, s, rec, key), (params, train.init(params), {}), a.steps, barrier
    )
    out["data_parallel"] = {
        "s_per_update": dt,
        "updates_per_s": 1 / dt,
        "samples_per_s": world * batch / dt,
    }

    # Population: seeds split over ranks, one vmapped step per rank.
    seeds = distributed.shard(torch.arange(a.seeds))
    pop = tree.stack([sac.init(int(s), OBS, ACT, nets=nets) for s in seeds])
    ptrain = sac.trainer(optim.adam(3e-4, foreach=True), nets=nets)
    pstate = torch.func.vmap(ptrain.init)(pop)
    keys = distributed.shard(random.split(random.key(1), a.seeds))
    recs = type(rec).stack([_batch(batch, seed=100 + int(s)) for s in seeds])
    vstep = jit(torch.func.vmap(ptrain.step))
    dt = _timed(lambda p, s, m: vstep(p, s, recs, keys), (pop, pstate, {}), a.steps, barrier)
    out["population"] = {
        "seeds": a.seeds,
        "seeds_per_rank": len(seeds),
        "s_per_step": dt,
        "agent_updates_per_s": a.seeds / dt,
    }
    if rank == 0:
        H.write_text(a.out, json.dumps(out))
    if world > 1:
        dist.destroy_process_group()


def launch(world: int, a: argparse.Namespace) -> dict:
    """Runs the worker under ``torchrun`` with ``world`` processes; returns rank 0's results."""
    fd, out = tempfile.mkstemp(suffix=".json")
    os.close(fd)
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        f"--nproc-per-node={world}", __file__, "--worker", "--out", out,
        "--size", a.size, "--steps", str(a.steps), "--seeds", str(a.seeds),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.setdefault("TORCHINDUCTOR_CACHE_DIR", tempfile.mkdtemp(prefix="funcrl-scaling-"))
    subprocess.run(cmd, check=True, env=env)
    return json.loads(Path(out).read_text())


def table(runs: dict[int, dict], world: int) -> str:
    one, many = runs[1], runs[world]
    rows = [
        ("data parallel SAC: updates/s", "data_parallel", "updates_per_s"),
        ("data parallel SAC: samples/s", "data_parallel", "samples_per_s"),
        ("population SAC: agent-updates/s", "population", "agent_updates_per_s"),
    ]
    lines = [
        f"| workload | 1 process | {world} processes | ratio (ideal {world}x for samples/agents) |",
        "|---|---|---|---|",
    ]
    for name, k, m in rows:
        a, b = one[k][m], many[k][m]
        lines.append(f"| {name} | {a:,.0f} | {b:,.0f} | {b / a:.2f}x |")
    return "\n".join(lines)


def gpu_table(a: argparse.Namespace) -> dict:
    import torch

    if not torch.cuda.is_available():
        raise SystemExit("scaling.py --gpu: no CUDA device (torch.cuda.is_available() is False)")
    from bench import update_step

    argv = ["--device", "cuda", "--cudagraphs", "--modes", "compiled", "jit"]
    argv += ["--name", "update_step_gpu"] + (["--out", a.results] if a.results else [])
    argv += ["--rounds", "3", "--steps", "50"] if a.quick else []
    return update_step.main(argv)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--world", type=int, default=2, help="processes to compare with 1")
    p.add_argument("--size", choices=sorted(SIZES), default="small")
    p.add_argument("--steps", type=int, default=200, help="timed updates per workload")
    p.add_argument("--seeds", type=int, default=8, help="population size (divisible by --world)")
    p.add_argument("--gpu", action="store_true", help="the GPU update-step table (CUDA only)")
    p.add_argument("--quick", action="store_true", help="few steps, for a smoke test")
    p.add_argument("--results", default=None, help="results directory (default bench/results)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--out", default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    for name in ("world", "steps", "seeds"):
        if getattr(a, name) < 1:
            raise SystemExit(f"scaling.py: --{name} must be >= 1, got {getattr(a, name)}")
    if a.seeds % a.world:
        raise SystemExit(
            f"scaling.py: --seeds ({a.seeds}) must be divisible by --world ({a.world})"
        )
    if a.worker:
        worker(a)
        return {}
    if a.gpu:
        return gpu_table(a)
    if a.quick:
        a.steps = 20
    load_before = os.getloadavg()
    t0 = time.time()
    runs = {w: launch(w, a) for w in sorted({1, a.world})}
    payload = {
        "env": {**H.environment(), "loadavg_before": load_before, "loadavg_after": os.getloadavg()},
        "wall_s": time.time() - t0,
        "size": a.size,
        "steps": a.steps,
        "runs": {str(w): r for w, r in runs.items()},
        "ratios": {
            "samples_per_s": runs[a.world]["data_parallel"]["samples_per_s"]
            / runs[1]["data_parallel"]["samples_per_s"],
            "agent_updates_per_s": runs[a.world]["population"]["agent_updates_per_s"]
            / runs[1]["population"]["agent_updates_per_s"],
        },
    }
    print(table(runs, a.world))
    print(
        f"load average (1, 5, 15 min) before {load_before}, after {payload['env']['loadavg_after']}"
    )
    if not a.quick:
        print("wrote", H.write_json("scaling", payload, a.results))
    return payload


if __name__ == "__main__":
    main()
