"""REDQ: TorchRL 0.14 parity (values and every gradient, draw for draw), the random subset's law,
alpha clamps, terminated vs truncated, the generic step under torch.compile and vmap."""

from __future__ import annotations

import functools
import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from test_sac import (
    ACT,
    OBS,
    B,
    _torchrl_actor,
    _torchrl_qvalues,
    assert_close,
    check_compiled_and_vmapped,
    grads_of,
    make_batch,
    seq_grads,
    td_from_record,
)

from funcrl import redq, tree

NETS = redq.Nets(num_cells=(16, 16))


def test_config():
    assert redq.Config().num_qvalue_nets == 10 and redq.Config().subset_size == 2
    assert redq.Config(num_qvalue_nets=2, sub_sample_len=5).subset_size == 1
    with pytest.raises(ValueError, match="sub_sample_len"):
        redq.Config(sub_sample_len=0)
    with pytest.raises(ValueError, match="min_alpha"):
        redq.Config(min_alpha=20.0)
    p = redq.init(0, OBS, ACT, nets=NETS)
    assert set(p) == {"actor", "qvalue", "target_qvalue", "log_alpha", "action_bounds"}
    assert p["qvalue"]["layers"][0]["weight"].shape[0] == 10


def test_subset_is_uniform():
    """Every pair of the 10 nets is drawn with probability 1/45 (within 4 standard errors)."""
    torch.manual_seed(0)
    draws = 9000
    counts = torch.zeros(10, 10)
    for _ in range(draws):
        i, j = sorted(redq.sample_subset(10, 2).tolist())
        assert i != j
        counts[i, j] += 1
    p = 1 / 45
    se = math.sqrt(p * (1 - p) / draws)
    freq = counts[torch.triu(torch.ones(10, 10, dtype=torch.bool), 1)] / draws
    assert ((freq - p).abs() < 4 * se).all()


def test_temperature_loss_by_hand():
    la = torch.tensor(math.log(2.0))
    torch.testing.assert_close(
        redq.redq_temperature_loss(la, torch.tensor([1.0, -3.0]), 1.0), torch.tensor([-4.0, 4.0])
    )


@given(
    log_alpha=st.floats(-5, 5), bound=st.floats(0.05, 20.0), side=st.sampled_from(["min", "max"])
)
def test_alpha_clamp_one_sided(log_alpha, bound, side):
    cfg = (
        redq.Config(min_alpha=bound, max_alpha=None)
        if side == "min"
        else redq.Config(min_alpha=None, max_alpha=bound)
    )
    p = redq.init(0, OBS, ACT, cfg, NETS)
    p["log_alpha"] = torch.tensor(log_alpha)
    torch.manual_seed(0)
    g, out = grads_of(
        functools.partial(redq.loss, config=cfg, nets=NETS), p, ("log_alpha",), make_batch(), 0
    )
    want = max(math.exp(log_alpha), bound) if side == "min" else min(math.exp(log_alpha), bound)
    assert math.isclose(float(out["alpha"]), want, rel_tol=1e-5)
    assert float(g["log_alpha"]) != 0.0  # straight-through, as TorchRL


def test_fixed_alpha():
    cfg = redq.Config(fixed_alpha=True, alpha_init=0.5)
    p = redq.init(0, OBS, ACT, cfg, NETS)
    g, out = grads_of(
        functools.partial(redq.loss, config=cfg, nets=NETS), p, ("log_alpha",), make_batch(), 0
    )
    assert float(g["log_alpha"]) == 0.0 and math.isclose(float(out["alpha"]), 0.5, rel_tol=1e-6)


@given(flags=st.lists(st.sampled_from(["none", "terminated", "truncated"]), min_size=B, max_size=B))
def test_terminated_vs_truncated(flags):
    term = torch.tensor([[f == "terminated"] for f in flags])
    trunc = torch.tensor([[f == "truncated"] for f in flags])
    batch = make_batch(terminated=term, truncated=trunc)
    p = redq.init(0, OBS, ACT, nets=NETS)
    cfg = redq.Config()
    torch.manual_seed(0)
    y = redq.loss(p, batch, config=cfg, nets=NETS)["target_value"]
    t = term.squeeze(-1)
    torch.testing.assert_close(y[t], batch["next", "reward"].squeeze(-1)[t])
    assert not torch.isclose(y[~t], batch["next", "reward"].squeeze(-1)[~t]).any()


@pytest.mark.torchrl
@pytest.mark.parametrize("loss_function", ["smooth_l1", "l2"])
def test_parity_with_torchrl(loss_function, monkeypatch):
    pytest.importorskip("torchrl", reason="parity needs torchrl")
    from torchrl.objectives import REDQLoss

    # TorchRL draws the subset with randperm; use the same draw so that the noise matches too.
    monkeypatch.setattr(
        redq, "sample_subset", lambda n, k, device=None: torch.randperm(n)[:k].sort()[0]
    )
    n = 5
    cfg = redq.Config(
        num_qvalue_nets=n, sub_sample_len=3, loss_function=loss_function, alpha_init=0.5, gamma=0.9
    )
    low, high = torch.tensor([-2.0, -1.0]), torch.tensor([1.0, 3.0])

    class Spec:
        shape = (ACT,)

    Spec.low, Spec.high = low, high
    p = redq.init(4, OBS, Spec, cfg, NETS)
    p["target_qvalue"] = tree.map(lambda x: x + 0.05 * torch.randn_like(x), p["target_qvalue"])
    term = torch.zeros(B, 1, dtype=torch.bool)
    term[1] = True
    batch = make_batch(terminated=term, action=torch.rand(B, ACT) * (high - low) + low)
    g, out = grads_of(
        functools.partial(redq.loss, config=cfg, nets=NETS),
        p,
        ("actor", "qvalue", "log_alpha"),
        batch,
        5,
    )

    ref = REDQLoss(
        _torchrl_actor(p["actor"], low, high), _torchrl_qvalues(p["qvalue"], n),
        num_qvalue_nets=n, sub_sample_len=3, loss_function=loss_function, alpha_init=0.5,
    )  # fmt: skip
    ref.make_value_estimator(gamma=0.9)
    with torch.no_grad():
        for i, lp in enumerate(p["target_qvalue"]["layers"]):
            ref.target_qvalue_network_params["module", str(2 * i), "weight"].copy_(lp["weight"])
            ref.target_qvalue_network_params["module", str(2 * i), "bias"].copy_(lp["bias"])
    torch.manual_seed(5)
    td = ref(td_from_record(batch))
    sum(v for k, v in td.items() if k.startswith("loss_")).backward()
    for k in (
        "loss_actor", "loss_qvalue", "loss_alpha", "alpha", "entropy", "state_action_value_actor",
        "action_log_prob_actor", "next.state_value", "target_value",
    ):  # fmt: skip
        torch.testing.assert_close(out[k], td[k], rtol=1e-5, atol=1e-6, msg=k)
    assert_close(g["actor"], seq_grads(ref.actor_network_params, ("module", "0", "module", "0")))
    assert_close(g["qvalue"], seq_grads(ref.qvalue_network_params, ("module",)))
    torch.testing.assert_close(g["log_alpha"], ref.log_alpha.grad)


def test_update_step_compiles_and_vmaps():
    nets = redq.Nets(num_cells=(32, 32))
    cfg = redq.Config(num_qvalue_nets=4)
    p = redq.init(0, OBS, ACT, cfg, nets)
    check_compiled_and_vmapped(
        functools.partial(redq.loss, config=cfg, nets=nets), p, make_batch(16, seed=1),
        ("actor", "qvalue", "log_alpha"), {"target_qvalue": "qvalue"},
    )  # fmt: skip
