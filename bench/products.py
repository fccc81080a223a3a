"""Every matrix product of a pure PPO iteration (PureJaxRL's CartPole-v1 settings), with what
one eager call of it costs on this CPU.

    taskset -c 1 python bench/products.py [--seeds 16] [--calls 200]

Runs ``algo.iteration`` once eagerly, vmapped over ``--seeds`` seeds as
:func:`funcrl.pure_train.seeded_iteration` does, under a dispatch mode that records each
``mm``/``bmm``/``addmm`` with its operands' shapes and strides. Then times each distinct product
as the same eager op on tensors of the same shapes and strides (best of 5 blocks of ``--calls``
calls) and prints calls per iteration, microseconds per call, milliseconds per iteration and
GFLOP/s. Nothing is written.
"""

from __future__ import annotations

import argparse
import collections
import time

import torch
import torch.utils._pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode

_PRODUCTS = {"mm.default", "bmm.default", "addmm.default"}


class _Record(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.seen: collections.Counter = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.__name__ in _PRODUCTS and not kwargs:
            layout = tuple(
                (tuple(a.shape), tuple(a.stride())) for a in args if isinstance(a, torch.Tensor)
            )
            self.seen[(func, layout)] += 1
        return func(*args, **(kwargs or {}))


def _operand(shape: tuple[int, ...], stride: tuple[int, ...]) -> torch.Tensor:
    size = 1 + sum((n - 1) * s for n, s in zip(shape, stride))
    return torch.randn(size).as_strided(shape, stride)


def _best_us(fn, calls: int) -> float:
    fn()
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - t) / calls)
    return best * 1e6


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=16)
    ap.add_argument("--calls", type=int, default=200, help="calls per timed block")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)

    from funcrl import random as frandom
    from funcrl._vmap import vmap_leading
    from funcrl.envs import pure
    from funcrl.pure_train import PPOTrainConfig, make_train

    algo = make_train(PPOTrainConfig(), pure.make("CartPole-v1"))
    keys = frandom.split(frandom.key(0), args.seeds)
    state = pytree.tree_map(lambda *xs: torch.stack(xs).contiguous(), *[algo.init(k) for k in keys])
    record = _Record()
    with record:
        vmap_leading(algo.iteration)(state, frandom.split(frandom.key(1), args.seeds))

    rows, total = [], 0.0
    for (func, layout), n in record.seen.most_common():
        ops = [_operand(*sl) for sl in layout]
        us = _best_us(lambda func=func, ops=ops: func(*ops), args.calls)
        a, b = layout[-2][0], layout[-1][0]
        flop = 2 * (a[0] if len(a) == 3 else 1) * a[-2] * a[-1] * b[-1]
        total += n * us / 1e3
        rows.append({"op": func.__name__, "shapes": [sl[0] for sl in layout], "calls": n, "us": us})
        print(
            f"{n:5d} x {us:8.1f} us = {n * us / 1e3:7.2f} ms  {flop / us / 1e3:6.1f} GFLOP/s  "
            f"{func.__name__} {[sl[0] for sl in layout]} strides {[sl[1] for sl in layout]}",
            flush=True,
        )
    print(f"all products: {total:.2f} ms per iteration ({args.seeds} seeds)")
    return rows


if __name__ == "__main__":
    main()
