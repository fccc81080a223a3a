"""Tests for funcrl.buffers: ring storage, sampling, prioritized replay, n-step, checkpoints."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from funcrl import buffers
from funcrl._compat import torch_release
from funcrl.record import Record


def transitions(n: int, start: float = 0.0, obs_dim: int = 3) -> Record:
    """``n`` transitions whose reward is ``start + i`` (so slots can be identified)."""
    r = torch.arange(n, dtype=torch.float32).add(start).view(n, 1)
    return Record(
        {
            "observation": r.expand(n, obs_dim).clone(),
            "action": -r,
            ("next", "observation"): r.expand(n, obs_dim) + 1,
            ("next", "reward"): r,
            ("next", "done"): torch.zeros(n, 1, dtype=torch.bool),
            ("next", "terminated"): torch.zeros(n, 1, dtype=torch.bool),
            ("next", "truncated"): torch.zeros(n, 1, dtype=torch.bool),
        },
        batch_ndim=1,
    )


def rewards(state: buffers.ReplayState) -> list[float]:
    return state.storage["next", "reward"].squeeze(-1).tolist()


# ---------------------------------------------------------------------------- init / add


def test_init_copies_keys_dtypes_and_trailing_shapes():
    one = transitions(1)[0]
    for example in (one, transitions(4), transitions(6).reshape(2, 3)):
        s = buffers.init(10, example)
        assert s.storage.batch_size == torch.Size([10])
        assert s.storage["observation"].shape == (10, 3)
        assert s.storage["next", "done"].dtype == torch.bool
        assert s.storage["next", "reward"].shape == (10, 1)
        assert s.cursor.item() == 0 and s.size.item() == 0
        assert s.cursor.dtype == torch.int64 and s.cursor.ndim == 0
        assert s.prioritized == ()
        assert buffers.capacity(s) == 10


def test_init_rejects_bad_arguments():
    with pytest.raises(ValueError, match="capacity"):
        buffers.init(0, transitions(1))
    with pytest.raises(TypeError, match="Record"):
        buffers.init(4, {"observation": torch.zeros(3)})
    with pytest.raises(ValueError, match="eps"):
        buffers.init(4, transitions(1), prioritized=True, eps=0.0)


def test_add_ring_wraps_and_is_pure():
    s0 = buffers.init(5, transitions(1))
    s1 = buffers.add(s0, transitions(3))
    assert rewards(s1) == [0, 1, 2, 0, 0]
    assert (s1.cursor.item(), s1.size.item()) == (3, 3)
    s2 = buffers.add(s1, transitions(4, start=10))
    # slots 3, 4 then wrap to 0, 1
    assert rewards(s2) == [12, 13, 2, 10, 11]
    assert (s2.cursor.item(), s2.size.item()) == (2, 5)
    # pure: the earlier states are unchanged
    assert rewards(s1) == [0, 1, 2, 0, 0] and s1.cursor.item() == 3
    assert rewards(s0) == [0, 0, 0, 0, 0] and s0.size.item() == 0


def test_add_single_transition_and_multi_dim_batch():
    s = buffers.init(4, transitions(1))
    s = buffers.add(s, transitions(1, start=7)[0])  # batch_ndim 0
    assert rewards(s)[0] == 7 and s.size.item() == 1
    s = buffers.add(s, transitions(6, start=20).reshape(2, 3))  # flattened row-major
    assert rewards(s) == [23, 24, 25, 22]  # rows 22..25 into slots 3, 0, 1, 2
    assert (s.cursor.item(), s.size.item()) == (3, 4)


def test_add_larger_than_capacity_keeps_last_rows():
    s = buffers.init(4, transitions(1))
    s = buffers.add(s, transitions(1, start=100))
    s = buffers.add(s, transitions(10))
    # cursor was 1; 10 rows -> rows 6..9 land in slots (1+6..1+9) % 4 = 3, 0, 1, 2
    assert rewards(s) == [7, 8, 9, 6]
    assert (s.cursor.item(), s.size.item()) == (3, 4)


def test_add_inplace_matches_pure():
    pure = buffers.init(6, transitions(1), prioritized=True)
    fast = buffers.init(6, transitions(1), prioritized=True)
    for i, n in enumerate([2, 5, 1, 9, 3]):
        batch = transitions(n, start=10 * i)
        pure = buffers.add(pure, batch)
        out = buffers.add_(fast, batch)
        assert out is fast
    assert pure.storage.equal(fast.storage)
    assert pure.cursor.item() == fast.cursor.item() and pure.size.item() == fast.size.item()
    assert torch.equal(pure.prioritized.priority, fast.prioritized.priority)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 7), st.lists(st.integers(0, 12), min_size=1, max_size=8))
def test_add_matches_a_python_ring(capacity, sizes):
    s = buffers.init(capacity, transitions(1))
    ring = [0.0] * capacity
    cursor, size, counter = 0, 0, 0
    for n in sizes:
        batch = transitions(n, start=counter)
        for i in range(n):
            ring[cursor] = float(counter + i)
            cursor = (cursor + 1) % capacity
        counter += n
        size = min(size + n, capacity)
        s = buffers.add_(s, batch) if n % 2 else buffers.add(s, batch)
    assert rewards(s) == ring
    assert (s.cursor.item(), s.size.item()) == (cursor, size)


@pytest.mark.parametrize("inplace", [False, True])
def test_add_mismatch_raises_and_leaves_data_untouched(inplace):
    add = buffers.add_ if inplace else buffers.add
    s = buffers.add(buffers.init(4, transitions(1)), transitions(2, start=5))
    before = s.storage.clone()
    cursor, size = s.cursor.item(), s.size.item()
    good = transitions(2)
    bad_shape = good.set("observation", torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"'observation'.*\(2, 4\).*\(3,\)"):
        add(s, bad_shape)
    bad_dtype = good.set(("next", "reward"), torch.zeros(2, 1, dtype=torch.float64))
    with pytest.raises(TypeError, match=r"\('next', 'reward'\).*float64.*float32"):
        add(s, bad_dtype)
    with pytest.raises(KeyError, match=r"missing \['action'\]"):
        add(s, good.exclude("action"))
    with pytest.raises(KeyError, match=r"unexpected \['extra'\]"):
        add(s, good.set("extra", torch.zeros(2)))
    # a bad leaf that comes *after* good ones in key order must not write the good ones
    bad_last = good.set(("next", "truncated"), torch.zeros(2, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="truncated"):
        add(s, bad_last)
    assert s.storage.equal(before)
    assert (s.cursor.item(), s.size.item()) == (cursor, size)


# ---------------------------------------------------------------------------- sampling


def test_sample_only_filled_slots_and_uniform():
    s = buffers.add(buffers.init(100, transitions(1)), transitions(5))
    torch.manual_seed(0)
    batch = buffers.sample(s, 5000)
    assert batch.batch_size == torch.Size([5000])
    assert batch["index"].dtype == torch.int64
    assert int(batch["index"].max()) <= 4
    # the rows are the stored ones
    assert torch.equal(batch["next", "reward"].squeeze(-1), batch["index"].float())
    counts = torch.bincount(batch["index"], minlength=5).float()
    # chi-square with 4 dof: 20 is far beyond the 0.999 quantile (18.5)
    chi2 = ((counts - 1000) ** 2 / 1000).sum()
    assert chi2 < 20
    assert "priority_weight" not in batch


def test_sample_reproducible_with_generator_and_global_seed():
    s = buffers.add(buffers.init(50, transitions(1)), transitions(50))
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(
        buffers.sample(s, 32, generator=g1)["index"], buffers.sample(s, 32, generator=g2)["index"]
    )
    torch.manual_seed(7)
    a = buffers.sample(s, 32)["index"]
    torch.manual_seed(7)
    assert torch.equal(a, buffers.sample(s, 32)["index"])


def test_sample_with_key_same_key_same_batch_and_matches_hand_computed_slots():
    from funcrl import random as fr

    for prioritized in (False, True):
        s = buffers.add(buffers.init(64, transitions(1), prioritized=prioritized), transitions(40))
        k = fr.key(3)
        a, b = buffers.sample(s, 32, key=k), buffers.sample(s, 32, key=k)
        assert a.equal(b)
        # A different key gives a different batch; the global RNG is not touched.
        torch.manual_seed(0)
        before = torch.get_rng_state()
        c = buffers.sample(s, 32, key=fr.fold_in(k, 1))
        assert torch.equal(torch.get_rng_state(), before)
        assert not torch.equal(a["index"], c["index"])
        u = fr.uniform(k, (32,), torch.float64)
        if not prioritized:
            # Slot = floor(u * size) with the key's own float64 uniforms.
            assert torch.equal(a["index"], (u * 40).long())
        else:
            # Equal priorities: the inverse CDF over 40 equal steps picks floor(u * 40) too.
            assert torch.equal(a["index"], (u * 40).long())
            assert torch.equal(a["priority_weight"], torch.ones(32))
        assert torch.equal(a["next", "reward"].squeeze(-1), a["index"].float())


def test_sample_with_key_prioritized_follows_priorities():
    from funcrl import random as fr

    s = buffers.add(buffers.init(8, transitions(1), prioritized=True, alpha=1.0), transitions(4))
    s = buffers.update_priorities(s, torch.arange(4), torch.tensor([0.0, 0.0, 3.0, 1.0]))
    idx = buffers.sample(s, 4000, key=fr.key(0))["index"]
    counts = torch.bincount(idx, minlength=4).float() / 4000
    # eps = 1e-8 keeps slots 0 and 1 alive but practically never drawn; 3:1 for slots 2 and 3.
    assert counts[:2].sum() == 0
    assert abs(float(counts[2]) - 0.75) < 0.03


def test_sample_vmap_over_keys_equals_loop():
    from funcrl import random as fr

    keys = fr.split(fr.key(1), 5)
    for prioritized in (False, True):
        s = buffers.add(buffers.init(32, transitions(1), prioritized=prioritized), transitions(20))
        if prioritized:
            s = buffers.update_priorities(s, torch.arange(20), torch.arange(20.0))
        out = torch.func.vmap(lambda k, s=s: buffers.sample(s, 8, key=k), randomness="error")(keys)
        for i in range(5):
            assert out[i].equal(buffers.sample(s, 8, key=keys[i]))
        # Stacked buffers (one per seed) with their keys: the masked min under vmap.
        ss = tree_stack([s, buffers.add(s, transitions(3, start=100))])
        outs = torch.func.vmap(lambda st_, k: buffers.sample(st_, 8, key=k))(ss, keys[:2])
        assert outs[0].equal(buffers.sample(s, 8, key=keys[0]))
        assert outs[1].equal(
            buffers.sample(buffers.add(s, transitions(3, start=100)), 8, key=keys[1])
        )


def tree_stack(states):
    import optree

    return optree.tree_map(lambda *xs: torch.stack(xs), *states, namespace="funcrl")


def test_sample_with_key_compile_fullgraph_same_bits():
    from funcrl import random as fr

    torch._dynamo.reset()
    for prioritized in (False, True):
        s = buffers.add(buffers.init(16, transitions(1), prioritized=prioritized), transitions(11))
        f = torch.compile(lambda st_, k: buffers.sample(st_, 8, key=k), fullgraph=True)
        for seed in (0, 1):  # a new key value is an input, not a recompile
            k = fr.key(seed)
            assert f(s, k).equal(buffers.sample(s, 8, key=k))


def test_sample_empty_raises():
    with pytest.raises(RuntimeError, match="empty"):
        buffers.sample(buffers.init(4, transitions(1)), 2)
    with pytest.raises(ValueError, match="batch_size"):
        buffers.sample(buffers.add(buffers.init(4, transitions(1)), transitions(1)), 0)


def test_sample_and_add_compile_fullgraph():
    torch._dynamo.reset()
    s = buffers.add(buffers.init(8, transitions(1)), transitions(5))
    add_c = torch.compile(buffers.add, fullgraph=True)
    s2 = add_c(s, transitions(4, start=10))
    assert rewards(s2) == [13, 1, 2, 3, 4, 10, 11, 12]
    assert (s2.cursor.item(), s2.size.item()) == (1, 8)
    sample_c = torch.compile(lambda st_: buffers.sample(st_, 16), fullgraph=True)
    torch.manual_seed(0)
    out = sample_c(s2)
    assert out.batch_size == torch.Size([16])
    assert int(out["index"].max()) < 8
    assert torch.equal(
        out["next", "reward"].squeeze(-1), s2.storage["next", "reward"][out["index"], 0]
    )


def test_add_under_vmap_over_stacked_buffers():
    states = [buffers.init(4, transitions(1)) for _ in range(3)]
    stacked = buffers.ReplayState(
        Record.stack([s.storage for s in states]),
        torch.stack([s.cursor for s in states]),
        torch.stack([s.size for s in states]),
    )
    batch = Record.stack([transitions(2, start=10 * i) for i in range(3)])
    out = torch.func.vmap(buffers.add)(stacked, batch)
    for i in range(3):
        assert out.storage["next", "reward"][i, :, 0].tolist() == [10 * i, 10 * i + 1, 0, 0]
    assert out.cursor.tolist() == [2, 2, 2] and out.size.tolist() == [2, 2, 2]


# ---------------------------------------------------------------------------- prioritized


def test_prioritized_new_items_get_max_priority():
    alpha, eps = 0.5, 1e-2
    s = buffers.init(6, transitions(1), prioritized=True, alpha=alpha, eps=eps)
    s = buffers.add(s, transitions(2))
    expected = (1.0 + eps) ** alpha  # default raw priority 1.0 before any update
    assert torch.allclose(s.prioritized.priority[:2], torch.tensor([expected] * 2))
    assert s.prioritized.priority[2:].eq(0).all()
    s = buffers.update_priorities(s, torch.tensor([0, 1]), torch.tensor([[4.0], [0.25]]))
    assert torch.allclose(
        s.prioritized.priority[:2], torch.tensor([(4 + eps) ** alpha, (0.25 + eps) ** alpha])
    )
    assert s.prioritized.max_priority.item() == 4.0
    s = buffers.add(s, transitions(1))
    assert math.isclose(s.prioritized.priority[2].item(), (4 + eps) ** alpha, rel_tol=1e-6)
    # the max follows the largest raw priority ever given (TorchRL's default)
    s = buffers.update_priorities(s, torch.tensor([0]), torch.tensor([1.0]))
    assert s.prioritized.max_priority.item() == 4.0
    # the first update sets the max even below 1.0 (TorchRL: None -> max of the update)
    s2 = buffers.add(buffers.init(4, transitions(1), prioritized=True), transitions(2))
    s2 = buffers.update_priorities(s2, torch.tensor([0, 1]), torch.tensor([0.1, 0.3]))
    assert math.isclose(s2.prioritized.max_priority.item(), 0.3, rel_tol=1e-6)


def test_prioritized_sampling_frequencies_and_weights():
    alpha, beta, eps = 0.7, 0.5, 1e-6
    s = buffers.init(8, transitions(1), prioritized=True, alpha=alpha, beta=beta, eps=eps)
    s = buffers.add(s, transitions(4))
    raw = torch.tensor([1.0, 2.0, 4.0, 8.0])
    s = buffers.update_priorities(s, torch.arange(4), raw)
    p = (raw + eps) ** alpha
    torch.manual_seed(0)
    batch = buffers.sample(s, 20000)
    idx = batch["index"]
    assert int(idx.max()) <= 3  # empty slots have probability 0
    freq = torch.bincount(idx, minlength=4).float() / idx.numel()
    assert torch.allclose(freq, p / p.sum(), atol=0.015)
    # hand-computed weights: (N P(i))^-beta / max_j (N P(j))^-beta = (p_i / p_min)^-beta
    w = (p[idx] / p.min()) ** -beta
    assert torch.allclose(batch["priority_weight"], w, rtol=1e-5)
    assert batch["priority_weight"].shape == (20000,)
    assert batch["priority_weight"].max() <= 1.0
    # beta override and set_beta agree
    torch.manual_seed(1)
    a = buffers.sample(s, 64, beta=1.0)
    torch.manual_seed(1)
    b = buffers.sample(buffers.set_beta(s, 1.0), 64)
    assert torch.allclose(a["priority_weight"], b["priority_weight"])
    assert torch.allclose(a["priority_weight"], p.min() / p[a["index"]])


def test_prioritized_alpha_zero_is_uniform_with_unit_weights():
    s = buffers.init(10, transitions(1), prioritized=True, alpha=0.0)
    s = buffers.add(s, transitions(10))
    s = buffers.update_priorities(s, torch.arange(10), torch.linspace(0.1, 5, 10))
    out = buffers.sample(s, 100)
    assert torch.allclose(out["priority_weight"], torch.ones(100))


def test_update_priorities_inplace_matches_pure_and_validates():
    s = buffers.add(buffers.init(5, transitions(1), prioritized=True), transitions(5))
    fast = buffers.load_state_dict(buffers.state_dict(s))
    fast = buffers.ReplayState(
        fast.storage, fast.cursor.clone(), fast.size.clone(),
        buffers.PriorityState(*[t.clone() for t in fast.prioritized]),
    )  # fmt: skip
    idx, pr = torch.tensor([4, 1]), torch.tensor([3.0, 0.5])
    pure = buffers.update_priorities(s, idx, pr)
    buffers.update_priorities_(fast, idx, pr)
    assert torch.equal(pure.prioritized.priority, fast.prioritized.priority)
    assert torch.equal(pure.prioritized.max_priority, fast.prioritized.max_priority)
    with pytest.raises(ValueError, match=r"priorities must have shape \[2\]"):
        buffers.update_priorities(s, idx, torch.ones(3))
    with pytest.raises(ValueError, match="indices must be a 1-d integer"):
        buffers.update_priorities(s, torch.ones(2), pr)
    with pytest.raises(ValueError, match="prioritized=True"):
        buffers.update_priorities(buffers.init(3, transitions(1)), idx, pr)


def test_prioritized_weights_match_torchrl():
    pytest.importorskip("torchrl", reason="parity with TorchRL's PrioritizedSampler")
    from torchrl.data import LazyTensorStorage, PrioritizedReplayBuffer
    from torchrl.data.replay_buffers.samplers import prioritized as trl_prioritized

    if getattr(trl_prioritized, "SumSegmentTreeFp32", None) is None:
        pytest.skip("TorchRL was installed without its C++ segment trees")

    alpha, beta, eps = 0.6, 0.4, 1e-8
    td = transitions(6).to_tensordict()
    rb = PrioritizedReplayBuffer(
        alpha=alpha, beta=beta, eps=eps, storage=LazyTensorStorage(10), batch_size=64
    )
    rb.extend(td)
    raw = torch.tensor([0.5, 1.0, 2.0, 3.0, 0.1, 7.0])
    rb.update_priority(torch.arange(6), raw)
    _, info = rb.sample(return_info=True)
    ref_idx, ref_w = torch.as_tensor(info["index"]), torch.as_tensor(info["priority_weight"])

    s = buffers.init(10, transitions(1), prioritized=True, alpha=alpha, beta=beta, eps=eps)
    s = buffers.update_priorities(buffers.add(s, transitions(6)), torch.arange(6), raw)
    p = s.prioritized.priority
    ours = (p[ref_idx] / p[:6].min()) ** -beta
    assert torch.allclose(ours, ref_w.float(), rtol=1e-5)
    # and the sampler itself produces the same weights for the indices it draws
    out = buffers.sample(s, 64)
    assert torch.allclose(out["priority_weight"], (p[out["index"]] / p[:6].min()) ** -beta)


# ---------------------------------------------------------------------------- n-step


def trajectory(rewards_, dones, truncs=None) -> Record:
    T = len(rewards_)
    r = torch.tensor(rewards_, dtype=torch.float32).view(T, 1)
    d = torch.tensor(dones, dtype=torch.bool).view(T, 1)
    tr = torch.zeros_like(d) if truncs is None else torch.tensor(truncs).view(T, 1)
    t = torch.arange(T, dtype=torch.float32).view(T, 1)
    return Record(
        {
            "observation": t,
            "action": t * 10,
            ("next", "observation"): t + 1,
            ("next", "reward"): r,
            ("next", "done"): d,
            ("next", "terminated"): d & ~tr,
            ("next", "truncated"): tr,
        },
        batch_ndim=1,
    )


def test_n_step_hand_computed():
    g = 0.5
    # episode 1: steps 0..2 ends by termination at 2; episode 2: steps 3..5 truncated at 5;
    # episode 3: steps 6..7 cut by the end of the data.
    traj = trajectory(
        [1, 2, 4, 8, 16, 32, 64, 128],
        [0, 0, 1, 0, 0, 1, 0, 0],
        [False, False, False, False, False, True, False, False],
    )
    out = buffers.n_step(traj, n=3, gamma=g)
    exp_r = [
        1 + g * 2 + g * g * 4,  # 0: window 0..2
        2 + g * 4,  # 1: stops at the termination at 2
        4,  # 2
        8 + g * 16 + g * g * 32,  # 3: window 3..5
        16 + g * 32,  # 4: stops at the truncation at 5
        32,
        64 + g * 128,  # 6: cut by the end of data
        128,
    ]
    assert torch.allclose(out["next", "reward"].squeeze(-1), torch.tensor(exp_r))
    last = [2, 2, 2, 5, 5, 5, 7, 7]
    assert out["steps_to_next_obs"].squeeze(-1).tolist() == [3, 2, 1, 3, 2, 1, 2, 1]
    assert out["steps_to_next_obs"].shape == (8, 1)
    assert out["next", "observation"].squeeze(-1).tolist() == [i + 1 for i in last]
    assert out["next", "terminated"].squeeze(-1).tolist() == [1, 1, 1, 0, 0, 0, 0, 0]
    assert out["next", "truncated"].squeeze(-1).tolist() == [0, 0, 0, 1, 1, 1, 0, 0]
    assert out["next", "done"].squeeze(-1).tolist() == [1, 1, 1, 1, 1, 1, 0, 0]
    assert torch.equal(out["observation"], traj["observation"])
    assert torch.equal(out["action"], traj["action"])


def test_n_step_one_is_identity_and_batch_dims():
    traj = trajectory([1, 2, 3, 4], [0, 1, 0, 0])
    out = buffers.n_step(traj, n=1, gamma=0.9)
    assert out.exclude("steps_to_next_obs").equal(traj)
    assert out["steps_to_next_obs"].eq(1).all()
    two = Record.stack([traj, trajectory([5, 6, 7, 8], [1, 0, 0, 1])])
    out2 = buffers.n_step(two, n=2, gamma=0.9)
    assert out2.batch_size == torch.Size([2, 4])
    assert torch.allclose(
        out2["next", "reward"][1].squeeze(-1), torch.tensor([5, 6 + 0.9 * 7, 7 + 0.9 * 8, 8])
    )
    with pytest.raises(ValueError, match=r"\('next', 'done'\)"):
        buffers.n_step(traj.set(("next", "done"), torch.zeros(4, dtype=torch.bool)), 2, 0.9)


@settings(max_examples=30, deadline=None)
@given(
    st.lists(st.tuples(st.floats(-5, 5), st.booleans()), min_size=1, max_size=12),
    st.integers(1, 5),
    st.floats(0.1, 1.0),
)
def test_n_step_matches_a_python_loop(steps, n, gamma):
    rs, ds = zip(*steps)
    traj = trajectory(list(rs), [int(d) for d in ds])
    out = buffers.n_step(traj, n=n, gamma=gamma)
    T = len(rs)
    for t in range(T):
        total, k = 0.0, 0
        while k < n and t + k < T:
            total += gamma**k * rs[t + k]
            k += 1
            if ds[t + k - 1]:
                break
        assert math.isclose(out["next", "reward"][t, 0].item(), total, rel_tol=1e-4, abs_tol=1e-4)
        assert out["steps_to_next_obs"][t, 0].item() == k
        assert out["next", "observation"][t, 0].item() == t + k
        assert out["next", "done"][t, 0].item() == ds[t + k - 1]


def test_n_step_matches_torchrl_multistep():
    pytest.importorskip("torchrl", reason="parity with TorchRL's MultiStep")
    from torchrl.data.postprocs import MultiStep

    torch.manual_seed(0)
    dones = [0, 0, 0, 1, 0, 0, 0, 0, 0, 1, 0, 0]
    traj = trajectory(torch.randn(12).tolist(), dones)
    ref = MultiStep(gamma=0.9, n_steps=3)(traj.to_tensordict())
    out = buffers.n_step(traj, n=3, gamma=0.9)
    assert torch.allclose(out["next", "reward"], ref["next", "reward"], atol=1e-6)
    assert torch.equal(out["next", "observation"], ref["next", "observation"])
    assert torch.equal(out["steps_to_next_obs"], ref["steps_to_next_obs"].view(12, 1))


@pytest.mark.xfail(
    torch_release() < (2, 13),
    reason="torch 2.11's C++ Inductor emits uncompilable code for n_step's padded masks",
    strict=True,
)
def test_n_step_compiles_and_vmaps():
    torch._dynamo.reset()
    traj = trajectory([1, 2, 3, 4, 5, 6], [0, 0, 1, 0, 0, 0])
    ref = buffers.n_step(traj, 3, 0.9)
    fn = torch.compile(lambda x: buffers.n_step(x, 3, 0.9), fullgraph=True)
    assert fn(traj).allclose(ref)
    stacked = Record.stack([traj, traj])
    out = torch.func.vmap(lambda x: buffers.n_step(x, 3, 0.9))(stacked)
    assert out[1].allclose(ref)


# ---------------------------------------------------------------------------- checkpoints


def test_save_load_resumes(tmp_path):
    s = buffers.init(6, transitions(1), prioritized=True, alpha=0.5)
    s = buffers.add(s, transitions(4))
    s = buffers.update_priorities(s, torch.tensor([1, 3]), torch.tensor([2.0, 5.0]))
    path = tmp_path / "buffer.pt"
    buffers.save(s, path)
    r = buffers.load(path)
    assert r.storage.equal(s.storage)
    for a, b in zip(r.prioritized, s.prioritized):
        assert torch.equal(a, b)
    # continuing from the loaded state matches continuing from the original
    a = buffers.add(s, transitions(5, start=50))
    b = buffers.add(r, transitions(5, start=50))
    assert a.storage.equal(b.storage) and a.cursor.item() == b.cursor.item()
    assert torch.equal(a.prioritized.priority, b.prioritized.priority)
    torch.manual_seed(0)
    x = buffers.sample(a, 10)
    torch.manual_seed(0)
    assert x.equal(buffers.sample(b, 10))
    uniform = buffers.add(buffers.init(3, transitions(1)), transitions(2))
    back = buffers.load_state_dict(buffers.state_dict(uniform))
    assert back.prioritized == () and back.storage.equal(uniform.storage)
    with pytest.raises(KeyError, match="cursor"):
        buffers.load_state_dict({"storage": {}, "size": torch.tensor(0)})


def test_prioritized_sample_masked_path_matches_the_eager_cpu_path(monkeypatch):
    # Under torch.compile or on an accelerator, sample() masks empty slots instead of slicing
    # the filled prefix (which needs a host read); both must draw the same batch.
    s = buffers.init(9, transitions(1), prioritized=True, alpha=0.7, beta=0.5)
    s = buffers.add(s, transitions(5))
    s = buffers.update_priorities(s, torch.arange(5), torch.tensor([1.0, 2, 3, 4, 5]))
    torch.manual_seed(0)
    fast = buffers.sample(s, 256)
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    torch.manual_seed(0)
    masked = buffers.sample(s, 256)
    assert torch.equal(fast["index"], masked["index"])
    assert torch.allclose(fast["priority_weight"], masked["priority_weight"])
    assert int(masked["index"].max()) <= 4


# ---------------------------------------------------------------------------- restore


def _filled(capacity: int, n: int, prioritized: bool = False) -> buffers.ReplayState:
    s = buffers.init(capacity, transitions(1)[0], prioritized=prioritized)
    return buffers.add(s, transitions(n))


def test_restore_smaller_capacity_keeps_newest_in_age_order_wrapped_cursor():
    # capacity 5 after 7 adds: slots hold rewards [5, 6, 2, 3, 4], cursor 2 (oldest = slot 2).
    s = _filled(5, 7)
    assert rewards(s) == [5.0, 6.0, 2.0, 3.0, 4.0] and int(s.cursor) == 2
    new, dropped = buffers.restore(s, buffers.init(3, transitions(1)[0]))
    assert rewards(new) == [4.0, 5.0, 6.0] and dropped == 2
    assert int(new.size) == 3 and int(new.cursor) == 0
    # The next add overwrites the oldest kept transition (reward 4), as in the original ring.
    assert rewards(buffers.add(new, transitions(1, start=7.0))) == [7.0, 5.0, 6.0]


def test_restore_larger_capacity_keeps_everything_and_cursor_after_newest():
    s = _filled(5, 7)
    new, dropped = buffers.restore(s, buffers.init(8, transitions(1)[0]))
    assert rewards(new) == [2.0, 3.0, 4.0, 5.0, 6.0, 0.0, 0.0, 0.0] and dropped == 0
    assert int(new.size) == 5 and int(new.cursor) == 5
    buffers.validate(new)


def test_restore_prioritized_carries_priorities_and_max():
    s = _filled(4, 6, prioritized=True)  # rewards [4, 5, 2, 3], cursor 2
    s = buffers.update_priorities(s, torch.tensor([0, 1, 2, 3]), torch.tensor([4.0, 5.0, 2.0, 3.0]))
    new, dropped = buffers.restore(s, buffers.init(3, transitions(1)[0], prioritized=True))
    assert rewards(new) == [3.0, 4.0, 5.0] and dropped == 1
    eps, alpha = 1e-8, 0.6
    want = torch.tensor([(3.0 + eps) ** alpha, (4.0 + eps) ** alpha, (5.0 + eps) ** alpha])
    torch.testing.assert_close(new.prioritized.priority, want)
    assert float(new.prioritized.max_priority) == 5.0
    # A new transition gets the carried max priority, in the slot of the oldest.
    nxt = buffers.add(new, transitions(1, start=9.0))
    torch.testing.assert_close(nxt.prioritized.priority[0], torch.tensor((5.0 + eps) ** alpha))


def test_restore_refuses_mismatched_layouts():
    s = _filled(4, 2)
    with pytest.raises(ValueError, match="buffers.restore: state is uniform but empty is prior"):
        buffers.restore(s, buffers.init(4, transitions(1)[0], prioritized=True))
    with pytest.raises(KeyError, match="buffers.restore"):
        buffers.restore(s, buffers.init(4, transitions(1)[0].exclude("action")))
    p = _filled(4, 2, prioritized=True)
    with pytest.raises(ValueError, match="buffers.restore: state has alpha"):
        buffers.restore(p, buffers.init(4, transitions(1)[0], prioritized=True, alpha=0.5))


@settings(max_examples=40, deadline=None)
@given(
    st.integers(1, 9),
    st.integers(1, 9),
    st.integers(0, 25),
    st.booleans(),
)
def test_restore_matches_a_python_ring(cap_old, cap_new, n, prioritized):
    s = buffers.add(
        buffers.init(cap_old, transitions(1)[0], prioritized=prioritized), transitions(n)
    )
    new, dropped = buffers.restore(
        s, buffers.init(cap_new, transitions(1)[0], prioritized=prioritized)
    )
    stored = list(range(n))[-cap_old:] if n else []  # what the old ring holds, oldest first
    kept = stored[len(stored) - min(len(stored), cap_new) :]
    assert dropped == len(stored) - len(kept)
    assert rewards(new)[: len(kept)] == [float(x) for x in kept]
    assert int(new.size) == len(kept) and int(new.cursor) == len(kept) % cap_new
    buffers.validate(new)  # includes: priorities > 0 on the kept slots, 0 on the others


def test_save_load_round_trip_across_capacities(tmp_path):
    s = _filled(6, 9, prioritized=True)
    s = buffers.update_priorities(s, torch.tensor([1, 4]), torch.tensor([3.0, 0.5]))
    path = tmp_path / "buf.safetensors"
    buffers.save(s, path)
    back = buffers.load(path)
    for a, b in zip(
        [s.cursor, s.size, *s.prioritized], [back.cursor, back.size, *back.prioritized]
    ):
        torch.testing.assert_close(a, b)
    assert back.storage.equal(s.storage)
    for cap in (2, 6, 11):
        new, dropped = buffers.restore(back, buffers.init(cap, transitions(1)[0], prioritized=True))
        assert dropped == max(0, 6 - cap)
        assert rewards(new)[: min(6, cap)] == [float(x) for x in range(3, 9)][-min(6, cap) :]
