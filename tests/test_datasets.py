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


def _transitions(obs: torch.Tensor, next_obs: torch.Tensor) -> Record:
    n = obs.shape[0]
    return Record(
        {
            "observation": obs,
            "action": torch.zeros(n, 1),
            ("next", "observation"): next_obs,
            ("next", "reward"): torch.zeros(n, 1),
            ("next", "terminated"): torch.zeros(n, 1, dtype=torch.bool),
            ("next", "truncated"): torch.zeros(n, 1, dtype=torch.bool),
        },
        batch_ndim=1,
    )


def test_observation_stats_and_normalisation_by_hand():
    obs = torch.tensor([[1.0, 10.0], [3.0, 10.0]])
    data = _transitions(obs, obs + 2.0)
    stats = datasets.observation_stats(data, epsilon=1e-3)
    # Feature 0: mean 2, population std 1; feature 1 is constant: std 0 + epsilon.
    torch.testing.assert_close(stats.mean, torch.tensor([2.0, 10.0]))
    torch.testing.assert_close(stats.std, torch.tensor([1.001, 1e-3]))
    out = datasets.normalize_observations(data, stats)
    torch.testing.assert_close(out["observation"][:, 0], torch.tensor([-1.0, 1.0]) / 1.001)
    torch.testing.assert_close(out["observation"][:, 1], torch.zeros(2))  # constant -> 0, no NaN
    torch.testing.assert_close(out["next", "observation"][:, 0], torch.tensor([1.0, 3.0]) / 1.001)
    assert torch.equal(data["observation"], obs)  # the caller's data is not changed
    assert out["action"] is data["action"]
    # The same object standardises one observation at evaluation, in its dtype.
    one = stats(torch.tensor([4.0, 10.0], dtype=torch.float64))
    assert one.dtype == torch.float64
    torch.testing.assert_close(one, torch.tensor([2.0 / 1.001, 0.0], dtype=torch.float64))


def test_normalised_pendulum_data_is_standard(pendulum):
    stats = datasets.observation_stats(pendulum)
    out = datasets.normalize_observations(pendulum, stats)
    torch.testing.assert_close(out["observation"].mean(0), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(
        out["observation"].std(0, correction=0), torch.ones(3), atol=1e-2, rtol=0
    )


def test_observation_stats_bad_input():
    obs = torch.zeros(3, 2)
    data = _transitions(obs, obs)
    stats = datasets.observation_stats(data)
    with pytest.raises(
        ValueError, match=r"ObservationStats: observation has shape \(3,\), expected \[\.\.\., 2\]"
    ):
        stats(torch.zeros(3))
    with pytest.raises(
        TypeError, match="ObservationStats: observation is torch.int64, expected float"
    ):
        stats(torch.zeros(2, dtype=torch.long))
    with pytest.raises(
        ValueError, match=r"datasets\.observation_stats: epsilon must be > 0, got 0"
    ):
        datasets.observation_stats(data, epsilon=0)
    nan = _transitions(torch.tensor([[0.0, float("nan")]] * 3), obs)
    with pytest.raises(
        ValueError, match=r"datasets\.observation_stats: data\['observation'\] holds a NaN"
    ):
        datasets.observation_stats(nan)
    discrete = _transitions(
        torch.zeros(3, 2, dtype=torch.long), torch.zeros(3, 2, dtype=torch.long)
    )
    with pytest.raises(ValueError, match=r"must be a float \[N, o\] tensor, got torch.int64"):
        datasets.observation_stats(discrete)
    with pytest.raises(
        TypeError,
        match=r"datasets\.normalize_observations: stats must be an ObservationStats, got tuple",
    ):
        datasets.normalize_observations(data, (torch.zeros(2), torch.ones(2)))
    with pytest.raises(
        TypeError, match=r"datasets\.normalize_observations: data must be a funcrl\.Record"
    ):
        datasets.normalize_observations({"observation": obs}, stats)
