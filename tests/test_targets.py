"""funcrl.targets: Polyak / hard / periodic target updates, pure and in place."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from funcrl import targets, testing, tree


def pair():
    target = {"w": torch.zeros(2, 2), "b": [torch.full((3,), 4.0)]}
    online = {"w": torch.ones(2, 2), "b": [torch.zeros(3)]}
    return target, online


def test_polyak_hand_values():
    target, online = pair()
    out = targets.polyak(target, online, 0.25)
    # (1 - tau) * target + tau * online
    testing.assert_trees_all_close(
        out, {"w": torch.full((2, 2), 0.25), "b": [torch.full((3,), 3.0)]}
    )
    testing.assert_trees_all_equal(target, pair()[0])  # inputs untouched


def test_polyak_stops_gradients():
    target, online = pair()
    online = tree.map(lambda x: x.requires_grad_(), online)
    out = targets.polyak(target, online, 0.5)
    assert not any(x.requires_grad for x in tree.leaves(out))
    assert not any(x.requires_grad for x in tree.leaves(targets.hard_update(target, online)))


def test_soft_update_tau_and_eps():
    target, online = pair()
    testing.assert_trees_all_close(
        targets.soft_update(target, online, eps=0.995), targets.polyak(target, online, 0.005)
    )
    testing.assert_trees_all_close(
        targets.soft_update(target, online, tau=0.1), targets.polyak(target, online, 0.1)
    )
    with pytest.raises(ValueError, match="exactly one of tau or eps"):
        targets.soft_update(target, online)
    with pytest.raises(ValueError, match="exactly one of tau or eps"):
        targets.soft_update(target, online, tau=0.1, eps=0.9)
    with pytest.raises(ValueError, match=r"soft_update: eps must be in \[0, 1\], got 1.5"):
        targets.soft_update(target, online, eps=1.5)


def test_hard_update_copies():
    target, online = pair()
    out = targets.hard_update(target, online)
    testing.assert_trees_all_equal(out, online)
    assert out["w"].data_ptr() != online["w"].data_ptr()


def test_structure_and_shape_errors():
    target, online = pair()
    with pytest.raises(
        ValueError,
        match=r"polyak: target and online differ in structure: \['b'\]\[0\] is in target but not in online",
    ):
        targets.polyak(target, {"w": online["w"]}, 0.1)
    bad = {"w": torch.ones(2, 3), "b": [torch.zeros(3)]}
    with pytest.raises(
        ValueError, match=r"polyak: leaf \['w'\] has shape \(2, 2\) in target, \(2, 3\)"
    ):
        targets.polyak(target, bad, 0.1)
    with pytest.raises(ValueError, match=r"hard_update: leaf \['w'\]"):
        targets.hard_update(target, bad)
    with pytest.raises(ValueError, match="periodic: target and online differ"):
        targets.periodic(target, {"w": online["w"]}, 0, 2)
    with pytest.raises(ValueError, match=r"polyak_: leaf \['w'\]"):
        targets.polyak_(target, bad, 0.1)
    with pytest.raises(ValueError, match="hard_update_: target and online"):
        targets.hard_update_(target, {"w": online["w"]})
    with pytest.raises(ValueError, match="periodic: period must be an int >= 1, got 0"):
        targets.periodic(target, online, 0, 0)


def test_periodic():
    target, online = pair()
    for step, copies in [(0, True), (1, False), (2, False), (3, True), (6, True)]:
        out = targets.periodic(target, online, torch.tensor(step), 3)
        testing.assert_trees_all_equal(out, online if copies else target)
    testing.assert_trees_all_equal(targets.periodic(target, online, 4, 2), online)  # int step


def test_in_place_variants_match_pure():
    target, online = pair()
    want = targets.polyak(target, online, 0.3)
    t2 = tree.clone(target)
    ptrs = [x.data_ptr() for x in tree.leaves(t2)]
    assert targets.polyak_(t2, online, 0.3) is t2
    testing.assert_trees_all_close(t2, want, rtol=1e-6, atol=1e-7)
    assert [x.data_ptr() for x in tree.leaves(t2)] == ptrs
    t3 = tree.clone(target)
    assert targets.hard_update_(t3, online) is t3
    testing.assert_trees_all_equal(t3, targets.hard_update(target, online))
    # works on leaves that require grad (an nn.Module's parameters) without autograd errors
    mod = torch.nn.Linear(3, 2)
    tgt = {k: v for k, v in torch.nn.Linear(3, 2).named_parameters()}
    onl = dict(mod.named_parameters())
    want = targets.polyak(tgt, onl, 0.5)
    targets.polyak_(tgt, onl, 0.5)
    testing.assert_trees_all_close(tgt, want)


@pytest.mark.parametrize("tau", [-0.1, 1.5, float("nan")])
def test_tau_outside_unit_interval_raises(tau):
    target, online = pair()
    with pytest.raises(ValueError, match=r"tau must be in \[0, 1\]"):
        targets.polyak(target, online, tau)
    with pytest.raises(ValueError, match=r"tau must be in \[0, 1\]"):
        targets.polyak_(tree.clone(target), online, tau)


@given(testing.param_trees(), st.data())
def test_tau_one_copies_and_tau_zero_keeps(online, data):
    target = tree.map(lambda x: -x + 1.0, online)
    testing.assert_trees_all_close(targets.polyak(target, online, 1.0), online, atol=1e-6)
    testing.assert_trees_all_equal(targets.polyak(target, online, 0.0), target)


@given(testing.param_trees(), st.floats(0.0, 1.0))
def test_result_between_target_and_online(online, tau):
    target = tree.map(lambda x: torch.flip(x, dims=list(range(x.ndim))) * 0.5 + 1.0, online)
    out = targets.polyak(target, online, tau)
    for t, o, r in zip(tree.leaves(target), tree.leaves(online), tree.leaves(out)):
        lo, hi = torch.minimum(t, o), torch.maximum(t, o)
        slack = 1e-5 * (1 + torch.maximum(t.abs(), o.abs()))
        assert bool(((r >= lo - slack) & (r <= hi + slack)).all())
    inplace = targets.polyak_(tree.clone(target), online, tau)
    testing.assert_trees_all_close(inplace, out, rtol=1e-6, atol=1e-6)


@given(testing.param_trees(), st.floats(0.0, 1.0), st.floats(0.0, 1.0))
def test_polyak_composes(online, a, b):
    # Two steps towards a fixed online tree equal one step with 1 - (1 - a)(1 - b).
    target = tree.zeros_like(online)
    two = targets.polyak(targets.polyak(target, online, a), online, b)
    one = targets.polyak(target, online, 1 - (1 - a) * (1 - b))
    testing.assert_trees_all_close(two, one, rtol=1e-5, atol=1e-5)


@testing.variants
def test_target_updates_in_every_variant(variant):
    target, online = pair()
    tau = torch.tensor(0.25)  # a tensor tau is taken as is (no host read inside compiled code)

    def both(target, online, step):
        soft = targets.polyak(target, online, tau)
        hard = targets.periodic(target, online, step, 2)
        return soft, hard

    f = variant(both)
    soft, hard = f(target, online, torch.tensor(4))
    testing.assert_trees_all_close(soft, targets.polyak(target, online, 0.25))
    testing.assert_trees_all_equal(hard, online)
    _, kept = f(target, online, torch.tensor(3))
    testing.assert_trees_all_equal(kept, target)


def test_polyak_under_vmap_with_per_member_tau():
    target, online = pair()
    t = tree.stack([target] * 3)
    o = tree.stack([online] * 3)
    taus = torch.tensor([0.0, 0.5, 1.0])
    out = torch.func.vmap(targets.polyak)(t, o, taus)
    for i, tau in enumerate(taus.tolist()):
        testing.assert_trees_all_close(
            tree.map(lambda x, i=i: x[i], out), targets.polyak(target, online, tau)
        )


def test_polyak_of_an_empty_tree_is_empty():
    # VDN's mixer has no params: its target map must be a no-op, not a foreach error.
    assert targets.polyak({}, {}, 0.5) == {}


# ---------------------------------------------------------------- first differing path (issue #12)
def test_errors_name_the_first_differing_path():
    target = {"q": [{"w": torch.zeros(2)}, {"w": torch.zeros(2)}]}
    online = {"q": [{"w": torch.zeros(2)}, {"v": torch.zeros(2)}]}
    with pytest.raises(
        ValueError,
        match=r"polyak: target and online differ in structure: \['q'\]\[1\]\['w'\] is in target",
    ):
        targets.polyak(target, online, 0.5)
    online = {"q": [{"w": torch.zeros(2)}, {"w": torch.zeros(2, dtype=torch.float64)}]}
    with pytest.raises(
        ValueError, match=r"periodic: leaf \['q'\]\[1\]\['w'\] has dtype torch.float32 in target"
    ):
        targets.periodic(target, online, 0, 2)


def test_tensor_tau_must_be_scalar_float():
    target, online = pair()
    with pytest.raises(
        ValueError, match=r"polyak: a tensor tau must be a 0-dim floating tensor.*shape \(2,\)"
    ):
        targets.polyak(target, online, torch.full((2,), 0.5))
    with pytest.raises(
        ValueError, match=r"polyak: a tensor tau must be a 0-dim floating tensor .*got torch.int64"
    ):
        targets.polyak(target, online, torch.tensor(1))
    # a 0-dim float tensor is fine and gives the hand value
    out = targets.polyak(target, online, torch.tensor(0.25))
    testing.assert_trees_all_close(out["w"], torch.full((2, 2), 0.25))
