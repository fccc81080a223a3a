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


def _examples():
    import os
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sys.path.insert(0, os.path.join(root, "examples"))
    import _util
    import sac as sac_example

    return _util, sac_example


def test_example_device_flags():
    _util, sac_example = _examples()
    with pytest.raises(
        ValueError, match=r"parse_config: --device must be auto, cpu or cuda\[:i\], got 'tpu'"
    ):
        _util.parse_config(sac_example.Config, ["--device", "tpu"])
    with pytest.raises(
        ValueError, match=r"parse_config: --device must be auto, cpu or cuda\[:i\], got 'gpu0'"
    ):
        _util.parse_config(sac_example.Config, ["--device", "gpu0"])
    with pytest.raises(
        ValueError, match=r"parse_config: --cudagraphs needs a CUDA device, got --device cpu"
    ):
        _util.parse_config(sac_example.Config, ["--device", "cpu", "--cudagraphs"])
    if not torch.cuda.is_available():
        with pytest.raises(
            ValueError, match=r"parse_config: --device cuda: no CUDA device is available"
        ):
            _util.parse_config(sac_example.Config, ["--device", "cuda"])
    else:
        with pytest.raises(
            ValueError, match=r"parse_config: --cudagraphs needs --compile or --jit"
        ):
            _util.parse_config(
                sac_example.Config, ["--device", "cuda", "--cudagraphs", "--no-compile"]
            )
    assert _util.resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_example_distributed_refuses_resume(tmp_path):
    _, sac_example = _examples()
    with pytest.raises(ValueError, match=r"--resume: not supported with --distributed"):
        sac_example.main(
            [
                "--distributed",
                "--resume",
                "--out",
                str(tmp_path),
                "--device",
                "cpu",
                "--no-progress",
                "--no-compile",
                "--num-cells",
                "4",
            ]
        )


def test_bench_device_flags():
    import argparse

    from bench import _harness as H

    p = argparse.ArgumentParser()
    H.add_device_args(p)
    with pytest.raises(SystemExit, match=r"--cudagraphs needs --device cuda, got --device cpu"):
        H.device_from_args(p.parse_args(["--device", "cpu", "--cudagraphs"]))
    with pytest.raises(SystemExit, match=r"--device must be cpu or cuda, got 'meta'"):
        H.device_from_args(p.parse_args(["--device", "meta"]))
    assert H.device_from_args(p.parse_args(["--device", "cpu"])) == (torch.device("cpu"), False)
