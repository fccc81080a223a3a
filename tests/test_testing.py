"""funcrl.testing: the assertions fail with useful messages, the variants really transform."""

from __future__ import annotations

import re

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from funcrl import Record, testing, tree
from funcrl.testing import Variant


def fails(pattern):
    return pytest.raises(AssertionError, match=pattern)


# ---------------------------------------------------------------------------- shapes and ranks


def test_assert_shape():
    testing.assert_shape(torch.zeros(2, 3), (2, 3))
    testing.assert_shape(torch.zeros(2, 3), (None, 3))
    testing.assert_shape(torch.zeros(2, 3, 4), (..., 4))
    testing.assert_shape(torch.zeros(4), (..., 4))
    testing.assert_shape(torch.zeros(2, 3, 4), (2, ..., 4))
    testing.assert_shape([torch.zeros(5, 1), torch.zeros(5, 1)], (5, 1))
    with fails(r"assert_shape: expected shape \(2, None\), got \(2, 3, 1\)"):
        testing.assert_shape(torch.zeros(2, 3, 1), (2, None))
    with fails(r"expected shape \(\.\.\., 3\) at \['b'\]\[0\], got \(2, 4\)"):
        testing.assert_shape({"a": torch.zeros(3), "b": [torch.zeros(2, 4)]}, (..., 3))
    with fails(r"expected shape \(1, \.\.\., 2\), got \(1,\)"):
        testing.assert_shape(torch.zeros(1), (1, ..., 2))
    with pytest.raises(TypeError, match="shape must be a sequence, got the int 3"):
        testing.assert_shape(torch.zeros(3), 3)
    with pytest.raises(ValueError, match="at most one Ellipsis"):
        testing.assert_shape(torch.zeros(3), (..., ...))


def test_assert_rank():
    testing.assert_rank(torch.zeros(2, 3), 2)
    testing.assert_rank({"a": torch.zeros(2), "b": torch.zeros(2, 2)}, {1, 2})
    with fails(r"expected rank 1 at \['b'\], got rank 2 \(shape \(2, 2\)\)"):
        testing.assert_rank({"a": torch.zeros(2), "b": torch.zeros(2, 2)}, 1)
    with fails(r"expected rank \[0, 1\], got rank 2"):
        testing.assert_rank(torch.zeros(2, 2), [0, 1])


# ---------------------------------------------------------------------------- tree comparisons


def test_assert_trees_all_close_passes_and_names_first_leaf():
    a = {"actor": {"w": torch.ones(2, 2)}, "q": [torch.zeros(3), torch.arange(3.0)]}
    b = tree.map(lambda x: x + 1e-7, a)
    testing.assert_trees_all_close(a, b)
    bad = tree.clone(b)
    bad["q"][1] = torch.tensor([0.0, 1.0, 2.5])
    bad["q"][0] = torch.tensor([0.0, 0.1, 0.0])
    msg = r"leaf \['q'\]\[0\] differs \(rtol=1e-05, atol=1e-06\): 1 of 3 entries mismatch; max abs diff 0\.1.*at index \(1,\)"
    with fails(msg):
        testing.assert_trees_all_close(a, bad)
    testing.assert_trees_all_close(a, bad, atol=1.0)


def test_assert_trees_all_close_structure_shape_dtype():
    with fails(r"trees differ in structure; only in the first: \[\"\['b'\]\"\]"):
        testing.assert_trees_all_close(
            {"a": torch.zeros(1), "b": torch.zeros(1)}, {"a": torch.zeros(1)}
        )
    with fails(r"trees differ in structure"):
        testing.assert_trees_all_close([torch.zeros(1)], (torch.zeros(1),))
    with fails(r"leaf \['a'\] has shape \(2,\) vs \(3,\)"):
        testing.assert_trees_all_close({"a": torch.zeros(2)}, {"a": torch.zeros(3)})
    testing.assert_trees_all_close(torch.zeros(2), torch.zeros(2, dtype=torch.float64))
    with fails(r"<root> has dtype torch.float32 vs torch.float64"):
        testing.assert_trees_all_close(torch.zeros(2), torch.zeros(2).double(), check_dtype=True)
    with fails(r"leaf <root> differs in 1 of 2 entries"):
        testing.assert_trees_all_close(torch.tensor([True, False]), torch.tensor([True, True]))
    testing.assert_trees_all_close(torch.tensor([1, 2]), torch.tensor([1, 2]))


def test_assert_trees_all_close_nan_inf_and_records():
    nan = torch.tensor([1.0, float("nan")])
    with fails("differs"):
        testing.assert_trees_all_close(nan, nan)
    testing.assert_trees_all_close(nan, nan, equal_nan=True)
    with fails(r"1 of 2 entries mismatch; max abs diff 0, max rel diff 0"):
        testing.assert_trees_all_close(torch.tensor([0.0, 1.0]), torch.tensor([0.0, float("inf")]))
    r = Record({("next", "reward"): torch.zeros(2, 1)}, 1)
    with fails(r"leaf \['next'\]\['reward'\] differs"):
        testing.assert_trees_all_close(r, r.apply(lambda t: t + 1))
    testing.assert_trees_all_close(1.0, torch.tensor(1.0))


def test_assert_trees_all_equal_and_shapes():
    testing.assert_trees_all_equal({"a": torch.arange(3)}, {"a": torch.arange(3)})
    with fails(r"leaf \['a'\] differs in 1 of 3 entries"):
        testing.assert_trees_all_equal({"a": torch.arange(3)}, {"a": torch.tensor([0, 1, 5])})
    with fails(r"leaf \['a'\] is \(3,\) torch.int64 vs \(3,\) torch.float32"):
        testing.assert_trees_all_equal({"a": torch.arange(3)}, {"a": torch.arange(3.0)})
    testing.assert_trees_all_equal_shapes([torch.zeros(2)], [torch.ones(2)], [torch.ones(2).int()])
    with fails(r"leaf \[0\] has shape \(2,\) in tree 0 and \(3,\) in tree 2"):
        testing.assert_trees_all_equal_shapes([torch.zeros(2)], [torch.ones(2)], [torch.ones(3)])
    with pytest.raises(ValueError, match="at least two trees"):
        testing.assert_trees_all_equal_shapes([torch.zeros(2)])


def test_assert_tree_all_finite():
    testing.assert_tree_all_finite({"a": torch.zeros(2), "i": torch.arange(2)})
    bad = {
        "a": torch.tensor([1.0, float("nan")]),
        "b": [torch.tensor([float("inf"), -float("inf")])],
    }
    with fails(re.escape("non-finite values at ['a'] (1 of 2 entries), ['b'][0] (2 of 2 entries)")):
        testing.assert_tree_all_finite(bad)


def test_format_path():
    assert testing.format_path(()) == "<root>"
    assert testing.format_path(("actor", 0, "weight")) == "['actor'][0]['weight']"


# ---------------------------------------------------------------------------- variants


def test_variant_objects():
    with pytest.raises(ValueError, match="name must be one of"):
        Variant("jit")
    with pytest.raises(ValueError, match="vmap_size must be >= 1"):
        Variant("vmap", vmap_size=0)
    assert repr(testing.make_variant("vmap")) == "Variant('vmap')"
    f = lambda x: x + 1
    assert Variant("eager")(f) is f


def test_vmap_variant_really_batches():
    seen = []

    def fn(x, scale, rec):
        seen.append(tuple(x.shape))
        assert torch._C._functorch.is_batchedtensor(x)
        return {"y": x * scale + rec["a"].sum(), "r": rec.set("b", rec["a"] * 2)}

    rec = Record({"a": torch.ones(2, 2)}, 1)
    out = Variant("vmap", vmap_size=4)(fn)(torch.arange(3.0), 2.0, rec)
    assert seen == [(3,)]  # per-member shape, seen once by the batched trace
    testing.assert_trees_all_close(out["y"], torch.arange(3.0) * 2 + 4)
    assert isinstance(out["r"], Record) and out["r"].batch_size == (2,)


def test_vmap_variant_catches_host_syncs_and_member_disagreement():
    with pytest.raises(RuntimeError):
        Variant("vmap")(lambda x: x * x.sum().item())(torch.ones(3))
    noisy = Variant("vmap", randomness="different")(lambda x: x + torch.rand(3))
    with pytest.raises(
        AssertionError, match="vmap variant of <lambda>: member 1 of identical inputs differs"
    ):
        noisy(torch.zeros(3))
    same = Variant("vmap")(lambda x: x + torch.rand(3))(torch.zeros(3))
    assert same.shape == (3,)
    with pytest.raises(ValueError, match="no tensor among the arguments"):
        Variant("vmap")(lambda n: torch.ones(n))(3)


def test_compile_variant_fails_on_graph_breaks():
    def breaks(x):
        y = x * 2
        torch._dynamo.graph_break()
        return y + 1

    with pytest.raises(Exception, match="graph_break|Graph break|graph break"):
        Variant("compile")(breaks)(torch.ones(2))
    f = Variant("compile")(lambda x: torch.sin(x) * 2)
    testing.assert_trees_all_close(f(torch.ones(2)), torch.sin(torch.ones(2)) * 2)


def test_variants_decorator_parametrizes():
    def body(variant):
        return variant

    marked = testing.variants(body)
    (mark,) = marked.pytestmark
    assert mark.name == "parametrize" and mark.args[0] == "variant"
    assert [v.name for v in mark.args[1]] == ["eager", "vmap", "compile"]
    assert mark.kwargs["ids"] == ["eager", "vmap", "compile"]

    def body2(variant):
        return variant

    (mark2,) = testing.variants("eager", "vmap", vmap_size=2)(body2).pytestmark
    assert [(v.name, v.vmap_size) for v in mark2.args[1]] == [("eager", 2), ("vmap", 2)]
    with pytest.raises(ValueError, match="unknown variant 'jit'"):
        testing.variants("jit")


@testing.variants
@pytest.mark.parametrize("n", [1, 3])
def test_variants_compose_with_parametrize(variant, n):
    out = variant(lambda x: torch.cumsum(x, -1))(torch.ones(n))
    testing.assert_trees_all_close(out, torch.arange(1.0, n + 1))


@testing.variants("eager", "vmap")
@given(x=testing.tensors((3,)))
def test_variants_compose_with_hypothesis(variant, x):
    testing.assert_trees_all_close(variant(torch.relu)(x), x.clamp_min(0))


def test_variant_fixture(variant):
    assert isinstance(variant, Variant) and variant.name in testing.VARIANT_NAMES
    out = variant(lambda p, x: {"y": p["w"] @ x})({"w": torch.eye(2)}, torch.ones(2))
    testing.assert_trees_all_close(out, {"y": torch.ones(2)})


# ---------------------------------------------------------------------------- strategies


@given(testing.tensors((2, 3), min_value=-1.0, max_value=2.0))
def test_tensors_strategy_bounds(x):
    assert x.shape == (2, 3) and x.dtype == torch.float32
    assert bool(((x >= -1.0) & (x <= 2.0)).all())


@given(st.data())
def test_tensors_strategy_dtypes_and_shapes(data):
    dtype = data.draw(st.sampled_from([torch.float64, torch.int64, torch.int8, torch.bool]))
    x = data.draw(testing.tensors(testing.batch_shapes(0, 3), dtype, min_value=-3, max_value=3))
    assert x.dtype == dtype and x.ndim <= 3
    if dtype != torch.bool:
        assert bool((x >= -3).all() and (x <= 3).all())
    with pytest.raises(ValueError, match="unsupported dtype"):
        testing.tensors((1,), torch.complex64)


@given(testing.records(batch_shape=(4, 2), max_depth=3, dtypes=(torch.float32, torch.int64)))
def test_records_strategy(rec):
    assert isinstance(rec, Record) and rec.batch_size == (4, 2)
    for k in rec.keys(include_nested=True, leaves_only=True):
        assert rec[k].shape[:2] == (4, 2) and rec[k].dtype in (torch.float32, torch.int64)
        assert len(k) <= 3 if isinstance(k, tuple) else True


@given(testing.param_trees(leading=(3,)))
def test_param_trees_strategy(p):
    leaves = tree.leaves(p)
    assert leaves and all(x.shape[0] == 3 and x.is_floating_point() for x in leaves)
    assert isinstance(p, dict)


@given(testing.specs())
def test_specs_strategy_draws_valid_specs(spec):
    sample = spec.rand()
    assert bool(spec.is_in(sample))
    zero = spec.zero()
    assert tree.structure(zero) == tree.structure(sample)
    testing.assert_trees_all_equal_shapes(zero, sample)


@given(testing.specs(kinds=["Bounded", "Categorical"], composite=False))
def test_specs_strategy_kinds(spec):
    assert type(spec).__name__ in ("Bounded", "Categorical")


@given(testing.tensors((4,), min_value=0.1, max_value=0.3))
def test_tensors_bounds_not_representable_in_float32(x):
    assert bool(((x >= 0.1) & (x <= 0.3)).all())
