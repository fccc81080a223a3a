"""Bad input to the core (Record, specs, optim, values, tree, targets): every error names the
function and the argument or key, and nothing silently broadcasts, wraps or keeps the last of two
values (issue #12)."""

from __future__ import annotations

import pytest
import torch

from funcrl import Record, optim, targets, tree
from funcrl import specs as S
from funcrl import values as V


# ---------------------------------------------------------------- Record
@pytest.mark.parametrize(
    "data, match",
    [
        ({"a": torch.zeros(1), ("a",): torch.ones(1)}, "Record: key 'a' is given twice"),
        ({("a",): torch.zeros(1), "a": torch.ones(1)}, "Record: key 'a' is given twice"),
        ({"a": torch.zeros(1), ("a", "b"): torch.ones(1)}, "Record: key 'a' is given both"),
        ({("a", "b"): torch.ones(1), "a": torch.zeros(1)}, "Record: key 'a' is given twice"),
        (
            {"a": {"b": torch.zeros(1)}, ("a", "b"): torch.ones(1)},
            r"Record: key \('a', 'b'\) is given twice",
        ),
        (
            {
                "n": Record({"x": torch.zeros(2, 2)}, 2),
                ("n", "y"): Record({"z": torch.zeros(2, 2)}, 1),
            },
            r"Record: key \('n', 'y'\): nested Record has batch_ndim=1 < the parent's 2",
        ),
    ],
)
def test_record_duplicate_keys(data, match):
    with pytest.raises(ValueError, match=match):
        Record(data, batch_ndim=1)


def test_record_nested_records_with_different_batch_ranks_at_one_key():
    a = Record({"x": torch.zeros(2, 2)}, 2)
    b = Record({"y": torch.zeros(2, 2)}, 1)
    with pytest.raises(
        ValueError, match="Record: key 'n' merges nested Records of batch_ndim 2 and 1"
    ):
        Record({"n": a, ("n",): b}, batch_ndim=1)


def test_record_batch_dims_disagree():
    with pytest.raises(ValueError, match=r"Record: key 'b': leading shape \(4,\) does not match"):
        Record({"a": torch.zeros(3), "b": torch.zeros(4)}, batch_ndim=1)
    with pytest.raises(
        ValueError,
        match=r"Record: key \('n', 'x'\): leading shape \(5,\) does not match the batch size \(3,\) \(set by key 'a'\)",
    ):
        Record({"a": torch.zeros(3), ("n", "x"): torch.zeros(5)}, batch_ndim=1)
    with pytest.raises(ValueError, match="Record: batch_ndim must be a non-negative int, got True"):
        Record({}, batch_ndim=True)
    rec = Record({"a": torch.zeros(3)}, batch_ndim=1)
    with pytest.raises(ValueError, match=r"Record.set: key \('n', 'x'\): leading shape \(2,\)"):
        rec.set(("n", "x"), torch.zeros(2))


def test_record_flatten_collision_names_both_paths():
    rec = Record({"a.b": torch.zeros(1), "a": {"b": torch.ones(1)}})
    with pytest.raises(
        ValueError,
        match=r"Record.flatten_keys: keys \('a.b',\) and \('a', 'b'\) both flatten to 'a.b'",
    ):
        rec.flatten_keys()
    with pytest.raises(ValueError, match="Record.flatten_keys: separator must be a non-empty str"):
        rec.flatten_keys("")


def test_record_unflatten_leaf_and_prefix():
    for data in (
        {"a": torch.zeros(1), "a.b": torch.ones(1)},
        {"a.b": torch.ones(1), "a": torch.zeros(1)},
    ):
        with pytest.raises(ValueError, match="Record.unflatten_keys: key 'a' is given"):
            Record(data).unflatten_keys()


def test_record_set_update_rename_kind_changes():
    rec = Record({"obs": torch.zeros(1), "next": {"r": torch.zeros(1)}})
    with pytest.raises(ValueError, match="Record.set: cannot set .*: 'obs' holds a tensor"):
        rec.set(("obs", "x"), torch.zeros(1))
    with pytest.raises(ValueError, match="Record.update: key 'next' is a sub-record here"):
        rec.update(next=torch.zeros(1))
    with pytest.raises(ValueError, match="Record.update: key 'obs' is a tensor here"):
        rec.update({("obs", "x"): torch.zeros(1)})
    with pytest.raises(ValueError, match="Record.update: key 'obs' is given twice"):
        rec.update({"obs": torch.ones(1)}, obs=torch.ones(1))
    with pytest.raises(TypeError, match="Record.update: other must be a mapping"):
        rec.update([1])
    with pytest.raises(ValueError, match="Record.rename: renaming 'obs' to 'next' would overwrite"):
        rec.rename({"obs": "next"})
    with pytest.raises(KeyError, match="Record.rename: key 'nope' not found"):
        rec.rename({"nope": "x"})


# ---------------------------------------------------------------- specs
@pytest.mark.parametrize(
    "make, err, match",
    [
        (
            lambda: S.Bounded(0, 300, (), torch.uint8),
            ValueError,
            r"Bounded: high=300 is outside the range \[0, 255\] of torch.uint8",
        ),
        (
            lambda: S.Bounded(-1, 1, (), torch.uint8),
            ValueError,
            "Bounded: low=-1 is outside the range",
        ),
        (
            lambda: S.Bounded(0, 1e5, (), torch.float16),
            ValueError,
            "Bounded: high=100000.0 is outside the range",
        ),
        (
            lambda: S.Bounded(0.5, 3, (), torch.int32),
            ValueError,
            "Bounded: low=0.5 is not integral",
        ),
        (
            lambda: S.Bounded(0, 1, (), torch.complex64),
            TypeError,
            "Bounded: dtype must be a real or bool dtype",
        ),
        (
            lambda: S.Unbounded((), torch.complex64),
            TypeError,
            "Unbounded: dtype must be a real or bool dtype",
        ),
        (
            lambda: S.Categorical(300, dtype=torch.uint8),
            ValueError,
            "Categorical: n=300 categories do not fit dtype torch.uint8",
        ),
        (
            lambda: S.Categorical(3, dtype=torch.bool),
            TypeError,
            "Categorical: dtype must be an integer dtype",
        ),
        (
            lambda: S.MultiCategorical([2, 200], dtype=torch.int8),
            ValueError,
            "MultiCategorical: nvec=.* do not fit dtype torch.int8",
        ),
        (lambda: S.Binary(2, dtype=torch.complex64), TypeError, "Binary: dtype must be"),
        (lambda: S.OneHot(2, dtype=torch.complex64), TypeError, "OneHot: dtype must be"),
        (
            lambda: S.MultiOneHot([2], dtype=torch.complex64),
            TypeError,
            "MultiOneHot: dtype must be",
        ),
    ],
)
def test_spec_construction(make, err, match):
    with pytest.raises(err, match=match):
        make()


def test_spec_value_errors():
    with pytest.raises(TypeError, match="Bounded.project: value has dtype torch.complex64"):
        S.Bounded(0.0, 1.0).project(torch.zeros((), dtype=torch.complex64))
    with pytest.raises(
        TypeError, match="Categorical.to_one_hot: x must be an integer tensor .*spec.project"
    ):
        S.Categorical(3).to_one_hot(torch.tensor(1.7))
    with pytest.raises(TypeError, match="MultiCategorical.to_one_hot: x must be an integer tensor"):
        S.MultiCategorical([2, 3]).to_one_hot(torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"Bounded.project: value has shape \(2,\), expected"):
        S.Bounded(0.0, 1.0, shape=(3,)).project(torch.zeros(2))


# ---------------------------------------------------------------- optim
def test_optim_structure_mismatch_names_the_path_and_the_fix():
    opt = optim.adam(1e-3)
    state = opt.init({"a": torch.zeros(1), "b": torch.zeros(1)})
    with pytest.raises(
        ValueError,
        match=r"scale_by_adam.update: the optimizer state and updates differ in structure: "
        r"\['a'\] is in the optimizer state but not in updates; init the optimizer on exactly",
    ):
        opt.update({"b": torch.zeros(1)}, state)
    with pytest.raises(
        ValueError,
        match=r"scale_by_adam.update: leaf \['a'\] has shape \(1,\) in the optimizer state, \(2,\) in params",
    ):
        opt.update(
            {"a": torch.zeros(1), "b": torch.zeros(1)},
            state,
            {"a": torch.zeros(2), "b": torch.zeros(1)},
        )
    wd = optim.add_decayed_weights(0.1)
    with pytest.raises(
        ValueError, match=r"add_decayed_weights.update: params and updates differ in structure"
    ):
        wd.update({"a": torch.zeros(1)}, wd.init({}), {"b": torch.zeros(1)})
    clip = optim.clip_by_global_norm(1.0)
    with pytest.raises(ValueError, match=r"clip_by_global_norm.update: leaf \['a'\] has dtype"):
        clip.update(
            {"a": torch.zeros(1)}, clip.init({}), {"a": torch.zeros(1, dtype=torch.float64)}
        )
    with pytest.raises(ValueError, match="chain.update: state must be the tuple of 2 states"):
        opt.update({"a": torch.zeros(1), "b": torch.zeros(1)}, state[:1])


def test_optim_flatten_rejects_another_tree():
    # The flat state pairs moments by position: a gradient tree of the same total size in
    # another order would silently update the wrong leaves.
    opt = optim.flatten(optim.chain(optim.clip_by_global_norm(1.0), optim.adam(1e-3)))
    state = opt.init({"w": torch.zeros(4, 2), "b": torch.zeros(8)})
    with pytest.raises(
        ValueError,
        match=r"flatten.update: updates are not the tree flatten.init saw: their structure, keys "
        r"and leaf shapes and dtypes hash to \d+, the optimizer state's to \d+; updates have "
        r"\[\(8,\) torch.float32, \(2, 4\) torch.float32\]; init the optimizer on exactly",
    ):
        opt.update({"w": torch.zeros(2, 4), "b": torch.zeros(8)}, state)
    with pytest.raises(
        ValueError, match=r"flatten.update: leaf \['w'\] has shape \(2, 4\) in params, \(4, 2\)"
    ):
        opt.update(
            {"w": torch.zeros(4, 2), "b": torch.zeros(8)},
            state,
            {"w": torch.zeros(2, 4), "b": torch.zeros(8)},
        )


def test_optim_multi_transform_labels():
    with pytest.raises(TypeError, match="multi_transform: transforms must map str labels"):
        optim.multi_transform({"a": 0.1})
    opt = optim.multi_transform({"actor": optim.adam(1e-3)})
    with pytest.raises(
        KeyError, match=r"multi_transform: params has keys \['critic'\] with no transform"
    ):
        opt.init({"actor": torch.zeros(1), "critic": torch.zeros(1)})
    state = opt.init({"actor": torch.zeros(1)})
    with pytest.raises(KeyError, match=r"multi_transform: grads has keys \['critic'\]"):
        opt.update({"critic": torch.zeros(1)}, state)
    with pytest.raises(KeyError, match=r"multi_transform.update: state has keys \['x'\]"):
        opt.update(
            {"actor": torch.zeros(1)}, optim.MultiTransformState({"x": state.inner["actor"]})
        )


@pytest.mark.parametrize(
    "factory, match",
    [
        (lambda: optim.sgd(-0.1), r"sgd: learning_rate must be in \[0, inf\], got -0.1"),
        (lambda: optim.rmsprop(float("nan")), "rmsprop: learning_rate must not be NaN"),
        (lambda: optim.adamw(1e-3, b1=-0.5), r"adamw: b1 must be in \[0, 1\)"),
        (lambda: optim.adam(1e-3, b2=float("nan")), "adam: b2 must not be NaN"),
        (lambda: optim.adam(1e-3, eps=-1e-8), "adam: eps must be in"),
        (lambda: optim.sgd(0.1, weight_decay=-1.0), "sgd: weight_decay must be in"),
        (lambda: optim.rmsprop(0.1, momentum=-1.0), "rmsprop: momentum must be in"),
        (
            lambda: optim.clip_by_global_norm(0.0),
            r"clip_by_global_norm: max_norm must be in \(0, inf\]",
        ),
        (
            lambda: optim.clip_by_global_norm(float("nan")),
            "clip_by_global_norm: max_norm must not be NaN",
        ),
        (lambda: optim.scale_by_adam(b1=1.0), r"scale_by_adam: b1 must be in \[0, 1\)"),
        (lambda: optim.scale_by_rms(alpha=-0.1), r"scale_by_rms: alpha must be in \[0, 1\]"),
        (lambda: optim.trace(-0.9), "trace: momentum must be in"),
        (lambda: optim.add_decayed_weights(-0.1), "add_decayed_weights: weight_decay must be in"),
        (
            lambda: optim.linear_schedule(0.1, 0.0, 2.5),
            "linear_schedule: transition_steps must be an int > 0",
        ),
        (
            lambda: optim.adam(optim.linear_schedule(-1.0, 1.0, 5)),
            r"adam: learning_rate \(the schedule's value at step 0\) must be in",
        ),
    ],
)
def test_optim_hyperparameters(factory, match):
    with pytest.raises(ValueError, match=match):
        factory()


def test_optim_hyperparameter_types():
    with pytest.raises(TypeError, match="adam: learning_rate must be a real number, got NoneType"):
        optim.adam(None)
    with pytest.raises(TypeError, match="sgd: momentum must be a real number, got bool"):
        optim.sgd(0.1, momentum=True)


# ---------------------------------------------------------------- values
def _traj(shape=(4, 6)):
    x = torch.zeros(shape)
    return x, x.clone(), x.clone(), x.bool(), x.bool()


def test_values_layout_and_ranges():
    v, nv, r, d, t = _traj()
    with pytest.raises(
        ValueError,
        match=r"generalized_advantage_estimate: reward has shape \(4, 6\), which does not end with "
        r"the singleton dim.*read dim 0 \(size 4\) as time; call reward.unsqueeze\(-1\)",
    ):
        V.generalized_advantage_estimate(0.99, 0.95, v, nv, r, d, t)
    v, nv, r, d, t = _traj((4, 6, 1))
    with pytest.raises(ValueError, match=r"n_step_return: n must be an int >= 1, got 0"):
        V.n_step_return(0.9, 0, nv, r, d, t)
    with pytest.raises(
        ValueError, match=r"td_lambda_return_estimate: lmbda must be in \[0, 1\], got 1.1"
    ):
        V.td_lambda_return_estimate(0.9, 1.1, nv, r, d, t)
    with pytest.raises(ValueError, match=r"td1_return_estimate: gamma must be in \[0, 1\], got -1"):
        V.td1_return_estimate(-1, nv, r, d, t)
    with pytest.raises(ValueError, match=r"td0_advantage_estimate: terminated has shape \(4, 6\)"):
        V.td0_advantage_estimate(0.9, v, nv, r, t[..., 0])
    with pytest.raises(
        ValueError,
        match=r"discounted_cumsum: method must be one of \['associative', 'matrix', 'scan'\]",
    ):
        V.discounted_cumsum(r, 0.9, method="fft")
    with pytest.raises(
        ValueError, match=r"td_lambda_return_estimate: time_dim=True is out of range"
    ):
        V.td_lambda_return_estimate(0.9, 0.9, nv, r, d, t, time_dim=True)
    with pytest.raises(
        ValueError,
        match=r"generalized_advantage_estimate: the time dim 1 of shape \(4, 0, 1\) is empty",
    ):
        V.generalized_advantage_estimate(0.9, 0.9, *_traj((4, 0, 1)))
    with pytest.raises(
        ValueError,
        match=r"td_lambda_return_estimate: gamma must be a float, a 0-dim tensor or a tensor of shape",
    ):
        V.td_lambda_return_estimate(torch.full((6, 1), 0.9), 0.9, nv, r, d, t)


# ---------------------------------------------------------------- tree and targets
def test_tree_errors_name_the_path():
    a = {"w": torch.zeros(2), "b": [torch.zeros(3)]}
    with pytest.raises(
        ValueError,
        match=r"tree.stack: leaf \['b'\]\[0\] has shape \(3,\) in tree 0, \(4,\) in tree 1",
    ):
        tree.stack([a, {"w": torch.zeros(2), "b": [torch.zeros(4)]}])
    with pytest.raises(
        ValueError, match=r"tree.unstack: leaf \['w'\] has size 2 along dim 0, the first leaf 3"
    ):
        tree.unstack(a)
    with pytest.raises(
        ValueError,
        match=r"tree.where: cond must be a 0-dim bool tensor, got torch.bool of shape \(2,\)",
    ):
        tree.where(torch.ones(2, dtype=torch.bool), a, a)
    with pytest.raises(
        ValueError, match=r"tree.where: a and b differ in structure: \['w'\] is in a"
    ):
        tree.where(torch.tensor(True), a, {"b": a["b"]})
    with pytest.raises(
        ValueError, match=r"my_fn: x and y differ in structure: same paths, different node types"
    ):
        tree.check_same_structure(
            [torch.zeros(1)], (torch.zeros(1),), owner="my_fn", names=("x", "y")
        )


def test_targets_errors_name_the_path():
    t = {"q": {"w": torch.zeros(2, 2)}}
    with pytest.raises(
        ValueError,
        match=r"polyak: target and online differ in structure: \['q'\]\['w'\] is in target",
    ):
        targets.polyak(t, {"q": {"v": torch.zeros(2, 2)}}, 0.1)
    with pytest.raises(
        ValueError,
        match=r"polyak: leaf \['q'\]\['w'\] has dtype torch.float32 in target, torch.float64 in online",
    ):
        targets.polyak(t, {"q": {"w": torch.zeros(2, 2, dtype=torch.float64)}}, 0.1)
    with pytest.raises(
        ValueError,
        match=r"hard_update: leaf \['q'\]\['w'\] has shape \(2, 2\) in target, \(2,\) in online",
    ):
        targets.hard_update(t, {"q": {"w": torch.zeros(2)}})
    with pytest.raises(ValueError, match=r"polyak: tau must be in \[0, 1\], got nan"):
        targets.polyak(t, t, float("nan"))
    with pytest.raises(ValueError, match=r"polyak: a tensor tau must be a 0-dim floating tensor"):
        targets.polyak(t, t, torch.full((2,), 0.1))
    with pytest.raises(TypeError, match="polyak: tau must be a float or a 0-dim tensor, got str"):
        targets.polyak(t, t, "0.1")
    with pytest.raises(TypeError, match="polyak_: tau must be a Python float"):
        targets.polyak_(t, t, torch.tensor(0.1))
    with pytest.raises(ValueError, match=r"soft_update: eps must be in \[0, 1\], got -0.5"):
        targets.soft_update(t, t, eps=-0.5)
    with pytest.raises(ValueError, match="periodic: step must be an int or a 0-dim integer tensor"):
        targets.periodic(t, t, torch.tensor([1, 2]), 2)
    with pytest.raises(ValueError, match="periodic: period must be an int >= 1, got 2.5"):
        targets.periodic(t, t, 0, 2.5)


@pytest.mark.parametrize(
    "data, match",
    [
        ({"a": S.Unbounded(1), ("a",): S.Unbounded(2)}, "Composite: key 'a' is given twice"),
        ({"a": S.Unbounded(1), ("a", "b"): S.Unbounded(2)}, "Composite: key 'a' holds a Unbounded"),
        ({("a", "b"): S.Unbounded(1), "a": S.Unbounded(2)}, "Composite: key 'a' is given twice"),
        (
            {
                "a": S.Composite({"b": S.Unbounded((2, 1))}, shape=(2,)),
                ("a",): {"c": S.Unbounded(1)},
            },
            r"Composite: entry \('a', 'c'\) has shape \(1,\), which does not start with the "
            r"composite shape \(2,\)",
        ),
    ],
)
def test_composite_duplicate_keys(data, match):
    with pytest.raises(ValueError, match=match):
        S.Composite(data)


def test_tree_pack_bad_leaves():
    with pytest.raises(ValueError, match="tree.pack: no tensors to pack"):
        tree.pack([])
    for bad in (-1, 1.0, True):
        with pytest.raises(ValueError, match=r"tree.pack: batch_ndim must be an int >= 0, got"):
            tree.pack([torch.zeros(2)], batch_ndim=bad)
    with pytest.raises(TypeError, match="tree.pack: leaf 1 is a float, not a tensor"):
        tree.pack([torch.zeros(2), 1.0])
    with pytest.raises(
        ValueError,
        match=r"tree.pack: leaf 1 has shape \[3, 2\]; expected leading dims \[4\] like leaf 0",
    ):
        tree.pack([torch.zeros(4, 2), torch.zeros(3, 2)], batch_ndim=1)
    with pytest.raises(ValueError, match=r"tree.pack: leaf 1 has shape \[\]; expected leading"):
        tree.pack([torch.zeros(4), torch.zeros(())], batch_ndim=1)


def test_tree_unpack_rejects_buffers_that_do_not_match_the_packing():
    bufs, packing = tree.pack([torch.zeros(2, 3), torch.zeros(2, dtype=torch.int64)], batch_ndim=1)
    with pytest.raises(ValueError, match=r"tree.unpack: the packing has 2 buffers .*, got 1"):
        tree.unpack(bufs[:1], packing)
    with pytest.raises(
        ValueError, match=r"tree.unpack: buffer 0 must be torch.float32 \[\*batch \(1 dims\), 3\]"
    ):
        tree.unpack((bufs[0][:, :2], bufs[1]), packing)
    with pytest.raises(ValueError, match=r"buffer 1 must be torch.int64 .*, got torch.float32"):
        tree.unpack((bufs[0], bufs[1].float()), packing)
    with pytest.raises(ValueError, match=r"buffer 0 must be .*got torch.float32 \[6\]"):
        tree.unpack((bufs[0].reshape(-1), bufs[1]), packing)


@pytest.mark.parametrize("traced", [False, True])
def test_tree_unflatten_rejects_a_wrong_leaf_count(traced):
    # Eagerly the treedef is optree's; under torch.compile it is funcrl's traced spec.
    def f(p, drop):
        leaves, treedef = tree.flatten(p)
        return tree.unflatten(treedef, leaves[:-1] if drop else [*leaves, leaves[0]])

    if traced:
        f = torch.compile(f, fullgraph=True, backend="eager")
    p = {"a": torch.ones(1), "b": torch.ones(1)}
    for drop, got in ((True, 1), (False, 3)):
        with pytest.raises(
            Exception, match=rf"tree\.unflatten: the treedef has 2 leaves, got {got}"
        ):
            f(p, drop)


def test_compile_step_flags():
    from funcrl.jit import compile_step

    with pytest.raises(TypeError, match="compile_step: cudagraphs must be a bool, got str"):
        compile_step(lambda x: x, cudagraphs="yes")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match=r"compile_step: cudagraphs=True needs a CUDA device"):
            compile_step(lambda x: x, cudagraphs=True)
