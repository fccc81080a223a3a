"""Where one compiled iteration of ``funcrl.pure_train`` spends its time (PPO, CartPole-v1,
PureJaxRL's settings, one seed, one thread).

    taskset -c 0 python bench/pure_iteration.py

Compiles the vmapped iteration as :func:`funcrl.pure_train.run_iterations` does
(:func:`funcrl.pure_train.seeded_iteration`: inductor, C++ wrapper), then times back-to-back
calls in steady state, alternating blocks with dynamo's guards evaluated (the default) and
skipped (``torch.compiler.set_stance(skip_guard_eval_unsafe=True)``, safe here: every call has the same shapes), and profiles one
block with ``torch.profiler`` to split the compiled graph's own time from what runs around it.
Prints milliseconds per iteration; nothing is written.
"""

from __future__ import annotations

import argparse
import time

import torch


def main(argv: list[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--block", type=int, default=100, help="iterations per timed block")
    p.add_argument("--rounds", type=int, default=2, help="blocks of each kind")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    import torch.utils._pytree as pytree

    import funcrl
    from funcrl import random as frandom
    from funcrl.envs import pure
    from funcrl.pure_train import PPOTrainConfig, make_train, seeded_iteration

    algo = make_train(PPOTrainConfig(), pure.make("CartPole-v1"))
    seeds = frandom.split(frandom.key(0), 1)
    k_init, k_iter = torch.func.vmap(lambda k: frandom.split(k, 2))(seeds).unbind(1)
    state = pytree.tree_map(
        lambda *xs: torch.stack(xs).contiguous(), *[algo.init(k) for k in k_init]
    )
    fn = seeded_iteration(algo)
    n = 1 + (2 * args.rounds + 1) * args.block
    keys = torch.func.vmap(lambda k: frandom.split(k, n))(k_iter).transpose(0, 1).contiguous()
    t = time.perf_counter()
    state, _ = fn(state, keys[0])
    out = {"compile_s": time.perf_counter() - t}
    at = 1

    def block(state):
        nonlocal at
        t = time.perf_counter()
        for i in range(at, at + args.block):
            state, _ = fn(state, keys[i])
        at += args.block
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
    for k, v in out.items():
        print(f"{k}: {v:.3f}")
    print(f"(funcrl {funcrl.__version__}, torch {torch.__version__})")
    return out


if __name__ == "__main__":
    main()
