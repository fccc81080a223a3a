"""Tests for funcrl.checkpoint: pickle-free round trips, structure checks, corrupt files, atomicity."""

from __future__ import annotations

import json
import os
import struct
from typing import NamedTuple

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from funcrl import buffers, checkpoint, optim
from funcrl.record import Record
from funcrl.training import TrainState


def assert_tree_equal(a, b, path="root"):
    assert type(a) is type(b), (path, type(a), type(b))
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape, path
        assert torch.equal(a, b) or (a.is_floating_point() and torch.equal(a.isnan(), b.isnan())), (
            path
        )
    elif isinstance(a, Record):
        assert a.batch_ndim == b.batch_ndim and list(a) == list(b), path
        for k in a:
            assert_tree_equal(a[k], b[k], f"{path}/{k}")
    elif isinstance(a, dict):
        assert list(a) == list(b), path
        for k in a:
            assert_tree_equal(a[k], b[k], f"{path}/{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_tree_equal(x, y, f"{path}/{i}")
    elif isinstance(a, float) and a != a:
        assert b != b, path
    else:
        assert a == b, path


def params():
    g = torch.Generator().manual_seed(0)
    return {
        "actor": [{"weight": torch.randn(4, 3, generator=g), "bias": torch.zeros(4)}],
        "log_alpha": torch.tensor(0.5),
    }


def test_round_trip_params_optimizer_state_record_buffer_rng_and_metadata(tmp_path):
    p = params()
    opt = optim.chain(optim.clip_by_global_norm(1.0), optim.adam(1e-3))
    state = TrainState(opt.init(p), torch.tensor(7, dtype=torch.int64))
    rec = Record(
        {"obs": torch.arange(6.0).view(3, 2), ("next", "done"): torch.ones(3, 1, dtype=torch.bool)},
        batch_ndim=1,
    )
    buf = buffers.add(buffers.init(4, rec[0], prioritized=True), rec)
    gen = torch.Generator().manual_seed(5)
    tree = {
        "params": p,
        "opt": state,
        "rec": rec,
        "buf": buf,
        "rng": gen.get_state(),
        "plain": [1, 2.5, "x", True, None, float("inf"), (3,)],
    }
    path = tmp_path / "ck.safetensors"
    checkpoint.save(path, tree, {"config": {"num_cells": [256, 256]}, "step": 7})
    back, meta = checkpoint.load(path, like=tree)
    assert_tree_equal(back, tree)
    assert meta == {"config": {"num_cells": [256, 256]}, "step": 7}
    assert isinstance(back["opt"], TrainState) and back["opt"].step.dtype == torch.int64
    # The generator state restores the stream exactly.
    want = torch.rand(3, generator=gen)
    g2 = torch.Generator()
    g2.set_state(back["rng"])
    torch.testing.assert_close(torch.rand(3, generator=g2), want)


def test_zero_dim_non_contiguous_shared_and_all_dtypes(tmp_path):
    base = torch.arange(12.0).view(3, 4)
    tree = {
        "t": base.t(),  # non-contiguous
        "view": base[1],  # shares storage with base
        "base": base,
        "scalar": torch.tensor(3, dtype=torch.int32),
        "empty": torch.zeros(0, 2),
    }
    for dt in (
        torch.bool,
        torch.uint8,
        torch.int8,
        torch.int16,
        torch.int64,
        torch.float16,
        torch.bfloat16,
        torch.float64,
    ):
        tree[str(dt)] = torch.ones(2, dtype=dt)
    checkpoint.save(tmp_path / "a", tree)
    back = checkpoint.load(tmp_path / "a").tree
    assert_tree_equal(back, tree)


def test_device_argument_moves_tensors(tmp_path):
    checkpoint.save(tmp_path / "a", {"x": torch.ones(2)})
    assert checkpoint.load(tmp_path / "a", device="cpu").tree["x"].device.type == "cpu"


def test_structure_mismatch_names_the_first_differing_path(tmp_path):
    path = tmp_path / "ck"
    checkpoint.save(path, {"params": params()})
    like = {"params": params()}
    like["params"]["actor"][0]["weight"] = torch.zeros(8, 3)
    with pytest.raises(
        checkpoint.CheckpointError, match=r"'params/actor/0/weight'.*\(8, 3\).*\(4, 3\)"
    ):
        checkpoint.load(path, like=like)
    with pytest.raises(checkpoint.CheckpointError, match=r"'params'.*missing \['critic'\]"):
        checkpoint.load(path, like={"params": {**params(), "critic": torch.zeros(1)}})
    with pytest.raises(checkpoint.CheckpointError, match=r"'params/actor'.*length 2.*1"):
        checkpoint.load(path, like={"params": {**params(), "actor": [1, 2]}})
    with pytest.raises(checkpoint.CheckpointError, match=str(path)):
        checkpoint.load(path, like={"params": ()})


def test_unknown_namedtuple_refused_on_save_and_registered_one_round_trips(tmp_path):
    class Mine(NamedTuple):
        a: torch.Tensor
        b: int

    with pytest.raises(TypeError, match="checkpoint.save: .*Mine at 'x' is not a registered"):
        checkpoint.save(tmp_path / "a", {"x": Mine(torch.ones(1), 2)})
    assert not os.path.exists(tmp_path / "a")
    checkpoint.register(Mine, name="tests.Mine")
    checkpoint.save(tmp_path / "a", {"x": Mine(torch.ones(1), 2)})
    back = checkpoint.load(tmp_path / "a").tree["x"]
    assert isinstance(back, Mine) and back.b == 2


def _rewrite_header(path, edit):
    data = open(path, "rb").read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    edit(header)
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(raw)) + raw + data[8 + n :])


def test_crafted_file_with_unknown_type_is_refused_without_importing(tmp_path):
    path = tmp_path / "evil"
    checkpoint.save(path, {"x": TrainState(torch.ones(1), torch.tensor(0))})

    def edit(h):
        s = h["__metadata__"]["structure"].replace("funcrl.training.TrainState", "os.system")
        h["__metadata__"]["structure"] = s

    _rewrite_header(path, edit)
    with pytest.raises(checkpoint.CheckpointError, match=r"evil.*unknown type 'os.system'"):
        checkpoint.load(path)


@pytest.mark.parametrize(
    "corrupt, match",
    [
        (lambda d: d[: len(d) // 2], "truncated|corrupt"),
        (lambda d: d[:5], "too short"),
        (lambda d: b"", "too short"),
        (lambda d: os.urandom(4096), "truncated|not"),
        (lambda d: b"PK\x03\x04" + d, "truncated|not"),
    ],
)
def test_corrupt_files_name_the_file(tmp_path, corrupt, match):
    path = tmp_path / "ck.safetensors"
    checkpoint.save(path, {"params": params()})
    data = open(path, "rb").read()
    with open(path, "wb") as fh:
        fh.write(corrupt(data))
    with pytest.raises(
        checkpoint.CheckpointError,
        match=rf"checkpoint.load: cannot load .*ck.safetensors.*({match})",
    ):
        checkpoint.load(path)


def test_missing_tensor_and_bad_json_are_checkpoint_errors(tmp_path):
    path = tmp_path / "ck"
    checkpoint.save(path, {"a": torch.ones(1)})
    _rewrite_header(path, lambda h: h["__metadata__"].update(structure='{"tensor": "b"}'))
    with pytest.raises(checkpoint.CheckpointError, match="tensor 'b' is missing"):
        checkpoint.load(path)
    _rewrite_header(path, lambda h: h["__metadata__"].update(structure="{not json"))
    with pytest.raises(checkpoint.CheckpointError, match="not valid JSON"):
        checkpoint.load(path)
    assert issubclass(checkpoint.CheckpointError, ValueError)


def test_torch_save_file_is_refused_not_unpickled(tmp_path):
    path = tmp_path / "old.pt"
    torch.save({"a": torch.ones(1)}, path)
    with pytest.raises(checkpoint.CheckpointError, match="old.pt"):
        checkpoint.load(path)


def test_atomic_write_keeps_old_file_when_the_writer_fails(tmp_path):
    path = tmp_path / "f"
    checkpoint.atomic_write(path, b"old")

    def boom(fh):
        fh.write(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        checkpoint.atomic_write(path, boom)
    assert open(path, "rb").read() == b"old"
    assert os.listdir(tmp_path) == ["f"]  # the temporary file is removed
    checkpoint.atomic_write(path, lambda fh: fh.write(b"new"))
    assert open(path, "rb").read() == b"new"


_leaf = st.one_of(
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=False),
    st.text(max_size=5),
    st.booleans(),
    st.none(),
    st.builds(
        lambda n, dt: torch.arange(n).to(dt),
        st.integers(0, 4),
        st.sampled_from([torch.float32, torch.int64, torch.bool]),
    ),
    st.builds(
        lambda n, k: Record({"x": torch.arange(n * 2.0).view(n, 2), ("y", "z"): torch.ones(n)}, k),
        st.integers(0, 3),
        st.integers(0, 1),
    ),
)
_trees = st.recursive(
    _leaf,
    lambda kids: st.one_of(
        st.lists(kids, max_size=3),
        st.lists(kids, max_size=3).map(tuple),
        st.dictionaries(st.text(alphabet="ab/~.", min_size=1, max_size=3), kids, max_size=3),
        st.builds(TrainState, kids, kids),
    ),
    max_leaves=10,
)


@settings(max_examples=60, deadline=None)
@given(_trees)
def test_hypothesis_round_trip_of_nested_trees(tmp_path_factory, tree):
    path = tmp_path_factory.mktemp("h") / "ck"
    checkpoint.save(path, tree)
    assert_tree_equal(checkpoint.load(path, like=tree).tree, tree)


def test_metadata_reads_the_header_alone(tmp_path):
    path = tmp_path / "ck"
    checkpoint.save(path, {"w": torch.zeros(1000)}, {"config": {"lr": 1e-3}})
    assert checkpoint.metadata(path) == {"config": {"lr": 1e-3}}
    data = path.read_bytes()
    path.write_bytes(data[:20])
    with pytest.raises(
        checkpoint.CheckpointError, match=r"checkpoint.metadata: cannot read .*ck.*truncated"
    ):
        checkpoint.metadata(path)


def test_deeply_nested_crafted_structure_is_a_checkpoint_error(tmp_path):
    path = tmp_path / "deep"
    checkpoint.save(path, {"a": torch.ones(1)})
    deep = "[" * 100_000 + "]" * 100_000
    _rewrite_header(path, lambda h: h["__metadata__"].update(structure=deep))
    with pytest.raises(checkpoint.CheckpointError, match="deep.*not valid JSON"):
        checkpoint.load(path)
