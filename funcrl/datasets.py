"""Offline datasets: Minari files <-> :class:`funcrl.Record` s and replay buffers, and recording a
dataset from any funcrl policy.

    data = datasets.record(policy, "Pendulum-v1", 50_000, key)       # Record [N] of transitions
    datasets.write_minari(data, "runs/pendulum-medium", env_id="Pendulum-v1")
    data = datasets.read_minari("runs/pendulum-medium")              # the same Record
    state = datasets.to_buffer(data)                                 # a full funcrl.buffers state
    segs = datasets.segments(data, 20)                               # [n, 20] with return_to_go

A dataset here is a :class:`funcrl.Record` of transitions with batch size ``[N]`` and TorchRL's
keys -- ``observation``, ``action``, ``("next", "observation" | "reward" | "done" |
"terminated" | "truncated")`` -- stored episode after episode in time order (what
:class:`funcrl.envs.GymEnv` produces). Minari stores the same data as episodes of ``L`` steps
with ``L + 1`` observations; :func:`write_minari` checks that each episode is contiguous
(``next_observation[t] == observation[t + 1]``) instead of writing a broken file.

Minari (``pip install funcrl[offline]``: ``minari`` and ``h5py``) is imported only by
:func:`write_minari` / :func:`read_minari`; everything works offline on local paths (no dataset
server is ever contacted). Everything is host-side (value checks, numpy conversions): nothing here
runs inside a training step.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import torch

from funcrl import buffers
from funcrl.record import Record

__all__ = [
    "record",
    "write_minari",
    "read_minari",
    "to_buffer",
    "from_buffer",
    "episode_ends",
    "return_to_go",
    "segments",
    "ObservationStats",
    "observation_stats",
    "normalize_observations",
]

_KEYS = (
    "observation",
    "action",
    ("next", "observation"),
    ("next", "reward"),
    ("next", "terminated"),
    ("next", "truncated"),
)


def _check_transitions(data: Any, owner: str) -> Record:
    if not isinstance(data, Record):
        raise TypeError(f"{owner}: data must be a funcrl.Record, got {type(data).__name__}")
    if data.batch_ndim != 1:
        raise ValueError(
            f"{owner}: data must have one batch dim [N] (transitions in time order), got "
            f"batch size {tuple(data.batch_size)}"
        )
    for k in _KEYS:
        if k not in data:
            raise KeyError(f"{owner}: data has no key {k!r}; a transition needs {list(_KEYS)}")
    n = data.batch_size[0]
    for k in (("next", "reward"), ("next", "terminated"), ("next", "truncated")):
        if tuple(data[k].shape) != (n, 1):
            raise ValueError(
                f"{owner}: data[{k!r}] has shape {tuple(data[k].shape)}, expected {(n, 1)}"
            )
    for k in (("next", "terminated"), ("next", "truncated")):
        if data[k].dtype != torch.bool:
            raise TypeError(f"{owner}: data[{k!r}] is {data[k].dtype}, expected torch.bool")
    if data["next", "observation"].shape != data["observation"].shape:
        raise ValueError(
            f"{owner}: data[('next', 'observation')] has shape "
            f"{tuple(data['next', 'observation'].shape)}, expected "
            f"{tuple(data['observation'].shape)} (the observation's)"
        )
    return data


# -- recording -------------------------------------------------------------------------------------


def record(
    policy: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor],
    env: Any,
    num_steps: int,
    key: torch.Tensor | None = None,
    *,
    seed: int = 0,
) -> Record:
    """Runs ``policy`` in a gymnasium environment for ``num_steps`` steps.

    Args:
        policy: ``(observation [o], key) -> action`` for one observation (e.g.
            ``lambda o, k: funcrl.sac.act(params, o, mode="random", key=k)``); ``key`` is a fresh
            sub-key per step, or ``None`` when ``key`` is ``None``.
        env: an environment id, a ``gymnasium.Env`` or a :class:`funcrl.envs.GymEnv`.
        num_steps: transitions to record (episodes are reset inside, as ``GymEnv.step``).
        key: a :mod:`funcrl.random` key (split into one key per step) or ``None``.
        seed: the environment's reset seed.

    Returns:
        Record ``[num_steps]`` of transitions in time order (the last episode may be unfinished:
        its last ``done`` is False).
    """
    from funcrl import envs

    owner = "datasets.record"
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"{owner}: num_steps must be an int >= 1, got {num_steps!r}")
    if not callable(policy):
        raise TypeError(f"{owner}: policy must be callable (observation, key) -> action")
    gym_env = env if isinstance(env, envs.GymEnv) else envs.GymEnv(env)
    keys: Any = [None] * num_steps
    if key is not None:
        from funcrl import random

        keys = random.split(key, num_steps).unbind(0)
    obs = gym_env.reset(seed=seed)
    steps = []
    with torch.no_grad():
        for k in keys:
            transition, obs = gym_env.step(policy(obs["observation"], k))
            steps.append(transition)
    if not isinstance(env, envs.GymEnv):
        gym_env.close()
    return Record.stack(steps)


# -- episodes --------------------------------------------------------------------------------------


def episode_ends(data: Record) -> torch.Tensor:
    """The indices ``[E]`` of the transitions that end an episode (``done``: terminated or
    truncated), in order."""
    data = _check_transitions(data, "datasets.episode_ends")
    done = data["next", "terminated"] | data["next", "truncated"]
    return torch.nonzero(done.squeeze(-1)).squeeze(-1)


def _episodes(data: Record, owner: str, unfinished: str) -> list[tuple[int, int]]:
    """``[(start, stop)]`` of every episode; the trailing unfinished one by ``unfinished``."""
    if unfinished not in ("error", "drop"):
        raise ValueError(f"{owner}: unfinished must be 'error' or 'drop', got {unfinished!r}")
    ends = episode_ends(data).tolist()
    n = data.batch_size[0]
    spans, start = [], 0
    for e in ends:
        spans.append((start, e + 1))
        start = e + 1
    if start < n and unfinished == "error":
        raise ValueError(
            f"{owner}: the last {n - start} transitions are an unfinished episode (no done flag); "
            "pass unfinished='drop' to leave them out (Minari stores whole episodes)"
        )
    obs, nxt = data["observation"], data["next", "observation"]
    for a, b in spans:
        if not torch.equal(nxt[a : b - 1], obs[a + 1 : b]):
            raise ValueError(
                f"{owner}: episode at transitions [{a}, {b}) is not contiguous: some "
                "('next', 'observation') differs from the following 'observation' (write "
                "transitions in time order, e.g. from datasets.record or from_buffer)"
            )
    return spans


def return_to_go(data: Record, gamma: float = 1.0) -> torch.Tensor:
    """``R_t = sum_{k >= t} gamma^(k - t) r_k`` within each episode: ``[N, 1]`` float64 (an
    unfinished last episode sums what was recorded)."""
    owner = "datasets.return_to_go"
    data = _check_transitions(data, owner)
    if not 0.0 <= float(gamma) <= 1.0:
        raise ValueError(f"{owner}: gamma must be in [0, 1], got {gamma}")
    r = data["next", "reward"].squeeze(-1).double().tolist()
    done = (data["next", "terminated"] | data["next", "truncated"]).squeeze(-1).tolist()
    out, acc = [0.0] * len(r), 0.0
    for t in range(len(r) - 1, -1, -1):
        acc = r[t] + (0.0 if done[t] else gamma * acc)
        out[t] = acc
    return torch.tensor(out, dtype=torch.float64).unsqueeze(-1)


def segments(data: Record, length: int, *, stride: int | None = None, scale: float = 1.0) -> Record:
    """Trajectory segments for a Decision Transformer: ``[S, length]`` windows that lie inside
    one episode, every ``stride`` steps (default ``length``), with ``return_to_go [S, length, 1]``
    (undiscounted, divided by ``scale``, in the reward's dtype) and ``timestep [S, length]``.

    Raises:
        ValueError: no episode is ``length`` steps long.
    """
    owner = "datasets.segments"
    data = _check_transitions(data, owner)
    if isinstance(length, bool) or not isinstance(length, int) or length < 1:
        raise ValueError(f"{owner}: length must be an int >= 1, got {length!r}")
    stride = length if stride is None else stride
    if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
        raise ValueError(f"{owner}: stride must be an int >= 1, got {stride!r}")
    if not float(scale) > 0:
        raise ValueError(f"{owner}: scale must be > 0, got {scale!r}")
    rtg = (return_to_go(data) / scale).to(data["next", "reward"].dtype)
    data = data.set("return_to_go", rtg)
    n, starts, times = data.batch_size[0], [], []
    ends = episode_ends(data).tolist()
    bounds_ = list(zip([0] + [e + 1 for e in ends], [e + 1 for e in ends] + [n]))
    for a, b in bounds_:
        for s in range(a, b - length + 1, stride):
            starts.append(s)
            times.append(s - a)
    if not starts:
        raise ValueError(f"{owner}: no episode has {length} steps")
    idx = torch.tensor(starts).unsqueeze(-1) + torch.arange(length)
    out = data[idx.reshape(-1)].apply(
        lambda t: t.reshape(len(starts), length, *t.shape[1:]), batch_ndim=2
    )
    return out.set("timestep", torch.tensor(times).unsqueeze(-1) + torch.arange(length))


# -- observation normalisation -------------------------------------------------------------------


class ObservationStats(NamedTuple):
    """Per-feature mean and standard deviation of a dataset's observations (``[o]`` each).

    Calling it normalises: ``stats(obs) = (obs - mean) / std`` for ``obs [..., o]``, so the one
    object normalises the dataset before training and the policy's input at evaluation. A
    checkpoint holds it as a pytree of two tensors.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __call__(self, observation: torch.Tensor) -> torch.Tensor:
        o = self.mean.shape[-1]
        if observation.ndim == 0 or observation.shape[-1] != o:
            raise ValueError(
                f"ObservationStats: observation has shape {tuple(observation.shape)}, expected "
                f"[..., {o}]"
            )
        if not observation.is_floating_point():
            raise TypeError(f"ObservationStats: observation is {observation.dtype}, expected float")
        mean = self.mean.to(observation.dtype)
        return (observation - mean) / self.std.to(observation.dtype)


def observation_stats(data: Record, *, epsilon: float = 1e-3) -> ObservationStats:
    """The mean and standard deviation of ``data["observation"]`` over the transitions (TD3+BC's
    state normalisation; D4RL's convention uses ``epsilon = 1e-3``).

    Args:
        data: Record ``[N]`` of transitions, ``observation [N, o]`` floating point.
        epsilon: added to the standard deviation, so a constant feature maps to 0 instead of NaN.

    Returns:
        :class:`ObservationStats` with ``mean, std [o]`` in the observation's dtype.
    """
    owner = "datasets.observation_stats"
    data = _check_transitions(data, owner)
    obs = data["observation"]
    if obs.ndim != 2 or not obs.is_floating_point():
        raise ValueError(
            f"{owner}: data['observation'] must be a float [N, o] tensor, got "
            f"{obs.dtype} of shape {tuple(obs.shape)}"
        )
    if not float(epsilon) > 0:
        raise ValueError(f"{owner}: epsilon must be > 0, got {epsilon!r}")
    if not bool(torch.isfinite(obs).all()):
        raise ValueError(f"{owner}: data['observation'] holds a NaN or inf")
    return ObservationStats(obs.mean(0), obs.std(0, correction=0) + epsilon)


def normalize_observations(data: Record, stats: ObservationStats) -> Record:
    """A copy of ``data`` whose ``observation`` and ``("next", "observation")`` are
    ``stats(...)``; everything else is shared, ``data`` is not changed."""
    owner = "datasets.normalize_observations"
    data = _check_transitions(data, owner)
    if not isinstance(stats, ObservationStats):
        raise TypeError(f"{owner}: stats must be an ObservationStats, got {type(stats).__name__}")
    return data.set("observation", stats(data["observation"])).set(
        ("next", "observation"), stats(data["next", "observation"])
    )


# -- Minari ----------------------------------------------------------------------------------------


def _numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


def write_minari(
    data: Record,
    path: str | os.PathLike,
    *,
    env_id: str | None = None,
    observation_space: Any = None,
    action_space: Any = None,
    unfinished: str = "error",
    overwrite: bool = False,
    dataset_id: str | None = None,
    algorithm_name: str | None = None,
    author: str | None = None,
    description: str | None = None,
) -> str:
    """Writes transitions as a Minari dataset directory at ``path`` (atomic: a temporary directory
    beside it, renamed once complete).

    Args:
        data: Record ``[N]`` of transitions in time order (see the module docstring).
        path: the dataset directory (Minari's ``<root>/<dataset_id>``), local.
        env_id: the gymnasium id the data comes from (its spaces are used when not given).
        observation_space, action_space: gymnasium spaces (required without ``env_id``).
        unfinished: ``"error"`` (default) or ``"drop"`` (Minari's ``DataCollector``): what to do
            with a trailing episode that has no done flag.
        overwrite: replace an existing dataset at ``path``.
        dataset_id: the id in Minari's metadata (default: the directory's name).
        algorithm_name, author, description: Minari metadata.

    Returns:
        ``path`` as a string.
    """
    import gymnasium
    import minari
    from minari.data_collector import EpisodeBuffer
    from minari.dataset.minari_storage import MinariStorage

    owner = "datasets.write_minari"
    data = _check_transitions(data, owner)
    path = os.fspath(path)
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"{owner}: {path} exists; pass overwrite=True to replace it")
    env_spec = None
    if env_id is not None:
        env_spec = gymnasium.spec(env_id)
        probe = gymnasium.make(env_id)
        observation_space = observation_space or probe.observation_space
        action_space = action_space or probe.action_space
        probe.close()
    if observation_space is None or action_space is None:
        raise ValueError(f"{owner}: give env_id, or both observation_space and action_space")
    spans = _episodes(data, owner, unfinished)
    if not spans:
        raise ValueError(f"{owner}: data holds no finished episode")
    obs, act = _numpy(data["observation"]), _numpy(data["action"])
    nxt, rew = _numpy(data["next", "observation"]), _numpy(data["next", "reward"])[:, 0]
    term, trunc = _numpy(data["next", "terminated"])[:, 0], _numpy(data["next", "truncated"])[:, 0]
    act = act.reshape(len(act), *action_space.shape)
    episodes = [
        EpisodeBuffer(
            id=i,
            observations=np.concatenate([obs[a:b], nxt[b - 1 : b]]),
            actions=act[a:b],
            rewards=rew[a:b].tolist(),
            terminations=term[a:b].tolist(),
            truncations=trunc[a:b].tolist(),
        )
        for i, (a, b) in enumerate(spans)
    ]
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".minari-", dir=parent)
    try:
        storage = MinariStorage.new(
            os.path.join(tmp, "data"),
            observation_space=observation_space,
            action_space=action_space,
            env_spec=env_spec,
            data_format="hdf5",
        )
        meta: dict[str, Any] = {
            "dataset_id": dataset_id or os.path.basename(path),
            "minari_version": minari.__version__,
        }
        for k, v in (("algorithm_name", algorithm_name), ("description", description)):
            if v is not None:
                meta[k] = v
        if author is not None:
            meta["author"] = {author}
        storage.update_metadata(meta)
        storage.update_episodes(episodes)
        if os.path.exists(path):
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def read_minari(path: str | os.PathLike, *, dtype: torch.dtype = torch.float32) -> Record:
    """Reads a local Minari dataset directory (one that :func:`write_minari` or Minari wrote)
    into a Record ``[N]`` of transitions; float observations, actions and rewards become
    ``dtype`` (the funcrl default float32), integer ones keep their dtype."""
    from minari.dataset.minari_dataset import MinariDataset

    owner = "datasets.read_minari"
    path = os.fspath(path)
    if not os.path.isdir(os.path.join(path, "data")):
        raise FileNotFoundError(f"{owner}: {path} is not a Minari dataset (no data/ directory)")
    ds = MinariDataset(os.path.join(path, "data"))

    def tensor(x: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(np.array(x))
        return t.to(dtype) if t.is_floating_point() else t

    parts: list[Record] = []
    for ep in ds.iterate_episodes():
        n = len(ep.rewards)
        obs = tensor(ep.observations)
        act = tensor(ep.actions)
        if act.dim() == 1 and act.is_floating_point():
            act = act.unsqueeze(-1)  # a Box of shape () is stored [1], as funcrl.envs does
        term = torch.from_numpy(np.asarray(ep.terminations, dtype=np.bool_)).reshape(n, 1)
        trunc = torch.from_numpy(np.asarray(ep.truncations, dtype=np.bool_)).reshape(n, 1)
        nxt = {
            "observation": obs[1:],
            "reward": tensor(np.asarray(ep.rewards, dtype=np.float64)).reshape(n, 1),
            "terminated": term,
            "truncated": trunc,
            "done": term | trunc,
        }
        parts.append(
            Record(
                {"observation": obs[:-1], "action": act, "next": Record(nxt, batch_ndim=1)},
                batch_ndim=1,
            )  # fmt: skip
        )
    if not parts:
        raise ValueError(f"{owner}: {path} holds no episode")
    return Record.cat(parts)


# -- replay buffers --------------------------------------------------------------------------------


def to_buffer(data: Record, capacity: int | None = None, **init_kwargs: Any) -> buffers.ReplayState:
    """A :mod:`funcrl.buffers` state holding ``data`` (capacity ``N`` by default; a smaller one
    keeps the newest transitions, as :func:`funcrl.buffers.add_`). ``init_kwargs`` go to
    :func:`funcrl.buffers.init` (e.g. ``prioritized=True``)."""
    owner = "datasets.to_buffer"
    if not isinstance(data, Record) or data.batch_ndim != 1:
        raise ValueError(f"{owner}: data must be a funcrl.Record with batch size [N]")
    n = data.batch_size[0]
    capacity = n if capacity is None else capacity
    state = buffers.init(capacity, data, **init_kwargs)
    return buffers.add_(state, data)


def from_buffer(state: buffers.ReplayState) -> Record:
    """The transitions a buffer holds, oldest first: Record ``[size]`` (time order when they
    were added in time order, so a training run's buffer becomes a medium-replay dataset)."""
    buffers.validate(state, "datasets.from_buffer")
    size, cursor = int(state.size), int(state.cursor)
    cap = buffers.capacity(state)
    if size < cap:
        idx = torch.arange(size)
    else:
        idx = (torch.arange(cap) + cursor) % cap
    return state.storage[idx.to(state.cursor.device)]
