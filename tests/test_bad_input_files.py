"""Bad input around files and persistent state: buffers (priorities, load validation, restore),
checkpoints (corrupt, crafted, mismatched), the example scripts' output folders, logs and configs,
and writers killed mid-write (issue #12, "no data loss and safe checkpoints")."""

from __future__ import annotations

import glob
import importlib
import math
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from funcrl import buffers, checkpoint, tree
from funcrl.record import Record

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "examples"))
_util = importlib.import_module("_util")


def transitions(n: int, start: float = 0.0) -> Record:
    r = torch.arange(n, dtype=torch.float32).add(start).view(n, 1)
    return Record({"observation": r.expand(n, 2).clone(), ("next", "reward"): r}, batch_ndim=1)


def prioritized(cap: int = 4, n: int = 3) -> buffers.ReplayState:
    return buffers.add(buffers.init(cap, transitions(1)[0], prioritized=True), transitions(n))


# ---------------------------------------------------------------------------- prioritized replay


@pytest.mark.parametrize("fn", ["update_priorities", "update_priorities_"])
@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf])
def test_invalid_priorities_are_rejected_and_nothing_is_written(fn, bad):
    s = prioritized()
    before = s.prioritized.priority.clone()
    with pytest.raises(ValueError, match=rf"buffers.{fn}: priorities must be finite and >= 0; "):
        getattr(buffers, fn)(s, torch.tensor([0, 1]), torch.tensor([1.0, bad]))
    assert torch.equal(s.prioritized.priority, before)
    assert float(s.prioritized.max_priority) == -1.0


def test_priority_indices_out_of_range_are_rejected():
    with pytest.raises(IndexError, match=r"buffers.update_priorities: indices must be .*\[0, 4\)"):
        buffers.update_priorities(prioritized(), torch.tensor([4]), torch.tensor([1.0]))


def test_priority_value_checks_are_skipped_under_tracing_and_vmap(monkeypatch):
    s = prioritized()
    idx, pr = torch.tensor([0, 1]), torch.tensor([1.0, 2.0])
    want = buffers.update_priorities(s, idx, pr).prioritized.priority
    # Under a tracer (torch.compile, funcrl.jit) the values are not read: no host sync, no break.
    import funcrl.jit

    monkeypatch.setattr(funcrl.jit, "is_tracing", lambda: True)
    buffers.update_priorities(s, idx, torch.tensor([1.0, math.nan]))
    buffers.set_beta(s, math.nan)
    monkeypatch.undo()
    stacked = tree.stack([s, s])
    out = torch.func.vmap(buffers.update_priorities)(stacked, idx.expand(2, 2), pr.expand(2, 2))
    torch.testing.assert_close(out.prioritized.priority, torch.stack([want, want]))


@pytest.mark.parametrize("beta", [math.nan, -0.1, math.inf])
def test_invalid_beta_is_rejected(beta):
    s = prioritized()
    with pytest.raises(ValueError, match="buffers.set_beta: beta must be finite and >= 0"):
        buffers.set_beta(s, beta)
    with pytest.raises(ValueError, match="buffers.sample: beta must be finite and >= 0"):
        buffers.sample(s, 2, beta=beta)
    with pytest.raises(ValueError, match="buffers.init: beta must be a finite float >= 0"):
        buffers.init(4, transitions(1)[0], prioritized=True, beta=beta)


@pytest.mark.parametrize("name, value", [("alpha", math.nan), ("alpha", -1.0), ("eps", math.inf)])
def test_invalid_alpha_and_eps_are_rejected(name, value):
    with pytest.raises(ValueError, match=rf"buffers.init: {name} must be a finite float"):
        buffers.init(4, transitions(1)[0], prioritized=True, **{name: value})


def test_set_beta_rejects_non_scalar():
    with pytest.raises(
        ValueError, match=r"buffers.set_beta: beta must be a 0-d float, got shape \(2,\)"
    ):
        buffers.set_beta(prioritized(), torch.tensor([0.1, 0.2]))


# ---------------------------------------------------------------------------- buffers.load


def _bad(state: buffers.ReplayState, **fields) -> buffers.ReplayState:
    return state._replace(**fields)


def _prio(state: buffers.ReplayState, **fields) -> buffers.ReplayState:
    return state._replace(prioritized=state.prioritized._replace(**fields))


BAD_STATES = [
    (lambda s: _bad(s, cursor=torch.tensor(9)), r"cursor must be in \[0, capacity=4\), got 9"),
    (lambda s: _bad(s, size=torch.tensor(7)), r"size must be in \[0, capacity=4\], got 7"),
    (lambda s: _bad(s, size=torch.tensor(-1)), r"size must be in \[0, capacity=4\], got -1"),
    (lambda s: _bad(s, cursor=torch.tensor(1)), "cursor must equal size until the ring is full"),
    (lambda s: _bad(s, size=torch.tensor(3, dtype=torch.int32)), "size must be a 0-d int64"),
    (lambda s: _bad(s, cursor=torch.tensor([3])), "cursor must be a 0-d int64"),
    (
        lambda s: _bad(s, storage=Record({"observation": torch.zeros(4, 2)}, batch_ndim=0)),
        "storage must be a Record with batch_ndim 1",
    ),
    (
        lambda s: _prio(s, priority=torch.zeros(5)),
        r"priority must be a float32 tensor \[capacity=4\]",
    ),
    (lambda s: _prio(s, priority=torch.tensor([1.0, math.nan, 1.0, 0.0])), "non-finite"),
    (
        lambda s: _prio(s, priority=torch.tensor([1.0, -1.0, 1.0, 0.0])),
        "must be > 0 on the 3 filled",
    ),
    (
        lambda s: _prio(s, priority=torch.tensor([1.0, 1.0, 1.0, 2.0])),
        "must be 0 on the empty slots",
    ),
    (lambda s: _prio(s, max_priority=torch.tensor(math.nan)), "max_priority must be finite"),
    (lambda s: _prio(s, max_priority=torch.tensor(-3.0)), "max_priority must be -1"),
    (lambda s: _prio(s, beta=torch.tensor(math.inf)), "beta must be finite"),
    (lambda s: _prio(s, eps=torch.tensor(0.0)), "eps > 0"),
    (
        lambda s: _prio(s, alpha=torch.tensor(0.5, dtype=torch.float64)),
        "alpha must be a 0-d float32",
    ),
]


@pytest.mark.parametrize("corrupt, match", BAD_STATES)
def test_buffers_load_validates_every_field_naming_the_file(tmp_path, corrupt, match):
    path = str(tmp_path / "buf.safetensors")
    checkpoint.save(path, corrupt(prioritized()))  # a crafted file: bypasses buffers.save
    with pytest.raises((ValueError, TypeError), match=rf"buffers.load\('{path}'\): .*{match}"):
        buffers.load(path)


@pytest.mark.parametrize("corrupt, match", BAD_STATES[:4])
def test_load_state_dict_validates_too(corrupt, match):
    sd = buffers.state_dict(corrupt(prioritized()))
    with pytest.raises(ValueError, match=rf"buffers.load_state_dict: .*{match}"):
        buffers.load_state_dict(sd)


def test_load_state_dict_missing_priority_field():
    sd = buffers.state_dict(prioritized())
    del sd["prioritized"]["beta"]
    with pytest.raises(KeyError, match="buffers.load_state_dict: prioritized must have entries"):
        buffers.load_state_dict(sd)


def test_buffers_load_random_bytes_names_the_file_and_gives_no_unsafe_advice(tmp_path):
    path = tmp_path / "buf.bin"
    path.write_bytes(os.urandom(1000))
    with pytest.raises(checkpoint.CheckpointError, match="buf.bin") as info:
        buffers.load(path)
    assert "weights_only" not in str(info.value)


def test_buffers_load_of_a_non_buffer_checkpoint(tmp_path):
    path = str(tmp_path / "p")
    checkpoint.save(path, {"weight": torch.zeros(2)})
    with pytest.raises(
        TypeError, match=rf"buffers.load\('{path}'\): expected a buffers.ReplayState, got dict"
    ):
        buffers.load(path)


def test_restore_validates_its_inputs():
    s = _bad(prioritized(), cursor=torch.tensor(9))
    with pytest.raises(ValueError, match=r"buffers.restore \(state\): cursor must be in"):
        buffers.restore(s, prioritized())


# ---------------------------------------------------------------------------- checkpoints


def test_checkpoint_save_refuses_unknown_types_naming_the_path(tmp_path):
    with pytest.raises(
        TypeError, match=r"checkpoint.save: unsupported type Generator at 'rng'.*get_state"
    ):
        checkpoint.save(tmp_path / "a", {"rng": torch.Generator()})
    with pytest.raises(TypeError, match=r"checkpoint.save: dict at 'a' has key 1"):
        checkpoint.save(tmp_path / "a", {"a": {1: torch.zeros(1)}})
    with pytest.raises(TypeError, match="checkpoint.save: metadata is not JSON-serialisable"):
        checkpoint.save(tmp_path / "a", {}, metadata={"x": object()})
    with pytest.raises(TypeError, match="checkpoint.save: tensor at 'c' has unsupported dtype"):
        checkpoint.save(tmp_path / "a", {"c": torch.zeros(2, dtype=torch.complex64)})
    assert not os.path.exists(tmp_path / "a")


def test_checkpoint_register_rejects_non_namedtuples_and_name_clashes():
    with pytest.raises(TypeError, match="checkpoint.register: cls must be a NamedTuple class"):
        checkpoint.register(dict)
    with pytest.raises(ValueError, match="checkpoint.register: name 'funcrl.buffers.ReplayState'"):
        checkpoint._ensure_builtins()  # funcrl's own types register lazily
        checkpoint.register(buffers.PriorityState, name="funcrl.buffers.ReplayState")


def test_atomic_write_bad_arguments(tmp_path):
    with pytest.raises(FileNotFoundError, match="atomic_write: folder"):
        checkpoint.atomic_write(tmp_path / "missing" / "f", b"x")
    with pytest.raises(TypeError, match="atomic_write: data must be bytes or a callable"):
        checkpoint.atomic_write(tmp_path / "f", "text")


def test_checkpoint_load_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        checkpoint.load(tmp_path / "nope")


# ---------------------------------------------------------------------------- example scripts

TINY = [
    "--num-cells", "8", "8", "--batch-size", "8", "--learning-starts", "20",
    "--eval-episodes", "1", "--eval-every", "0", "--checkpoint-every", "30",
    "--no-compile", "--no-progress", "--threads", "1",
]  # fmt: skip


@pytest.mark.parametrize(
    "flag, value, match",
    [
        ("--total-steps", "-5", "--total-steps must be > 0, got -5"),
        ("--learning-starts", "-1", "--learning-starts must be >= 0, got -1"),
        ("--batch-size", "0", "--batch-size must be > 0, got 0"),
        ("--buffer-size", "0", "--buffer-size must be > 0, got 0"),
        ("--gamma", "1.5", r"--gamma must be in \[0, 1\], got 1.5"),
        ("--learning-rate", "nan", "--learning-rate must be finite"),
        ("--num-cells", "0", r"--num-cells must be > 0, got \(0,\)"),
    ],
)
def test_example_config_ranges(flag, value, match):
    sac = importlib.import_module("sac")
    with pytest.raises(ValueError, match=rf"parse_config: {match}"):
        _util.parse_config(sac.Config, [flag, value])


def test_multiagent_config_ranges():
    pytest.importorskip("vmas")
    ma = importlib.import_module("multiagent")
    with pytest.raises(ValueError, match="parse_config: --total-steps must be > 0"):
        _util.parse_config(ma.Config, ["--total-steps", "-1"])


def test_prepare_out_refuses_an_earlier_run_naming_both_flags(tmp_path):
    out = str(tmp_path)
    (tmp_path / "log.csv").write_text("step\n1\n")
    with pytest.raises(
        FileExistsError, match="log.csv from an earlier run: pass --resume .* --overwrite"
    ):
        _util.prepare_out(out, False, False, ("checkpoint.pt", "log.csv"))
    with pytest.raises(FileExistsError, match="pass --overwrite to replace it"):
        _util.prepare_out(out, None, False, ("log.csv",))
    _util.prepare_out(out, True, False, ("log.csv",))  # resume: kept
    assert (tmp_path / "log.csv").exists()
    _util.prepare_out(out, False, True, ("log.csv",))  # overwrite: removed up front
    assert not (tmp_path / "log.csv").exists()


def test_truncate_log_drops_rows_past_the_step_and_a_torn_row(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("step,x\n100,1\n200,2\n300,3\n200,9\n30")  # "30" is a torn "300,..." row
    assert _util.truncate_log(str(path), 200) == 2
    assert path.read_text().splitlines() == ["step,x", "100,1", "200,2", "200,9"]
    assert _util.truncate_log(str(tmp_path / "none.csv"), 5) == 0
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="truncate_log: .*bad.csv has no 'step' column"):
        _util.truncate_log(str(tmp_path / "bad.csv"), 1)


def test_sac_example_refuses_rerun_resumes_cleanly_and_checks_config(tmp_path, capsys):
    sac = importlib.import_module("sac")
    out = str(tmp_path / "run")
    sac.main([*TINY, "--total-steps", "60", "--out", out])
    log = os.path.join(out, "log.csv")
    n_rows = len(_util.read_csv(log))
    # A rerun without --resume / --overwrite must not replace checkpoint.pt or truncate log.csv.
    with pytest.raises(FileExistsError, match="--resume.*--overwrite"):
        sac.main([*TINY, "--total-steps", "60", "--out", out])
    assert len(_util.read_csv(log)) == n_rows
    # --resume with other nets: refused, naming the flag and both values.
    with pytest.raises(ValueError, match=r"--num-cells 8 8, this run has --num-cells 4 4"):
        sac.main([*TINY, "--total-steps", "90", "--out", out, "--resume", "--num-cells", "4", "4"])
    # A killed run's rows past the checkpoint (step 60) and a torn row are dropped on resume.
    with open(log, "a") as fh:
        fh.write("70,1.0,,-100.0,,,\n7")
    sac.main([*TINY, "--total-steps", "90", "--out", out, "--resume", "--buffer-size", "40"])
    assert "dropped the 20 oldest" in capsys.readouterr().out
    steps = [int(r["step"]) for r in _util.read_csv(log)]
    assert steps == [60, 90]
    ck = _util.load_checkpoint(os.path.join(out, "checkpoint.pt")).tree
    assert int(ck["buffer"].size) == 40 and ck["step"] == 90
    # --overwrite starts over.
    res = sac.main([*TINY, "--total-steps", "30", "--out", out, "--overwrite"])
    assert res["steps"] == 30 and [r["step"] for r in _util.read_csv(log)] == [30.0]


def test_corrupt_example_checkpoint_names_the_file(tmp_path):
    sac = importlib.import_module("sac")
    out = tmp_path / "run"
    out.mkdir()
    (out / "checkpoint.pt").write_bytes(b"\x80\x04garbage")  # e.g. an old pickle checkpoint
    with pytest.raises(checkpoint.CheckpointError, match=r"cannot (load|read) .*checkpoint.pt"):
        sac.main([*TINY, "--total-steps", "100", "--out", str(out), "--resume"])


# ---------------------------------------------------------------------------- killed writers

_CHILD = textwrap.dedent(
    """
    import os, stat, sys, threading, time
    import torch
    sys.path.insert(0, {examples!r})
    import _util
    from funcrl import buffers, checkpoint
    from funcrl.record import Record

    folder = sys.argv[1]
    real_fsync = os.fsync

    def hanging_fsync(fd):
        # Once a first good file exists, hang inside the next write (temp file written, not yet
        # renamed): the parent kills us there.
        real_fsync(fd)
        if stat.S_ISREG(os.fstat(fd).st_mode) and os.path.exists(os.path.join(folder, "ready")):
            time.sleep(600)

    os.fsync = hanging_fsync
    big = torch.arange(2_000_000, dtype=torch.float32)
    rec = Record({{"x": torch.zeros(1000, 64)}}, batch_ndim=1)

    def ckpt(i):
        checkpoint.save(os.path.join(folder, "ck"), {{"i": i, "big": big + i}})

    def buf(i):
        s = buffers.add(buffers.init(1000, rec[0]), rec.apply(lambda t: t + i))
        buffers.save(s, os.path.join(folder, "buf"))

    def log(i):
        # The first call writes the setup file; the rewrite under test is truncate_log's.
        path = os.path.join(folder, "log.csv")
        if i == 0:
            with open(path, "w") as fh:
                fh.write("step,x\\n" + "".join(f"{{k}},0\\n" for k in range(1000)))
        _util.truncate_log(path, 499 if i == 0 else 299)

    writers = [ckpt, buf, log]
    for w in writers:
        w(0)
    open(os.path.join(folder, "ready"), "w").close()
    threads = [threading.Thread(target=w, args=(1,)) for w in writers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    """
)


def test_writers_killed_mid_write_leave_the_previous_file_loadable(tmp_path):
    script = tmp_path / "child.py"
    script.write_text(_CHILD.format(examples=os.path.join(ROOT, "examples")))
    folder = tmp_path / "data"
    folder.mkdir()
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, str(script), str(folder)], env=env, cwd=ROOT)
    try:
        deadline = time.monotonic() + 120
        temps: list[str] = []
        while time.monotonic() < deadline and proc.poll() is None:
            temps = glob.glob(str(folder / ".*.tmp"))
            if len(temps) == 3:
                break
            time.sleep(0.05)
        assert len(temps) == 3, f"the child did not reach the three writes (rc {proc.poll()})"
        time.sleep(0.2)  # let the hanging fsyncs start
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    # Each file is the first, complete version; the new one was only ever in a temp file.
    ck = checkpoint.load(folder / "ck").tree
    assert ck["i"] == 0 and torch.equal(ck["big"], torch.arange(2_000_000, dtype=torch.float32))
    b = buffers.load(folder / "buf")
    assert int(b.size) == 1000 and float(b.storage["x"].max()) == 0.0
    rows = _util.read_csv(str(folder / "log.csv"))
    assert [r["step"] for r in rows] == list(range(500)) and {r["x"] for r in rows} == {0.0}
