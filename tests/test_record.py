"""Record: every method, its errors, pytree behaviour under torch.func and torch.compile."""

from __future__ import annotations

import contextlib
import re

import optree
import pytest
import torch
import torch.utils._pytree as torch_pytree
from hypothesis import given
from hypothesis import strategies as st

from funcrl import Record, testing, tree


@contextlib.contextmanager
def raises_key(pattern):
    """``pytest.raises(KeyError, match=...)`` on the message itself (``str(KeyError)`` quotes it)."""
    with pytest.raises(KeyError) as info:
        yield
    assert re.search(pattern, info.value.args[0]), info.value.args[0]


def make(batch=(3,)):
    b = tuple(batch)
    return Record(
        {
            "observation": torch.arange(float(torch.Size(b).numel() * 4)).reshape(*b, 4),
            "action": torch.ones(*b, 2),
            ("next", "reward"): torch.full((*b, 1), 2.0),
            ("next", "done"): torch.zeros(*b, 1, dtype=torch.bool),
        },
        batch_ndim=len(b),
    )


# ---------------------------------------------------------------------------- construction


def test_construction_nested_and_shapes():
    rec = make()
    assert rec.batch_ndim == 1
    assert rec.batch_size == torch.Size([3]) == rec.shape
    assert isinstance(rec["next"], Record)
    assert rec["next"].batch_ndim == 1
    assert rec["next", "reward"].shape == (3, 1)
    assert rec.device == torch.device("cpu")
    assert len(rec) == 3  # observation, action, next
    assert list(rec) == ["observation", "action", "next"]


def test_construction_from_nested_mapping_and_record():
    inner = {"reward": torch.zeros(2, 1)}
    rec = Record({"obs": torch.zeros(2, 3), "next": inner}, batch_ndim=1)
    assert isinstance(rec["next"], Record) and rec["next"].batch_ndim == 1
    copy = Record(rec, batch_ndim=1)
    assert copy.equal(rec)
    # a nested Record may have more batch dims than its parent
    deep = Record({"x": Record({"y": torch.zeros(2, 5, 1)}, batch_ndim=2)}, batch_ndim=1)
    assert deep["x"].batch_size == (2, 5) and deep.batch_size == (2,)


def test_empty_record():
    assert Record().batch_size == torch.Size([])
    assert Record().device is None
    assert len(Record()) == 0
    with pytest.raises(ValueError, match="empty Record with batch_ndim=2"):
        Record({}, batch_ndim=2).batch_size


@pytest.mark.parametrize("bad", [-1, 1.0, "1"])
def test_bad_batch_ndim(bad):
    with pytest.raises(ValueError, match="batch_ndim must be a non-negative int"):
        Record({}, batch_ndim=bad)


def test_construction_errors_name_keys_and_shapes():
    with pytest.raises(TypeError, match="expects a mapping, got list"):
        Record([1, 2])
    with pytest.raises(ValueError, match=r"key 'b': leading shape \(4,\) does not match .*\(3,\)"):
        Record({"a": torch.zeros(3), "b": torch.zeros(4)}, batch_ndim=1)
    with pytest.raises(ValueError, match=r"key 'a'.*shape \(3,\) has fewer dims than batch_ndim=2"):
        Record({"a": torch.zeros(3)}, batch_ndim=2)
    with pytest.raises(TypeError, match=r"key \('x',\).*got int"):
        Record({"x": 3})
    with raises_key("non-empty tuples of str"):
        Record({(): torch.zeros(1)})
    with pytest.raises(ValueError, match="Record: key 'a' is given both as a tensor and as a sub"):
        Record({"a": torch.zeros(1), ("a", "b"): torch.zeros(1)})
    with pytest.raises(ValueError, match=r"nested Record has batch_ndim=0 < the parent's 1"):
        Record({"a": Record({"b": torch.zeros(2)}, 0)}, batch_ndim=1)
    # nested leaves are checked against the parent's batch size too
    with pytest.raises(
        ValueError,
        match=r"key \('next', 'r'\): leading shape \(5,\) does not match the batch size \(3,\) \(set by key 'obs'\)",
    ):
        Record({"obs": torch.zeros(3, 1), ("next", "r"): torch.zeros(5, 1)}, batch_ndim=1)


# ---------------------------------------------------------------------------- mapping access


def test_keys_values_items_contains_get():
    rec = make()
    assert rec.keys() == ["observation", "action", "next"]
    assert rec.keys(include_nested=True) == [
        "observation",
        "action",
        "next",
        ("next", "reward"),
        ("next", "done"),
    ]
    assert rec.keys(include_nested=True, leaves_only=True) == [
        "observation",
        "action",
        ("next", "reward"),
        ("next", "done"),
    ]
    assert rec.keys(leaves_only=True) == ["observation", "action"]
    assert rec.values()[0] is rec["observation"]
    assert rec.items()[1] == ("action", rec["action"])
    assert "observation" in rec and ("next", "reward") in rec and ("next",) in rec
    assert "reward" not in rec and ("next", "nope") not in rec
    assert ("observation", "x") not in rec and 3 not in rec and () not in rec
    assert rec.get("missing") is None
    assert rec.get(("next", "reward")) is rec["next", "reward"]
    assert rec.get("missing", 7) == 7


def test_getitem_errors_name_keys():
    rec = make()
    with raises_key(r"key 'reward' not found; available keys: \['action', 'next'"):
        rec["reward"]
    with raises_key(r"key \('next', 'rew'\) not found.*\['done', 'reward'\]"):
        rec["next", "rew"]
    with raises_key(r"\('observation',\) is a tensor, not a nested Record"):
        rec["observation", "x"]


# ---------------------------------------------------------------------------- immutable updates


def test_set_is_immutable_and_creates_nested():
    rec = make()
    new = rec.set(("next", "observation"), torch.zeros(3, 4))
    assert ("next", "observation") not in rec
    assert new["next", "observation"].shape == (3, 4)
    assert new["next", "reward"] is rec["next", "reward"]
    deeper = rec.set(("a", "b", "c"), torch.zeros(3))
    assert deeper["a", "b"].batch_ndim == 1
    replaced = rec.set("action", {"x": torch.zeros(3, 1)})
    assert isinstance(replaced["action"], Record)


def test_set_errors():
    rec = make()
    with pytest.raises(ValueError, match=r"key 'action': leading shape \(4,\) does not match"):
        rec.set("action", torch.zeros(4, 2))
    with pytest.raises(
        ValueError, match=r"Record.set: key \('next', 'reward'\): leading shape \(2,\)"
    ):
        rec.set(("next", "reward"), torch.zeros(2, 1))
    with pytest.raises(
        ValueError, match=r"Record.set: cannot set .*: 'observation' holds a tensor"
    ):
        rec.set(("observation", "x"), torch.zeros(3))
    with pytest.raises(ValueError, match="fewer dims than batch_ndim=1"):
        rec.set("scalar", torch.tensor(1.0))


def test_update_merges_nested():
    rec = make()
    other = Record({("next", "terminated"): torch.ones(3, 1)}, batch_ndim=1)
    new = rec.update(other, extra=torch.zeros(3))
    assert ("next", "reward") in new and ("next", "terminated") in new and "extra" in new
    new2 = rec.update({("next", "reward"): torch.ones(3, 1)})
    assert torch.equal(new2["next", "reward"], torch.ones(3, 1))
    assert torch.equal(rec["next", "reward"], torch.full((3, 1), 2.0))
    assert rec.update().equal(rec)
    # A plain nested dict merges too: ("next", "done") survives an update of ("next", "reward").
    new3 = rec.update({"next": {"reward": torch.zeros(3, 1)}})
    assert torch.equal(new3["next", "reward"], torch.zeros(3, 1))
    assert torch.equal(new3["next", "done"], rec["next", "done"])


def test_select_exclude_rename():
    rec = make()
    sel = rec.select("observation", ("next", "reward"))
    assert sel.keys(True, True) == ["observation", ("next", "reward")]
    assert sel.batch_ndim == 1
    with raises_key(r"select: key 'nope' not found; available keys"):
        rec.select("nope")
    assert rec.select("nope", "action", strict=False).keys() == ["action"]
    exc = rec.exclude("action", ("next", "done"), "missing", ("observation", "x"))
    assert exc.keys(True, True) == ["observation", ("next", "reward")]
    ren = rec.rename({"observation": "obs"}, action=("act", "value"))
    assert ren.keys(True, True) == [("next", "reward"), ("next", "done"), "obs", ("act", "value")]
    assert ren["obs"] is rec["observation"]
    with raises_key("not found"):
        rec.rename({"nope": "x"})


def test_flatten_unflatten_keys_and_to_dict():
    rec = make()
    flat = rec.flatten_keys()
    assert flat.keys() == ["observation", "action", "next.reward", "next.done"]
    assert flat.unflatten_keys().equal(rec)
    assert rec.flatten_keys("/").keys()[-1] == "next/done"
    d = rec.to_dict()
    assert type(d["next"]) is dict and d["next"]["reward"] is rec["next", "reward"]


# ---------------------------------------------------------------------------- batch ops


def test_apply_to_detach_clone_float():
    rec = make()
    doubled = rec.apply(lambda t: t * 2)
    assert torch.equal(doubled["next", "reward"], torch.full((3, 1), 4.0))
    summed = rec.apply(lambda t: t.float().sum(0), batch_ndim=0)
    assert summed.batch_ndim == 0 and summed["next"].batch_ndim == 0
    assert summed["observation"].shape == (4,)
    d = rec.to(torch.float64)
    assert d["observation"].dtype == torch.float64 and d["next", "done"].dtype == torch.float64
    f = Record(
        {"x": torch.zeros(2, dtype=torch.float64), "i": torch.zeros(2, dtype=torch.int64)}, 1
    )
    assert f.float()["x"].dtype == torch.float32 and f.float()["i"].dtype == torch.int64
    x = torch.ones(3, 2, requires_grad=True)
    r = Record({"x": x * 2}, 1)
    assert r["x"].requires_grad and not r.detach()["x"].requires_grad
    c = rec.clone()
    assert c.equal(rec) and c["observation"].data_ptr() != rec["observation"].data_ptr()
    with pytest.raises(ValueError, match="does not match the batch size"):
        rec.apply(lambda t: t[:2] if t.shape[-1] == 4 else t)


def test_reshape_flatten_unsqueeze_squeeze_expand():
    rec = make((2, 3))
    assert rec.reshape(6).batch_size == (6,)
    assert rec.reshape((3, 2))["next", "reward"].shape == (3, 2, 1)
    assert rec.flatten().batch_size == (6,)
    assert rec.flatten()["next"].batch_size == (6,)
    assert torch.equal(rec.flatten()["observation"], rec["observation"].reshape(6, 4))
    u = rec.unsqueeze(-1)
    assert u.batch_size == (2, 3, 1) and u["next", "reward"].shape == (2, 3, 1, 1)
    assert u.squeeze(-1).equal(rec)
    assert rec.unsqueeze(0).squeeze(0).equal(rec)
    with pytest.raises(ValueError, match="squeeze: batch dim 0 has size 2, expected 1"):
        rec.squeeze(0)
    with pytest.raises(IndexError, match="squeeze: dim 2 out of range"):
        rec.squeeze(2)
    e = make((3,)).expand(5, 3)
    assert e.batch_size == (5, 3) and e["next"].batch_size == (5, 3)
    assert e["observation"].shape == (5, 3, 4)


def test_indexing():
    rec = make((3,))
    one = rec[1]
    assert one.batch_ndim == 0 and one["observation"].shape == (4,)
    assert torch.equal(one["observation"], rec["observation"][1])
    assert rec[1:].batch_size == (2,)
    assert rec[torch.tensor([2, 0])]["observation"][0, 0] == 8.0
    mask = torch.tensor([True, False, True])
    assert rec[mask].batch_size == (2,) and rec[mask]["next"].batch_size == (2,)
    r2 = make((2, 3))
    assert r2[:, 1].batch_size == (2,) and r2[1, 1:].batch_size == (2,)
    assert r2[torch.ones(2, dtype=torch.bool)].batch_size == (2, 3)


def test_indexing_errors():
    rec = make((3,))
    with pytest.raises(IndexError, match=r"boolean index of shape \(2,\) does not match.*\(3,\)"):
        rec[torch.tensor([True, False])]
    with pytest.raises(IndexError, match="does not support None or Ellipsis"):
        rec[None]
    with pytest.raises(IndexError, match="does not support None or Ellipsis"):
        rec[..., 0]
    with pytest.raises(TypeError, match="cannot index a Record with a Record"):
        rec[rec]
    with pytest.raises(IndexError, match="no batch dimensions"):
        rec[0][0]
    with pytest.raises(IndexError):
        rec[5]


def test_unbind_stack_cat_split():
    rec = make((2, 3))
    parts = rec.unbind(1)
    assert len(parts) == 3 and parts[0].batch_size == (2,)
    assert Record.stack(parts, dim=1).equal(rec)
    assert Record.stack(rec.unbind(-1), dim=-1).equal(rec)
    assert Record.cat(rec.split(1, dim=1), dim=1).equal(rec)
    halves = rec.split([1, 2], dim=-1)
    assert [h.batch_size for h in halves] == [(2, 1), (2, 2)]
    assert Record.cat(halves, dim=-1).equal(rec)
    assert [p.batch_size[0] for p in make((5,)).split(2)] == [2, 2, 1]


def test_stack_cat_split_errors():
    a, b = make(), make()
    with pytest.raises(ValueError, match="stack: needs at least one Record"):
        Record.stack([])
    with raises_key("cat: element 1 has keys"):
        Record.cat([a, b.exclude("action")])
    with pytest.raises(ValueError, match="stack: element 1 has batch_ndim=2, element 0 has 1"):
        Record.stack([a, make((3, 1))])
    with pytest.raises(TypeError, match="element 1 is a dict"):
        Record.stack([a, {"x": 1}])
    with pytest.raises(ValueError, match=r"key 'action': cannot combine leaves of shapes"):
        Record.stack([a, a.set("action", torch.ones(3, 5))])
    with pytest.raises(IndexError, match="stack: dim 3 out of range"):
        Record.stack([a, b], dim=3)
    with pytest.raises(ValueError, match="no batch dimension cannot be concatenated"):
        Record.cat([a[0], b[0]])
    with pytest.raises(ValueError, match=r"split: sizes \[1, 1\] do not sum to .* size 3"):
        a.split([1, 1])
    with pytest.raises(ValueError, match="split_size must be >= 1"):
        a.split(0)
    with pytest.raises(ValueError, match="no batch dimension cannot be split"):
        a[0].split(1)
    with pytest.raises(ValueError, match="no batch dimension cannot be unbound"):
        a[0].unbind(0)
    with pytest.raises(ValueError, match="no batch dimension has nothing to flatten"):
        a[0].flatten()


def test_allclose_equal_eq_hash_repr():
    a = make()
    b = a.apply(lambda t: t * (1 + 1e-7) if t.is_floating_point() else t)
    assert a.allclose(b) and not a.equal(b) and a.equal(a.clone())
    assert not a.allclose(a.exclude("action")) and not a.equal(a.exclude("action"))
    assert not a.allclose(a.unsqueeze(0)) and not a.allclose({"x": 1})
    assert not a.allclose(a.set("action", torch.ones(3, 2) * 2))
    assert a == a and a != a.clone()  # identity semantics
    with pytest.raises(TypeError, match="unhashable"):
        hash(a)
    text = repr(a)
    assert "Record(batch_size=[3]" in text and "'reward': Tensor(shape=[3, 1]" in text
    assert "Record(batch_ndim=1" in text


# ---------------------------------------------------------------------------- pytree


def test_pytree_registration_optree_and_torch():
    rec = make()
    leaves, spec = optree.tree_flatten(rec, namespace="funcrl")
    assert len(leaves) == 4
    back = optree.tree_unflatten(spec, leaves)
    assert isinstance(back, Record) and back.equal(rec)
    tleaves, tspec = torch_pytree.tree_flatten(rec)
    assert torch_pytree.tree_unflatten(tleaves, tspec).equal(rec)
    paths = [p for p, _ in torch_pytree.tree_flatten_with_path(rec)[0]]
    assert torch_pytree.keystr(paths[2]) == "['next']['reward']"
    assert tree.map(lambda x: x * 0, rec)["next", "reward"].sum() == 0


def test_unflatten_recovers_batch_rank_from_leaves():
    rec = make((2, 3))
    leaves, spec = optree.tree_flatten(rec, namespace="funcrl")
    # drop the leading dim of every leaf, as vmap does: the batch rank follows the leaves
    inner = optree.tree_unflatten(spec, [x[0] for x in leaves])
    assert inner.batch_ndim == 1 and inner["next"].batch_ndim == 1
    outer = optree.tree_unflatten(spec, [x[None] for x in leaves])
    assert outer.batch_size == (1, 2, 3)


def test_vmap_grad_functional_call():
    rec = make((4,)).apply(lambda t: t.float())

    def per_sample(r):
        assert r.batch_ndim == 0
        return r.set("value", (r["observation"] * r["next", "reward"]).sum(-1, keepdim=True))

    out = torch.func.vmap(per_sample)(rec)
    assert out.batch_size == (4,) and out["value"].shape == (4, 1)
    testing.assert_trees_all_close(out["value"], (rec["observation"] * 2).sum(-1, keepdim=True))
    # in_dims=1 over a record with two batch dims
    r2 = make((2, 3))
    out2 = torch.func.vmap(lambda r: r["observation"].sum(), in_dims=1)(r2)
    assert out2.shape == (3,)

    grads = torch.func.grad(lambda r: (r["observation"] ** 2).sum() + r["next", "reward"].sum())(
        rec
    )
    assert isinstance(grads, Record) and grads.batch_ndim == 1
    testing.assert_trees_all_close(grads["observation"], 2 * rec["observation"])
    testing.assert_trees_all_close(grads["next", "reward"], torch.ones(4, 1))

    lin = torch.nn.Linear(4, 2)
    params = {k: v.detach() for k, v in lin.named_parameters()}
    y = torch.func.functional_call(lin, params, (rec["observation"],))
    testing.assert_trees_all_close(y, lin(rec["observation"]))

    class RecModule(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(4, 1)

        def forward(self, r):
            return r.set("q", self.lin(r["observation"]))

    mod = RecModule()
    p = {k: torch.zeros_like(v) for k, v in mod.named_parameters()}
    out3 = torch.func.functional_call(mod, p, (rec,))
    assert isinstance(out3, Record) and torch.equal(out3["q"], torch.zeros(4, 1))


def test_compile_without_graph_breaks():
    rec = make((4,)).apply(lambda t: t.float())

    def step(r):
        r = r.set(("next", "value"), r["observation"].sum(-1, keepdim=True))
        r = r.exclude("action").rename({"observation": "obs"})
        r = r.update({"extra": r["next", "reward"] * 2})
        parts = r.split(2)
        r = Record.cat([parts[1], parts[0]]).apply(torch.tanh)
        return Record.stack([r[1:], r[:3]], dim=1).flatten()

    torch._dynamo.reset()
    explanation = torch._dynamo.explain(step)(rec)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    testing.assert_trees_all_close(compiled(rec), step(rec))


@testing.variants
def test_record_function_in_every_variant(variant):
    def td_target(batch, gamma):
        not_done = (~batch["next", "done"]).float()
        return batch.set("target", batch["next", "reward"] + gamma * not_done * batch["value"])

    rec = make((5,)).set("value", torch.linspace(0, 1, 5).unsqueeze(-1))
    out = variant(td_target)(rec, 0.5)
    testing.assert_trees_all_close(out["target"], 2.0 + 0.5 * rec["value"])
    assert out.batch_size == (5,)


# ---------------------------------------------------------------------------- tensordict


def test_tensordict_round_trip():
    tensordict = pytest.importorskip("tensordict", reason="tensordict interop is optional")
    rec = make((2, 3))
    td = rec.to_tensordict()
    assert isinstance(td, tensordict.TensorDict)
    assert td.batch_size == (2, 3)
    assert torch.equal(td["next", "reward"], rec["next", "reward"])
    back = Record.from_tensordict(td)
    assert back.equal(rec) and back["next"].batch_ndim == 2
    td2 = tensordict.TensorDict({"a": torch.zeros(4, 2), "n": {"b": torch.ones(4)}}, batch_size=[4])
    assert Record.from_tensordict(td2).to_tensordict()["n", "b"].shape == (4,)
    assert Record().to_tensordict().batch_size == ()


# ---------------------------------------------------------------------------- properties


@given(testing.records(batch_shape=testing.batch_shapes(1, 2)), st.integers(2, 3), st.data())
def test_stack_then_index_gives_back(rec, n, data):
    recs = [rec.apply(lambda t, i=i: t + i) for i in range(n)]
    dim = data.draw(st.integers(-rec.batch_ndim - 1, rec.batch_ndim))
    stacked = Record.stack(recs, dim=dim)
    d = dim % (rec.batch_ndim + 1)
    assert stacked.batch_size == (*rec.batch_size[:d], n, *rec.batch_size[d:])
    for i, r in enumerate(recs):
        assert stacked[(slice(None),) * d + (i,)].equal(r)
    assert all(a.equal(b) for a, b in zip(stacked.unbind(d), recs))


@given(testing.records(batch_shape=testing.batch_shapes(1, 2)), st.data())
def test_split_then_cat_gives_back(rec, data):
    dim = data.draw(st.integers(0, rec.batch_ndim - 1))
    size = data.draw(st.integers(1, rec.batch_size[dim]))
    parts = rec.split(size, dim=dim)
    assert sum(p.batch_size[dim] for p in parts) == rec.batch_size[dim]
    assert Record.cat(parts, dim=dim).equal(rec)


@given(testing.records(max_depth=3))
def test_flatten_unflatten_keys_inverse(rec):
    assert rec.flatten_keys().unflatten_keys().equal(rec)
    assert rec.flatten_keys().keys() == rec.flatten_keys().keys(include_nested=True)


@given(testing.records())
def test_pytree_round_trip_and_clone(rec):
    leaves, spec = optree.tree_flatten(rec, namespace="funcrl")
    assert optree.tree_unflatten(spec, leaves).equal(rec)
    assert len(leaves) == len(rec.keys(include_nested=True, leaves_only=True))
    assert rec.clone().equal(rec) and rec.to_dict().keys() == dict(rec.items()).keys()


@given(testing.records(batch_shape=testing.batch_shapes(1, 3)))
def test_reshape_round_trip(rec):
    flat = rec.reshape(-1)
    assert flat.batch_size == (rec.batch_size.numel(),)
    assert flat.reshape(rec.batch_size).equal(rec)
    assert rec.flatten().equal(flat)


# ---------------------------------------------------------------- key merging (issue #12)
_LEAVES = {
    ("observation",): torch.zeros(2, 3),
    ("next", "reward"): torch.ones(2, 1),
    ("next", "observation"): torch.full((2, 3), 2.0),
    ("next", "info", "x"): torch.full((2, 4), 3.0),
    ("action",): torch.full((2, 1), 4.0),
}


def _spell(path, how):
    """One of several equivalent spellings of ``{path: leaf}`` as a (key, value) entry."""
    if how == 0 or len(path) == 1:
        return (path if how % 2 else path[0]) if len(path) == 1 else path, _LEAVES[path]
    # nest the tail as plain dicts below the first ``how`` components
    cut = min(how, len(path) - 1)
    value = _LEAVES[path]
    for k in reversed(path[cut:]):
        value = {k: value}
    return (path[:cut] if cut > 1 else path[0]), value


@given(
    order=st.permutations(list(_LEAVES)),
    hows=st.lists(st.integers(0, 2), min_size=len(_LEAVES), max_size=len(_LEAVES)),
)
def test_construction_is_order_and_spelling_independent(order, hows):
    entries = [_spell(p, h) for p, h in zip(order, hows)]
    expected = Record({p: v for p, v in _LEAVES.items()}, batch_ndim=1)
    # "next" and ("next",) are distinct dict keys for the same Record path: use both spellings
    merged = {}
    for k, v in entries:
        if k in merged and isinstance(k, str):
            k = (k,)
        if k in merged:
            return  # a third entry under the same first key: not expressible as one dict
        merged[k] = v
    rec = Record(merged, batch_ndim=1)
    assert rec.equal(expected)
    assert sorted(map(str, rec.keys(True, True))) == sorted(map(str, expected.keys(True, True)))


@given(order=st.permutations([0, 1]), second=st.sampled_from([("a",), ("a", "b")]))
def test_same_leaf_twice_raises_in_any_order(order, second):
    items = [("a", torch.zeros(1)), (second, torch.ones(1))]
    data = dict(items[i] for i in order)
    with pytest.raises(ValueError, match=r"Record: key 'a' is given (twice|both)"):
        Record(data)


def test_next_reward_and_next_dict_merge():
    r, o = torch.zeros(3, 1), torch.ones(3, 2)
    for data in (
        {("next", "reward"): r, "next": {"observation": o}},
        {"next": {"observation": o}, ("next", "reward"): r},
        {"next": Record({"observation": o}, 1), ("next", "reward"): r},
    ):
        rec = Record(data, batch_ndim=1)
        assert torch.equal(rec["next", "reward"], r) and torch.equal(rec["next", "observation"], o)


def test_nested_record_keeps_its_batch_rank_when_merged():
    inner = Record({"b": torch.zeros(3, 4)}, batch_ndim=2)
    rec = Record({"a": inner, ("a", "c"): torch.ones(3, 4)}, batch_ndim=1)
    assert rec["a"].batch_ndim == 2 and torch.equal(rec["a", "c"], torch.ones(3, 4))


leaf_paths = st.lists(
    st.lists(st.sampled_from(["a", "b", "c.d", "e"]), min_size=1, max_size=3).map(tuple),
    min_size=1,
    max_size=6,
    unique=True,
)


@given(paths=leaf_paths)
def test_flatten_unflatten_round_trip_or_clear_error(paths):
    # keep only prefix-free paths (a path cannot be both a leaf and a sub-record)
    kept = [p for p in paths if not any(q != p and q[: len(p)] == p for q in paths)]
    kept = [p for i, p in enumerate(kept) if not any(q[: len(p)] == p for q in kept[:i])]
    rec = Record({p: torch.full((2,), float(i)) for i, p in enumerate(kept)}, batch_ndim=1)
    joined = [".".join(p) for p in kept]
    if len(set(joined)) < len(joined):
        with pytest.raises(ValueError, match="Record.flatten_keys: keys .* both flatten to"):
            rec.flatten_keys()
        return
    flat = rec.flatten_keys()
    assert sorted(flat.keys()) == sorted(joined)
    for p in kept:
        assert torch.equal(flat[".".join(p)], rec[p])
    if any("." in k for p in kept for k in p):
        return  # keys with the separator inside do not round-trip (documented)
    assert flat.unflatten_keys().equal(rec)
    # a different separator always round-trips
    assert rec.flatten_keys("/").unflatten_keys("/").equal(rec)


def test_update_keeps_sub_records_and_rejects_kind_changes():
    rec = Record({"a": {"b": torch.zeros(2)}, "c": torch.zeros(2)}, batch_ndim=1)
    out = rec.update({"a": {"x": torch.ones(2)}}, c=torch.ones(2))
    assert torch.equal(out["a", "b"], torch.zeros(2)) and torch.equal(out["c"], torch.ones(2))
    with pytest.raises(ValueError, match="Record.update: key 'a' is a sub-record here"):
        rec.update({"a": torch.ones(2)})
    with pytest.raises(ValueError, match="Record.update: key 'c' is a tensor here"):
        rec.update({"c": {"x": torch.ones(2)}})
    with pytest.raises(ValueError, match="Record.update: key 'c' is given twice"):
        rec.update({"c": torch.ones(2)}, c=torch.ones(2))
    # an explicit set of the exact key replaces a sub-record (documented)
    assert torch.equal(rec.set("a", torch.ones(2))["a"], torch.ones(2))


def test_rename_never_overwrites():
    rec = Record({"a": torch.zeros(1), "b": torch.ones(1)})
    swapped = rec.rename({"a": "b", "b": "a"})
    assert torch.equal(swapped["a"], torch.ones(1)) and torch.equal(swapped["b"], torch.zeros(1))
    with pytest.raises(ValueError, match="Record.rename: renaming 'a' to 'b' would overwrite"):
        rec.rename({"a": "b"})
