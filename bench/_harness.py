"""Timing plumbing shared by the bench scripts: interleaved rounds, robust statistics, cold compile
time, recompiles, graph breaks and peak memory.

Method (the same for every script):

* One intra-op thread (``torch.set_num_threads(1)``) unless a script says otherwise.
* Every implementation is built and warmed up (compiled) first; the cold compile time is the wall
  time of the first call, with inductor's on-disk caches pointed at a fresh directory so nothing
  is reused from an earlier run.
* Then ``rounds`` rounds; in each round every implementation runs ``steps`` updates back to back,
  in a freshly shuffled order (interleaving spreads the noise of a shared machine over all of
  them). A round's number is its mean time per update; we report the median over rounds and the
  inter-quartile range (IQR) of the rounds, so the noise shows.
"""

from __future__ import annotations

import json
import os
import platform
import random
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def setup_torch(threads: int = 1, fresh_cache: bool = True) -> None:
    """One thread, and (optionally) a fresh inductor cache so compile times are cold.

    Must run before the first ``torch.compile`` call of the process.
    """
    if fresh_cache and "TORCHINDUCTOR_CACHE_DIR" not in os.environ:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="funcrl-bench-inductor-")
    import torch

    torch.set_num_threads(threads)
    try:
        import torch._inductor.config as ic

        ic.fx_graph_cache = False
        if hasattr(ic, "autotune_local_cache"):
            ic.autotune_local_cache = False
    except Exception:  # pragma: no cover - inductor missing
        pass
    try:
        import torch._functorch.config as fc

        if hasattr(fc, "enable_autograd_cache"):
            fc.enable_autograd_cache = False
    except Exception:  # pragma: no cover
        pass
    # Large graphs (TorchRL's) may recompile a few times; never fall back silently to eager
    # because of the default cache limit.
    import torch._dynamo

    torch._dynamo.config.cache_size_limit = 64


def quantiles(xs: list[float]) -> dict[str, float]:
    """Median, IQR (q75 - q25), min and max of ``xs``."""
    xs = sorted(xs)
    if len(xs) == 1:
        q25 = q75 = xs[0]
    else:
        q25, _, q75 = statistics.quantiles(xs, n=4, method="inclusive")
    return {
        "median": statistics.median(xs),
        "iqr": q75 - q25,
        "q25": q25,
        "q75": q75,
        "min": xs[0],
        "max": xs[-1],
    }


def sync() -> None:
    """Waits for the GPU's queued work (a no-op without CUDA in use), so timings are complete."""
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def frames_compiled() -> int:
    """Frames dynamo has compiled so far in this process (a recompile adds one)."""
    from torch._dynamo.utils import counters

    return int(counters["stats"].get("unique_graphs", 0))


def cold_call(fn: Callable[[], Any], warmup: int = 2) -> dict[str, float]:
    """Times the first call of ``fn`` (the compile, for a compiled step), then ``warmup`` more."""
    before = frames_compiled()
    sync()
    t0 = time.perf_counter()
    fn()
    sync()
    first = time.perf_counter() - t0
    t1 = time.perf_counter()
    for _ in range(warmup):
        fn()
    sync()
    rest = time.perf_counter() - t1
    # compile_s counts recompiles during the warm-up calls too (a step whose outputs differ
    # from its first inputs in some guarded property compiles twice).
    return {
        "first_call_s": first,
        "warmup_s": rest,
        "compile_s": first + rest,
        "graphs_at_warmup": frames_compiled() - before,
    }


def interleaved(
    impls: dict[str, Callable[[], Any]], *, rounds: int, steps: int, seed: int = 0
) -> dict[str, dict[str, Any]]:
    """Runs each ``impls[name]()`` ``steps`` times per round, shuffled order each round.

    Returns ``{name: {"per_step_s": quantiles, "rounds_s": [...], "graphs_during_timing": n}}``;
    the last counts frames compiled while timing (recompiles; it should be 0).
    """
    rng = random.Random(seed)
    names = list(impls)
    per: dict[str, list[float]] = {n: [] for n in names}
    recompiles = dict.fromkeys(names, 0)
    for _ in range(rounds):
        rng.shuffle(names)
        for n in names:
            fn = impls[n]
            before = frames_compiled()
            sync()
            t0 = time.perf_counter()
            for _ in range(steps):
                fn()
            sync()  # GPU work is asynchronous: time it to completion
            per[n].append((time.perf_counter() - t0) / steps)
            recompiles[n] += frames_compiled() - before
    return {
        n: {
            "per_step_s": quantiles(per[n]),
            "rounds_s": per[n],
            "graphs_during_timing": recompiles[n],
        }
        for n in impls
    }


def graph_breaks(fn: Callable, *args: Any) -> dict[str, Any]:
    """``torch._dynamo.explain``: graphs, graph breaks and their reasons (first few)."""
    import torch

    try:
        ex = torch._dynamo.explain(fn)(*args)
    except Exception as e:  # noqa: BLE001 - report, never crash the bench
        return {"error": f"{type(e).__name__}: {e}"[:300]}
    reasons = []
    for b in ex.break_reasons[:5]:
        reasons.append(str(getattr(b, "reason", b))[:200])
    return {
        "graph_count": ex.graph_count,
        "graph_break_count": ex.graph_break_count,
        "op_count": ex.op_count,
        "break_reasons": reasons,
    }


def maxrss_mib() -> float:
    """The process's peak resident set size so far, MiB (``ru_maxrss``; KiB on Linux)."""
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / (1024 * 1024) if sys.platform == "darwin" else r / 1024


def environment() -> dict[str, Any]:
    import torch

    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
        "loadavg_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    try:
        import torchrl

        info["torchrl"] = torchrl.__version__
    except Exception:  # noqa: BLE001
        info["torchrl"] = None
    return info


def write_json(name: str, payload: dict[str, Any], out_dir: Path | None = None) -> Path:
    out = Path(out_dir or RESULTS)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.json"
    write_text(path, json.dumps(payload, indent=1, default=str))
    return path


def write_text(path: str | Path, text: str) -> None:
    """Atomically (funcrl.checkpoint.atomic_write): a killed benchmark never leaves half a file."""
    from funcrl.checkpoint import atomic_write

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, text.encode())


def fmt_us(s: float) -> str:
    return f"{s * 1e6:,.0f}"


def prewarm_compiler() -> None:
    """Compiles a trivial function once, so inductor's one-time start-up cost (imports, worker
    pools) is charged to no implementation's cold compile time."""
    import torch

    f = torch.compile(lambda x: torch.relu(x) * 2 + 1, fullgraph=True)
    f(torch.randn(4, 4, requires_grad=False))


def peak_step_memory(fn: Callable[[], Any]) -> dict[str, Any]:
    """Peak bytes of CPU tensor memory live during one call of ``fn`` (a step already warm).

    Read from the PyTorch profiler's memory timeline (``profile_memory=True``): every tensor
    allocation and free of the call in order, inputs the call touches included. ``tracemalloc``
    cannot see these (tensor storage bypasses Python's allocator), and ``ru_maxrss`` is a
    process-wide high-water mark that the imports already set higher than any step here.
    """
    import torch
    from torch.profiler import ProfilerActivity, profile

    try:
        from torch.profiler._memory_profiler import MemoryProfileTimeline

        with profile(
            activities=[ProfilerActivity.CPU],
            profile_memory=True,
            record_shapes=True,
            with_stack=True,
        ) as prof:
            fn()
        timeline = MemoryProfileTimeline(prof._memory_profile())
        _, sizes = timeline._coalesce_timeline(torch.device("cpu"))
        peak = max((sum(s) for s in sizes), default=0)
        return {"peak_tensor_mib": peak / 2**20, "method": "torch.profiler memory timeline"}
    except Exception as e:  # noqa: BLE001 - a private API; report instead of failing
        return {"error": f"{type(e).__name__}: {str(e)[:200]}"}


def add_device_args(parser: Any) -> None:
    """``--device`` (default CUDA when available, else CPU) and ``--cudagraphs`` (default: on with
    CUDA), shared by every bench script."""
    import argparse

    parser.add_argument(
        "--device", default=None, help="cuda or cpu (default: cuda when available, else cpu)"
    )
    parser.add_argument(
        "--cudagraphs",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="CUDA graphs for compiled steps: funcrl.jit(cudagraphs=True) and "
        'torch.compile(mode="reduce-overhead") (default: on with CUDA; CUDA only)',
    )


def device_from_args(args: Any) -> tuple[Any, bool]:
    """``(torch.device, cudagraphs)`` from :func:`add_device_args`'s flags.

    Raises:
        SystemExit: ``--device cuda`` without CUDA, an unknown device, or ``--cudagraphs`` off CUDA.
    """
    import torch

    name = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as e:
        raise SystemExit(f"--device: not a torch device: {name!r} ({e})") from None
    if dev.type not in ("cpu", "cuda"):
        raise SystemExit(f"--device must be cpu or cuda, got {name!r}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {name}: no CUDA device (torch.cuda.is_available() is False)")
    graphs = dev.type == "cuda" if args.cudagraphs is None else args.cudagraphs
    if graphs and dev.type != "cuda":
        raise SystemExit(f"--cudagraphs needs --device cuda, got --device {name}")
    return dev, graphs
