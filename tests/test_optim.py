"""funcrl.optim against torch.optim on identical gradients, plus the pure-transform properties."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from funcrl import optim, testing, tree

STEPS = 100


def init_params(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "w": torch.randn(5, 3, generator=g),
        "b": torch.randn(5, generator=g),
        "nested": [torch.randn(2, 2, generator=g)],
    }


def gradient_stream(params, steps=STEPS, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [tree.map(lambda p: torch.randn(p.shape, generator=g), params) for _ in range(steps)]


def run_torch(make_opt, params, grads, scheduler=None):
    ps = [torch.nn.Parameter(p.clone()) for p in tree.leaves(params)]
    opt = make_opt(ps)
    sched = scheduler(opt) if scheduler else None
    for g in grads:
        for p, x in zip(ps, tree.leaves(g)):
            p.grad = x.clone()
        opt.step()
        if sched is not None:
            sched.step()
    _, treedef = tree.flatten(params)
    return tree.unflatten(treedef, [p.detach() for p in ps])


def run_funcrl(opt, params, grads):
    state = opt.init(params)
    for g in grads:
        updates, state = opt.update(g, state, params)
        params = optim.apply_updates(params, updates)
    return params, state


PARITY = [
    ("adam", lambda: optim.adam(1e-2), lambda ps: torch.optim.Adam(ps, lr=1e-2)),
    (
        "adam_betas_eps",
        lambda: optim.adam(3e-3, b1=0.8, b2=0.95, eps=1e-6),
        lambda ps: torch.optim.Adam(ps, lr=3e-3, betas=(0.8, 0.95), eps=1e-6),
    ),
    (
        # b1 = 0: no first-moment average and no correction for it.
        "adam_b1_zero",
        lambda: optim.adam(1e-2, b1=0.0, b2=0.5),
        lambda ps: torch.optim.Adam(ps, lr=1e-2, betas=(0.0, 0.5)),
    ),
    (
        "adam_l2",
        lambda: optim.adam(1e-2, weight_decay=0.1),
        lambda ps: torch.optim.Adam(ps, lr=1e-2, weight_decay=0.1),
    ),
    (
        "adam_amsgrad",
        lambda: optim.adam(1e-2, amsgrad=True),
        lambda ps: torch.optim.Adam(ps, lr=1e-2, amsgrad=True),
    ),
    ("adamw", lambda: optim.adamw(1e-2), lambda ps: torch.optim.AdamW(ps, lr=1e-2)),
    (
        "adamw_wd_amsgrad",
        lambda: optim.adamw(1e-2, weight_decay=0.3, amsgrad=True),
        lambda ps: torch.optim.AdamW(ps, lr=1e-2, weight_decay=0.3, amsgrad=True),
    ),
    ("sgd", lambda: optim.sgd(0.05), lambda ps: torch.optim.SGD(ps, lr=0.05)),
    (
        "sgd_momentum",
        lambda: optim.sgd(0.05, momentum=0.9),
        lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9),
    ),
    (
        "sgd_nesterov",
        lambda: optim.sgd(0.05, momentum=0.9, nesterov=True),
        lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, nesterov=True),
    ),
    (
        "sgd_dampening_wd",
        lambda: optim.sgd(0.05, momentum=0.8, dampening=0.3, weight_decay=0.01),
        lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.8, dampening=0.3, weight_decay=0.01),
    ),
    ("rmsprop", lambda: optim.rmsprop(1e-2), lambda ps: torch.optim.RMSprop(ps, lr=1e-2)),
    (
        "rmsprop_centered",
        lambda: optim.rmsprop(1e-2, centered=True),
        lambda ps: torch.optim.RMSprop(ps, lr=1e-2, centered=True),
    ),
    (
        "rmsprop_momentum",
        lambda: optim.rmsprop(1e-2, alpha=0.9, momentum=0.9),
        lambda ps: torch.optim.RMSprop(ps, lr=1e-2, alpha=0.9, momentum=0.9),
    ),
    (
        "rmsprop_centered_momentum_wd",
        lambda: optim.rmsprop(1e-2, centered=True, momentum=0.5, weight_decay=0.01, eps=1e-6),
        lambda ps: torch.optim.RMSprop(
            ps, lr=1e-2, centered=True, momentum=0.5, weight_decay=0.01, eps=1e-6
        ),
    ),
]


@pytest.mark.parametrize("name,ours,theirs", PARITY, ids=[p[0] for p in PARITY])
def test_matches_torch_optim_over_100_steps(name, ours, theirs):
    params = init_params()
    grads = gradient_stream(params)
    got, _ = run_funcrl(ours(), params, grads)
    want = run_torch(theirs, params, grads)
    # AdamW in float32 drifts from torch by a few 1e-6: torch multiplies by float32(1 - lr * wd),
    # whose rounding biases every step the same way; funcrl adds -lr * wd * p and stays closer to
    # the float64 result (test_adamw_float32_is_closer_to_float64_than_torch).
    tol = 5e-6 if name.startswith("adamw") else 1e-6
    testing.assert_trees_all_close(got, want, rtol=tol, atol=tol)
    # the parameters really moved, so the comparison is not vacuous
    assert not tree.allclose(got, params, atol=1e-3)


@pytest.mark.parametrize("name,ours,theirs", PARITY, ids=[p[0] for p in PARITY])
def test_matches_torch_optim_in_float64(name, ours, theirs):
    params = tree.map(lambda x: x.double(), init_params())
    grads = [tree.map(lambda x: x.double(), g) for g in gradient_stream(params, steps=30)]
    got, state = run_funcrl(ours(), params, grads)
    assert all(x.dtype == torch.float64 for x in tree.leaves(got))
    testing.assert_trees_all_close(got, run_torch(theirs, params, grads), rtol=1e-10, atol=1e-12)


def test_adamw_float32_is_closer_to_float64_than_torch():
    params = init_params()
    grads = gradient_stream(params)
    ours, _ = run_funcrl(optim.adamw(1e-2), params, grads)
    theirs = run_torch(lambda ps: torch.optim.AdamW(ps, lr=1e-2), params, grads)
    ref = run_torch(
        lambda ps: torch.optim.AdamW(ps, lr=1e-2),
        tree.map(lambda x: x.double(), params),
        [tree.map(lambda x: x.double(), g) for g in grads],
    )

    def err(tr):
        return max(
            float((a.double() - b).abs().max()) for a, b in zip(tree.leaves(tr), tree.leaves(ref))
        )

    assert err(ours) < err(theirs)
    assert err(ours) < 2e-6


@pytest.mark.parametrize(
    "make",
    [
        lambda fe: optim.adam(1e-2, foreach=fe),
        lambda fe: optim.adam(1e-2, amsgrad=True, weight_decay=0.1, foreach=fe),
        lambda fe: optim.adamw(1e-2, weight_decay=0.1, foreach=fe),
    ],
    ids=["adam", "adam_amsgrad_l2", "adamw"],
)
def test_foreach_path_equals_plain(make):
    params = init_params()
    grads = gradient_stream(params, steps=20)
    plain, s_plain = run_funcrl(make(False), params, grads)
    fast, s_fast = run_funcrl(make(True), params, grads)
    testing.assert_trees_all_close(fast, plain, rtol=1e-6, atol=1e-7)
    testing.assert_trees_all_close(s_fast, s_plain, rtol=1e-6, atol=1e-7)


def test_adam_first_step_by_hand():
    # After one step m_hat = g and v_hat = g^2, so the update is -lr * g / (|g| + eps).
    g = {"x": torch.tensor([2.0, -0.5, 0.0])}
    opt = optim.adam(0.1)
    upd, state = opt.update(g, opt.init(g), g)
    testing.assert_trees_all_close(upd["x"], torch.tensor([-0.1, 0.1, 0.0]), atol=1e-7)
    adam_state = state[0]
    assert isinstance(adam_state, optim.ScaleByAdamState) and adam_state.count.item() == 1
    testing.assert_trees_all_close(adam_state.mu["x"], 0.1 * g["x"])
    testing.assert_trees_all_close(adam_state.nu["x"], 0.001 * g["x"] ** 2)


def test_sgd_momentum_by_hand():
    # torch's first momentum buffer is the raw gradient; then buf = m * buf + (1 - d) * g.
    opt = optim.sgd(1.0, momentum=0.5, dampening=0.5)
    p = {"x": torch.zeros(1)}
    s = opt.init(p)
    u1, s = opt.update({"x": torch.ones(1)}, s, p)
    u2, s = opt.update({"x": torch.ones(1)}, s, p)
    assert u1["x"].item() == -1.0
    assert u2["x"].item() == pytest.approx(-(0.5 * 1.0 + 0.5 * 1.0))


@given(
    st.floats(0.1, 5.0),
    st.lists(st.floats(-10, 10, allow_nan=False, width=32), min_size=1, max_size=6),
)
def test_clip_by_global_norm_matches_clip_grad_norm(max_norm, values):
    g = {"a": torch.tensor(values), "b": [torch.tensor(values[::-1]) * 0.5]}
    upd, _ = optim.clip_by_global_norm(max_norm).update(g, optim.EmptyState())
    ps = [torch.nn.Parameter(torch.zeros_like(x)) for x in tree.leaves(g)]
    for p, x in zip(ps, tree.leaves(g)):
        p.grad = x.clone()
    torch.nn.utils.clip_grad_norm_(ps, max_norm)
    testing.assert_trees_all_close(tree.leaves(upd), [p.grad for p in ps], rtol=1e-6, atol=1e-7)
    assert float(tree.global_norm(upd)) <= max_norm * (1 + 1e-5)


@pytest.mark.parametrize("flat", [False, True], ids=["per_leaf", "flatten"])
def test_clip_then_adam_chain_matches_torch(flat):
    # optim.flatten's global norm sums the leaves in another order: equal to round-off.
    params = init_params()
    grads = [tree.scale(g, 10.0) for g in gradient_stream(params, steps=30)]
    ours = optim.chain(optim.clip_by_global_norm(1.0), optim.adam(1e-2))
    if flat:
        ours = optim.flatten(ours)
    ps = [torch.nn.Parameter(p.clone()) for p in tree.leaves(params)]
    opt = torch.optim.Adam(ps, lr=1e-2)
    for g in grads:
        for p, x in zip(ps, tree.leaves(g)):
            p.grad = x.clone()
        torch.nn.utils.clip_grad_norm_(ps, 1.0)
        opt.step()
    got, state = run_funcrl(ours, params, grads)
    inner = state.inner if flat else state
    assert isinstance(inner, tuple) and isinstance(inner[0], optim.EmptyState)
    testing.assert_trees_all_close(tree.leaves(got), [p.detach() for p in ps], rtol=1e-6, atol=1e-6)


def test_multi_transform_per_key_learning_rates():
    opt = optim.multi_transform({"actor": optim.sgd(0.1), "critic": optim.sgd(0.01)})
    p = {"actor": {"w": torch.ones(2)}, "critic": [torch.ones(3)]}
    g = tree.ones_like(p)
    s = opt.init(p)
    assert isinstance(s, optim.MultiTransformState) and set(s.inner) == {"actor", "critic"}
    upd, s = opt.update(g, s, p)
    testing.assert_trees_all_close(
        upd, {"actor": {"w": -0.1 * torch.ones(2)}, "critic": [-0.01 * torch.ones(3)]}
    )
    # a subset of keys: the others keep their state
    adam_mt = optim.multi_transform({"actor": optim.adam(0.1), "critic": optim.adam(0.1)})
    s = adam_mt.init(p)
    upd, s2 = adam_mt.update({"actor": g["actor"]}, s, p)
    assert set(upd) == {"actor"}
    assert s2.inner["actor"][0].count.item() == 1 and s2.inner["critic"][0].count.item() == 0
    upd, _ = adam_mt.update({"actor": g["actor"]}, s)  # params are optional without weight decay


def test_multi_transform_errors():
    opt = optim.multi_transform({"actor": optim.sgd(0.1)})
    with pytest.raises(KeyError) as info:
        opt.init({"actor": torch.ones(1), "critic": torch.ones(1)})
    assert "['critic'] with no transform" in info.value.args[0]
    with pytest.raises(KeyError, match="params lack keys"):
        optim.multi_transform({"a": optim.sgd(1.0), "b": optim.sgd(1.0)}).init({"a": torch.ones(1)})
    with pytest.raises(TypeError, match="must be a dict keyed like the transforms"):
        opt.init(torch.ones(1))
    with pytest.raises(KeyError):
        opt.update({"critic": torch.ones(1)}, opt.init({"actor": torch.ones(1)}))


def test_argument_errors():
    with pytest.raises(
        ValueError, match=r"clip_by_global_norm: max_norm must be in \(0, inf\], got 0.0"
    ):
        optim.clip_by_global_norm(0.0)
    with pytest.raises(ValueError, match="nesterov needs momentum > 0"):
        optim.sgd(0.1, nesterov=True)
    with pytest.raises(ValueError, match="nesterov needs momentum > 0 and dampening == 0"):
        optim.trace(0.9, dampening=0.1, nesterov=True)
    with pytest.raises(ValueError, match="linear_schedule: transition_steps must be an int > 0"):
        optim.linear_schedule(1.0, 0.0, 0)
    wd = optim.add_decayed_weights(0.1)
    with pytest.raises(ValueError, match="needs params"):
        wd.update({"x": torch.ones(1)}, wd.init({"x": torch.ones(1)}))


def test_identity_scale_apply_updates():
    p = {"x": torch.ones(3, dtype=torch.float64)}
    g = {"x": torch.full((3,), 2.0, dtype=torch.float64)}
    assert optim.identity().update(g, optim.identity().init(p))[0] is g
    testing.assert_trees_all_close(optim.scale(-0.5).update(g, None)[0], {"x": -torch.ones(3)})
    out = optim.apply_updates(p, {"x": torch.ones(3, dtype=torch.float32)})
    assert out["x"].dtype == torch.float64 and torch.equal(out["x"], torch.full((3,), 2.0).double())
    assert torch.equal(p["x"], torch.ones(3, dtype=torch.float64))  # pure: p unchanged


def test_linear_schedule_values():
    sched = optim.linear_schedule(1.0, 0.1, 10)
    values = [float(sched(torch.tensor(t))) for t in (0, 5, 10, 20)]
    assert values == pytest.approx([1.0, 0.55, 0.1, 0.1])


def test_schedule_matches_torch_lambda_lr():
    params = init_params()
    grads = gradient_stream(params, steps=30)
    sched = optim.linear_schedule(0.1, 0.01, 20)
    ours = optim.sgd(sched, momentum=0.9)
    got, state = run_funcrl(ours, params, grads)
    assert state[-1].count.item() == 30

    def frac(t):
        return 0.1 * (1.0 + min(t / 20, 1.0) * (0.01 / 0.1 - 1.0))

    want = run_torch(
        lambda ps: torch.optim.SGD(ps, lr=1.0, momentum=0.9),
        params,
        grads,
        scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, frac),
    )
    testing.assert_trees_all_close(got, want, rtol=1e-6, atol=1e-6)


def test_schedule_in_adam_by_hand():
    # lr(count) with count = 0 on the first update: halving lr halves the first Adam step.
    opt = optim.adam(lambda count: 0.2 / (1.0 + count.float()))
    g = {"x": torch.tensor([1.0])}
    s = opt.init(g)
    u1, s = opt.update(g, s)
    u2, s = opt.update(g, s)
    assert u1["x"].item() == pytest.approx(-0.2, rel=1e-6)
    assert u2["x"].item() == pytest.approx(-0.1, rel=1e-6)  # m_hat/sqrt(v_hat) = 1 for constant g


def _train_step(opt):
    def step(params, state, x, y):
        def loss(p):
            return ((x @ p["w"] + p["b"] - y) ** 2).mean()

        g = torch.func.grad(loss)(params)
        upd, state = opt.update(g, state, params)
        return optim.apply_updates(params, upd), state

    return step


def _regression(seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(16, 3, generator=g)
    return x, x @ torch.tensor([1.0, -2.0, 0.5]) + 0.3


@pytest.mark.parametrize(
    "make, compiled",
    [
        (
            lambda: optim.chain(
                optim.clip_by_global_norm(1.0), optim.adamw(0.05, weight_decay=0.01)
            ),
            False,
        ),
        # optim.flatten: the flat state under vmap and torch.compile(fullgraph=True)
        (
            lambda: optim.flatten(optim.chain(optim.clip_by_global_norm(1.0), optim.adam(0.05))),
            True,
        ),
    ],
    ids=["chain", "flatten_compiled"],
)
def test_whole_step_under_vmap_equals_loop(make, compiled):
    opt = make()
    step = _train_step(opt)
    seeds = range(3)
    params = [
        {"w": torch.randn(3, generator=torch.Generator().manual_seed(s)), "b": torch.zeros(())}
        for s in seeds
    ]
    data = [_regression(s) for s in seeds]
    states = [opt.init(p) for p in params]
    bp, bs = tree.stack(params), tree.stack(states)
    bx, by = torch.stack([d[0] for d in data]), torch.stack([d[1] for d in data])
    vstep = torch.func.vmap(step)
    if compiled:
        torch._dynamo.reset()
        vstep = torch.compile(vstep, fullgraph=True, backend="aot_eager")
    for _ in range(5):
        bp, bs = vstep(bp, bs, bx, by)
        for i in seeds:
            params[i], states[i] = step(params[i], states[i], *data[i])
    testing.assert_trees_all_close(bp, tree.stack(params), rtol=1e-5, atol=1e-6)
    testing.assert_trees_all_close(bs, tree.stack(states), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("foreach", [False, True], ids=["plain", "foreach"])
def test_whole_step_compiles_without_graph_breaks(foreach):
    opt = optim.multi_transform(
        {
            "w": optim.chain(optim.clip_by_global_norm(1.0), optim.adam(0.05, foreach=foreach)),
            "b": optim.sgd(optim.linear_schedule(0.1, 0.0, 10), momentum=0.9),
        }
    )
    step = _train_step(opt)
    params = {"w": torch.zeros(3), "b": torch.zeros(())}
    x, y = _regression(0)
    state = opt.init(params)
    torch._dynamo.reset()
    # fullgraph=True raises on any graph break
    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    p_eager, s_eager, p_comp, s_comp = params, state, params, state
    for _ in range(3):
        p_eager, s_eager = step(p_eager, s_eager, x, y)
        p_comp, s_comp = compiled(p_comp, s_comp, x, y)
    testing.assert_trees_all_close(p_comp, p_eager, rtol=1e-6, atol=1e-7)
    testing.assert_trees_all_close(s_comp, s_eager, rtol=1e-6, atol=1e-7)


@testing.variants
def test_optimizer_update_in_every_variant(variant):
    opt = optim.rmsprop(1e-2, centered=True, momentum=0.9)
    p = init_params()
    g = gradient_stream(p, steps=1)[0]

    def two_updates(params, grads):
        state = opt.init(params)
        u, state = opt.update(grads, state, params)
        params = optim.apply_updates(params, u)
        u, state = opt.update(grads, state, params)
        return optim.apply_updates(params, u)

    testing.assert_trees_all_close(
        variant(two_updates)(p, g), two_updates(p, g), rtol=1e-6, atol=1e-7
    )


# ---------------------------------------------------------------- structure checks (issue #12)
def test_adam_pairs_moments_by_key_not_position():
    # Hand values: after one step on {"a": 1, "b": 2}, mu = 0.1 * g, nu = 0.001 * g^2.
    opt = optim.scale_by_adam(b1=0.9, b2=0.999, eps=0.0)
    state = opt.init({"a": torch.zeros(1), "b": torch.zeros(1)})
    _, state = opt.update({"a": torch.tensor([1.0]), "b": torch.tensor([2.0])}, state)
    testing.assert_trees_all_close(state.mu, {"a": torch.tensor([0.1]), "b": torch.tensor([0.2])})
    # grads for "b" only would have been zipped with "a"'s moments; now it is an error
    with pytest.raises(
        ValueError,
        match=r"scale_by_adam.update: .*\['a'\] is in the optimizer state but not in updates.*opt.init",
    ):
        opt.update({"b": torch.tensor([3.0])}, state)
    # second step with both keys: b's moments pair with b's gradient
    upd, state = opt.update({"a": torch.tensor([1.0]), "b": torch.tensor([2.0])}, state)
    testing.assert_trees_all_close(state.mu, {"a": torch.tensor([0.19]), "b": torch.tensor([0.38])})
    # m_hat = g and v_hat = g^2 for a constant gradient: the update is sign(g) = 1 for both
    testing.assert_trees_all_close(upd, {"a": torch.ones(1), "b": torch.ones(1)})


def test_update_checks_shapes_dtypes_and_params():
    opt = optim.adam(0.1)
    params = {"w": torch.zeros(2, 3)}
    state = opt.init(params)
    with pytest.raises(
        ValueError,
        match=r"scale_by_adam.update: leaf \['w'\] has shape \(2, 3\) in the optimizer state, \(3,\) in updates",
    ):
        opt.update({"w": torch.zeros(3)}, state, params)
    with pytest.raises(
        ValueError,
        match=r"leaf \['w'\] has dtype torch.float32 in the optimizer state, torch.float64 in updates",
    ):
        opt.update({"w": torch.zeros(2, 3, dtype=torch.float64)}, state)
    with pytest.raises(ValueError, match=r"scale_by_adam.update: .*\['v'\] is in params but not"):
        opt.update({"w": torch.zeros(2, 3)}, state, {"w": torch.zeros(2, 3), "v": torch.zeros(1)})
    with pytest.raises(
        ValueError, match=r"apply_updates: leaf \['w'\] has shape \(2, 3\) in params, \(3,\)"
    ):
        optim.apply_updates(params, {"w": torch.zeros(3)})


@pytest.mark.parametrize(
    "make",
    [
        lambda: optim.sgd(0.1, momentum=0.9),
        lambda: optim.rmsprop(0.1, momentum=0.5, centered=True),
        lambda: optim.adamw(0.1),
        lambda: optim.chain(
            optim.clip_by_global_norm(1.0), optim.adam(optim.linear_schedule(0.1, 0.0, 10))
        ),
    ],
)
def test_every_transform_rejects_another_tree(make):
    opt = make()
    params = {"a": torch.zeros(2), "b": torch.zeros(2)}
    state = opt.init(params)
    with pytest.raises(ValueError, match=r"\.update: .*differ in structure: \['a'\]"):
        opt.update({"b": torch.zeros(2)}, state, {"b": torch.zeros(2)})


def test_multi_transform_subset_still_allowed_and_state_checked():
    opt = optim.multi_transform({"actor": optim.sgd(1.0), "critic": optim.sgd(1.0)})
    params = {"actor": torch.ones(1), "critic": torch.ones(1)}
    state = opt.init(params)
    upd, _ = opt.update({"actor": torch.ones(1)}, state, params)
    assert list(upd) == ["actor"]
    with pytest.raises(KeyError, match="multi_transform.update: params lack keys"):
        opt.update({"actor": torch.ones(1)}, state, {"critic": torch.ones(1)})


@pytest.mark.parametrize(
    "factory, match",
    [
        (lambda: optim.adam(-1e-3), r"adam: learning_rate must be in \[0, inf\], got -0.001"),
        (lambda: optim.adam(float("nan")), "adam: learning_rate must not be NaN"),
        (lambda: optim.adam(float("inf")), "adam: learning_rate must be finite"),
        (lambda: optim.adam(1e-3, b1=1.0), r"adam: b1 must be in \[0, 1\), got 1.0"),
        (lambda: optim.adam(1e-3, b2=-0.1), r"adam: b2 must be in \[0, 1\), got -0.1"),
        (lambda: optim.adamw(1e-3, eps=-1.0), r"adamw: eps must be in \[0, inf\]"),
        (lambda: optim.adamw(1e-3, weight_decay=-0.1), "adamw: weight_decay must be in"),
        (lambda: optim.sgd(0.1, momentum=-0.9), "sgd: momentum must be in"),
        (lambda: optim.sgd(0.1, dampening=2.0), r"sgd: dampening must be in \[0, 1\]"),
        (lambda: optim.rmsprop(0.1, alpha=1.5), r"rmsprop: alpha must be in \[0, 1\]"),
        (
            lambda: optim.clip_by_global_norm(float("nan")),
            "clip_by_global_norm: max_norm must not be NaN",
        ),
        (lambda: optim.clip_by_global_norm(-1.0), "clip_by_global_norm: max_norm must be in"),
        (lambda: optim.scale(float("inf")), "scale: factor must be finite"),
        (lambda: optim.adam("0.1"), "adam: learning_rate must be a real number, got str"),
        (
            lambda: optim.adam(optim.linear_schedule(-1.0, 0.0, 10)),
            "adam: learning_rate \\(the schedule's value at step 0\\) must be in",
        ),
        (
            lambda: optim.linear_schedule(float("nan"), 0.0, 10),
            "linear_schedule: init_value must not be NaN",
        ),
    ],
)
def test_hyperparameters_validated_like_torch_optim(factory, match):
    with pytest.raises((ValueError, TypeError), match=match):
        factory()


def test_clip_allows_inf_max_norm_like_torch():
    opt = optim.clip_by_global_norm(float("inf"))
    g = {"x": torch.full((2,), 1e6)}
    out, _ = opt.update(g, opt.init(g))
    testing.assert_trees_all_equal(out, g)


def test_cosine_decay_schedule_values_match_cosine_annealing_lr():
    sched = optim.cosine_decay_schedule(0.1, 10, alpha=0.2)
    # By hand: 0.1 * (0.8 * (1 + cos(pi t / 10)) / 2 + 0.2), then 0.1 * 0.2 after t = 10.
    values = [float(sched(torch.tensor(t))) for t in (0, 5, 10, 25)]
    assert values == pytest.approx([0.1, 0.06, 0.02, 0.02])
    # PyTorch's CosineAnnealingLR(T_max=10, eta_min=0.02) gives the same lr at every step.
    w = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([w], lr=0.1)
    lr_sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=10, eta_min=0.02)
    for t in range(10):
        assert float(sched(torch.tensor(t))) == pytest.approx(opt.param_groups[0]["lr"])
        opt.step()
        lr_sched.step()


def test_cosine_decay_schedule_drives_adam_and_compiles():
    params = {"w": torch.ones(3)}
    opt = optim.adam(optim.cosine_decay_schedule(1e-2, 4))
    state = opt.init(params)
    grads = {"w": torch.ones(3)}
    step = torch.compile(opt.update, fullgraph=True)
    sizes = []
    for _ in range(5):
        updates, state = step(grads, state, params)
        sizes.append(float(updates["w"].abs().max()))
    # Adam's first steps on a constant gradient move by ~lr, so the sizes follow the schedule.
    expected = [1e-2 * 0.5 * (1 + math.cos(math.pi * t / 4)) for t in range(5)]
    assert sizes == pytest.approx(expected, rel=1e-4, abs=1e-7)


@pytest.mark.parametrize(
    "args, message",
    [
        ((1.0, 0), r"cosine_decay_schedule: decay_steps must be an int > 0, got 0"),
        ((1.0, 2.5), r"cosine_decay_schedule: decay_steps must be an int > 0, got 2.5"),
        ((1.0, 10, 1.5), r"cosine_decay_schedule: alpha must be in \[0, 1\], got 1.5"),
        ((1.0, 10, -0.1), r"cosine_decay_schedule: alpha must be in \[0, 1\], got -0.1"),
        ((float("nan"), 10), r"cosine_decay_schedule: init_value must not be NaN"),
    ],
)
def test_cosine_decay_schedule_bad_arguments(args, message):
    with pytest.raises(ValueError, match=message):
        optim.cosine_decay_schedule(*args)


def test_cosine_decay_schedule_vmaps_over_per_seed_counts():
    # Seeds at different steps (a vmapped optimizer state): each gets its own step size.
    sched = optim.cosine_decay_schedule(2.0, 8)
    counts = torch.tensor([0, 4, 8, 12])
    got = torch.func.vmap(sched)(counts)
    torch.testing.assert_close(got, torch.tensor([2.0, 1.0, 0.0, 0.0]), atol=1e-6, rtol=0)


def test_adam_bias_corrections_vanish_at_large_counts():
    # Long runs: b ** t underflows to 0 in float64 (t = 1e6: 0.999 ** t ~ e^-1000), so the
    # corrections are exactly 1 and the update is m / (sqrt(v) + eps), by hand.
    opt = optim.scale_by_adam(b1=0.9, b2=0.999, eps=1e-8)
    params = {"w": torch.zeros(3, dtype=torch.float64)}
    state = opt.init(params)
    mu = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
    nu = torch.tensor([0.25, 4.0, 1.0], dtype=torch.float64)
    state = state._replace(
        count=torch.full_like(state.count, 1_000_000), mu={"w": mu}, nu={"w": nu}
    )
    g = torch.tensor([1.0, 0.0, -1.0], dtype=torch.float64)
    upd, new = opt.update({"w": g}, state, params)
    m = 0.9 * mu + 0.1 * g
    v = 0.999 * nu + 0.001 * g * g
    torch.testing.assert_close(upd["w"], m / (v.sqrt() + 1e-8), rtol=1e-15, atol=0)
    assert int(new.count) == 1_000_001

    # At t = 1 the corrections are 1 - b exactly as torch.optim computes them.
    state = opt.init(params)
    upd, _ = opt.update({"w": g}, state, params)
    m1, v1 = 0.1 * g, 0.001 * g * g
    expect = (m1 / (v1.sqrt() / math.sqrt(1 - 0.999) + 1e-8)) / (1 - 0.9)
    torch.testing.assert_close(upd["w"], expect, rtol=1e-12, atol=0)


@pytest.mark.parametrize("b1,b2", [(0.9, 0.999), (0.5, 0.9999), (0.95, 0.8)])
def test_adam_bias_corrections_match_pow_over_long_runs(b1, b2):
    # scale_by_adam computes 1 - b^t as 1 - exp(t log b) (see its comment). Vmapped over step
    # counts up to 1e5, its float32 update equals torch.optim's formula with the corrections
    # from pow in float64: m / (1 - b1^t) / (sqrt(v) / sqrt(1 - b2^t) + eps).
    opt = optim.scale_by_adam(b1=b1, b2=b2, eps=1e-8)
    params = {"w": torch.zeros(4)}
    g = torch.tensor([0.3, -1.0, 2.0, 0.0])
    mu, nu = torch.tensor([0.1, 0.2, -0.5, 1.0]), torch.tensor([0.04, 1.0, 0.5, 2.0])
    counts = torch.cat([torch.arange(0, 200), torch.arange(200, 100_000, 997)]).int()

    def update(count):
        state = opt.init(params)._replace(count=count, mu={"w": mu}, nu={"w": nu})
        return opt.update({"w": g}, state, params)[0]["w"]

    got = torch.func.vmap(update)(counts)
    t = (counts + 1).double().unsqueeze(1)
    m, v = b1 * mu + (1 - b1) * g, b2 * nu + (1 - b2) * g * g
    bc1 = (1 - torch.pow(torch.tensor(b1, dtype=torch.float64), t)).float()
    bc2 = (1 - torch.pow(torch.tensor(b2, dtype=torch.float64), t)).sqrt().float()
    expect = (m / (v.sqrt() / bc2 + 1e-8)) * (1 / bc1.double()).float()
    torch.testing.assert_close(got, expect, rtol=1e-6, atol=0)


# ---------------------------------------------------------------- optim.flatten


def test_flatten_adam_equals_adam_per_leaf_exactly():
    # Adam is elementwise: on the concatenated leaves it gives the same bits.
    params = init_params()
    grads = gradient_stream(params, steps=20)
    want, want_state = run_funcrl(optim.adam(1e-2), params, grads)
    got, got_state = run_funcrl(optim.flatten(optim.adam(1e-2)), params, grads)
    testing.assert_trees_all_close(got, want, rtol=0, atol=0)
    assert isinstance(got_state, optim.FlattenState)
    # the moments are the per-leaf ones, concatenated in leaf order
    (mu,) = got_state.inner[0].mu
    torch.testing.assert_close(
        mu, torch.cat([m.reshape(-1) for m in tree.leaves(want_state[0].mu)]), rtol=0, atol=0
    )
    # the tree's shapes and dtypes as the size of one empty tensor: no memory per leaf
    assert got_state.signature.numel() == 0 and got_state.signature.shape[0] == 0


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_flatten_keeps_one_buffer_per_dtype(compiled):
    params = {"w": torch.ones(2, 3), "d": torch.ones(4, dtype=torch.float64), "b": torch.ones(3)}
    opt = optim.flatten(optim.adam(0.5))
    state = opt.init(params)
    # leaves in sorted-key order b, d, w: float32 first (b and w: 3 + 6), then float64 (d: 4)
    mu = state.inner[0].mu
    assert [(m.dtype, m.shape) for m in mu] == [(torch.float32, (9,)), (torch.float64, (4,))]
    grads = {
        "w": torch.full((2, 3), 2.0),
        "d": torch.full((4,), 4.0, dtype=torch.float64),
        "b": torch.full((3,), 6.0),
    }
    update = opt.update
    if compiled:
        torch._dynamo.reset()
        update = torch.compile(opt.update, fullgraph=True, backend="aot_eager")
    upd, state = update(grads, state, params)
    # Adam's first step is -lr * sign(g) (m_hat = g, v_hat = g^2), per leaf, in its own dtype
    testing.assert_trees_all_close(upd, tree.map(lambda g: -0.5 * torch.sign(g), grads))
    assert upd["d"].dtype == torch.float64 and upd["w"].shape == (2, 3)
    torch.testing.assert_close(state.inner[0].mu[1], torch.full((4,), 0.4, dtype=torch.float64))
    torch.testing.assert_close(
        state.inner[0].mu[0], torch.tensor([0.6] * 3 + [0.2] * 6, dtype=torch.float32)
    )


def test_flatten_rejects_another_tree_even_with_the_same_sizes():
    opt = optim.flatten(optim.adam(0.1))
    params = {"a": torch.zeros(2, 3), "b": torch.zeros(6)}
    state = opt.init(params)
    # The same number of elements in all, another tree: the moments would pair with other
    # leaves. Keys sort, so {"b", "c"} puts the (6,) leaf first.
    with pytest.raises(
        ValueError,
        match=r"flatten.update: updates are not the tree flatten.init saw: .* updates have "
        r"\[\(6,\) torch.float32, \(2, 3\) torch.float32\]",
    ):
        opt.update({"c": torch.zeros(2, 3), "b": torch.zeros(6)}, state)
    with pytest.raises(ValueError, match=r"flatten.update: updates are not the tree"):
        opt.update({"a": torch.zeros(6), "b": torch.zeros(2, 3)}, state)
    with pytest.raises(ValueError, match=r"flatten.update: updates are not the tree"):
        opt.update({"a": torch.zeros(2, 3, dtype=torch.float64), "b": torch.zeros(6)}, state)
    with pytest.raises(ValueError, match=r"flatten.update: updates are not the tree"):
        opt.update({"a": torch.zeros(2, 3), "b": torch.zeros(6), "c": torch.zeros(())}, state)
    # updates and params disagree: the leaf is named
    with pytest.raises(
        ValueError,
        match=r"leaf \['b'\] has dtype torch.float64 in params, torch.float32 in updates",
    ):
        opt.update(
            params, state, {"a": torch.zeros(2, 3), "b": torch.zeros(6, dtype=torch.float64)}
        )
    with pytest.raises(TypeError, match=r"flatten.update: state must be the FlattenState"):
        opt.update(params, optim.adam(0.1).init(params))
    with pytest.raises(ValueError, match=r"flatten.init: params hold no tensors"):
        opt.init({})
    with pytest.raises(TypeError, match=r"flatten: inner must be a GradientTransformation"):
        optim.flatten(optim.adam)
    # a reorder of leaves of equal shapes (the node kind changes) and a renamed key: the tree
    # is part of the hash, not only the shapes
    from collections import OrderedDict

    same = optim.flatten(optim.adam(0.1))
    ordered = same.init(OrderedDict(z=torch.zeros(2, 2), a=torch.zeros(2, 2)))
    with pytest.raises(ValueError, match=r"flatten.update: updates are not the tree"):
        same.update({"z": torch.zeros(2, 2), "a": torch.zeros(2, 2)}, ordered)
    plain = same.init({"a": torch.zeros(2, 2), "b": torch.zeros(2, 2)})
    with pytest.raises(ValueError, match=r"flatten.update: updates are not the tree"):
        same.update({"a": torch.zeros(2, 2), "c": torch.zeros(2, 2)}, plain)
    # a list where init saw a tuple (optree's structures differ)
    tup = same.init((torch.zeros(2), torch.zeros(2)))
    with pytest.raises(ValueError, match=r"flatten.update: updates are not the tree"):
        same.update([torch.zeros(2), torch.zeros(2)], tup)
    # leaves that cannot be concatenated: named
    with pytest.raises(TypeError, match=r"flatten.update: leaf \['b'\] of updates is a int"):
        opt.update({"a": torch.zeros(2, 3), "b": 3}, state)
    with pytest.raises(TypeError, match=r"flatten.update: leaf \['b'\] of params is a float"):
        opt.update(params, state, {"a": torch.zeros(2, 3), "b": 0.5})
    with pytest.raises(ValueError, match=r"flatten.init: leaf \['b'\] of params is on meta, leaf"):
        opt.init({"a": torch.zeros(2), "b": torch.zeros(2, device="meta")})
    # the right tree still updates
    upd, _ = opt.update({"a": torch.ones(2, 3), "b": torch.ones(6)}, state, params)
    testing.assert_trees_all_close(
        upd, {"a": torch.full((2, 3), -0.1), "b": torch.full((6,), -0.1)}
    )


def test_flatten_state_round_trips_a_checkpoint(tmp_path):
    from funcrl import checkpoint

    params = init_params()
    opt = optim.flatten(optim.chain(optim.clip_by_global_norm(1.0), optim.adam(1e-2)))
    _, state = run_funcrl(opt, params, gradient_stream(params, steps=3))
    checkpoint.save(tmp_path / "opt.safetensors", state)
    loaded = checkpoint.load(tmp_path / "opt.safetensors", like=state).tree
    assert isinstance(loaded, optim.FlattenState)
    testing.assert_trees_all_close(loaded, state, rtol=0, atol=0)
    # the restored state keeps its check: the signature came back as its empty tensor's size
    assert loaded.signature.shape == state.signature.shape
    with pytest.raises(ValueError, match=r"flatten.update: updates are not the tree"):
        opt.update({**params, "b": torch.zeros(4)}, loaded)
