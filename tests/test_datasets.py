"""Datasets: recording from a funcrl policy, Minari round trips (local, offline), buffers and
Decision Transformer segments, on small deterministic datasets built here."""

from __future__ import annotations

import os

import pytest
import torch

import funcrl
from funcrl import buffers, datasets, sac
from funcrl.record import Record


def pendulum_policy():
    params = sac.init(
        0, 3, funcrl.specs.Bounded(-2.0, 2.0, shape=(1,)), nets=sac.Nets(num_cells=(8,))
    )

    def policy(obs, key):
        return sac.act(params, obs, nets=sac.Nets(num_cells=(8,)), mode="random", key=key)

    return policy


@pytest.fixture(scope="module")
def pendulum():
    """450 transitions: two whole 200-step episodes and an unfinished one."""
    return datasets.record(pendulum_policy(), "Pendulum-v1", 450, funcrl.random.key(0), seed=1)


def test_record_is_deterministic_and_contiguous(pendulum):
    again = datasets.record(pendulum_policy(), "Pendulum-v1", 450, funcrl.random.key(0), seed=1)
    assert pendulum.batch_size == (450,)
    for k in pendulum.keys(include_nested=True, leaves_only=True):
        assert torch.equal(pendulum[k], again[k]), k
    assert datasets.episode_ends(pendulum).tolist() == [199, 399]
    torch.testing.assert_close(
        pendulum["next", "observation"][:199], pendulum["observation"][1:200]
    )
    assert bool(pendulum["next", "truncated"][199]) and not bool(
        pendulum["next", "terminated"].any()
    )


def test_minari_round_trip(tmp_path, pendulum):
    pytest.importorskip("minari")
    pytest.importorskip("h5py")
    with pytest.raises(ValueError, match=r"datasets\.write_minari: the last 50 transitions"):
        datasets.write_minari(pendulum, tmp_path / "p", env_id="Pendulum-v1")
    path = datasets.write_minari(
        pendulum, tmp_path / "p", env_id="Pendulum-v1", unfinished="drop", author="funcrl"
    )
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".minari-")]
    back = datasets.read_minari(path)
    assert back.batch_size == (400,)
    for k in pendulum.keys(include_nested=True, leaves_only=True):
        torch.testing.assert_close(back[k], pendulum[k][:400], msg=str(k))
    with pytest.raises(FileExistsError, match=r"datasets\.write_minari: .* exists"):
        datasets.write_minari(pendulum, path, env_id="Pendulum-v1", unfinished="drop")
    import minari

    ds = minari.MinariDataset(os.path.join(path, "data"))
    assert ds.total_episodes == 2 and ds.total_steps == 400


def test_minari_round_trip_discrete(tmp_path):
    pytest.importorskip("minari")
    pytest.importorskip("h5py")
    data = datasets.record(lambda o, k: torch.tensor(1), "CartPole-v1", 30, seed=0)
    path = datasets.write_minari(data, tmp_path / "c", env_id="CartPole-v1", unfinished="drop")
    back = datasets.read_minari(path)
    n = int(datasets.episode_ends(data)[-1]) + 1
    assert back["action"].dtype == data["action"].dtype
    torch.testing.assert_close(back["action"], data["action"][:n])
    torch.testing.assert_close(back["next", "terminated"], data["next", "terminated"][:n])


def test_non_contiguous_data_is_refused(tmp_path, pendulum):
    pytest.importorskip("minari")
    shuffled = pendulum[torch.randperm(400, generator=torch.Generator().manual_seed(0))]
    with pytest.raises(ValueError, match=r"datasets\.write_minari: episode at transitions"):
        datasets.write_minari(shuffled, tmp_path / "s", env_id="Pendulum-v1", unfinished="drop")


def test_buffer_round_trip_keeps_time_order(pendulum):
    state = datasets.to_buffer(pendulum)
    assert int(state.size) == 450
    back = datasets.from_buffer(state)
    assert torch.equal(back["observation"], pendulum["observation"])
    # A ring that wrapped: the newest 100 transitions, oldest first.
    small = buffers.add_(buffers.init(100, pendulum), pendulum)
    assert torch.equal(datasets.from_buffer(small)["observation"], pendulum["observation"][350:])


def test_return_to_go_by_hand():
    r = torch.tensor([[1.0], [2.0], [3.0], [4.0]])
    term = torch.tensor([[False], [True], [False], [False]])
    data = Record(
        {
            "observation": torch.zeros(4, 1),
            "action": torch.zeros(4, 1),
            ("next", "observation"): torch.zeros(4, 1),
            ("next", "reward"): r,
            ("next", "terminated"): term,
            ("next", "truncated"): torch.zeros(4, 1, dtype=torch.bool),
        },
        batch_ndim=1,
    )
    rtg = datasets.return_to_go(data, gamma=0.5)
    torch.testing.assert_close(
        rtg.squeeze(-1), torch.tensor([2.0, 2.0, 5.0, 4.0], dtype=torch.float64)
    )
    seg = datasets.segments(data, 2, stride=1, scale=2.0)
    # Windows inside one episode only: [0, 2), [2, 4).
    assert seg.batch_size == (2, 2)
    torch.testing.assert_close(
        seg["return_to_go"].squeeze(-1), torch.tensor([[1.5, 1.0], [3.5, 2.0]])
    )
    assert seg["timestep"].tolist() == [[0, 1], [0, 1]]


def test_bad_input():
    with pytest.raises(ValueError, match=r"datasets\.record: num_steps must be an int >= 1, got 0"):
        datasets.record(lambda o, k: o, "Pendulum-v1", 0)
    with pytest.raises(TypeError, match=r"datasets\.episode_ends: data must be a funcrl\.Record"):
        datasets.episode_ends({"observation": torch.zeros(2)})
    bad = Record({"observation": torch.zeros(3, 1)}, batch_ndim=1)
    with pytest.raises(KeyError, match=r"datasets\.return_to_go: data has no key 'action'"):
        datasets.return_to_go(bad)
    with pytest.raises(FileNotFoundError, match=r"datasets\.read_minari: .* is not a Minari"):
        datasets.read_minari("/nonexistent/dataset")
