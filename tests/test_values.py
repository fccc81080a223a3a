"""Tests for funcrl.values: hand-computed targets, properties, TorchRL parity, vmap, compile."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from funcrl import values as V

METHODS = ("scan", "matrix", "associative")


def col(*xs: float) -> torch.Tensor:
    """A single trajectory in TorchRL's layout [T, 1]."""
    return torch.tensor(xs, dtype=torch.float32).unsqueeze(-1)


def flags(*xs: int) -> torch.Tensor:
    return torch.tensor(xs, dtype=torch.bool).unsqueeze(-1)


def random_inputs(seed: int, batch=(3,), T: int = 6, p_done: float = 0.3):
    g = torch.Generator().manual_seed(seed)
    shape = (*batch, T, 1)
    reward = torch.randn(shape, generator=g)
    value = torch.randn(shape, generator=g)
    next_value = torch.randn(shape, generator=g)
    done = torch.rand(shape, generator=g) < p_done
    terminated = done & (torch.rand(shape, generator=g) < 0.5)
    return reward, value, next_value, done, terminated


# ---------------------------------------------------------------- reference implementations
def ref_n_step(gamma, n, next_value, reward, done, terminated):
    """Literal definition on one trajectory [T, 1], with Python loops."""
    T = reward.shape[0]
    out = torch.zeros(T)
    for t in range(T):
        ret, disc = 0.0, 1.0
        for k in range(n):
            i = t + k
            ret += disc * float(reward[i])
            disc *= gamma
            if bool(done[i]) or i == T - 1 or k == n - 1:
                ret += disc * (0.0 if bool(terminated[i]) else float(next_value[i]))
                break
        out[t] = ret
    return out.unsqueeze(-1)


def ref_monte_carlo(gamma, next_value, reward, done, terminated):
    """Discounted sum to the trajectory end, bootstrapped there (or at the window end)."""
    return ref_n_step(gamma, reward.shape[0] + 1, next_value, reward, done, terminated)


# ---------------------------------------------------------------- hand-computed values
def test_td0_hand():
    # r + gamma * (1 - terminated) * V': [1 + 0.5 * 10, 2 + 0]
    out = V.td0_return_estimate(0.5, col(10, 20), col(1, 2), flags(0, 1))
    torch.testing.assert_close(out, col(6, 2))
    adv = V.td0_advantage_estimate(0.5, col(1, 1), col(10, 20), col(1, 2), flags(0, 1))
    torch.testing.assert_close(adv, col(5, 1))


@pytest.mark.parametrize("method", METHODS)
def test_td_lambda_hand(method):
    r, nv = col(1, 1, 1), col(2, 4, 8)
    kw = dict(method=method)
    # no ends: G2 = 1 + .5*8 = 5; G1 = 1 + .5*(.5*4 + .5*5) = 3.25; G0 = 1 + .5*(.5*2 + .5*3.25)
    out = V.td_lambda_return_estimate(0.5, 0.5, nv, r, flags(0, 0, 0), flags(0, 0, 0), **kw)
    torch.testing.assert_close(out, col(2.3125, 3.25, 5.0))
    # terminated at t=1: G1 = 1 (no bootstrap), G0 = 1 + .5*(.5*2 + .5*1) = 1.75
    out = V.td_lambda_return_estimate(0.5, 0.5, nv, r, flags(0, 1, 0), flags(0, 1, 0), **kw)
    torch.testing.assert_close(out, col(1.75, 1.0, 5.0))
    # truncated at t=1: G1 = 1 + .5*4 = 3, G0 = 1 + .5*(.5*2 + .5*3) = 2.25
    out = V.td_lambda_return_estimate(0.5, 0.5, nv, r, flags(0, 1, 0), flags(0, 0, 0), **kw)
    torch.testing.assert_close(out, col(2.25, 3.0, 5.0))
    # TD(1): G2 = 5, G1 = 1 + .5*5 = 3.5, G0 = 1 + .5*3.5 = 2.75
    out = V.td1_return_estimate(0.5, nv, r, flags(0, 0, 0), flags(0, 0, 0), **kw)
    torch.testing.assert_close(out, col(2.75, 3.5, 5.0))


@pytest.mark.parametrize("method", METHODS)
def test_gae_hand(method):
    v, nv, r = col(1, 1, 1), col(2, 4, 8), col(1, 1, 1)
    # delta = [1 + 1 - 1, 1 + 2 - 1, 1 + 4 - 1] = [1, 2, 4]; gamma*lambda = .25
    # A2 = 4, A1 = 2 + .25*4 = 3, A0 = 1 + .25*3 = 1.75
    adv, target = V.generalized_advantage_estimate(
        0.5, 0.5, v, nv, r, flags(0, 0, 0), flags(0, 0, 0), method=method
    )
    torch.testing.assert_close(adv, col(1.75, 3.0, 4.0))
    torch.testing.assert_close(target, col(2.75, 4.0, 5.0))
    # terminated at t=1: delta1 = 1 + 0 - 1 = 0, no carry into t=1: A = [1, 0, 4]
    adv, _ = V.generalized_advantage_estimate(
        0.5, 0.5, v, nv, r, flags(0, 1, 0), flags(0, 1, 0), method=method
    )
    torch.testing.assert_close(adv, col(1.0, 0.0, 4.0))
    # truncated at t=1: delta1 = 2 (bootstraps), carry still cut: A = [1 + .25*2, 2, 4]
    adv, _ = V.generalized_advantage_estimate(
        0.5, 0.5, v, nv, r, flags(0, 1, 0), flags(0, 0, 0), method=method
    )
    torch.testing.assert_close(adv, col(1.5, 2.0, 4.0))


def test_n_step_hand():
    r, nv = col(1, 1, 1, 1), col(2, 4, 8, 16)
    none = flags(0, 0, 0, 0)
    # n=2: G0 = 1 + .5 + .25*4 = 2.5, G1 = 1 + .5 + .25*8 = 3.5, G2 = 1 + .5 + .25*16 = 5.5,
    # G3 = 1 + .5*16 = 9 (window end)
    out = V.n_step_return(0.5, 2, nv, r, none, none)
    torch.testing.assert_close(out, col(2.5, 3.5, 5.5, 9.0))
    # terminated at t=1: G0 = 1 + .5*(1 + 0) = 1.5, G1 = 1
    ends = flags(0, 1, 0, 0)
    out = V.n_step_return(0.5, 2, nv, r, ends, ends)
    torch.testing.assert_close(out, col(1.5, 1.0, 5.5, 9.0))
    # truncated at t=1: G0 = 1 + .5*(1 + .5*4) = 2.5, G1 = 1 + .5*4 = 3
    out = V.n_step_return(0.5, 2, nv, r, ends, none)
    torch.testing.assert_close(out, col(2.5, 3.0, 5.5, 9.0))


def test_discounted_cumsum_hand():
    # y2 = 3, y1 = 2 + .5*3 = 3.5, y0 = 1 + 0*3.5 = 1
    x = col(1, 2, 3)
    d = col(0.0, 0.5, 0.5)
    for method in METHODS:
        torch.testing.assert_close(V.discounted_cumsum(x, d, method=method), col(1, 3.5, 3))


def test_terminal_next_value_does_not_leak():
    # A terminated step's next_value may be garbage (inf): it must not reach the target.
    nv = col(1.0, float("inf"))
    ends = flags(0, 1)
    out = V.td_lambda_return_estimate(0.9, 0.5, nv, col(1, 1), ends, ends)
    assert torch.isfinite(out).all()
    adv, _ = V.generalized_advantage_estimate(0.9, 0.5, col(0, 0), nv, col(1, 1), ends, ends)
    assert torch.isfinite(adv).all()
    assert torch.isfinite(V.n_step_return(0.9, 3, nv, col(1, 1), ends, ends)).all()


# ---------------------------------------------------------------- properties
trajectories = st.integers(1, 9).flatmap(
    lambda T: st.tuples(
        st.lists(st.floats(-5, 5, width=32), min_size=T, max_size=T),
        st.lists(st.floats(-5, 5, width=32), min_size=T, max_size=T),
        st.lists(st.floats(-5, 5, width=32), min_size=T, max_size=T),
        st.lists(st.sampled_from(["-", "trunc", "term"]), min_size=T, max_size=T),
    )
)


def unpack(traj):
    r, v, nv, ends = traj
    done = flags(*[e != "-" for e in ends])
    term = flags(*[e == "term" for e in ends])
    return col(*r), col(*v), col(*nv), done, term


@settings(max_examples=40, deadline=None)
@given(traj=trajectories, lmbda=st.floats(0, 1), method=st.sampled_from(METHODS))
def test_gamma_zero_gives_reward(traj, lmbda, method):
    r, v, nv, done, term = unpack(traj)
    torch.testing.assert_close(
        V.td_lambda_return_estimate(0.0, lmbda, nv, r, done, term, method=method), r
    )
    _, target = V.generalized_advantage_estimate(0.0, lmbda, v, nv, r, done, term, method=method)
    torch.testing.assert_close(target, r)
    torch.testing.assert_close(V.n_step_return(0.0, 3, nv, r, done, term), r)
    torch.testing.assert_close(V.td0_return_estimate(0.0, nv, r, term), r)


@settings(max_examples=40, deadline=None)
@given(traj=trajectories, gamma=st.floats(0, 1), method=st.sampled_from(METHODS))
def test_lambda_limits(traj, gamma, method):
    r, v, nv, done, term = unpack(traj)
    td0 = V.td0_return_estimate(gamma, nv, r, term)
    # lambda = 0 is TD(0)
    out = V.td_lambda_return_estimate(gamma, 0.0, nv, r, done, term, method=method)
    torch.testing.assert_close(out, td0, atol=1e-5, rtol=1e-5)
    adv, _ = V.generalized_advantage_estimate(gamma, 0.0, v, nv, r, done, term, method=method)
    torch.testing.assert_close(adv, td0 - v, atol=1e-5, rtol=1e-5)
    # lambda = 1 is the Monte-Carlo return bootstrapped at the trajectory / window end
    mc = ref_monte_carlo(gamma, nv, r, done, term)
    out = V.td_lambda_return_estimate(gamma, 1.0, nv, r, done, term, method=method)
    torch.testing.assert_close(out, mc, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(
        V.td1_return_estimate(gamma, nv, r, done, term), mc, atol=1e-4, rtol=1e-5
    )
    # GAE(lambda = 1) + V telescopes to the same Monte-Carlo return when the values are
    # consistent along a trajectory: V(s_{t+1}) == next_value[t] unless done[t].
    v = torch.cat([v[:1], torch.where(done[:-1], v[1:], nv[:-1])], 0)
    _, target = V.generalized_advantage_estimate(gamma, 1.0, v, nv, r, done, term, method=method)
    torch.testing.assert_close(target, mc, atol=1e-4, rtol=1e-5)


@settings(max_examples=40, deadline=None)
@given(traj=trajectories, gamma=st.floats(0, 1), n=st.integers(1, 12))
def test_n_step_matches_definition(traj, gamma, n):
    r, _, nv, done, term = unpack(traj)
    out = V.n_step_return(gamma, n, nv, r, done, term)
    torch.testing.assert_close(out, ref_n_step(gamma, n, nv, r, done, term), atol=1e-4, rtol=1e-5)
    if n == 1:
        torch.testing.assert_close(out, V.td0_return_estimate(gamma, nv, r, term))


@pytest.mark.parametrize("method", ["matrix", "associative"])
@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    gamma=st.floats(0, 1),
    lmbda=st.floats(0, 1),
    T=st.sampled_from([1, 2, 7, 16, 33]),
)
def test_scan_equals_matrix_and_associative(method, seed, gamma, lmbda, T):
    # Every T: powers of two and not (the associative rounds pad past T), and T = 1.
    r, v, nv, done, term = random_inputs(seed, batch=(2, 3), T=T)
    a = V.td_lambda_return_estimate(gamma, lmbda, nv, r, done, term, method="scan")
    b = V.td_lambda_return_estimate(gamma, lmbda, nv, r, done, term, method=method)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    a, _ = V.generalized_advantage_estimate(gamma, lmbda, v, nv, r, done, term, method="scan")
    b, _ = V.generalized_advantage_estimate(gamma, lmbda, v, nv, r, done, term, method=method)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_associative_by_hand():
    # y_t = x_t + d_t y_{t+1} over T = 5 with a cut at t = 2 (d_2 = 0).
    x = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0]).unsqueeze(-1)
    d = torch.tensor([0.5, 0.5, 0.0, 0.5, 0.5]).unsqueeze(-1)
    y = V.discounted_cumsum(x, d, time_dim=0, method="associative")
    # y_4 = 5, y_3 = 4 + 2.5 = 6.5, y_2 = 3, y_1 = 2 + 1.5 = 3.5, y_0 = 1 + 1.75 = 2.75
    torch.testing.assert_close(y.squeeze(-1), torch.tensor([2.75, 3.5, 3.0, 6.5, 5.0]))


@pytest.mark.parametrize("method", METHODS)
def test_time_major_equals_batch_major(method):
    r, v, nv, done, term = random_inputs(1, batch=(4,), T=5)
    tm = [x.transpose(0, 1) for x in (r, v, nv, done, term)]
    bm_ret = V.td_lambda_return_estimate(0.9, 0.7, nv, r, done, term, method=method)
    tm_ret = V.td_lambda_return_estimate(
        0.9, 0.7, tm[2], tm[0], tm[3], tm[4], time_dim=0, method=method
    )
    torch.testing.assert_close(tm_ret.transpose(0, 1), bm_ret)
    bm_adv, _ = V.generalized_advantage_estimate(0.9, 0.7, v, nv, r, done, term, method=method)
    tm_adv, _ = V.generalized_advantage_estimate(0.9, 0.7, *tm[1:3], tm[0], *tm[3:], time_dim=0)
    torch.testing.assert_close(tm_adv.transpose(0, 1), bm_adv)
    bm_n = V.n_step_return(0.9, 3, nv, r, done, term)
    tm_n = V.n_step_return(0.9, 3, tm[2], tm[0], tm[3], tm[4], time_dim=0)
    torch.testing.assert_close(tm_n.transpose(0, 1), bm_n)


def test_float_flags_accepted():
    r, v, nv, done, term = random_inputs(2)
    a = V.td_lambda_return_estimate(0.9, 0.7, nv, r, done, term)
    b = V.td_lambda_return_estimate(0.9, 0.7, nv, r, done.float(), term.float())
    torch.testing.assert_close(a, b)


def test_gradients_flow_to_values():
    r, v, nv, done, term = random_inputs(3, batch=(), T=4, p_done=0.0)
    nv = nv.requires_grad_()
    V.td_lambda_return_estimate(0.9, 0.5, nv, r, done, term).sum().backward()
    assert nv.grad is not None and nv.grad.abs().sum() > 0


# ---------------------------------------------------------------- errors
def test_shape_mismatch_raises():
    r, v, nv, done, term = random_inputs(0)
    with pytest.raises(ValueError, match="done has shape"):
        V.td_lambda_return_estimate(0.9, 0.9, nv, r, done[..., 0], term)
    with pytest.raises(ValueError, match="value has shape"):
        V.generalized_advantage_estimate(0.9, 0.9, v[:, :-1], nv, r, done, term)
    with pytest.raises(ValueError, match="terminated has shape"):
        V.td0_return_estimate(0.9, nv, r, term[0])
    with pytest.raises(ValueError, match="time_dim"):
        V.td_lambda_return_estimate(0.9, 0.9, nv, r, done, term, time_dim=3)
    with pytest.raises(ValueError, match="method"):
        V.td_lambda_return_estimate(0.9, 0.9, nv, r, done, term, method="fft")
    with pytest.raises(ValueError, match="gamma"):
        V.td_lambda_return_estimate(torch.ones(2), 0.9, nv, r, done, term)
    with pytest.raises(ValueError, match="n must be"):
        V.n_step_return(0.9, 0, nv, r, done, term)
    with pytest.raises(TypeError, match="reward must be a tensor"):
        V.td0_return_estimate(0.9, nv, [1.0], term)


# ---------------------------------------------------------------- TorchRL parity
@pytest.fixture
def F():
    # Only the parity tests skip when TorchRL is absent.
    return pytest.importorskip(
        "torchrl.objectives.value.functional", reason="TorchRL parity needs torchrl"
    )


@pytest.mark.torchrl
@pytest.mark.parametrize("batch", [(), (3,), (2, 3)])
@pytest.mark.parametrize("method", METHODS)
def test_torchrl_parity(F, batch, method):
    for seed in range(5):
        r, v, nv, done, term = random_inputs(seed, batch=batch, T=8, p_done=0.25)
        gamma, lmbda = 0.95, 0.8
        ours = V.td0_return_estimate(gamma, nv, r, term)
        torch.testing.assert_close(
            ours, F.td0_return_estimate(gamma, nv, r, term), atol=1e-5, rtol=0
        )
        ours = V.td_lambda_return_estimate(gamma, lmbda, nv, r, done, term, method=method)
        for ref in (F.td_lambda_return_estimate, F.vec_td_lambda_return_estimate):
            torch.testing.assert_close(
                ours, ref(gamma, lmbda, nv, r, done, term), atol=1e-5, rtol=0
            )
        ours = V.td1_return_estimate(gamma, nv, r, done, term, method=method)
        for ref in (F.td1_return_estimate, F.vec_td1_return_estimate):
            torch.testing.assert_close(ours, ref(gamma, nv, r, done, term), atol=1e-5, rtol=0)
        adv, target = V.generalized_advantage_estimate(
            gamma, lmbda, v, nv, r, done, term, method=method
        )
        for ref in (F.generalized_advantage_estimate, F.vec_generalized_advantage_estimate):
            adv_ref, target_ref = ref(gamma, lmbda, v, nv, r, done, term)
            torch.testing.assert_close(adv, adv_ref, atol=1e-5, rtol=0)
            torch.testing.assert_close(target, target_ref, atol=1e-5, rtol=0)
        ours = V.td_lambda_advantage_estimate(gamma, lmbda, v, nv, r, done, term, method=method)
        ref = F.td_lambda_advantage_estimate(gamma, lmbda, v, nv, r, done, term)
        torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)


@pytest.mark.torchrl
def test_torchrl_parity_time_major_and_per_step_gamma(F):
    r, v, nv, done, term = random_inputs(7, batch=(3,), T=6)
    tm = [x.transpose(0, 1).contiguous() for x in (r, v, nv, done, term)]
    ours = V.td_lambda_return_estimate(0.9, 0.6, tm[2], tm[0], tm[3], tm[4], time_dim=0)
    ref = F.td_lambda_return_estimate(0.9, 0.6, tm[2], tm[0], tm[3], tm[4], time_dim=0)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)
    adv, _ = V.generalized_advantage_estimate(0.9, 0.6, *tm[1:3], tm[0], *tm[3:], time_dim=0)
    adv_ref, _ = F.generalized_advantage_estimate(0.9, 0.6, *tm[1:3], tm[0], *tm[3:], time_dim=0)
    torch.testing.assert_close(adv, adv_ref, atol=1e-5, rtol=0)
    # Per-step gamma and lambda (TorchRL's rolling_gamma=True convention).
    gamma = torch.rand(r.shape, generator=torch.Generator().manual_seed(0))
    lmbda = torch.rand(r.shape, generator=torch.Generator().manual_seed(1))
    for method in METHODS:
        ours = V.td_lambda_return_estimate(gamma, lmbda, nv, r, done, term, method=method)
        ref = F.td_lambda_return_estimate(gamma, lmbda, nv, r, done, term)
        torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)


# ---------------------------------------------------------------- vmap and compile
@pytest.mark.parametrize("method", METHODS)
def test_vmap_over_batch_and_gamma(method):
    r, v, nv, done, term = random_inputs(4, batch=(5,), T=6)

    def estimates(gamma, r, v, nv, done, term):
        ret = V.td_lambda_return_estimate(gamma, 0.8, nv, r, done, term, method=method)
        adv, _ = V.generalized_advantage_estimate(gamma, 0.8, v, nv, r, done, term, method=method)
        n = V.n_step_return(gamma, 3, nv, r, done, term)
        return ret, adv, n

    batched = estimates(0.9, r, v, nv, done, term)
    mapped = torch.func.vmap(estimates, in_dims=(None, 0, 0, 0, 0, 0))(0.9, r, v, nv, done, term)
    for a, b in zip(mapped, batched):
        torch.testing.assert_close(a, b)
    # one gamma per member (e.g. vmapping over hyperparameters)
    gammas = torch.linspace(0.5, 0.99, 5)
    mapped = torch.func.vmap(estimates)(gammas, r, v, nv, done, term)
    for i in range(5):
        one = estimates(float(gammas[i]), r[i], v[i], nv[i], done[i], term[i])
        for a, b in zip(mapped, one):
            torch.testing.assert_close(a[i], b)


def test_compile_fullgraph():
    torch._dynamo.reset()
    r, v, nv, done, term = random_inputs(5, batch=(2,), T=5)

    def all_estimates(r, v, nv, done, term):
        return (
            V.td0_return_estimate(0.9, nv, r, term),
            V.td_lambda_return_estimate(0.9, 0.8, nv, r, done, term),
            V.td_lambda_return_estimate(0.9, 0.8, nv, r, done, term, method="matrix"),
            V.generalized_advantage_estimate(0.9, 0.8, v, nv, r, done, term)[0],
            V.generalized_advantage_estimate(0.9, 0.8, v, nv, r, done, term, method="associative")[
                0
            ],
            V.n_step_return(0.9, 3, nv, r, done, term),
        )

    explanation = torch._dynamo.explain(all_estimates)(r, v, nv, done, term)
    assert explanation.graph_break_count == 0
    torch._dynamo.reset()
    compiled = torch.compile(all_estimates, fullgraph=True)
    for a, b in zip(compiled(r, v, nv, done, term), all_estimates(r, v, nv, done, term)):
        torch.testing.assert_close(a, b)


# ---------------------------------------------------------------- layout (issue #12)
def test_missing_trailing_singleton_raises_with_the_fix():
    r, v, nv, done, term = (x[..., 0] for x in random_inputs(0, batch=(4,), T=6))
    fix = r"\[\*batch, T, 1\] layout.*call reward.unsqueeze\(-1\)"
    with pytest.raises(
        ValueError, match="generalized_advantage_estimate: reward has shape .*" + fix
    ):
        V.generalized_advantage_estimate(0.9, 0.9, v, nv, r, done, term)
    with pytest.raises(ValueError, match="td_lambda_return_estimate: reward has shape"):
        V.td_lambda_return_estimate(0.9, 0.9, nv, r, done, term)
    with pytest.raises(ValueError, match="td_lambda_advantage_estimate: reward has shape"):
        V.td_lambda_advantage_estimate(0.9, 0.9, v, nv, r, done, term)
    with pytest.raises(ValueError, match="td1_return_estimate: reward has shape"):
        V.td1_return_estimate(0.9, nv, r, done, term)
    with pytest.raises(ValueError, match="td1_advantage_estimate: reward has shape"):
        V.td1_advantage_estimate(0.9, v, nv, r, done, term)
    with pytest.raises(ValueError, match="n_step_return: reward has shape"):
        V.n_step_return(0.9, 2, nv, r, done, term)
    with pytest.raises(ValueError, match=r"discounted_cumsum: x has shape \(4, 6\).*x.unsqueeze"):
        V.discounted_cumsum(r, 0.9)


@pytest.mark.parametrize("method", METHODS)
def test_explicit_time_last_equals_trailing_singleton(method):
    r, v, nv, done, term = random_inputs(5, batch=(4,), T=6)
    want, _ = V.generalized_advantage_estimate(0.9, 0.8, v, nv, r, done, term, method=method)
    flat = (x[..., 0] for x in (v, nv, r, done, term))
    got, _ = V.generalized_advantage_estimate(0.9, 0.8, *flat, time_dim=-1, method=method)
    torch.testing.assert_close(got, want[..., 0])


def test_gae_hand_values_with_trailing_singleton():
    # T = 2, gamma = 0.5, lambda = 1, no done: delta = r + 0.5 nv - v; A_1 = delta_1,
    # A_0 = delta_0 + 0.5 A_1.
    r, v, nv = col(1.0, 2.0), col(0.0, 1.0), col(2.0, 4.0)
    f = flags(0, 0)
    adv, target = V.generalized_advantage_estimate(0.5, 1.0, v, nv, r, f, f)
    # delta_0 = 1 + 1 - 0 = 2, delta_1 = 2 + 2 - 1 = 3, A_0 = 2 + 1.5 = 3.5
    torch.testing.assert_close(adv, col(3.5, 3.0))
    torch.testing.assert_close(target, col(3.5, 4.0))


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan")])
def test_gamma_and_lambda_outside_unit_interval(bad):
    r, v, nv, done, term = random_inputs(0)
    with pytest.raises(
        ValueError, match=r"generalized_advantage_estimate: gamma must be in \[0, 1\]"
    ):
        V.generalized_advantage_estimate(bad, 0.9, v, nv, r, done, term)
    with pytest.raises(ValueError, match=r"td_lambda_return_estimate: lmbda must be in \[0, 1\]"):
        V.td_lambda_return_estimate(0.9, bad, nv, r, done, term)
    with pytest.raises(ValueError, match=r"td0_return_estimate: gamma must be in \[0, 1\]"):
        V.td0_return_estimate(bad, nv, r, term)


def test_dtype_errors():
    r, v, nv, done, term = random_inputs(0)
    with pytest.raises(
        TypeError, match=r"n_step_return: reward must be a floating tensor, got torch.int64"
    ):
        V.n_step_return(0.9, 2, nv, r.long(), done, term)
    with pytest.raises(
        TypeError, match="generalized_advantage_estimate: next_value has dtype torch.float64"
    ):
        V.generalized_advantage_estimate(0.9, 0.9, v, nv.double(), r, done, term)
    with pytest.raises(TypeError, match="td0_return_estimate: a tensor gamma must be floating"):
        V.td0_return_estimate(torch.tensor(1), nv, r, term)
    with pytest.raises(
        TypeError, match="td_lambda_return_estimate: done must be a bool, integer or float"
    ):
        V.td_lambda_return_estimate(0.9, 0.9, nv, r, done.to(torch.complex64), term)
