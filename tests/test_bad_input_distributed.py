"""Bad input to funcrl.distributed: each error names the function and the argument."""

from __future__ import annotations

import pytest
import torch

from funcrl import distributed, optim


def test_setup_backend():
    with pytest.raises(
        ValueError, match=r"distributed.setup: backend must be 'gloo' or 'nccl', got 'mpi'"
    ):
        distributed.setup("mpi")
    with pytest.raises(
        ValueError, match=r"distributed.setup: backend 'nccl' needs a CUDA device, got cpu"
    ):
        distributed.setup("nccl", device="cpu")


def test_all_mean_leaves_must_be_floating_tensors():
    with pytest.raises(
        TypeError, match=r"distributed.all_mean: .*grads\['a'\]\[1\] is dtype torch.int64"
    ):
        distributed.all_mean({"a": [torch.ones(2), torch.ones(2, dtype=torch.int64)]})
    with pytest.raises(TypeError, match=r"distributed.all_mean: .*grads\['lr'\] is float"):
        distributed.all_mean({"lr": 0.1})


def test_data_parallel_needs_a_transform():
    with pytest.raises(
        TypeError,
        match=r"distributed.data_parallel: optimizer must be a GradientTransformation .* got function",
    ):
        distributed.data_parallel(lambda g: g)
    with pytest.raises(TypeError, match="multi_transform"):
        distributed.data_parallel({"actor": "adam"})
    # A wrapped transform keeps the inner state unchanged (no extra state to checkpoint).
    opt = optim.adam(1e-3)
    p = {"w": torch.ones(3)}
    assert type(distributed.data_parallel(opt).init(p)) is type(opt.init(p))


@pytest.mark.parametrize("fn", [distributed.shard, distributed.gather])
def test_population_leaves(fn):
    name = fn.__name__
    arg = "population" if name == "shard" else "local"
    with pytest.raises(
        ValueError,
        match=rf"distributed.{name}: {arg}\['b'\] needs a leading population dim, got shape \[\]",
    ):
        fn({"a": torch.ones(4), "b": torch.tensor(1.0)})
    with pytest.raises(
        ValueError,
        match=rf"distributed.{name}: every leaf of {arg} must share the leading population size; got \[2, 4\]",
    ):
        fn({"a": torch.ones(4), "b": torch.ones(2, 3)})
    with pytest.raises(
        TypeError, match=rf"distributed.{name}: {arg}\['n'\] must be a tensor, got int"
    ):
        fn({"a": torch.ones(4), "n": 3})
    with pytest.raises(ValueError, match=rf"distributed.{name}: {arg} holds no tensors"):
        fn({})


def test_shard_population_not_divisible_by_world(monkeypatch):
    monkeypatch.setattr(distributed, "world_size", lambda group=None: 3)
    monkeypatch.setattr(distributed, "rank", lambda group=None: 1)
    with pytest.raises(
        ValueError, match=r"distributed.shard: .*divisible by the world size; got 4 over 3 ranks"
    ):
        distributed.shard(torch.zeros(4, 2))
    # 6 over 3 ranks: rank 1 takes rows [2, 4).
    assert torch.equal(distributed.shard(torch.arange(6)), torch.tensor([2, 3]))
