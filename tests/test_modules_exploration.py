"""Exploration transitions: annealing schedules, OU updates, masks, dropout; TorchRL parity."""

from __future__ import annotations

import math

import pytest
import torch

from funcrl import Record
from funcrl.modules import (
    AdditiveGaussian,
    ConsistentDropout,
    EGreedy,
    OrnsteinUhlenbeck,
    Sequential,
    linear_annealing,
    ou_sigma,
)
from funcrl.specs import Bounded, Categorical, MultiOneHot, OneHot


def test_linear_annealing_hand_computed():
    steps = torch.tensor([0, 1, 5, 10, 20])
    # init 1.0, end 0.1 over 10 steps: 1 - 0.09 k, floored at 0.1.
    expected = torch.tensor([1.0, 0.91, 0.55, 0.1, 0.1])
    torch.testing.assert_close(linear_annealing(steps, 1.0, 0.1, 10), expected)


def test_schedule_state_steps_like_torchrl():
    pytest.importorskip("torchrl", reason="TorchRL is the reference implementation")
    from torchrl.data import Bounded as RefBounded
    from torchrl.modules import AdditiveGaussianModule, EGreedyModule

    mine = AdditiveGaussian(
        Bounded(-1.0, 1.0, shape=(2,)), sigma_init=0.9, sigma_end=0.2, annealing_num_steps=7
    )
    ref = AdditiveGaussianModule(
        RefBounded(-1.0, 1.0, shape=(2,)), sigma_init=0.9, sigma_end=0.2, annealing_num_steps=7
    )
    state = mine.init()
    for frames in (1, 2, 3, 4):
        state = mine.step(state, frames)
        ref.step(frames)
        torch.testing.assert_close(mine.sigma(state), ref.sigma, rtol=1e-6, atol=1e-6)
    eg = EGreedy(Categorical(3), eps_init=1.0, eps_end=0.05, annealing_num_steps=4)
    ref_eg = EGreedyModule(
        RefBounded(-1.0, 1.0, shape=(2,)), eps_init=1.0, eps_end=0.05, annealing_num_steps=4
    )
    s = eg.init()
    for _ in range(6):
        s = eg.step(s)
        ref_eg.step()
        torch.testing.assert_close(eg.eps(s), ref_eg.eps, rtol=1e-6, atol=1e-6)
    assert int(s["step"]) == 6


def test_additive_gaussian_parity_and_clipping():
    pytest.importorskip("torchrl", reason="TorchRL is the reference implementation")
    from tensordict import TensorDict
    from torchrl.data import Bounded as RefBounded
    from torchrl.modules import AdditiveGaussianModule

    action = torch.rand(8, 3) * 1.6 - 0.8
    mine = AdditiveGaussian(
        Bounded(-1.0, 1.0, shape=(3,)),
        sigma_init=0.5,
        sigma_end=0.1,
        annealing_num_steps=10,
        mean=0.1,
        std=2.0,
    )
    ref = AdditiveGaussianModule(
        RefBounded(-1.0, 1.0, shape=(3,)),
        sigma_init=0.5,
        sigma_end=0.1,
        annealing_num_steps=10,
        mean=0.1,
        std=2.0,
    )
    state = mine.step(mine.init(), 3)
    ref.step(3)
    torch.manual_seed(11)
    out = mine(state, Record({"action": action}, batch_ndim=1))["action"]
    torch.manual_seed(11)
    ref_out = ref(TensorDict({"action": action.clone()}, [8]))["action"]
    torch.testing.assert_close(out, ref_out, rtol=1e-6, atol=1e-6)
    assert out.min() >= -1 and out.max() <= 1
    # Hand computation with the same draws: a + sigma_3 * (mean + std * eps).
    torch.manual_seed(11)
    eps = torch.randn(8, 3)
    sigma = 0.5 - 3 * (0.4 / 10)
    torch.testing.assert_close(out, (action + sigma * (0.1 + 2.0 * eps)).clamp(-1, 1))
    # Exploration off: unchanged.
    rec = Record({"action": action}, batch_ndim=1)
    assert mine(state, rec, interaction="deterministic") is rec


def test_egreedy_parity_with_torchrl_categorical():
    pytest.importorskip("torchrl", reason="TorchRL is the reference implementation")
    from tensordict import TensorDict
    from torchrl.data import Categorical as RefCategorical
    from torchrl.modules import EGreedyModule

    action = torch.zeros(50, dtype=torch.int64)
    mine = EGreedy(Categorical(4), eps_init=0.5, eps_end=0.5)
    ref = EGreedyModule(RefCategorical(4), eps_init=0.5, eps_end=0.5)
    torch.manual_seed(3)
    out = mine(mine.init(), Record({"action": action}, batch_ndim=1))["action"]
    torch.manual_seed(3)
    ref_out = ref(TensorDict({"action": action.clone()}, [50]))["action"]
    torch.testing.assert_close(out, ref_out)


def test_egreedy_eps_one_and_zero_and_masks():
    n = 5
    mask = torch.zeros(400, n, dtype=torch.bool)
    mask[:, 1] = True
    mask[:, 3] = True
    action = torch.zeros(400, dtype=torch.int64)
    rec = Record({"action": action, "mask": mask}, batch_ndim=1)
    always = EGreedy(Categorical(n), eps_init=1.0, eps_end=1.0, action_mask_key="mask")
    out = always(always.init(), rec)["action"]
    assert set(out.tolist()) == {1, 3}  # random actions only where the mask allows
    never = EGreedy(Categorical(n), eps_init=0.0, eps_end=0.0)
    torch.testing.assert_close(never(never.init(), rec)["action"], action)
    # One-hot and multi-one-hot specs, with masks.
    oh = EGreedy(OneHot(n), eps_init=1.0, eps_end=1.0, action_mask_key="mask")
    oh_out = oh(
        oh.init(),
        Record({"action": torch.zeros(400, n, dtype=torch.long), "mask": mask}, batch_ndim=1),
    )["action"]
    assert (
        oh_out.dtype == torch.long
        and (oh_out.sum(-1) == 1).all()
        and (oh_out[:, [0, 2, 4]] == 0).all()
    )
    moh = EGreedy(MultiOneHot([2, 3]), eps_init=1.0, eps_end=1.0, action_mask_key="mask")
    mmask = torch.tensor([[True, False, False, True, True]]).expand(100, 5)
    m_out = moh(
        moh.init(),
        Record({"action": torch.zeros(100, 5, dtype=torch.long), "mask": mmask}, batch_ndim=1),
    )["action"]
    assert (
        (m_out[:, 0] == 1).all() and (m_out[:, 2:].sum(-1) == 1).all() and (m_out[:, 2] == 0).all()
    )


def test_egreedy_continuous_and_shape_errors():
    eg = EGreedy(Bounded(-2.0, -1.0, shape=(2,)), eps_init=1.0, eps_end=1.0)
    out = eg(eg.init(), Record({"action": torch.zeros(10, 2)}, batch_ndim=1))["action"]
    assert (out <= -1).all() and (out >= -2).all()
    with pytest.raises(ValueError, match="spec shape"):
        eg(eg.init(), Record({"action": torch.zeros(10, 3)}, batch_ndim=1))
    with pytest.raises(ValueError, match="spec is required"):
        EGreedy(None)


def test_ou_hand_computed_update_and_reset():
    spec = Bounded(-10.0, 10.0, shape=(2,))
    ou = OrnsteinUhlenbeck(
        spec,
        eps_init=0.8,
        eps_end=0.8,
        theta=0.3,
        mu=0.5,
        sigma=0.4,
        dt=0.1,
        sigma_min=0.1,
        n_steps_annealing=4,
    )
    action = torch.zeros(3, 2)
    prev = torch.tensor([[1.0, -1.0], [0.5, 0.0], [2.0, 2.0]])
    steps = torch.tensor([2, 0, 7])
    is_init = torch.tensor([[False], [False], [True]])
    rec = Record(
        {"action": action, "_ou_prev_noise": prev, "_ou_steps": steps, "is_init": is_init},
        batch_ndim=1,
    )
    torch.manual_seed(5)
    out = ou(ou.init(), rec)
    torch.manual_seed(5)
    z = torch.randn(3, 2)
    x = prev.clone()
    x[2] = 0.0  # reset on is_init
    n = torch.tensor([2.0, 0.0, 0.0])
    sigma_t = torch.clamp_min(0.4 - (0.3 / 4) * n, 0.1)[:, None]
    noise = x + 0.3 * (0.5 - x) * 0.1 + sigma_t * math.sqrt(0.1) * z
    torch.testing.assert_close(out["_ou_prev_noise"], noise)
    torch.testing.assert_close(out["action"], action + 0.8 * noise)
    assert out["_ou_steps"].tolist() == [3, 1, 1]
    torch.testing.assert_close(
        ou_sigma(torch.tensor([0, 2, 10]), 0.4, 0.1, 4), torch.tensor([0.4, 0.25, 0.1])
    )


def test_ou_parity_with_torchrl_over_steps():
    pytest.importorskip("torchrl", reason="TorchRL is the reference implementation")
    from tensordict import TensorDict
    from torchrl.data import Bounded as RefBounded
    from torchrl.modules import OrnsteinUhlenbeckProcessModule

    kw = dict(
        eps_init=1.0,
        eps_end=0.2,
        annealing_num_steps=5,
        theta=0.2,
        sigma=0.3,
        dt=0.05,
        x0=0.1,
        sigma_min=0.05,
        n_steps_annealing=3,
    )
    mine = OrnsteinUhlenbeck(Bounded(-1.0, 1.0, shape=(2,)), **kw)
    ref = OrnsteinUhlenbeckProcessModule(RefBounded(-1.0, 1.0, shape=(2,)), **kw)
    state = mine.init()
    rec = Record(
        {"action": torch.zeros(4, 2), "is_init": torch.ones(4, 1, dtype=torch.bool)}, batch_ndim=1
    )
    td = TensorDict(
        {"action": torch.zeros(4, 2), "is_init": torch.ones(4, 1, dtype=torch.bool)}, [4]
    )
    for t in range(4):
        torch.manual_seed(t)
        out = mine(state, rec)
        torch.manual_seed(t)
        td = ref(td)
        for key in ("action", "_ou_prev_noise", "_ou_steps"):
            torch.testing.assert_close(out[key], td[key], rtol=1e-5, atol=1e-6)
        is_init = (
            torch.tensor([[False], [True], [False], [False]])
            if t == 1
            else torch.zeros(4, 1, dtype=torch.bool)
        )
        rec = out.set("action", torch.zeros(4, 2)).set("is_init", is_init)
        td = td.clone().set("action", torch.zeros(4, 2)).set("is_init", is_init)
        state = mine.step(state)
        ref.step()


def test_consistent_dropout_reuses_mask():
    drop = ConsistentDropout(0.5, ["h"])
    rec = Record({"h": torch.ones(64, 8)}, batch_ndim=1)
    torch.manual_seed(0)
    out = drop({}, rec)
    mask = out["h_dropout_mask"]
    assert set(mask.unique().tolist()) <= {0.0, 2.0}
    torch.testing.assert_close(out["h"], mask)
    # In the loss the stored mask is reused exactly, whatever the RNG does.
    again = drop({}, Record({"h": 3 * torch.ones(64, 8), "h_dropout_mask": mask}, batch_ndim=1))
    torch.testing.assert_close(again["h"], 3 * mask)
    assert drop({}, rec, train=False)["h"] is rec["h"]
    with pytest.raises(ValueError, match="p must be"):
        ConsistentDropout(1.0, ["h"])


def test_exploration_in_sequential_under_vmap_and_compile():
    spec = Bounded(-1.0, 1.0, shape=(2,))
    ag = AdditiveGaussian(spec, sigma_init=0.3, sigma_end=0.3)
    ou = OrnsteinUhlenbeck(spec)
    seq = Sequential(ag, ou)
    state = seq.init()
    rec = Record(
        {"action": torch.zeros(6, 2), "is_init": torch.ones(6, 1, dtype=torch.bool)}, batch_ndim=1
    )
    vm = torch.func.vmap(lambda r: seq(state, r), randomness="different")(rec)
    assert vm["action"].shape == (6, 2) and vm["_ou_steps"].tolist() == [1] * 6
    assert not torch.allclose(vm["action"][0], vm["action"][1])
    eg = EGreedy(Categorical(4), eps_init=0.5, eps_end=0.5, action_mask_key="mask")
    drec = Record(
        {"action": torch.zeros(6, dtype=torch.long), "mask": torch.ones(6, 4, dtype=torch.bool)},
        batch_ndim=1,
    )
    torch._dynamo.reset()
    compiled = torch.compile(lambda s, r: eg(s, r)["action"], fullgraph=True, backend="eager")
    assert compiled(eg.init(), drec).shape == (6,)
    compiled_seq = torch.compile(lambda s, r: seq(s, r)["action"], fullgraph=True, backend="eager")
    out = compiled_seq(state, rec)
    assert out.shape == (6, 2) and (out.abs() <= 1).all()
    # Off: the record passes through.
    assert seq(state, rec, interaction="mode") is rec
