"""Scale-out on ``torch.distributed``: data parallel inside the pure step, populations over ranks.

Data parallel: every rank keeps the same params and its own replay buffer (each rank collects
and stores its own transitions; nothing is exchanged but gradients), samples its own batch, and
the gradients are averaged across ranks *inside* the pure step by a functional all-reduce, so the
step still traces as one graph for ``torch.compile(fullgraph=True)`` and :func:`funcrl.jit`::

    rank, world = distributed.setup()                        # from torchrun's environment
    train = sac.trainer(distributed.data_parallel(optim.adam(3e-4)))
    key = distributed.rank_key(funcrl.random.key(seed))     # each rank its own draws
    params = sac.init(seed, obs_spec, act_spec)              # same seed: same params everywhere
    step = torch.compile(train.step, fullgraph=True)

With equal per-rank batch sizes and mean losses, a ``W``-rank step on ``W`` batches of ``B`` equals
a one-process step on their concatenation (``W * B``) up to float rounding.

Population: ``N`` independent seeds, vmapped, split over ranks (rank ``r`` trains seeds
``[r * N / W, (r + 1) * N / W)``); no communication until :func:`gather` puts the results back
together::

    keys = distributed.shard(funcrl.random.split(key, N))   # this rank's seeds
    out = torch.func.vmap(train_one_seed)(keys)
    out = distributed.gather(out)                            # [N, ...] on every rank

Launch with ``torchrun --nproc-per-node W script.py`` (several machines: ``torchrun --nnodes M
--node-rank i --rdzv-endpoint host:port ...``). gloo runs on CPU, NCCL on CUDA. Without a process
group everything here is the identity of a one-process run (rank 0 of 1).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch
import torch.distributed as dist

from funcrl import tree
from funcrl.optim import GradientTransformation, multi_transform

__all__ = [
    "setup",
    "rank",
    "world_size",
    "all_mean",
    "data_parallel",
    "rank_key",
    "shard",
    "gather",
]

Group = Any  # a ProcessGroup, or None for the default (world) group


def _group(group: Group) -> Any:
    return dist.group.WORLD if group is None else group


def rank(group: Group = None) -> int:
    """This process's rank in ``group`` (0 without a process group)."""
    if not dist.is_available() or not dist.is_initialized():
        return 0
    return dist.get_rank(_group(group))


def world_size(group: Group = None) -> int:
    """The number of processes in ``group`` (1 without a process group)."""
    if not dist.is_available() or not dist.is_initialized():
        return 1
    return dist.get_world_size(_group(group))


def setup(backend: str | None = None, device: torch.device | str | None = None) -> tuple[int, int]:
    """Joins the process group that ``torchrun`` describes in the environment; host-side.

    Reads ``RANK``, ``WORLD_SIZE`` (and ``MASTER_ADDR``/``MASTER_PORT``) as ``torchrun`` sets them.
    Without ``WORLD_SIZE`` in the environment this is a one-process run and nothing is started.
    On CUDA each process takes GPU ``LOCAL_RANK``.

    Args:
        backend: ``"gloo"`` or ``"nccl"``; default NCCL for a CUDA ``device``, else gloo.
        device: the device the training runs on (default CPU).

    Returns:
        ``(rank, world_size)``.

    Raises:
        ValueError: an unknown backend, or NCCL for a CPU device.
    """
    dev = torch.device("cpu" if device is None else device)
    if backend is None:
        backend = "nccl" if dev.type == "cuda" else "gloo"
    if backend not in ("gloo", "nccl"):
        raise ValueError(f"distributed.setup: backend must be 'gloo' or 'nccl', got {backend!r}")
    if backend == "nccl" and dev.type != "cuda":
        raise ValueError(f"distributed.setup: backend 'nccl' needs a CUDA device, got {dev}")
    if dist.is_initialized():
        return rank(), world_size()
    if "WORLD_SIZE" not in os.environ:
        return 0, 1
    if dev.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend)
    return rank(), world_size()


def all_mean(grads: Any, group: Group = None) -> Any:
    """The mean over ranks of every tensor of ``grads``; pure and traceable.

    One functional all-reduce per dtype over the leaves flattened into one buffer (few large
    messages, as DDP's buckets), so it costs one collective per step and compiles into the step's
    graph (``torch.compile(fullgraph=True)``, :func:`funcrl.jit`). Every rank must call it with the
    same structure, shapes and dtypes. Identity with one process.

    Args:
        grads: a pytree of floating-point tensors.
        group: the process group (default: the world).

    Returns:
        The same pytree, each leaf averaged over the ranks.

    Raises:
        TypeError: a leaf is not a floating-point tensor (naming its path).
    """

    def check(path, x):
        if not isinstance(x, torch.Tensor) or not (x.is_floating_point() or x.is_complex()):
            what = f"dtype {x.dtype}" if isinstance(x, torch.Tensor) else type(x).__name__
            where = "".join(f"[{k!r}]" for k in path)
            raise TypeError(
                f"distributed.all_mean: every leaf of grads must be a floating-point tensor; "
                f"grads{where} is {what}"
            )
        return x

    tree.map_with_path(check, grads)
    w = world_size(group)
    if w == 1:
        return grads
    from torch.distributed import _functional_collectives as fc

    leaves, spec = tree.flatten(grads)
    out: list[torch.Tensor | None] = [None] * len(leaves)
    by_dtype: dict[torch.dtype, list[int]] = {}
    for i, x in enumerate(leaves):
        by_dtype.setdefault(x.dtype, []).append(i)
    for idx in by_dtype.values():
        flat = torch.cat([leaves[i].reshape(-1) for i in idx])
        # "sum" then divide: gloo has no native average, and w is a static int (no host read).
        total = fc.all_reduce(flat, "sum", _group(group)) / w
        for i, part in zip(idx, total.split([leaves[i].numel() for i in idx])):
            out[i] = part.view(leaves[i].shape)
    return tree.unflatten(spec, out)


def data_parallel(
    optimizer: GradientTransformation | Mapping[str, GradientTransformation],
    group: Group = None,
) -> GradientTransformation:
    """``optimizer`` applied to the gradients averaged over the ranks of ``group``.

    The average is taken inside ``update`` (:func:`all_mean`), so any trainer that takes an
    optimizer -- ``sac.trainer``, :func:`funcrl.training.update`, a hand-written step -- becomes
    data parallel with its step still one graph. The state is ``optimizer``'s own (averaging keeps
    none), so checkpoints and TD3's delayed per-key updates see the same state as without it.

    Args:
        optimizer: one transform, or a dict of transforms per top-level key
            (:func:`funcrl.optim.multi_transform`).
        group: the process group (default: the world).

    Returns:
        A ``GradientTransformation``.

    Raises:
        TypeError: ``optimizer`` is neither a transform nor a dict of them.
    """
    if isinstance(optimizer, Mapping):
        optimizer = multi_transform(optimizer)
    if not isinstance(optimizer, GradientTransformation):
        raise TypeError(
            f"distributed.data_parallel: optimizer must be a GradientTransformation or a dict of "
            f"them, got {type(optimizer).__name__}"
        )
    inner = optimizer

    def update(grads, state, params=None):
        return inner.update(all_mean(grads, group), state, params)

    return GradientTransformation(inner.init, update)


def rank_key(key: torch.Tensor, group: Group = None) -> torch.Tensor:
    """``funcrl.random.fold_in(key, rank)``: each rank's own stream from one shared key."""
    from funcrl import random

    return random.fold_in(key, rank(group))


def _local_range(n: int, owner: str, group: Group) -> tuple[int, int]:
    w, r = world_size(group), rank(group)
    if n % w:
        raise ValueError(
            f"{owner}: the population's leading size must be divisible by the world size; "
            f"got {n} over {w} ranks"
        )
    per = n // w
    return r * per, (r + 1) * per


def _leading(x: Any, owner: str, name: str, path: tuple) -> int:
    where = "".join(f"[{k!r}]" for k in path)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{owner}: {name}{where} must be a tensor, got {type(x).__name__}")
    if x.dim() == 0:
        raise ValueError(
            f"{owner}: {name}{where} needs a leading population dim, got shape {list(x.shape)}"
        )
    return x.shape[0]


def _population_size(population: Any, owner: str, name: str) -> int:
    sizes = tree.leaves(tree.map_with_path(lambda p, x: _leading(x, owner, name, p), population))
    if not sizes:
        raise ValueError(f"{owner}: {name} holds no tensors")
    if len(set(sizes)) != 1:
        raise ValueError(
            f"{owner}: every leaf of {name} must share the leading population size; got "
            f"{sorted(set(sizes))}"
        )
    return sizes[0]


def shard(population: Any, group: Group = None) -> Any:
    """This rank's slice of a population: rows ``[r * N / W, (r + 1) * N / W)`` of every leaf.

    Args:
        population: a tensor or pytree of tensors with a shared leading size ``N`` (keys
            ``[N, 2]``, stacked params, ...). ``N`` must be divisible by the world size ``W``.
        group: the process group (default: the world).

    Returns:
        The same structure with leading size ``N / W`` (views, no copy).

    Raises:
        ValueError: ``N`` not divisible by ``W``, leaves with different ``N`` or no leading dim.
    """
    n = _population_size(population, "distributed.shard", "population")
    lo, hi = _local_range(n, "distributed.shard", group)
    return tree.map(lambda x: x[lo:hi], population)


def gather(local: Any, group: Group = None) -> Any:
    """The whole population from every rank's :func:`shard` of it; host-side (after training).

    Concatenates every leaf along its leading dim in rank order, so ``gather(shard(x)) == x``.
    Every rank must pass the same structure, shapes and dtypes.

    Args:
        local: a tensor or pytree of tensors with a shared leading size ``N / W``.
        group: the process group (default: the world).

    Returns:
        The same structure with leading size ``N`` on every rank.
    """
    _population_size(local, "distributed.gather", "local")
    w = world_size(group)
    if w == 1:
        return local
    g = _group(group)

    def one(x: torch.Tensor) -> torch.Tensor:
        # bool is not a gloo/NCCL dtype: gather its bytes.
        y = x.contiguous().view(torch.uint8) if x.dtype == torch.bool else x.contiguous()
        out = torch.empty((w * y.shape[0], *y.shape[1:]), dtype=y.dtype, device=y.device)
        dist.all_gather_into_tensor(out, y, group=g)
        return out.view(torch.bool) if x.dtype == torch.bool else out

    return tree.map(one, local)
