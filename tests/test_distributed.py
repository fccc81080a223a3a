"""funcrl.distributed on CPU with gloo and 2 processes: data parallel equals one process on the
concatenated batch; a population split over ranks equals the same population in one process.

The two ranks run this file as a script (``python tests/test_distributed.py WORKER ...``), started
once per session by a fixture; each writes its results with ``funcrl.checkpoint`` and the tests
compare them with the one-process runs computed here.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys

import pytest
import torch

from funcrl import Record, checkpoint, distributed, dqn, optim, random, sac, specs, tree

STEPS = 3
HALF = 8  # per-rank batch
POP = 4  # population size (2 seeds per rank)
DQN_NETS = dqn.Nets(num_cells=(16,))
SAC_NETS = sac.Nets(num_cells=(16,))


def _dqn_batch(step: int, n: int) -> Record:
    g = torch.Generator().manual_seed(100 + step)
    return Record(
        {
            "observation": torch.randn(n, 3, generator=g),
            "action": torch.nn.functional.one_hot(torch.randint(0, 4, (n,), generator=g), 4),
            "next": {
                "observation": torch.randn(n, 3, generator=g),
                "reward": torch.randn(n, 1, generator=g),
                "terminated": torch.rand(n, 1, generator=g) < 0.2,
            },
        },
        batch_ndim=1,
    )


def _sac_batch(step: int, n: int) -> Record:
    g = torch.Generator().manual_seed(200 + step)
    return Record(
        {
            "observation": torch.randn(n, 3, generator=g),
            "action": torch.rand(n, 1, generator=g) * 2 - 1,
            "next": {
                "observation": torch.randn(n, 3, generator=g),
                "reward": torch.randn(n, 1, generator=g),
                "terminated": torch.zeros(n, 1, dtype=torch.bool),
            },
        },
        batch_ndim=1,
    )


def _dqn_run(optimizer, rows: slice, step_fn=None):
    """DQN steps on rows ``rows`` of each step's batch of ``2 * HALF``."""
    params = dqn.init(0, specs.Unbounded(shape=(3,)), specs.OneHot(4), nets=DQN_NETS)
    train = dqn.trainer(optimizer, nets=DQN_NETS, tau=0.1)
    step = train.step if step_fn is None else step_fn(train.step)
    state = train.init(params)
    for t in range(STEPS):
        params, state, _ = step(params, state, _dqn_batch(t, 2 * HALF)[rows])
    return params


def _pop_batch(key: torch.Tensor) -> Record:
    ks = random.split(key, 5)
    return Record(
        {
            "observation": random.normal(ks[0], (HALF, 3)),
            "action": torch.nn.functional.one_hot(random.randint(ks[1], (HALF,), 0, 4), 4),
            "next": {
                "observation": random.normal(ks[2], (HALF, 3)),
                "reward": random.normal(ks[3], (HALF, 1)),
                "terminated": random.uniform(ks[4], (HALF, 1)) < 0.2,
            },
        },
        batch_ndim=1,
    )


def _population(seeds: torch.Tensor, keys: torch.Tensor):
    """Trains one DQN per (seed, key), vmapped: ``seeds [n]`` ints, ``keys [n, 2]``."""
    train = dqn.trainer(optim.adam(1e-2), nets=DQN_NETS, tau=0.1)
    params = tree.stack(
        [
            dqn.init(int(s), specs.Unbounded(shape=(3,)), specs.OneHot(4), nets=DQN_NETS)
            for s in seeds
        ]
    )
    state = torch.func.vmap(train.init)(params)
    step = torch.func.vmap(train.step)
    for t in range(STEPS):
        ks = torch.func.vmap(random.fold_in, in_dims=(0, None))(keys, t)
        params, state, _ = step(params, state, torch.func.vmap(_pop_batch)(ks))
    return params


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world)
    )
    torch.set_num_threads(1)
    assert distributed.setup() == (rank, world)
    rows = slice(rank * HALF, (rank + 1) * HALF)
    dp = distributed.data_parallel(optim.adam(1e-2))
    res = {"dqn_eager": _dqn_run(dp, rows)}
    # One graph with the collective inside: dynamo must not break on the all-reduce.
    res["dqn_compiled"] = _dqn_run(
        dp, rows, lambda f: torch.compile(f, fullgraph=True, backend="eager")
    )
    from funcrl.jit import jit

    res["dqn_jit"] = _dqn_run(dp, rows, lambda f: jit(f, backend="eager"))

    # SAC with per-rank keys: different draws per rank, the same params on every rank after.
    params = sac.init(0, 3, 1, nets=SAC_NETS)
    train = sac.trainer(distributed.data_parallel(optim.adam(1e-3)), nets=SAC_NETS)
    state = train.init(params)
    key = distributed.rank_key(random.key(7))
    for t in range(STEPS):
        params, state, _ = train.step(
            params, state, _sac_batch(t, 2 * HALF)[rows], random.fold_in(key, t)
        )
    res["sac"] = distributed.gather(tree.map(lambda x: x[None], params))
    res["rank_keys"] = distributed.gather(key[None])

    seeds, keys = torch.arange(POP), random.split(random.key(3), POP)
    local = _population(distributed.shard(seeds), distributed.shard(keys))
    res["population"] = distributed.gather(local)
    res["population_local"] = local
    checkpoint.save(os.path.join(out, f"rank{rank}.ckpt"), res)
    torch.distributed.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("dist"))
    port = _free_port()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "WORKER", str(r), "2", str(port), out],
            cwd=root,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for r in range(2)
    ]
    logs = []
    for p in procs:
        try:
            logs.append(p.communicate(timeout=240)[0].decode())
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            pytest.fail("distributed workers did not finish in 240 s")
    for r, (p, log) in enumerate(zip(procs, logs)):
        assert p.returncode == 0, f"rank {r} failed:\n{log[-4000:]}"
    return [checkpoint.load(os.path.join(out, f"rank{r}.ckpt")).tree for r in range(2)]


def test_data_parallel_equals_one_process_on_the_concatenated_batch(ranks):
    ref = _dqn_run(optim.adam(1e-2), slice(0, 2 * HALF))
    moved = tree.global_norm(
        tree.sub(
            ref["value"],
            dqn.init(0, specs.Unbounded(shape=(3,)), specs.OneHot(4), nets=DQN_NETS)["value"],
        )
    )
    assert moved > 1e-2  # the steps did something worth comparing
    for r in range(2):
        for name in ("dqn_eager", "dqn_compiled", "dqn_jit"):
            got = ranks[r][name]
            assert tree.allclose(got, ref, rtol=1e-5, atol=1e-6), (r, name)


def test_data_parallel_sac_keeps_ranks_in_sync_with_per_rank_keys(ranks):
    keys = ranks[0]["rank_keys"]
    assert torch.equal(keys[0], random.fold_in(random.key(7), 0))
    assert torch.equal(keys[1], random.fold_in(random.key(7), 1))
    assert not torch.equal(keys[0], keys[1])
    both = ranks[0]["sac"]
    for leaf in tree.leaves(both):
        assert torch.equal(leaf[0], leaf[1])  # every rank applied the same averaged update
    start = sac.init(0, 3, 1, nets=SAC_NETS)
    assert tree.global_norm(tree.sub(tree.map(lambda x: x[0], both)["qvalue"], start["qvalue"])) > 0


def test_population_split_over_ranks_equals_one_process_bitwise(ranks):
    ref = _population(torch.arange(POP), random.split(random.key(3), POP))
    for r in range(2):
        got = ranks[r]["population"]
        assert tree.same_structure(got, ref)
        for a, b in zip(tree.leaves(got), tree.leaves(ref)):
            assert torch.equal(a, b)
        local = ranks[r]["population_local"]
        for a, b in zip(tree.leaves(local), tree.leaves(ref)):
            assert torch.equal(a, b[r * POP // 2 : (r + 1) * POP // 2])


def test_one_process_is_the_identity():
    x = {"a": torch.arange(4.0), "b": [torch.ones(4, 2)]}
    assert distributed.rank() == 0 and distributed.world_size() == 1
    assert distributed.all_mean(x) is x
    assert distributed.gather(x) is x
    assert tree.allclose(distributed.shard(x), x)
    k = random.key(1)
    assert torch.equal(distributed.rank_key(k), random.fold_in(k, 0))
    opt = distributed.data_parallel({"a": optim.sgd(0.5)})
    st = opt.init({"a": torch.ones(2)})
    upd, _ = opt.update({"a": torch.ones(2)}, st, {"a": torch.ones(2)})
    torch.testing.assert_close(upd["a"], torch.full((2,), -0.5))


def _run_ranks(args: list[str], world: int = 2, timeout: float = 240) -> list[str]:
    """Runs ``python *args`` as ``world`` ranks (torchrun's environment variables); the logs."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    port = _free_port()
    procs = []
    for r in range(world):
        env = {
            **os.environ,
            "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", ""),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "RANK": str(r),
            "LOCAL_RANK": str(r),
            "WORLD_SIZE": str(world),
        }
        procs.append(
            subprocess.Popen(
                [sys.executable, *args],
                cwd=root,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
        )
    logs = []
    for p in procs:
        try:
            logs.append(p.communicate(timeout=timeout)[0].decode())
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            pytest.fail(f"{args[0]} did not finish in {timeout} s")
    for r, (p, log) in enumerate(zip(procs, logs)):
        assert p.returncode == 0, f"rank {r} of {args[0]} failed:\n{log[-4000:]}"
    return logs


_TINY = [
    "--env", "Pendulum-v1", "--total-steps", "160", "--learning-starts", "80",
    "--batch-size", "16", "--num-cells", "16", "--eval-every", "0", "--eval-episodes", "1",
    "--checkpoint-every", "0", "--no-compile", "--no-progress", "--device", "cpu",
]  # fmt: skip


def test_example_sac_data_parallel_two_ranks(tmp_path):
    import json

    logs = _run_ranks(["examples/sac.py", "--distributed", "--out", str(tmp_path), *_TINY])
    res = json.loads((tmp_path / "result.json").read_text())
    assert res["world_size"] == 2 and res["rank"] == 0
    assert res["steps"] == 160  # both ranks' environment steps together
    assert res["updates"] == (160 - 80) // 2 + 1  # one update per rank's own step past the start
    ck = checkpoint.load(tmp_path / "checkpoint.pt").tree
    assert ck["step"] == 160
    # Both ranks ended with the same params, so they print the same final evaluation (the
    # line's trailing wall-clock seconds, "(1 s)", may differ between the ranks).
    finals = [
        re.sub(r" \(\d+ s\)$", "", line)
        for log in logs
        for line in log.splitlines()
        if "final deterministic" in line
    ]
    assert len(finals) == 2 and finals[0] == finals[1], logs
    assert finals[0].endswith("after 160 steps"), finals


@pytest.mark.slow
def test_example_sac_seeds_population_two_ranks(tmp_path):
    import csv

    _run_ranks(
        ["examples/sac_seeds.py", "--distributed", "--agents", "4", "--out", str(tmp_path), *_TINY]
    )
    rows = list(csv.DictReader(open(tmp_path / "log.csv")))
    evals = {int(r["agent"]) for r in rows if r["eval_return"]}
    assert evals == {0, 1, 2, 3}  # every agent's evaluation, gathered to rank 0
    ck = checkpoint.load(tmp_path / "checkpoint.pt").tree
    assert all(x.shape[0] == 4 for x in tree.leaves(ck["params"]))
    one = sac.init(3, 3, 1, nets=sac.Nets(num_cells=(16,)))  # agent 3 trained on rank 1
    assert tree.structure(one) == tree.structure(tree.map(lambda x: x[3], ck["params"]))


if __name__ == "__main__" and sys.argv[1:2] == ["WORKER"]:
    _worker(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
