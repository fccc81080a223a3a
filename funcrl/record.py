"""`Record`: a small immutable mapping of string keys to tensors with leading batch dimensions.

A Record is funcrl's answer to TensorDict, reduced to what a pure training step needs:

* nested keys (``rec["next", "reward"]``), nested values are Records;
* a number of leading *batch* dimensions shared by every leaf;
* immutable updates that return new Records (``set``, ``update``, ``select``, ``exclude``,
  ``rename``);
* one spelling-independent meaning per key: ``"a"`` and ``("a",)``, or ``("next", "reward")`` and
  ``{"next": {"reward": ...}}``, name the same entry. Construction merges sub-records in any order
  and refuses to keep "the last" of two values for one leaf; only an explicit ``set`` of a key
  replaces what is there;
* batch indexing, ``stack``, ``cat``, ``apply``, ``to``;
* registered as a pytree with optree (namespace ``"funcrl"``) and ``torch.utils._pytree``, so it
  passes through ``torch.func.vmap``, ``grad``, ``functional_call`` and
  ``torch.compile(fullgraph=True)``.

The batch *rank* is not stored as such in the pytree metadata. Instead each tensor leaf remembers
its *event* rank (the trailing, non-batch dimensions). The batch rank is recovered from the leaves
when the tree is rebuilt, so a Record that goes through ``vmap`` (which strips or adds a leading
dimension on every leaf) still has a consistent batch rank on the other side.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Union

import optree
import torch
import torch.utils._pytree as torch_pytree

__all__ = ["Record", "Key", "NestedKey"]

Key = str
NestedKey = Union[str, tuple[str, ...]]
_NAMESPACE = "funcrl"


def _as_tuple(key: NestedKey) -> tuple[str, ...]:
    if isinstance(key, str):
        return (key,)
    if isinstance(key, tuple) and key and all(isinstance(k, str) for k in key):
        return key
    raise KeyError(f"Record keys are str or non-empty tuples of str, got {key!r}")


def _is_key(index: Any) -> bool:
    return isinstance(index, str) or (
        isinstance(index, tuple) and len(index) > 0 and all(isinstance(k, str) for k in index)
    )


class Record:
    """An immutable mapping from string keys to tensors or nested Records.

    Args:
        data: a mapping from ``str`` keys to tensors, nested Records or nested mappings (converted
            to Records with the same batch rank). Tuple keys ``("next", "reward")`` create nested
            Records. Entries that spell the same sub-record differently are merged, whatever their
            order: ``{("next", "reward"): r, "next": {"observation": o}}`` holds both leaves.
            The same leaf given twice (``"a"`` and ``("a",)``) or a path that is both a tensor
            and a sub-record raises a ``ValueError`` naming the key; nothing is "last wins".
        batch_ndim: the number of leading dimensions shared by every leaf. Every leaf must have at
            least that many dimensions and the same sizes along them.

    Example:
        >>> rec = Record({"observation": torch.zeros(32, 3), ("next", "reward"): torch.zeros(32, 1)},
        ...              batch_ndim=1)
        >>> rec.batch_size
        torch.Size([32])
        >>> rec["next", "reward"].shape
        torch.Size([32, 1])
        >>> rec2 = rec.set("action", torch.ones(32, 1))   # rec is unchanged
    """

    __slots__ = ("_data", "_batch_ndim")

    def __init__(self, data: Mapping[NestedKey, Any] | None = None, batch_ndim: int = 0):
        if not isinstance(batch_ndim, int) or isinstance(batch_ndim, bool) or batch_ndim < 0:
            raise ValueError(f"Record: batch_ndim must be a non-negative int, got {batch_ndim!r}")
        node = _Node()
        if data is not None:
            if isinstance(data, Record):
                data = data._data
            elif not isinstance(data, Mapping):
                raise TypeError(f"Record(data=...) expects a mapping, got {type(data).__name__}")
            _merge_mapping(node, (), data, "Record")
        self._data = {k: _finalize(v, batch_ndim, (k,)) for k, v in node.items.items()}
        self._batch_ndim = batch_ndim
        _check_batch(self._data, batch_ndim)

    # -- construction helpers that skip the conversion (used by pytree unflatten and internals) --
    @classmethod
    def _from_dict(cls, data: dict[str, Any], batch_ndim: int) -> Record:
        rec = object.__new__(cls)
        rec._data = data
        rec._batch_ndim = batch_ndim
        return rec

    # ------------------------------------------------------------------ shape
    @property
    def batch_ndim(self) -> int:
        """Number of leading batch dimensions."""
        return self._batch_ndim

    @property
    def batch_size(self) -> torch.Size:
        """The leading batch sizes, read from the first leaf (``torch.Size([])`` if empty)."""
        leaf = _first_leaf(self)
        if leaf is None:
            if self._batch_ndim:
                raise ValueError(
                    f"an empty Record with batch_ndim={self._batch_ndim} has no batch size"
                )
            return torch.Size([])
        return leaf.shape[: self._batch_ndim]

    shape = batch_size

    @property
    def device(self) -> torch.device | None:
        leaf = _first_leaf(self)
        return None if leaf is None else leaf.device

    def __len__(self) -> int:
        return len(self._data)

    # ------------------------------------------------------------------ mapping access
    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __contains__(self, key: object) -> bool:
        if not _is_key(key):
            return False
        node: Any = self
        for k in _as_tuple(key):  # type: ignore[arg-type]
            if not isinstance(node, Record) or k not in node._data:
                return False
            node = node._data[k]
        return True

    def keys(self, include_nested: bool = False, leaves_only: bool = False) -> list[NestedKey]:
        """Keys of the record.

        Args:
            include_nested: also list nested keys as tuples (``("next", "reward")``).
            leaves_only: list only keys whose value is a tensor.
        """
        out: list[NestedKey] = []
        for k, v in self._data.items():
            is_rec = isinstance(v, Record)
            if not (leaves_only and is_rec):
                out.append(k)
            if include_nested and is_rec:
                out.extend((k, *_as_tuple(sub)) for sub in v.keys(True, leaves_only))
        return out

    def values(self) -> list[Any]:
        return list(self._data.values())

    def items(self) -> list[tuple[str, Any]]:
        return list(self._data.items())

    def get(self, key: NestedKey, default: Any = None) -> Any:
        return self[key] if key in self else default

    def __getitem__(self, index: Any) -> Any:
        if _is_key(index):
            node: Any = self
            path = _as_tuple(index)
            for i, k in enumerate(path):
                if not isinstance(node, Record):
                    raise KeyError(f"key {index!r}: {path[:i]!r} is a tensor, not a nested Record")
                if k not in node._data:
                    raise KeyError(
                        f"key {index!r} not found; available keys: {sorted(map(str, node.keys()))}"
                    )
                node = node._data[k]
            return node
        return self._index(index)

    # ------------------------------------------------------------------ immutable updates
    def set(self, key: NestedKey, value: Any) -> Record:
        """Returns a new Record with ``key`` set to ``value`` (nested Records created as needed).

        ``set`` replaces whatever is at exactly ``key``: a tensor, or a whole sub-record (a tensor
        may replace a sub-record and vice versa, since the key is named explicitly). A key that
        goes *through* a tensor (``("observation", "x")`` when ``"observation"`` is a tensor)
        raises a ``ValueError``: that would silently drop the tensor.
        """
        path = _as_tuple(key)
        return self._set_path(path, value, path)

    def _set_path(self, path: tuple[str, ...], value: Any, full: tuple[str, ...]) -> Record:
        head, rest = path[0], path[1:]
        data = dict(self._data)
        if rest:
            child = data.get(head)
            if child is None:
                child = Record._from_dict({}, self._batch_ndim)
            elif not isinstance(child, Record):
                raise ValueError(
                    f"Record.set: cannot set {full!r}: {_show(full[: len(full) - len(rest)])!r} holds a "
                    "tensor, not a Record (set that key itself to replace the tensor)"
                )
            child = child._set_path(rest, value, full)
            # a new sub-record has no batch of its own yet: check it against this one's
            _check_leaf(
                full[: len(full) - len(rest)],
                child,
                self._batch_ndim,
                self._batch_size_or_none(),
                "Record.set",
            )
            data[head] = child
        else:
            value = _finalize(value, self._batch_ndim, full)
            _check_leaf(
                _show(full), value, self._batch_ndim, self._batch_size_or_none(), "Record.set"
            )
            data[head] = value
        return Record._from_dict(data, self._batch_ndim)

    def update(
        self, other: Mapping[NestedKey, Any] | Record | None = None, **kwargs: Any
    ) -> Record:
        """Returns a new Record with the entries of ``other`` and ``kwargs``.

        Nested entries are merged leaf by leaf, whether ``other`` is a Record or a nested mapping:
        ``rec.update({"next": {"reward": r}})`` keeps ``rec["next", "observation"]``. Existing
        leaves are replaced by new leaves at the same key. A tensor where this Record has a
        sub-record (or the reverse), or the same key given twice in ``other`` and ``kwargs``,
        raises a ``ValueError``: use :meth:`set` to replace a whole sub-record explicitly.
        """
        node = _Node()
        if other is not None:
            if not isinstance(other, Mapping | Record):
                raise TypeError(
                    f"Record.update: other must be a mapping or a Record, got {type(other).__name__}"
                )
            _merge_mapping(
                node, (), other._data if isinstance(other, Record) else other, "Record.update"
            )
        _merge_mapping(node, (), kwargs, "Record.update")
        rec = self
        for path, v in _node_leaves(node, ()):
            current = _get_path(self, path)
            if isinstance(current, Record) and not _is_subtree(v):
                raise ValueError(
                    f"Record.update: key {_show(path)!r} is a sub-record here and a "
                    f"{type(v).__name__} in the update; use set({_show(path)!r}, ...) to replace it"
                )
            for n in range(1, len(path) + 1):
                above = _get_path(self, path[:n])
                if isinstance(above, torch.Tensor) and (n < len(path) or _is_subtree(v)):
                    raise ValueError(
                        f"Record.update: key {_show(path[:n])!r} is a tensor here and a sub-record "
                        f"in the update; use set({_show(path[:n])!r}, ...) to replace it"
                    )
            if _is_subtree(v) and current is not None:
                continue  # an empty sub-record merges into the existing one: nothing to add
            rec = rec.set(path, v)
        return rec

    def select(self, *keys: NestedKey, strict: bool = True) -> Record:
        """A new Record holding only ``keys`` (nested keys keep their path)."""
        out = Record._from_dict({}, self._batch_ndim)
        for key in keys:
            if key not in self:
                if strict:
                    raise KeyError(
                        f"select: key {key!r} not found; available keys: "
                        f"{sorted(map(str, self.keys(include_nested=True)))}"
                    )
                continue
            out = out.set(key, self[key])
        return out

    def exclude(self, *keys: NestedKey) -> Record:
        """A new Record without ``keys`` (missing keys are ignored)."""
        rec = self
        for key in keys:
            rec = rec._exclude_path(_as_tuple(key))
        return rec

    def _exclude_path(self, path: tuple[str, ...]) -> Record:
        head, rest = path[0], path[1:]
        if head not in self._data:
            return self
        data = dict(self._data)
        if rest:
            child = data[head]
            if not isinstance(child, Record):
                return self
            data[head] = child._exclude_path(rest)
        else:
            del data[head]
        return Record._from_dict(data, self._batch_ndim)

    def rename(self, mapping: Mapping[NestedKey, NestedKey] | None = None, **kwargs: str) -> Record:
        """A new Record with keys renamed: ``rec.rename({"obs": "observation"})``.

        Swaps work (``{"a": "b", "b": "a"}``); a missing source key raises ``KeyError`` and a
        target that would overwrite an existing key raises ``ValueError``.
        """
        pairs = dict(mapping or {})
        for k, v in kwargs.items():
            if k in pairs:
                raise ValueError(f"Record.rename: key {k!r} is given twice")
            pairs[k] = v
        for old in pairs:
            if old not in self:
                raise KeyError(f"Record.rename: key {old!r} not found")
        # Drop every renamed key first, so swaps ({"a": "b", "b": "a"}) work; then a target that
        # still exists would be overwritten: refuse instead of losing it.
        rec = self.exclude(*pairs)
        for old, new in pairs.items():
            if new in rec:
                raise ValueError(
                    f"Record.rename: renaming {old!r} to {new!r} would overwrite the existing "
                    f"key {new!r}"
                )
            rec = rec.set(new, self[old])
        return rec

    def flatten_keys(self, separator: str = ".") -> Record:
        """A flat Record whose nested keys are joined: ``("next", "reward") -> "next.reward"``.

        Raises:
            ValueError: if two paths join to the same string (``"a.b"`` and ``("a", "b")``).
        """
        if not isinstance(separator, str) or not separator:
            raise ValueError(
                f"Record.flatten_keys: separator must be a non-empty str, got {separator!r}"
            )
        data: dict[str, Any] = {}
        origin: dict[str, tuple[str, ...]] = {}
        for k in self.keys(include_nested=True, leaves_only=True):
            path = _as_tuple(k)
            flat = separator.join(path)
            if flat in data:
                raise ValueError(
                    f"Record.flatten_keys: keys {origin[flat]!r} and {path!r} both flatten to "
                    f"{flat!r} with separator {separator!r}; rename one or pick another separator"
                )
            data[flat], origin[flat] = self[k], path
        return Record._from_dict(data, self._batch_ndim)

    def unflatten_keys(self, separator: str = ".") -> Record:
        """Inverse of :meth:`flatten_keys`: ``"next.reward" -> ("next", "reward")``.

        Raises:
            ValueError: if a key is both a tensor and the prefix of another (``"a"`` and ``"a.b"``).
        """
        if not isinstance(separator, str) or not separator:
            raise ValueError(
                f"Record.unflatten_keys: separator must be a non-empty str, got {separator!r}"
            )
        node = _Node()
        flat = {tuple(k.split(separator)): v for k, v in self._data.items()}
        _merge_mapping(node, (), flat, "Record.unflatten_keys")
        data = {k: _finalize(v, self._batch_ndim, (k,)) for k, v in node.items.items()}
        return Record._from_dict(data, self._batch_ndim)

    def to_dict(self) -> dict[str, Any]:
        """A nested plain ``dict`` of the tensors (a shallow copy)."""
        return {k: v.to_dict() if isinstance(v, Record) else v for k, v in self._data.items()}

    # ------------------------------------------------------------------ batch ops
    def apply(
        self, fn: Callable[[torch.Tensor], torch.Tensor], batch_ndim: int | None = None
    ) -> Record:
        """Maps ``fn`` over every tensor leaf.

        Args:
            fn: tensor -> tensor.
            batch_ndim: the batch rank of the result; by default the same as this Record's.
        """
        bnd = self._batch_ndim if batch_ndim is None else batch_ndim
        data = {}
        for k, v in self._data.items():
            if isinstance(v, Record):
                data[k] = v.apply(fn, bnd + v._batch_ndim - self._batch_ndim)
            else:
                data[k] = fn(v)
        return Record(data, bnd) if data else Record._from_dict({}, bnd)

    def to(self, *args: Any, **kwargs: Any) -> Record:
        """``Tensor.to`` on every leaf (device and/or dtype)."""
        return self.apply(lambda t: t.to(*args, **kwargs))

    def detach(self) -> Record:
        return self.apply(torch.Tensor.detach)

    def clone(self) -> Record:
        return self.apply(torch.clone)

    def float(self) -> Record:
        return self.apply(lambda t: t.float() if t.is_floating_point() else t)

    def reshape(self, *shape: int) -> Record:
        """Reshapes the batch dimensions (event dimensions unchanged)."""
        if len(shape) == 1 and isinstance(shape[0], (tuple, list, torch.Size)):
            shape = tuple(shape[0])
        bnd = self._batch_ndim
        return self.apply(lambda t: t.reshape(*shape, *t.shape[bnd:]), batch_ndim=len(shape))

    def flatten(self, start_dim: int = 0, end_dim: int = -1) -> Record:
        """Flattens batch dimensions ``start_dim..end_dim`` into one."""
        bs = list(self.batch_size)
        if self._batch_ndim == 0:
            raise ValueError("flatten: a Record with no batch dimension has nothing to flatten")
        end = end_dim % self._batch_ndim
        new = bs[:start_dim] + [_prod(bs[start_dim : end + 1])] + bs[end + 1 :]
        return self.reshape(*new)

    def unsqueeze(self, dim: int) -> Record:
        """Adds a batch dimension of size 1 at ``dim`` (within the batch dims)."""
        dim = dim if dim >= 0 else dim + self._batch_ndim + 1
        return self.apply(lambda t: t.unsqueeze(dim), batch_ndim=self._batch_ndim + 1)

    def squeeze(self, dim: int) -> Record:
        """Removes the batch dimension ``dim``, which must have size 1."""
        dim = dim if dim >= 0 else dim + self._batch_ndim
        if not 0 <= dim < self._batch_ndim:
            raise IndexError(f"squeeze: dim {dim} out of range for batch_ndim {self._batch_ndim}")
        size = self.batch_size[dim]
        if size != 1:
            # torch.squeeze would silently keep the dim and leave the batch rank inconsistent.
            raise ValueError(f"squeeze: batch dim {dim} has size {size}, expected 1")
        return self.apply(lambda t: t.squeeze(dim), batch_ndim=self._batch_ndim - 1)

    def split(self, split_size: int | Sequence[int], dim: int = 0) -> list[Record]:
        """Splits along batch dim ``dim`` like ``torch.split`` (inverse of :meth:`cat`)."""
        if self._batch_ndim == 0:
            raise ValueError("split: a Record with no batch dimension cannot be split")
        dim = dim % self._batch_ndim
        n = self.batch_size[dim]
        if isinstance(split_size, int) and split_size < 1:
            raise ValueError(f"split: split_size must be >= 1, got {split_size}")
        sizes = (
            [min(split_size, n - i) for i in range(0, n, split_size)]
            if isinstance(split_size, int)
            else list(split_size)
        )
        if sum(sizes) != n:
            raise ValueError(f"split: sizes {sizes} do not sum to batch dim {dim} of size {n}")
        out, start = [], 0
        for size in sizes:
            out.append(self._index((slice(None),) * dim + (slice(start, start + size),)))
            start += size
        return out

    def expand(self, *batch_size: int) -> Record:
        """Broadcasts to a larger batch (new leading dims, like ``Tensor.expand``)."""
        if len(batch_size) == 1 and isinstance(batch_size[0], (tuple, list, torch.Size)):
            batch_size = tuple(batch_size[0])
        bnd = self._batch_ndim
        return self.apply(
            lambda t: t.expand(*batch_size, *t.shape[bnd:]), batch_ndim=len(batch_size)
        )

    def unbind(self, dim: int = 0) -> list[Record]:
        """Splits along batch dim ``dim`` into Records without that dim (inverse of ``stack``)."""
        if self._batch_ndim == 0:
            raise ValueError("unbind: a Record with no batch dimension cannot be unbound")
        return [
            self._index((slice(None),) * (dim % self._batch_ndim) + (i,))
            for i in range(self.batch_size[dim])
        ]

    def _index(self, index: Any) -> Record:
        if self._batch_ndim == 0:
            raise IndexError("cannot index a Record with no batch dimensions by a batch index")
        if isinstance(index, Record):
            raise TypeError("cannot index a Record with a Record")
        if isinstance(index, torch.Tensor) and index.dtype == torch.bool:
            expected = self.batch_size[: index.ndim]
            if index.shape != expected:
                raise IndexError(
                    f"boolean index of shape {tuple(index.shape)} does not match the leading "
                    f"batch shape {tuple(expected)}"
                )
        idx = index if isinstance(index, tuple) else (index,)
        for i in idx:
            if i is None or i is Ellipsis:
                raise IndexError("Record batch indexing does not support None or Ellipsis")
        probe = torch.empty(self.batch_size, device="meta")[index]
        new_bnd = probe.ndim
        return self._index_with(index, new_bnd)

    def _index_with(self, index: Any, new_bnd: int) -> Record:
        data = {}
        for k, v in self._data.items():
            if isinstance(v, Record):
                data[k] = v._index_with(index, new_bnd + v._batch_ndim - self._batch_ndim)
            else:
                data[k] = v[index]
        return Record._from_dict(data, new_bnd)

    @staticmethod
    def stack(records: Sequence[Record], dim: int = 0) -> Record:
        """Stacks Records with identical keys along a new batch dimension ``dim``."""
        first = _check_same_keys(records, "stack")
        dim = dim if dim >= 0 else dim + first._batch_ndim + 1
        if not 0 <= dim <= first._batch_ndim:
            raise IndexError(f"stack: dim {dim} out of range for batch_ndim {first._batch_ndim}")
        return _zip_leaves(records, lambda ts: torch.stack(ts, dim), first._batch_ndim + 1)

    @staticmethod
    def cat(records: Sequence[Record], dim: int = 0) -> Record:
        """Concatenates Records with identical keys along batch dimension ``dim``."""
        first = _check_same_keys(records, "cat")
        if first._batch_ndim == 0:
            raise ValueError("cat: Records with no batch dimension cannot be concatenated")
        dim = dim % first._batch_ndim
        return _zip_leaves(records, lambda ts: torch.cat(ts, dim), first._batch_ndim)

    # ------------------------------------------------------------------ comparison and repr
    def allclose(self, other: Record, rtol: float = 1e-5, atol: float = 1e-8) -> bool:
        """True when both have the same keys, batch rank and close leaves (for tests)."""
        if not isinstance(other, Record) or self._batch_ndim != other._batch_ndim:
            return False
        ka = self.keys(True, True)
        if sorted(map(str, ka)) != sorted(map(str, other.keys(True, True))):
            return False
        return all(
            self[k].shape == other[k].shape and torch.allclose(self[k], other[k], rtol, atol)
            for k in ka
        )

    def equal(self, other: Record) -> bool:
        """True when both have the same keys, batch rank and exactly equal leaves."""
        if not isinstance(other, Record) or self._batch_ndim != other._batch_ndim:
            return False
        ka = self.keys(True, True)
        if sorted(map(str, ka)) != sorted(map(str, other.keys(True, True))):
            return False
        return all(torch.equal(self[k], other[k]) for k in ka)

    def __eq__(self, other: object) -> bool:  # identity semantics keep Records hashable-free
        return self is other

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        lines = [
            f"Record(batch_size={list(self.batch_size) if _first_leaf(self) is not None else []}, {{"
        ]
        lines += _repr_lines(self, "    ")
        lines.append("})")
        return "\n".join(lines)

    # ------------------------------------------------------------------ tensordict interop
    @classmethod
    def from_tensordict(cls, td: Any) -> Record:
        """Builds a Record from a ``tensordict.TensorDict`` (keeps its batch rank)."""
        data = {}
        for k, v in td.items():
            data[k] = (
                cls.from_tensordict(v)
                if hasattr(v, "batch_size")
                and hasattr(v, "items")
                and not isinstance(v, torch.Tensor)
                else v
            )
        return cls(data, batch_ndim=len(td.batch_size))

    def to_tensordict(self) -> Any:
        """Converts to a ``tensordict.TensorDict`` (requires tensordict)."""
        try:
            from tensordict import TensorDict
        except ImportError as e:  # pragma: no cover - exercised only without tensordict
            raise ImportError(
                "Record.to_tensordict requires the optional tensordict package"
            ) from e
        data = {k: v.to_tensordict() if isinstance(v, Record) else v for k, v in self._data.items()}
        return TensorDict(data, batch_size=self.batch_size if len(self) else [])

    def _batch_size_or_none(self) -> torch.Size | None:
        leaf = _first_leaf(self)
        return None if leaf is None else leaf.shape[: self._batch_ndim]


# ---------------------------------------------------------------------------- helpers


def _prod(xs: Iterable[int]) -> int:
    out = 1
    for x in xs:
        out *= x
    return out


class _Node:
    """A sub-record being assembled from entries that may spell its keys in several ways."""

    __slots__ = ("items", "batch_ndim")

    def __init__(self, batch_ndim: int | None = None):
        self.items: dict[str, Any] = {}
        self.batch_ndim = batch_ndim


def _is_subtree(value: Any) -> bool:
    return isinstance(value, Record | Mapping | _Node) and not isinstance(value, torch.Tensor)


def _merge_mapping(node: _Node, prefix: tuple[str, ...], data: Mapping, owner: str) -> None:
    for key, value in data.items():
        _merge(node, _as_tuple(key), value, prefix, owner)


def _merge(
    node: _Node, path: tuple[str, ...], value: Any, prefix: tuple[str, ...], owner: str
) -> None:
    """Inserts ``value`` at ``path`` below ``node``; sub-records merge, a second leaf raises."""
    head, rest = path[0], path[1:]
    here = prefix + (head,)
    existing = node.items.get(head)
    if rest or _is_subtree(value):
        if existing is not None and not _is_subtree(existing):
            raise ValueError(
                f"{owner}: key {_show(here)!r} is given both as a tensor and as a sub-record "
                f"(via {prefix + path!r})"
            )
        if existing is None and not rest and isinstance(value, Record):
            node.items[head] = value  # kept as given (it keeps its batch rank) unless merged into
            return
        child = _as_node(existing, here, owner)
        node.items[head] = child
        if rest:
            _merge(child, rest, value, here, owner)
        else:
            _merge_into(child, value, here, owner)
        return
    if existing is not None:
        what = "a sub-record" if _is_subtree(existing) else "a tensor"
        raise ValueError(
            f"{owner}: key {_show(here)!r} is given twice (already {what}); each leaf must appear once"
        )
    node.items[head] = value


def _as_node(existing: Any, path: tuple[str, ...], owner: str) -> _Node:
    if isinstance(existing, _Node):
        return existing
    node = _Node()
    if existing is not None:
        _merge_into(node, existing, path, owner)
    return node


def _merge_into(node: _Node, value: Any, path: tuple[str, ...], owner: str) -> None:
    if isinstance(value, Record):
        if node.batch_ndim is not None and node.batch_ndim != value._batch_ndim:
            raise ValueError(
                f"{owner}: key {_show(path)!r} merges nested Records of batch_ndim {node.batch_ndim} "
                f"and {value._batch_ndim}"
            )
        node.batch_ndim = value._batch_ndim
        value = value._data
    elif isinstance(value, _Node):
        value = value.items
    _merge_mapping(node, path, value, owner)


def _node_leaves(node: _Node, prefix: tuple[str, ...]) -> list[tuple[tuple[str, ...], Any]]:
    """``(path, value)`` of every tensor (or other non-mapping) and of every empty sub-record."""
    out = []
    for k, v in node.items.items():
        path = prefix + (k,)
        if _is_subtree(v):
            child = _as_node(v, path, "Record")
            if child.items:
                out.extend(_node_leaves(child, path))
            else:
                out.append((path, v))
        else:
            out.append((path, v))
    return out


def _show(path: tuple[str, ...]) -> NestedKey:
    """A key as a user would write it: ``"a"`` for a top-level key, else the tuple."""
    return path[0] if len(path) == 1 else path


def _get_path(rec: Record, path: tuple[str, ...]) -> Any:
    node: Any = rec
    for k in path:
        if not isinstance(node, Record) or k not in node._data:
            return None
        node = node._data[k]
    return node


def _finalize(value: Any, batch_ndim: int, path: tuple[str, ...]) -> Any:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, Record):
        if value._batch_ndim < batch_ndim and len(value):
            raise ValueError(
                f"Record: key {path!r}: nested Record has batch_ndim={value._batch_ndim} < the parent's "
                f"{batch_ndim}"
            )
        if not len(value):
            return Record._from_dict({}, max(batch_ndim, value._batch_ndim))
        return value
    if isinstance(value, _Node):
        bnd = batch_ndim if value.batch_ndim is None else value.batch_ndim
        if bnd < batch_ndim and value.items:
            raise ValueError(
                f"Record: key {path!r}: nested Record has batch_ndim={bnd} < the parent's {batch_ndim}"
            )
        bnd = max(bnd, batch_ndim)
        data = {k: _finalize(v, bnd, path + (k,)) for k, v in value.items.items()}
        _check_batch(data, bnd)
        return Record._from_dict(data, bnd)
    if isinstance(value, Mapping):
        return Record(value, batch_ndim)
    raise TypeError(
        f"Record: key {path!r}: values must be tensors, Records or mappings, "
        f"got {type(value).__name__}"
    )


def _check_leaf(
    key: Any,
    value: Any,
    batch_ndim: int,
    batch: torch.Size | None,
    owner: str = "Record",
    batch_from: Any = None,
) -> None:
    shape = value.batch_size if isinstance(value, Record) else getattr(value, "shape", None)
    if isinstance(value, Record):
        sub = _first_leaf_path(value)
        if sub is None:
            return
        # name the leaf itself, not only the sub-record holding it
        key = (*(key if isinstance(key, tuple) else (key,)), *sub)
    if shape is None:
        return
    if len(shape) < batch_ndim:
        raise ValueError(
            f"{owner}: key {key!r}: value of shape {tuple(shape)} has fewer dims than "
            f"batch_ndim={batch_ndim}"
        )
    if batch is not None and shape[:batch_ndim] != batch:
        source = f" (set by key {batch_from!r})" if batch_from is not None else ""
        raise ValueError(
            f"{owner}: key {key!r}: leading shape {tuple(shape[:batch_ndim])} does not match the "
            f"batch size {tuple(batch)}{source}"
        )


def _check_batch(data: dict[str, Any], batch_ndim: int) -> None:
    batch, source = None, None
    for k, v in data.items():
        _check_leaf(k, v, batch_ndim, batch, batch_from=source)
        if batch is None:
            leaf = v if isinstance(v, torch.Tensor) else _first_leaf(v)
            if leaf is not None:
                batch = leaf.shape[:batch_ndim]
                sub = () if isinstance(v, torch.Tensor) else _first_leaf_path(v)
                source = k if not sub else (k, *sub)


def _first_leaf_path(rec: Record) -> tuple[str, ...] | None:
    for k, v in rec._data.items():
        if isinstance(v, Record):
            sub = _first_leaf_path(v)
            if sub is not None:
                return (k, *sub)
        else:
            return (k,)
    return None


def _first_leaf(rec: Record) -> torch.Tensor | None:
    for v in rec._data.values():
        if isinstance(v, Record):
            leaf = _first_leaf(v)
            if leaf is not None:
                return leaf
        else:
            return v
    return None


def _check_same_keys(records: Sequence[Record], op: str) -> Record:
    if len(records) == 0:
        raise ValueError(f"{op}: needs at least one Record")
    first = records[0]
    keys = sorted(map(str, first.keys(True, True)))
    for i, r in enumerate(records[1:], 1):
        if not isinstance(r, Record):
            raise TypeError(f"{op}: element {i} is a {type(r).__name__}, not a Record")
        if r._batch_ndim != first._batch_ndim:
            raise ValueError(
                f"{op}: element {i} has batch_ndim={r._batch_ndim}, element 0 has "
                f"{first._batch_ndim}"
            )
        other = sorted(map(str, r.keys(True, True)))
        if other != keys:
            raise KeyError(f"{op}: element {i} has keys {other}, element 0 has {keys}")
    return first


def _zip_leaves(records: Sequence[Record], fn: Callable, new_bnd: int) -> Record:
    first = records[0]
    data = {}
    for k, v in first._data.items():
        if isinstance(v, Record):
            data[k] = _zip_leaves(
                [r._data[k] for r in records], fn, new_bnd + v._batch_ndim - first._batch_ndim
            )
        else:
            try:
                data[k] = fn([r._data[k] for r in records])
            except RuntimeError as e:
                shapes = [tuple(r._data[k].shape) for r in records]
                raise ValueError(f"key {k!r}: cannot combine leaves of shapes {shapes}") from e
    return Record._from_dict(data, new_bnd)


def _repr_lines(rec: Record, indent: str) -> list[str]:
    lines = []
    for k, v in rec._data.items():
        if isinstance(v, Record):
            lines.append(f"{indent}{k!r}: Record(batch_ndim={v._batch_ndim}, {{")
            lines += _repr_lines(v, indent + "    ")
            lines.append(f"{indent}}}),")
        else:
            lines.append(
                f"{indent}{k!r}: Tensor(shape={list(v.shape)}, dtype={v.dtype}, device={v.device}),"
            )
    return lines


# ---------------------------------------------------------------------------- pytree registration
# The metadata holds, per child, its key and its rank relative to the batch: the event rank for a
# tensor, the extra batch rank for a nested Record. The batch rank is rebuilt from the first child.


def _flatten(rec: Record) -> tuple[list[Any], tuple]:
    keys = tuple(rec._data)
    children = list(rec._data.values())
    rel = tuple(
        ("r", c._batch_ndim - rec._batch_ndim)
        if isinstance(c, Record)
        else ("t", c.ndim - rec._batch_ndim)
        if isinstance(c, torch.Tensor)
        else ("o", 0)
        for c in children
    )
    return children, (keys, rel, rec._batch_ndim)


def _unflatten(meta: tuple, children: Iterable[Any]) -> Record:
    keys, rel, fallback = meta
    children = list(children)
    bnd = fallback
    for (kind, r), c in zip(rel, children):
        if kind == "t" and isinstance(c, torch.Tensor):
            bnd = c.ndim - r
            break
        if kind == "r" and isinstance(c, Record) and _first_leaf(c) is not None:
            bnd = c._batch_ndim - r
            break
    return Record._from_dict(dict(zip(keys, children)), bnd)


optree.register_pytree_node(
    Record,
    lambda rec: (*_flatten(rec), tuple(rec._data)),
    lambda meta, children: _unflatten(meta, children),
    namespace=_NAMESPACE,
)


def _flatten_with_keys(rec: Record):
    children, meta = _flatten(rec)
    return [(torch_pytree.MappingKey(k), c) for k, c in zip(meta[0], children)], meta


torch_pytree.register_pytree_node(
    Record,
    _flatten,
    lambda children, meta: _unflatten(meta, children),
    serialized_type_name="funcrl.Record",
    flatten_with_keys_fn=_flatten_with_keys,
)
