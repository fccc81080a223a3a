"""``funcrl.random`` against torch's global generator, measured side by side on one thread.

Rows: 1e7 normals from a key vs ``torch.randn``; 1e7 uniforms vs ``torch.rand``; a SAC-sized
draw (256 x 6 normals) eager vs ``torch.randn``, on both of funcrl's paths (the compiled kernel and
the plain ops it falls back to under ``vmap``); and the cold compile of the kernel, paid once per
process per kind and dtype.

    python bench/random_bench.py            # writes bench/results/random_bench.json
    python bench/random_bench.py --quick    # seconds: fewer rounds, no json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import _harness as H  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    """Runs the rows; returns ``{"cold_compile_s", "rows", "ratios", "numel"}``."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    H.setup_torch(threads=1)
    import torch

    from funcrl import random as R

    key = R.key(0)
    big = 10**6 if args.quick else 10**7
    rounds, steps = (3, 2) if args.quick else (7, 3)

    # Cold compile: the first draw of each kind builds its kernel (dynamic size: once per dtype).
    cold = {}
    for name, fn in (
        ("normal_float32", lambda: R.normal(key, (1000,))),
        ("uniform_float32", lambda: R.uniform(key, (1000,))),
    ):
        t0 = time.perf_counter()
        fn()
        cold[name] = time.perf_counter() - t0
    frames = H.frames_compiled()

    def plain(fn):
        def run():
            old = R.FUSED_MIN_NUMEL
            R.FUSED_MIN_NUMEL = 2**62
            try:
                fn()
            finally:
                R.FUSED_MIN_NUMEL = old

        return run

    rows = {
        "normal_1e7": {
            "funcrl.random.normal": lambda: R.normal(key, (big,)),
            "torch.randn": lambda: torch.randn(big),
        },
        "uniform_1e7": {
            "funcrl.random.uniform": lambda: R.uniform(key, (big,)),
            "torch.rand": lambda: torch.rand(big),
        },
        "normal_256x6": {
            "funcrl.random.normal": lambda: R.normal(key, (256, 6)),
            "funcrl.random.normal (plain ops)": plain(lambda: R.normal(key, (256, 6))),
            "torch.randn": lambda: torch.randn(256, 6),
        },
    }
    results, ratios = {}, {}
    for row, impls in rows.items():
        for fn in impls.values():
            fn()
        n_steps = steps if row.endswith("1e7") else 200
        res = H.interleaved(impls, rounds=rounds, steps=n_steps)
        ref = next(n for n in impls if n.startswith("torch"))
        ref_s = res[ref]["per_step_s"]["median"]
        results[row] = res
        ratios[row] = {n: r["per_step_s"]["median"] / ref_s for n, r in res.items()}
        print(f"{row}{' (1e6 in --quick)' if args.quick and row.endswith('1e7') else ''}:")
        for name, r in res.items():
            q = r["per_step_s"]
            print(
                f"  {name:34s} {H.fmt_us(q['median']):>10s} us  (IQR {H.fmt_us(q['iqr'])})  "
                f"{q['median'] / ref_s:5.2f}x of {ref}"
            )
    print("cold compile (first call, fresh inductor cache):")
    for name, s in cold.items():
        print(f"  {name:34s} {s:6.1f} s")
    print(f"recompiles while timing: {H.frames_compiled() - frames}")
    out = {"cold_compile_s": cold, "rows": results, "ratios": ratios, "numel": big}
    if not args.quick:
        path = H.write_json("random_bench", {"env": H.environment(), **out})
        print(f"wrote {path}")
    return out


if __name__ == "__main__":
    main()
