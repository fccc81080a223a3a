"""funcrl.tree: pytree helpers over dicts, lists, tuples and Records."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from funcrl import Record, testing, tree


def params():
    return {
        "actor": {"layers": [{"weight": torch.ones(2, 3), "bias": torch.zeros(2)}]},
        "log_alpha": torch.tensor(0.5),
        "pair": (torch.arange(3.0), None),
    }


def test_map_leaves_flatten_unflatten():
    p = params()
    assert len(tree.leaves(p)) == 4  # None is an empty subtree, not a leaf
    doubled = tree.map(lambda x: x * 2, p)
    assert doubled["pair"][1] is None
    assert torch.equal(doubled["log_alpha"], torch.tensor(1.0))
    summed = tree.map(lambda a, b: a + b, p, doubled)
    assert torch.equal(summed["actor"]["layers"][0]["weight"], torch.full((2, 3), 3.0))
    leaves, treedef = tree.flatten(p)
    back = tree.unflatten(treedef, [x + 1 for x in leaves])
    assert torch.equal(back["pair"][0], torch.arange(1.0, 4.0))
    assert tree.structure(p) == treedef
    assert tree.same_structure(p, doubled)
    assert not tree.same_structure(p, {"actor": p["actor"]})


def test_map_with_path():
    paths = []
    tree.map_with_path(lambda path, x: paths.append(path), params())
    assert ("actor", "layers", 0, "weight") in paths and ("pair", 0) in paths
    rec = Record({("next", "reward"): torch.zeros(2, 1)}, 1)
    out = tree.map_with_path(lambda path, x: x + len(path), rec)
    assert isinstance(out, Record) and torch.equal(out["next", "reward"], torch.full((2, 1), 2.0))


def test_map_mismatched_structures_raise():
    with pytest.raises(ValueError):
        tree.map(torch.add, {"a": torch.zeros(1)}, {"b": torch.zeros(1)})


def test_records_are_nodes():
    rec = Record({"obs": torch.zeros(3, 2), ("next", "r"): torch.ones(3, 1)}, 1)
    assert len(tree.leaves({"batch": rec})) == 2
    z = tree.zeros_like(rec)
    assert (
        isinstance(z, Record)
        and z.batch_size == (3,)
        and torch.equal(z["next", "r"], torch.zeros(3, 1))
    )
    stacked = tree.stack([rec, rec])
    assert isinstance(stacked, Record) and stacked.batch_size == (2, 3)
    assert tree.unstack(stacked)[1].equal(rec)


def test_stack_unstack():
    a, b = params(), tree.map(lambda x: x + 1, params())
    s = tree.stack([a, b])
    assert s["actor"]["layers"][0]["weight"].shape == (2, 2, 3)
    assert s["log_alpha"].shape == (2,)
    s1 = tree.stack([a, b], dim=-1)
    assert s1["actor"]["layers"][0]["weight"].shape == (2, 3, 2)
    parts = tree.unstack(s)
    assert len(parts) == 2
    testing.assert_trees_all_equal(parts[0], a)
    testing.assert_trees_all_equal(parts[1], b)
    assert tree.unstack({}) == []
    with pytest.raises(ValueError, match="tree.stack needs at least one tree"):
        tree.stack([])
    with pytest.raises(ValueError, match="tree.stack: tree 1 has structure"):
        tree.stack([a, {"actor": a["actor"]}])


def test_like_clone_detach():
    p = params()
    assert all(torch.equal(x, torch.zeros_like(x)) for x in tree.leaves(tree.zeros_like(p)))
    assert all(torch.equal(x, torch.ones_like(x)) for x in tree.leaves(tree.ones_like(p)))
    assert all((x == 7).all() for x in tree.leaves(tree.full_like(p, 7.0)))
    c = tree.clone(p)
    testing.assert_trees_all_equal(c, p)
    assert c["log_alpha"].data_ptr() != p["log_alpha"].data_ptr()
    w = torch.ones(2, requires_grad=True)
    d = tree.detach({"w": w * 2})
    assert not d["w"].requires_grad


def test_arithmetic_where_allclose():
    p = params()
    testing.assert_trees_all_close(tree.sub(tree.add(p, p), p), p)
    testing.assert_trees_all_close(tree.scale(p, 3.0), tree.add(tree.add(p, p), p))
    testing.assert_trees_all_close(tree.scale(p, torch.tensor(0.0)), tree.zeros_like(p))
    q = tree.map(lambda x: x + 1, p)
    testing.assert_trees_all_equal(tree.where(torch.tensor(True), p, q), p)
    testing.assert_trees_all_equal(tree.where(torch.tensor(False), p, q), q)
    assert tree.allclose(p, tree.map(lambda x: x + 1e-9, p))
    assert not tree.allclose(p, q)
    assert not tree.allclose(p, {"actor": p["actor"]})
    assert not tree.allclose({"a": torch.zeros(2)}, {"a": torch.zeros(3)})


def test_global_norm_and_num_params():
    p = {"a": torch.tensor([3.0]), "b": [torch.tensor([[4.0, 0.0]])]}
    assert tree.global_norm(p).item() == pytest.approx(5.0)
    assert tree.global_norm({}).item() == 0.0
    assert tree.num_params(p) == 3
    assert tree.num_params(params()) == 6 + 2 + 1 + 3


@given(testing.param_trees())
def test_global_norm_matches_flat_norm(p):
    flat = torch.cat([x.reshape(-1).double() for x in tree.leaves(p)])
    assert math.isclose(float(tree.global_norm(p)), float(flat.norm()), rel_tol=1e-5, abs_tol=1e-5)


@given(testing.param_trees(), st.integers(1, 3))
def test_stack_unstack_round_trip(p, n):
    members = [tree.map(lambda x, i=i: x * (i + 1), p) for i in range(n)]
    stacked = tree.stack(members)
    testing.assert_trees_all_equal_shapes(stacked, tree.map(lambda x: x.expand(n, *x.shape), p))
    for got, want in zip(tree.unstack(stacked), members):
        testing.assert_trees_all_equal(got, want)


@given(testing.param_trees())
def test_flatten_unflatten_round_trip(p):
    leaves, treedef = tree.flatten(p)
    testing.assert_trees_all_equal(tree.unflatten(treedef, leaves), p)
    assert tree.num_params(p) == sum(x.numel() for x in leaves)


@testing.variants
def test_tree_ops_in_every_variant(variant):
    def sgd_like(p, g):
        n = tree.global_norm(g)
        return tree.where(n > 1.0, tree.sub(p, tree.scale(g, 0.1 / n)), tree.sub(p, g))

    p = {"w": torch.ones(3, 2), "b": [torch.zeros(2)]}
    g = {"w": torch.full((3, 2), 2.0), "b": [torch.ones(2)]}
    out = variant(sgd_like)(p, g)
    n = math.sqrt(6 * 4 + 2)
    testing.assert_trees_all_close(
        out, {"w": 1 - 0.2 / n * torch.ones(3, 2), "b": [-0.1 / n * torch.ones(2)]}
    )


def test_any_batched_sees_vmapped_leaves_only():
    x = {"a": torch.zeros(3, 2), "b": [torch.ones(3)], "n": None}
    assert not tree.any_batched(x) and not tree.any_batched()

    def probe(t, plain):
        # Only the mapped argument's leaves are batched; a closed-over or unmapped one is not.
        seen = (tree.any_batched(t), tree.any_batched(plain), tree.any_batched(plain, t))
        assert seen == (True, False, True), seen
        return t["a"].sum()

    x_tensors = {"a": x["a"], "b": x["b"]}
    torch.func.vmap(probe, in_dims=(0, None))(x_tensors, {"c": torch.zeros(2)})
    # Nested vmap: leaves are batched at both levels.
    torch.func.vmap(torch.func.vmap(lambda t: probe(t, {"c": torch.zeros(2)})))(
        {"a": torch.zeros(4, 3, 2), "b": [torch.ones(4, 3)]}
    )


# ---------------------------------------------------------------- check_same_structure (issue #12)
def test_check_same_structure_names_first_differing_path():
    a = {"actor": {"w": torch.zeros(2)}, "critic": [torch.zeros(3), torch.zeros(1)]}
    tree.check_same_structure(a, tree.zeros_like(a), owner="f")  # same tree: no error
    with pytest.raises(
        ValueError, match=r"f: a and b differ in structure: \['critic'\]\[1\] is in a but not in b"
    ):
        tree.check_same_structure(a, {"actor": a["actor"], "critic": a["critic"][:1]}, owner="f")
    with pytest.raises(
        ValueError,
        match=r"f: p and q differ in structure: \['extra'\] is in q but not in p; fix it",
    ):
        tree.check_same_structure(
            a, {**a, "extra": torch.zeros(1)}, owner="f", names=("p", "q"), hint="fix it"
        )
    bigger = {"actor": {"w": torch.zeros(3)}, "critic": a["critic"]}
    with pytest.raises(
        ValueError, match=r"f: leaf \['actor'\]\['w'\] has shape \(2,\) in a, \(3,\) in b"
    ):
        tree.check_same_structure(a, bigger, owner="f")
    tree.check_same_structure(a, bigger, owner="f", shapes=False)  # shapes not required
    as64 = tree.map(lambda x: x.double(), a)
    tree.check_same_structure(a, as64, owner="f")  # dtypes only when asked
    with pytest.raises(
        ValueError, match=r"f: leaf \['actor'\]\['w'\] has dtype torch.float32 in a, torch.float64"
    ):
        tree.check_same_structure(a, as64, owner="f", dtypes=True)


def test_where_and_unstack_refuse_silent_broadcasts():
    p = {"x": torch.zeros(3), "y": torch.ones(3)}
    with pytest.raises(ValueError, match="tree.where: cond must be a 0-dim bool tensor"):
        tree.where(torch.tensor([True, False, True]), p, p)
    with pytest.raises(ValueError, match=r"tree.unstack: leaf \['y'\] has size 2 along dim 0"):
        tree.unstack({"x": torch.zeros(3), "y": torch.zeros(2)})


def test_pack_groups_by_dtype_and_unpacks_views():
    a = torch.arange(6.0).reshape(2, 3)
    b = torch.tensor(7, dtype=torch.int64)
    c = torch.tensor([0.5, 1.5])
    d = torch.tensor([[1, 2]], dtype=torch.int64)
    buffers, packing = tree.pack([a, b, c, d])
    # Floats first (leaf 0's dtype), then int64, each in leaf order.
    assert [x.dtype for x in buffers] == [torch.float32, torch.int64]
    torch.testing.assert_close(buffers[0], torch.tensor([0.0, 1, 2, 3, 4, 5, 0.5, 1.5]))
    torch.testing.assert_close(buffers[1], torch.tensor([7, 1, 2]))
    assert packing.slots == ((0, 0, 6, (2, 3)), (1, 0, 1, ()), (0, 6, 2, (2,)), (1, 1, 2, (1, 2)))
    out = tree.unpack(buffers, packing)
    for x, y in zip(out, [a, b, c, d]):
        assert x.shape == y.shape and x.dtype == y.dtype
        torch.testing.assert_close(x, y, rtol=0, atol=0)
    # The buffers are fresh (writing them leaves the leaves alone); unpack gives their views.
    buffers[0].zero_()
    assert a.sum() == 15 and out[0].sum() == 0


def test_pack_rows_then_index_then_unpack():
    n = 5
    obs = torch.randn(n, 3)
    act = torch.arange(n)
    rew = torch.randn(n, 1)
    buffers, packing = tree.pack([obs, act, rew], batch_ndim=1)
    assert [list(x.shape) for x in buffers] == [[n, 4], [n, 1]]
    idx = torch.tensor([4, 0, 2])
    got = tree.unpack([x[idx] for x in buffers], packing)
    for x, y in zip(got, [obs[idx], act[idx], rew[idx]]):
        torch.testing.assert_close(x, y, rtol=0, atol=0)


def test_pack_under_vmap_and_compile():
    def roundtrip(w, s):
        bufs, packing = tree.pack([w, s])
        w2, s2 = tree.unpack(bufs, packing)
        return w2 * 2, s2 + 1

    w, s = torch.randn(3, 2, 2), torch.arange(3)
    expect = (w * 2, s + 1)
    for fn in (torch.func.vmap(roundtrip), torch.compile(roundtrip, fullgraph=True)):
        got = fn(w, s)
        torch.testing.assert_close(got[0], expect[0])
        torch.testing.assert_close(got[1], expect[1])


def test_unpack_copy_gives_separate_contiguous_tensors_under_compile():
    # Inductor drops a clone of a view as a no-op; unpack(copy=True) must still give each leaf
    # its own storage with the leaf's own (contiguous) strides, vmapped and compiled.
    def f(a, b, c):
        bufs, packing = tree.pack([a, b, c])
        return tree.unpack(tuple(x * 2 for x in bufs), packing, copy=True)

    a, b, c = torch.randn(3, 64, 4), torch.randn(3, 64), torch.arange(9).view(3, 3)
    out = torch.compile(torch.func.vmap(f), fullgraph=True)(a, b, c)
    assert [o.stride() for o in out] == [a.stride(), b.stride(), c.stride()]
    assert len({o.untyped_storage().data_ptr() for o in out}) == 3
    for o, x in zip(out, (a, b, c)):
        torch.testing.assert_close(o, x * 2)


class _Pair(NamedTuple):
    first: Any
    second: Any


def _traced(fn):
    # dynamo with no backend compile: tree's traced path (torch.compiler.is_compiling()) runs.
    return torch.compile(fn, fullgraph=True, backend="eager")


def _mixed_tree():
    return {
        "z": [torch.ones(2), (torch.zeros(1), None)],
        "a": _Pair(torch.arange(3.0), {"y": torch.full((2,), 3.0), "b": torch.tensor(2.0)}),
        "m": None,
    }


def test_traced_path_flattens_in_optree_order_and_round_trips():
    p = _mixed_tree()
    want_leaves, want_def = tree.flatten(p)  # eagerly: optree

    def f(p):
        leaves, treedef = tree.flatten(p)
        assert tree._is_traced_spec(treedef)  # the traced path, not optree's
        doubled = tree.unflatten(treedef, [x * 2 for x in leaves])
        summed = tree.map(lambda a, b: a + b, p, doubled)
        return leaves, doubled, summed, tree.leaves(summed)

    leaves, doubled, summed, summed_leaves = _traced(f)(p)
    assert len(leaves) == len(want_leaves)
    for got, want in zip(leaves, want_leaves):
        torch.testing.assert_close(got, want)
    assert tree.structure(doubled) == want_def and isinstance(doubled["a"], _Pair)
    testing.assert_trees_all_close(summed, tree.map(lambda x: 3 * x, p))
    for got, want in zip(summed_leaves, want_leaves):
        torch.testing.assert_close(got, 3 * want)


@given(testing.param_trees())
def test_traced_flatten_matches_optree(p):
    torch._dynamo.reset()  # a new structure per example: no recompile limit across examples
    want, want_def = tree.flatten(p)
    got, spec = _traced(tree.flatten)(p)
    assert len(got) == len(want) and all(a is b for a, b in zip(got, want))
    testing.assert_trees_all_equal(tree.unflatten(spec, got), tree.unflatten(want_def, want))


def test_traced_path_hands_other_nodes_to_optree():
    # A Record, an OrderedDict and non-string keys are optree's: the same results, optree specs.
    from collections import OrderedDict

    p = {
        "r": Record({"obs": torch.ones(2, 3)}, batch_ndim=1),
        "o": OrderedDict(b=torch.ones(1), a=torch.zeros(1)),
    }
    q = {1: torch.ones(1), 0: torch.zeros(2)}
    for tr in (p, q):
        want, want_def = tree.flatten(tr)

        def f(tr):
            leaves, treedef = tree.flatten(tr)
            assert not tree._is_traced_spec(treedef)
            return leaves, tree.map(lambda x: x + 1, tr)

        got, mapped = _traced(f)(tr)
        assert all(a is b for a, b in zip(got, want)) and len(got) == len(want)
        assert tree.structure(mapped) == want_def


def test_traced_map_of_different_structures_raises_as_eagerly():
    a, b = {"w": torch.ones(2)}, {"v": torch.ones(2)}
    with pytest.raises(ValueError):
        tree.map(torch.add, a, b)
    with pytest.raises(Exception, match="(?i)structure|key"):
        _traced(lambda a, b: tree.map(torch.add, a, b))(a, b)


def test_traced_path_keeps_dict_key_order_and_ignores_it_in_structure():
    # As optree: leaves in sorted-key order, dicts rebuilt in their own key order, and two dicts
    # differing only in key order have the same structure.
    a = {"b": torch.ones(1), "a": torch.zeros(2)}
    b = {"a": torch.ones(2), "b": torch.zeros(1)}

    def f(a, b):
        leaves, treedef = tree.flatten(a)
        tree.check_same_structure(a, b, owner="test")
        return leaves, tree.unflatten(treedef, leaves), tree.map(torch.add, a, b)

    leaves, rebuilt, summed = _traced(f)(a, b)
    assert [x.shape for x in leaves] == [(2,), (1,)]
    assert list(rebuilt) == ["b", "a"] and list(summed) == ["b", "a"]
    assert list(tree.map(torch.add, a, b)) == ["b", "a"]  # eagerly the same


def test_leaf_path_names_each_leaf_and_rejects_a_bad_index():
    t = {"actor": [torch.zeros(1), torch.zeros(2)], "b": torch.zeros(3)}
    assert [tree.leaf_path(t, i) for i in range(3)] == ["['actor'][0]", "['actor'][1]", "['b']"]
    for bad in (3, -1, True, 1.0):
        with pytest.raises(IndexError, match=r"tree.leaf_path: i must be an int in \[0, 3\)"):
            tree.leaf_path(t, bad)


class _Moments(NamedTuple):
    m: torch.Tensor
    v: torch.Tensor


class _Other(NamedTuple):
    m: torch.Tensor
    v: torch.Tensor


def _fingerprint_trees():
    z = torch.zeros
    return [
        {"actor": {"w": z(4, 64), "b": z(64)}, "critic": [z(3), z(2, dtype=torch.float64)]},
        (_Moments(z(2), z(2)), None, {"k": z((), dtype=torch.int64)}),
        {"b": z(2), "a": z(3)},
    ]


def test_fingerprint_values_are_pinned():
    # optim.flatten saves the fingerprint in checkpoints (FlattenState.signature): a change of
    # these numbers makes every saved flatten state fail flatten.update's check.
    trees = _fingerprint_trees()
    assert [tree.fingerprint(t) for t in trees] == [305575, 87487, 394985]
    assert [tree.fingerprint(t, tree.leaves(t)) for t in trees] == [305575, 87487, 394985]


def test_fingerprint_tells_apart_what_a_per_leaf_check_would():
    z = torch.zeros
    base = {"a": z(2), "b": z(3)}
    same = {"b": z(3), "a": z(2)}  # dict insertion order is not structure
    assert tree.fingerprint(base) == tree.fingerprint(same)
    others = [
        {"a": z(3), "b": z(2)},  # equal sizes, swapped between keys
        {"a": z(2), "c": z(3)},  # a renamed key
        {"a": z(2), "b": z(3, dtype=torch.float64)},
        {"a": z(2), "b": z(1, 3)},
        {"a": z(2), "b": z(3), "c": z(1)},
        [z(2), z(3)],  # same leaves, another node kind
        (z(2), z(3)),
        _Moments(z(2), z(3)),
    ]
    prints = [tree.fingerprint(t) for t in [base, *others]]
    assert len(set(prints)) == len(prints)
    assert tree.fingerprint(_Moments(z(2), z(3))) != tree.fingerprint(_Other(z(2), z(3)))
    assert all(0 <= p < tree.FINGERPRINT_MODULUS for p in prints)
    # keys are not run together, and a key's type counts
    assert tree.fingerprint({"ab": z(2), "c": z(3)}) != tree.fingerprint({"a": z(2), "bc": z(3)})
    assert tree.fingerprint({1: z(2)}) != tree.fingerprint({"1": z(2)})
    # a non-tensor leaf counts by its type
    assert tree.fingerprint({"a": 1.0}) != tree.fingerprint({"a": 1})
    assert tree.is_namedtuple(_Moments) and not tree.is_namedtuple(tuple)

    class Fake:  # _fields and _make, but not a tuple
        _fields = ("a",)
        _make = staticmethod(lambda it: None)

    assert not tree.is_namedtuple(Fake) and not tree.is_namedtuple(3)


def test_fingerprint_folds_to_a_constant_under_compile():
    t = _fingerprint_trees()[0]

    def f(t):
        return t["actor"]["w"].new_empty((0, tree.fingerprint(t)))

    out = torch.compile(f, fullgraph=True, backend="eager")(t)
    assert out.shape == (0, 305575)
