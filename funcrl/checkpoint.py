"""Checkpoints without pickle, and atomic file writes.

:func:`save` writes any pytree of tensors -- params, optimizer states, a train state, a replay
buffer, RNG states -- plus a JSON-able metadata dict to one `safetensors <https://huggingface.co/
docs/safetensors>`_ file; :func:`load` reads it back::

    checkpoint.save("run/ckpt.safetensors", {"params": params, "opt": opt_state, "step": 1000},
                    metadata={"config": dataclasses.asdict(cfg)})
    tree, metadata = checkpoint.load("run/ckpt.safetensors", like=template)

The file holds the tensors (keyed by their path in the tree, e.g. ``params/actor/0/weight``) and,
in the safetensors header's ``__metadata__``, the tree structure as JSON: ``dict`` (string keys),
``list``, ``tuple``, ``None``, ``bool``/``int``/``float``/``str`` leaves, :class:`funcrl.Record`
(with its ``batch_ndim``) and registered ``NamedTuple`` types by name (funcrl's optimizer, trainer
and buffer states; :func:`register` adds yours). Nothing in a file is ever executed: no pickle, no
``torch.load``, no import of a name read from the file, so a checkpoint from an untrusted source
can at worst fail to load. Unknown types are refused on save (``TypeError``) and on load
(:class:`CheckpointError`).

RNG states: a ``torch.Generator`` is not a tree leaf; save ``gen.get_state()`` (a ``uint8``
tensor) and restore it with ``gen.set_state(t)`` (``torch.get_rng_state()`` likewise).

Every file is written by :func:`atomic_write`: a temporary file in the same folder, flushed and
fsynced, then renamed over the target (and the folder fsynced), so a crash or kill mid-write
leaves the previous file intact. It is the one place funcrl writes files.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import math
import os
import struct
import tempfile
from collections.abc import Callable
from typing import IO, Any, NamedTuple

import torch

from funcrl.record import Record

__all__ = [
    "CheckpointError",
    "Checkpoint",
    "atomic_write",
    "save",
    "load",
    "metadata",
    "register",
]

FORMAT = "funcrl.checkpoint"
VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint file cannot be read: truncated, corrupt, unknown type, or not the expected
    structure. The message names the file and what is wrong."""


class Checkpoint(NamedTuple):
    """What :func:`load` returns.

    Attributes:
        tree: the saved pytree.
        metadata: the saved metadata dict (``{}`` when none was given).
    """

    tree: Any
    metadata: dict[str, Any]


# ---------------------------------------------------------------------------- atomic writes


def atomic_write(path: str | os.PathLike, data: bytes | Callable[[IO[bytes]], None]) -> None:
    """Writes ``path`` atomically: readers see the old file or the whole new one, never a part.

    The data goes to a temporary file in the same folder (same filesystem, so the rename is
    atomic), which is flushed and fsynced, renamed over ``path`` with ``os.replace`` and the
    folder fsynced (so the rename itself survives a power loss). On any error the temporary file
    is removed and the old ``path`` is untouched. A process killed mid-write leaves a stray
    ``.<name>.*.tmp`` beside the target and the target intact.

    Args:
        path: the file to (over)write; its folder must exist.
        data: the bytes, or a function that writes them to a binary file object.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"atomic_write: folder {folder!r} of {path!r} does not exist")
    if not (isinstance(data, (bytes, bytearray, memoryview)) or callable(data)):
        raise TypeError(
            f"atomic_write: data must be bytes or a callable(file), got {type(data).__name__}"
        )
    fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            if callable(data):
                data(fh)
            else:
                fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        # mkstemp creates 0600; give the file the mode a plain open() would (or the old file's).
        mode = os.stat(path).st_mode & 0o777 if os.path.exists(path) else 0o666 & ~_UMASK
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        # BaseException: a KeyboardInterrupt mid-write must not leave the temporary file behind.
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
    _fsync_dir(folder)


def _read_umask() -> int:
    # os.umask can only be read by setting it; done once, at import, not in each (possibly
    # concurrent) write, where another thread could observe the temporary value.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def _fsync_dir(folder: str) -> None:
    if os.name != "posix":  # Windows cannot open a directory; its rename is already durable.
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------- registry

# funcrl's own NamedTuple states, resolved lazily (importing funcrl.buffers here would be circular).
# The names are fixed here, never read from a file, so loading imports nothing a file chooses.
_BUILTIN = (
    "funcrl.optim.EmptyState",
    "funcrl.optim.ScaleByAdamState",
    "funcrl.optim.TraceState",
    "funcrl.optim.ScaleByRmsState",
    "funcrl.optim.ScheduleState",
    "funcrl.optim.MultiTransformState",
    "funcrl.optim.FlattenState",
    "funcrl.training.TrainState",
    "funcrl.objectives.on_policy.KLAdaptiveLRState",
    "funcrl.objectives.on_policy.RewardScaleState",
    "funcrl.buffers.ReplayState",
    "funcrl.buffers.PriorityState",
    "funcrl.datasets.ObservationStats",
    "funcrl.checkpoint.Checkpoint",
)
_REGISTRY: dict[str, type] = {}
_NAMES: dict[type, str] = {}
_builtins_loaded = False


def _type_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def register(cls: type, name: str | None = None) -> type:
    """Registers a ``NamedTuple`` type so :func:`save` and :func:`load` accept it.

    Usable as a decorator. Its fields are saved by name; on load the stored field names must equal
    ``cls._fields``.

    Args:
        cls: a ``typing.NamedTuple`` (or ``collections.namedtuple``) class.
        name: the name stored in files; defaults to ``"<module>.<qualname>"``.

    Returns:
        ``cls``.
    """
    if not (isinstance(cls, type) and issubclass(cls, tuple) and hasattr(cls, "_fields")):
        raise TypeError(f"checkpoint.register: cls must be a NamedTuple class, got {cls!r}")
    name = _type_name(cls) if name is None else name
    if not isinstance(name, str) or not name:
        raise TypeError(f"checkpoint.register: name must be a non-empty str, got {name!r}")
    old = _REGISTRY.get(name)
    if old is not None and old is not cls:
        raise ValueError(
            f"checkpoint.register: name {name!r} is already registered for {_type_name(old)}"
        )
    _REGISTRY[name] = cls
    _NAMES[cls] = name
    return cls


def _ensure_builtins() -> None:
    global _builtins_loaded
    if _builtins_loaded:
        return
    for full in _BUILTIN:
        module, _, attr = full.rpartition(".")
        register(getattr(importlib.import_module(module), attr))
    _builtins_loaded = True


# ---------------------------------------------------------------------------- encoding


def _escape(key: str) -> str:
    # JSON-pointer escaping (RFC 6901), so a key holding "/" cannot collide with a nested path.
    return key.replace("~", "~0").replace("/", "~1")


def _path_str(path: tuple[Any, ...]) -> str:
    return "/".join(_escape(str(p)) for p in path) or "<root>"


def _encode(node: Any, path: tuple[Any, ...], tensors: dict[str, torch.Tensor]) -> Any:
    """The JSON structure of ``node``; its tensors go to ``tensors`` keyed by path."""
    if isinstance(node, torch.Tensor):
        key = _path_str(path)
        if node.is_complex() or node.dtype in (torch.quint8, torch.qint8, torch.qint32):
            raise TypeError(
                f"checkpoint.save: tensor at {key!r} has unsupported dtype {node.dtype}"
            )
        # clone: safetensors refuses tensors that share storage, and wants contiguous CPU data.
        tensors[key] = node.detach().to("cpu").clone(memory_format=torch.contiguous_format)
        return {"tensor": key}
    if node is None:
        return {"none": None}
    if isinstance(node, (bool, int, str)):
        return {"value": node}
    if isinstance(node, float):
        # JSON has no inf/nan; store them by name.
        return {"value": node} if math.isfinite(node) else {"float": repr(node)}
    if isinstance(node, Record):
        items = [[k, _encode(v, (*path, k), tensors)] for k, v in node.items()]
        return {"record": items, "batch_ndim": node.batch_ndim}
    if isinstance(node, tuple) and hasattr(type(node), "_fields"):
        _ensure_builtins()
        name = _NAMES.get(type(node))
        if name is None:
            raise TypeError(
                f"checkpoint.save: {_type_name(type(node))} at {_path_str(path)!r} is not a "
                "registered NamedTuple; call funcrl.checkpoint.register(cls) first"
            )
        fields = [[f, _encode(getattr(node, f), (*path, f), tensors)] for f in node._fields]
        return {"namedtuple": name, "fields": fields}
    if type(node) is dict:
        items = []
        for k, v in node.items():
            if not isinstance(k, str):
                raise TypeError(
                    f"checkpoint.save: dict at {_path_str(path)!r} has key {k!r} of type "
                    f"{type(k).__name__}; only str keys are supported"
                )
            items.append([k, _encode(v, (*path, k), tensors)])
        return {"dict": items}
    if type(node) in (list, tuple):
        kind = "list" if type(node) is list else "tuple"
        return {kind: [_encode(v, (*path, i), tensors) for i, v in enumerate(node)]}
    hint = " (save gen.get_state(), a uint8 tensor)" if isinstance(node, torch.Generator) else ""
    raise TypeError(
        f"checkpoint.save: unsupported type {type(node).__name__} at {_path_str(path)!r}{hint}; "
        "supported: tensors, dict (str keys), list, tuple, None, bool, int, float, str, "
        "funcrl.Record and registered NamedTuples"
    )


def save(path: str | os.PathLike, tree: Any, metadata: dict[str, Any] | None = None) -> None:
    """Writes ``tree`` and ``metadata`` to ``path`` (safetensors, atomically; see module doc).

    Args:
        path: the file; its folder must exist. Tensors are saved from CPU copies.
        tree: a pytree of tensors and plain values (see the module docstring for the types).
        metadata: a JSON-serialisable dict (run config, versions, ...).

    Raises:
        TypeError: an unsupported type (naming its path in the tree) or non-JSON metadata.
    """
    import safetensors.torch

    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict):
        raise TypeError(f"checkpoint.save: metadata must be a dict, got {type(metadata).__name__}")
    try:
        meta_json = json.dumps(metadata, allow_nan=False, sort_keys=True)
    except (TypeError, ValueError) as e:
        raise TypeError(f"checkpoint.save: metadata is not JSON-serialisable: {e}") from None
    tensors: dict[str, torch.Tensor] = {}
    structure = _encode(tree, (), tensors)
    header = {
        "format": FORMAT,
        "version": str(VERSION),
        "structure": json.dumps(structure, allow_nan=False),
        "metadata": meta_json,
    }
    atomic_write(path, safetensors.torch.save(tensors, metadata=header))


# ---------------------------------------------------------------------------- decoding


def _read_header(data: bytes, fail: Callable[[str], CheckpointError]) -> dict[str, Any]:
    if len(data) < 8:
        raise fail(f"{len(data)} bytes is too short for a safetensors file (truncated or empty)")
    (n,) = struct.unpack("<Q", data[:8])
    if n > len(data) - 8:
        raise fail(
            f"its header claims {n} bytes but the file has {len(data) - 8} after the length "
            "(truncated, or not a safetensors file)"
        )
    try:
        header = json.loads(data[8 : 8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise fail(f"its header is not valid JSON ({e}); not a funcrl checkpoint") from None
    if not isinstance(header, dict):
        raise fail("its header is not a JSON object; not a funcrl checkpoint")
    meta = header.get("__metadata__")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise fail("it is not a funcrl checkpoint (no 'format': 'funcrl.checkpoint' in its header)")
    if meta.get("version") != str(VERSION):
        raise fail(f"format version {meta.get('version')!r} is not supported (expected {VERSION})")
    return meta


def _decode(node: Any, path: tuple[Any, ...], tensors: dict[str, torch.Tensor], used: set) -> Any:
    def bad(what: str) -> ValueError:
        return ValueError(f"at {_path_str(path)!r}: {what}")

    if not isinstance(node, dict) or len(node) not in (1, 2):
        raise bad(f"malformed structure node {str(node)[:80]!r}")
    if "tensor" in node:
        key = node["tensor"]
        if key not in tensors:
            raise bad(f"tensor {key!r} is missing from the file")
        used.add(key)
        return tensors[key]
    if "none" in node:
        return None
    if "value" in node:
        v = node["value"]
        if not isinstance(v, (bool, int, float, str)):
            raise bad(f"a value must be bool, int, float or str, got {type(v).__name__}")
        return v
    if "float" in node:
        if node["float"] not in ("nan", "inf", "-inf"):
            raise bad(f"bad float {node['float']!r}")
        return float(node["float"])

    def pairs(items: Any) -> list[tuple[str, Any]]:
        if not isinstance(items, list) or not all(
            isinstance(p, list) and len(p) == 2 and isinstance(p[0], str) for p in items
        ):
            raise bad("malformed key/value list")
        return [(k, _decode(v, (*path, k), tensors, used)) for k, v in items]

    if "dict" in node:
        return dict(pairs(node["dict"]))
    if "list" in node or "tuple" in node:
        kind = "list" if "list" in node else "tuple"
        items = node[kind]
        if not isinstance(items, list):
            raise bad(f"malformed {kind}")
        out = [_decode(v, (*path, i), tensors, used) for i, v in enumerate(items)]
        return out if kind == "list" else tuple(out)
    if "record" in node:
        bnd = node.get("batch_ndim")
        if not isinstance(bnd, int) or isinstance(bnd, bool) or bnd < 0:
            raise bad(f"Record batch_ndim must be an int >= 0, got {bnd!r}")
        try:
            return Record(dict(pairs(node["record"])), batch_ndim=bnd)
        except (ValueError, TypeError) as e:
            raise bad(f"invalid Record: {e}") from None
    if "namedtuple" in node:
        _ensure_builtins()
        name = node["namedtuple"]
        cls = _REGISTRY.get(name) if isinstance(name, str) else None
        if cls is None:
            raise bad(
                f"unknown type {name!r}; only registered NamedTuples load "
                "(funcrl.checkpoint.register)"
            )
        fields = pairs(node.get("fields"))
        names = tuple(k for k, _ in fields)
        if names != tuple(cls._fields):
            raise bad(f"{name} has fields {list(cls._fields)}, the file has {list(names)}")
        return cls(*(v for _, v in fields))
    raise bad(f"unknown node kind {sorted(node)!r}")


def metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The metadata dict of a checkpoint, read from its header alone (no tensor is loaded).

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: the file is not a readable funcrl checkpoint (naming it).
    """
    path = os.fspath(path)

    def fail(what: str) -> CheckpointError:
        return CheckpointError(f"checkpoint.metadata: cannot read {path!r}: {what}")

    with open(path, "rb") as fh:
        head = fh.read(8)
        n = struct.unpack("<Q", head)[0] if len(head) == 8 else 0
        rest = os.fstat(fh.fileno()).st_size - 8
        if len(head) == 8 and n > rest:
            raise fail(
                f"its header claims {n} bytes but the file has {rest} after the length "
                "(truncated, or not a safetensors file)"
            )
        data = head + fh.read(n)
    return _parse_metadata(_read_header(data, fail), fail)


def _parse_metadata(meta: dict[str, Any], fail: Callable[[str], CheckpointError]) -> dict[str, Any]:
    try:
        out = json.loads(meta.get("metadata", "{}"))
    except (json.JSONDecodeError, TypeError, RecursionError) as e:
        raise fail(f"its metadata is not valid JSON ({e})") from None
    if not isinstance(out, dict):
        raise fail(f"its metadata must be a JSON object, got {type(out).__name__}")
    return out


def _first_difference(got: Any, like: Any, path: tuple[Any, ...]) -> str | None:
    """The first path where ``got`` differs from the template ``like`` in structure, or in a
    tensor's shape or dtype; ``None`` if they match."""
    where = _path_str(path)
    if like is Ellipsis:  # a wildcard: this subtree is not checked
        return None
    if isinstance(like, torch.Tensor):
        if not isinstance(got, torch.Tensor):
            return f"at {where!r}: expected a tensor, the file has {type(got).__name__}"
        if got.shape != like.shape or got.dtype != like.dtype:
            return (
                f"at {where!r}: expected shape {tuple(like.shape)} {like.dtype}, the file has "
                f"{tuple(got.shape)} {got.dtype}"
            )
        return None
    if type(got) is not type(like):
        return f"at {where!r}: expected {type(like).__name__}, the file has {type(got).__name__}"
    if isinstance(like, Record):
        if got.batch_ndim != like.batch_ndim:
            return (
                f"at {where!r}: expected a Record with batch_ndim {like.batch_ndim}, the file has "
                f"{got.batch_ndim}"
            )
        like, got = dict(like.items()), dict(got.items())
    if isinstance(like, tuple) and hasattr(like, "_fields"):
        like, got = like._asdict(), got._asdict()
    if isinstance(like, dict):
        if list(got) != list(like):
            missing = [k for k in like if k not in got]
            extra = [k for k in got if k not in like]
            return f"at {where!r}: keys differ: missing {missing}, unexpected {extra}"
        for k in like:
            d = _first_difference(got[k], like[k], (*path, k))
            if d is not None:
                return d
        return None
    if isinstance(like, (list, tuple)):
        if len(got) != len(like):
            return f"at {where!r}: expected length {len(like)}, the file has {len(got)}"
        for i, (g, v) in enumerate(zip(got, like)):
            d = _first_difference(g, v, (*path, i))
            if d is not None:
                return d
    return None


def load(
    path: str | os.PathLike,
    *,
    like: Any = None,
    device: torch.device | str | None = None,
) -> Checkpoint:
    """Reads a checkpoint written by :func:`save`. Never runs code from the file.

    Args:
        path: the file.
        like: an optional template tree: the loaded tree must have its structure (types, keys,
            lengths) and its tensors' shapes and dtypes; non-tensor leaves may differ, and a
            subtree given as ``...`` is not checked.
        device: where to put the tensors (CPU by default).

    Returns:
        ``Checkpoint(tree, metadata)``.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: the file is truncated, corrupt, not a funcrl checkpoint, holds an
            unknown type, or does not match ``like`` (naming the first differing path).
    """
    import safetensors.torch
    from safetensors import SafetensorError

    path = os.fspath(path)

    def fail(what: str) -> CheckpointError:
        return CheckpointError(f"checkpoint.load: cannot load {path!r}: {what}")

    with open(path, "rb") as fh:
        data = fh.read()
    meta = _read_header(data, fail)
    try:
        tensors = safetensors.torch.load(data)
    except (SafetensorError, ValueError, RuntimeError) as e:
        raise fail(f"corrupt tensor data ({e})") from None
    try:
        structure = json.loads(meta.get("structure", ""))
    except (json.JSONDecodeError, TypeError, RecursionError) as e:
        raise fail(f"its structure is not valid JSON ({e})") from None
    user_meta = _parse_metadata(meta, fail)
    used: set[str] = set()
    try:
        tree = _decode(structure, (), tensors, used)
    except (ValueError, TypeError, RecursionError) as e:
        raise fail(str(e)) from None
    if used != set(tensors):
        raise fail(f"tensors not in its structure: {sorted(set(tensors) - used)[:5]}")
    if like is not None:
        diff = _first_difference(tree, like, ())
        if diff is not None:
            raise fail(f"structure mismatch {diff}")
    if device is not None:
        dev = torch.device(device)
        tree = _map_tensors(tree, lambda t: t.to(dev))
    return Checkpoint(tree, user_meta)


def _map_tensors(node: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    if isinstance(node, torch.Tensor):
        return fn(node)
    if isinstance(node, Record):
        return node.apply(fn)
    if isinstance(node, tuple) and hasattr(node, "_fields"):
        return type(node)(*(_map_tensors(v, fn) for v in node))
    if isinstance(node, dict):
        return {k: _map_tensors(v, fn) for k, v in node.items()}
    if isinstance(node, (list, tuple)):
        return type(node)(_map_tensors(v, fn) for v in node)
    return node
