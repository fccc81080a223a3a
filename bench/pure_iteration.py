"""Where one compiled iteration of ``funcrl.pure_train`` spends its time (PPO, CartPole-v1,
PureJaxRL's settings, one seed, one thread).

    taskset -c 0 python bench/pure_iteration.py

Compiles the vmapped iteration as :func:`funcrl.pure_train.run_iterations` does
(:func:`funcrl.pure_train.seeded_iteration`: inductor, C++ wrapper), then times back-to-back
calls in steady state, alternating blocks with dynamo's guards evaluated (the default) and
skipped (``torch.compiler.set_stance(skip_guard_eval_unsafe=True)``, safe here: every call has the same shapes), and profiles one
block with ``torch.profiler`` to split the compiled graph's own time from what runs around it.
Prints the compile time and milliseconds per iteration; nothing is written.

Runs inside :func:`funcrl.cpu_allocator.caching` on a CPU, as ``run_iterations`` does
(``--no-cpu-cache`` times without it). ``--iterations-per-call K`` compiles ``K`` iterations per
call (:func:`funcrl.pure_train.chain_iterations`); the times stay per iteration. ``--seeds N``
vmaps N seeds; ``--inductor KEY=VALUE`` (repeatable, VALUE in JSON) sets an option of
``torch._inductor.config`` first, for trying a compile setting::

    taskset -c 1 python bench/pure_iteration.py --inductor cpp.vec_isa_ok=false

The output includes ``cxx_s``, the seconds the C++ compiler's calls took during the compile (0 when
Inductor's caches served everything).
"""

from __future__ import annotations

import argparse
import contextlib
import time

import torch


def _set_inductor_options(items: list[str]) -> None:
    import json

    import torch._inductor.config as config

    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"pure_iteration.py: --inductor takes KEY=VALUE, got {item!r}")
        *path, last = key.split(".")
        obj = config
        for part in path:
            obj = getattr(obj, part)
        if not hasattr(obj, last):
            raise SystemExit(f"pure_iteration.py: torch._inductor.config has no {key!r}")
        setattr(obj, last, json.loads(value))


def time_compiler_calls(builder: object) -> list[float]:
    """Wraps ``builder._run_compile_cmd`` (``torch._inductor.cpp_builder``'s one call of the C++
    compiler) to append each call's seconds to the returned list."""
    run = builder._run_compile_cmd  # type: ignore[attr-defined]
    seconds: list[float] = []

    def timed(*args: object, **kwargs: object) -> object:
        t = time.perf_counter()
        try:
            return run(*args, **kwargs)
        finally:
            seconds.append(time.perf_counter() - t)

    builder._run_compile_cmd = timed  # type: ignore[attr-defined]
    return seconds


def main(argv: list[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--block", type=int, default=100, help="iterations per timed block")
    p.add_argument("--rounds", type=int, default=2, help="blocks of each kind")
    p.add_argument("--seeds", type=int, default=1, help="seeds vmapped in one iteration")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument(
        "--iterations-per-call",
        type=int,
        default=1,
        help="iterations per compiled call (run_iterations' iterations_per_call); must divide "
        "--block",
    )
    p.add_argument(
        "--no-cpu-cache",
        action="store_true",
        help="time without funcrl.cpu_allocator.caching (run_iterations uses it on a CPU)",
    )
    p.add_argument(
        "--inductor",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set torch._inductor.config.KEY to the JSON VALUE before compiling (repeatable)",
    )
    args = p.parse_args(argv)
    if args.seeds < 1:
        raise SystemExit(f"pure_iteration.py: --seeds must be >= 1, got {args.seeds}")
    per_call = args.iterations_per_call
    if per_call < 1 or args.block % per_call:
        raise SystemExit(
            f"pure_iteration.py: --iterations-per-call must be >= 1 and divide --block "
            f"({args.block}), got {per_call}"
        )
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda") or (device == "cuda" and not torch.cuda.is_available()):
        raise SystemExit(
            f"pure_iteration.py: --device must be cpu or an available cuda, got {device!r}"
        )
    torch.set_num_threads(1)
    _set_inductor_options(args.inductor)
    import torch._inductor.cpp_builder as cpp_builder

    cxx = time_compiler_calls(cpp_builder)
    import torch.utils._pytree as pytree

    import funcrl
    from funcrl import cpu_allocator
    from funcrl import random as frandom
    from funcrl.envs import pure
    from funcrl.pure_train import PPOTrainConfig, make_train, seeded_iteration

    algo = make_train(PPOTrainConfig(), pure.make("CartPole-v1"))
    seeds = frandom.split(frandom.key(0, device=device), args.seeds)
    k_init, k_iter = torch.func.vmap(lambda k: frandom.split(k, 2))(seeds).unbind(1)
    state = pytree.tree_map(
        lambda *xs: torch.stack(xs).contiguous(), *[algo.init(k) for k in k_init]
    )
    fn = seeded_iteration(algo, device=device, iterations_per_call=per_call)

    def sync() -> None:  # CUDA calls return before their kernels finish
        if device == "cuda":
            torch.cuda.synchronize()

    allocator = contextlib.ExitStack()
    if device == "cpu" and not args.no_cpu_cache:
        allocator.enter_context(cpu_allocator.caching())
    # Calls, each of per_call iterations: keys [calls, S, 2], or [calls, S, per_call, 2].
    calls = 1 + (2 * args.rounds + 1) * args.block // per_call
    keys = torch.func.vmap(lambda k: frandom.split(k, calls * per_call))(k_iter)
    if per_call > 1:
        keys = keys.unflatten(1, (calls, per_call))
    keys = keys.transpose(0, 1).contiguous()
    t = time.perf_counter()
    state, _ = fn(state, keys[0])
    sync()
    out = {"compile_s": time.perf_counter() - t, "cxx_s": sum(cxx)}
    at = 1

    def block(state):
        nonlocal at
        t = time.perf_counter()
        for i in range(at, at + args.block // per_call):
            state, _ = fn(state, keys[i])
        sync()
        at += args.block // per_call
        return state, (time.perf_counter() - t) / args.block * 1e3

    guarded, skipped = [], []
    for _ in range(args.rounds):
        state, ms = block(state)
        guarded.append(ms)
        with torch.compiler.set_stance("default", skip_guard_eval_unsafe=True):
            state, ms = block(state)
        skipped.append(ms)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        state, profiled = block(state)
    graph_us = sum(e.self_cpu_time_total for e in prof.key_averages() if "CompiledFxGraph" in e.key)
    out.update(
        ms_per_iteration=min(guarded),
        ms_per_iteration_guards_skipped=min(skipped),
        ms_in_compiled_graph=graph_us / args.block / 1e3,
        ms_per_iteration_profiled=profiled,
    )
    allocator.close()
    for k, v in out.items():
        print(f"{k}: {v:.3f}")
    print(f"(funcrl {funcrl.__version__}, torch {torch.__version__}, {args.seeds} seeds)")
    return out


if __name__ == "__main__":
    main()
