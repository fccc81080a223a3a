"""What dynamo spends tracing a pure PPO iteration vmapped over seeds, with funcrl's seed vmap
(:func:`funcrl._vmap.vmap_leading`) against ``torch.func.vmap``, side by side in one process.

    taskset -c 0 python bench/trace_cost.py [--rounds 2] [--seeds 2] [--quick]

Each round compiles ``funcrl.pure_train.seeded_iteration``'s function both ways (the order
swapped each round) with dynamo alone (``backend="eager"``: no AOTAutograd, no Inductor) on
PureJaxRL's PPO settings for CartPole-v1, after ``torch._dynamo.reset()``, and times the first
call. Prints each trace's seconds and the ratio of the medians; nothing is written. ``--quick``:
one round that vmaps only ``x + 1`` over the iteration's state tree (the batching alone).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def main(argv: list[str] | None = None) -> dict[str, float]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument(
        "--quick",
        action="store_true",
        help="one round, vmapping only x + 1 over the iteration's state (the batching alone)",
    )
    args = ap.parse_args(argv)
    torch.set_num_threads(1)

    import funcrl
    from funcrl import pure_train, tree
    from funcrl._tracing import own_code
    from funcrl._vmap import vmap_leading
    from funcrl.envs import pure

    funcrl.random._FUSED_ENV = False  # eager draws as plain ops: no kernel compile in the timings
    algo = pure_train.make_train(pure_train.PPOTrainConfig(), pure.make("CartPole-v1"))
    keys = funcrl.random.split(funcrl.random.key(0), args.seeds)
    state = tree.map(lambda *xs: torch.stack(xs).contiguous(), *[algo.init(k) for k in keys])
    step_keys = funcrl.random.split(funcrl.random.key(1), args.seeds)
    fn = algo.iteration
    if args.quick:
        args.rounds = 1

        def fn(state, key):
            return tree.map(lambda x: x + 1, state), key

    ways = {
        "vmap_leading": lambda: vmap_leading(fn, randomness="error"),
        "torch.func.vmap": lambda: torch.func.vmap(fn, randomness="error"),
    }
    times: dict[str, list[float]] = {name: [] for name in ways}
    for r in range(args.rounds):
        for name in list(ways) if r % 2 == 0 else list(ways)[::-1]:
            torch._dynamo.reset()
            compiled = torch.compile(own_code(ways[name]()), backend="eager", fullgraph=True)
            t = time.perf_counter()
            compiled(state, step_keys)
            times[name].append(time.perf_counter() - t)
            print(f"round {r}: {name:16s} {times[name][-1]:6.1f} s", flush=True)
    med = {name: statistics.median(v) for name, v in times.items()}
    ratio = med["torch.func.vmap"] / med["vmap_leading"]
    print(
        f"dynamo trace, median: vmap_leading {med['vmap_leading']:.1f} s, torch.func.vmap "
        f"{med['torch.func.vmap']:.1f} s; torch.func.vmap / vmap_leading = {ratio:.2f}x"
    )
    return {**med, "ratio": ratio}


if __name__ == "__main__":
    main()
