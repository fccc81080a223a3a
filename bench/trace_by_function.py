"""Where dynamo's trace of a pure PPO iteration goes, function by function.

    taskset -c 0 python bench/trace_by_function.py [--seeds 1] [--iterations-per-call 8] [--top 25]

Traces :func:`funcrl.pure_train.seeded_iteration` (PureJaxRL's PPO settings on CartPole-v1) with
dynamo alone (``backend="eager"``: no AOTAutograd, no Inductor) and times every function dynamo
inlines, by wrapping its inliner. Prints the first call's seconds (the trace, plus running the
graph once eagerly), the functions with the most exclusive time, and the pytree work
(``funcrl.tree`` and ``torch.utils._pytree`` flatten, rebuild, pack and unpack) by the nearest
caller outside the tree code. Nothing is written.
"""

from __future__ import annotations

import argparse
import collections
import time

import torch


def main(argv: list[str] | None = None) -> dict[str, float]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--iterations-per-call", type=int, default=8)
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument(
        "--tiny", action="store_true", help="2 envs x 8 steps, one epoch of 2 minibatches (tests)"
    )
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    import torch._dynamo.symbolic_convert as sc
    import torch.utils._pytree as pytree

    import funcrl
    from funcrl import random as frandom
    from funcrl.envs import pure
    from funcrl.pure_train import PPOTrainConfig, make_train, seeded_iteration

    funcrl.random._FUSED_ENV = False  # eager draws as plain ops: no kernel compile in the timings
    exclusive: collections.Counter[str] = collections.Counter()
    calls: collections.Counter[str] = collections.Counter()
    by_caller: collections.Counter[tuple[str, str]] = collections.Counter()
    child_time: list[float] = []
    names: list[str] = []
    # (file suffix, function) pairs counted as pytree work; frames in not_tree are skipped when
    # looking for the caller.
    tree_work = {
        ("funcrl/tree.py", "_traced_flatten"),
        ("funcrl/tree.py", "_build"),
        ("funcrl/tree.py", "pack"),
        ("funcrl/tree.py", "unpack"),
        ("torch/utils/_pytree.py", "unflatten"),
    }
    not_tree = ("funcrl/tree.py", "optree", "_pytree", "polyfills")
    original = sc.InliningInstructionTranslator.inline_call_

    def timed(self):  # type: ignore[no-untyped-def]
        code = self.f_code
        path = code.co_filename.split("site-packages/")[-1]
        if "/funcrl/" in path:
            path = "funcrl/" + path.rsplit("/funcrl/", 1)[1]
        key = f"{path}:{code.co_firstlineno}:{code.co_name}"
        start = time.perf_counter()
        child_time.append(0.0)
        names.append(key)
        try:
            return original(self)
        finally:
            dt = time.perf_counter() - start
            inner = child_time.pop()
            names.pop()
            exclusive[key] += dt - inner
            calls[key] += 1
            if child_time:
                child_time[-1] += dt
            if (path, code.co_name) in tree_work:
                outside = [n for n in names if not any(t in n for t in not_tree)]
                by_caller[(code.co_name, outside[-1] if outside else "(top)")] += dt

    sc.InliningInstructionTranslator.inline_call_ = timed
    cfg = PPOTrainConfig()
    if args.tiny:
        cfg = PPOTrainConfig(
            total_timesteps=16 * args.iterations_per_call,
            num_envs=2,
            num_steps=8,
            update_epochs=1,
            num_minibatches=2,
            hidden=(8,),
        )
    algo = make_train(cfg, pure.make("CartPole-v1"))
    seeds = frandom.split(frandom.key(0), args.seeds)
    k_init, k_iter = torch.func.vmap(lambda k: frandom.split(k, 2))(seeds).unbind(1)
    state = pytree.tree_map(
        lambda *xs: torch.stack(xs).contiguous(), *[algo.init(k) for k in k_init]
    )
    k = args.iterations_per_call
    fn = seeded_iteration(algo, backend="eager", iterations_per_call=k)
    keys = torch.func.vmap(lambda key: frandom.split(key, k))(k_iter) if k > 1 else k_iter
    start = time.perf_counter()
    fn(state, keys)
    total = time.perf_counter() - start
    sc.InliningInstructionTranslator.inline_call_ = original
    print(f"first call (dynamo's trace + one eager run): {total:.2f} s")
    print("--- exclusive seconds, calls, function")
    for key, v in exclusive.most_common(args.top):
        print(f"{v:7.2f} {calls[key]:5d} {key}")
    print("--- pytree work: seconds, by the nearest caller outside the tree code")
    for (fn_name, caller), v in by_caller.most_common(args.top):
        print(f"{v:7.2f} {fn_name:18s} {caller}")
    return {"first_call_s": total}


if __name__ == "__main__":
    main()
