"""Discrete SAC: equations by hand, TorchRL 0.14 parity (values and every gradient), alpha clamps,
terminated vs truncated, the generic step under torch.compile and vmap."""

from __future__ import annotations

import dataclasses
import functools
import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from test_sac import (
    assert_close,
    check_compiled_and_vmapped,
    grads_of,
    mlp_to_torch,
    seq_grads,
    td_from_record,
)

from funcrl import discrete_sac as dsac
from funcrl import tree
from funcrl.record import Record

OBS, N_ACT, B, H = 3, 4, 8, 16
NETS = dsac.Nets(num_cells=(H, H))


def make_batch(b=B, *, seed=0, categorical=False, terminated=None, truncated=None):
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(N_ACT, (b,), generator=g)
    action = idx if categorical else torch.nn.functional.one_hot(idx, N_ACT)
    term = torch.zeros(b, 1, dtype=torch.bool) if terminated is None else terminated
    trunc = torch.zeros(b, 1, dtype=torch.bool) if truncated is None else truncated
    return Record(
        {
            "observation": torch.randn(b, OBS, generator=g),
            "action": action,
            ("next", "observation"): torch.randn(b, OBS, generator=g),
            ("next", "reward"): torch.randn(b, 1, generator=g),
            ("next", "terminated"): term,
            ("next", "truncated"): trunc,
            ("next", "done"): term | trunc,
        },
        batch_ndim=1,
    )


def test_equations_by_hand():
    probs = torch.tensor([[0.5, 0.5]])
    logp = probs.log()
    q = torch.tensor([[1.0, 3.0]])
    alpha = torch.tensor(2.0)
    # sum_a p (Q - alpha log p) = 0.5 (1 + 2 ln 2) + 0.5 (3 + 2 ln 2) = 2 + 2 ln 2
    torch.testing.assert_close(
        dsac.soft_target_value(probs, logp, q, alpha), torch.tensor([2 + 2 * math.log(2)])
    )
    torch.testing.assert_close(
        dsac.expected_actor_loss(probs, logp, q, alpha), torch.tensor([-2 - 2 * math.log(2)])
    )
    qs = torch.arange(6.0).reshape(1, 2, 3)
    assert torch.equal(
        dsac.chosen_q(qs, torch.tensor([[2], [0]]), "categorical"), torch.tensor([[2.0, 3.0]])
    )
    assert torch.equal(
        dsac.chosen_q(qs, torch.tensor([2, 0]), "categorical"), torch.tensor([[2.0, 3.0]])
    )
    onehot = torch.tensor([[0, 0, 1], [1, 0, 0]])
    assert torch.equal(dsac.chosen_q(qs, onehot, "one-hot"), torch.tensor([[2.0, 3.0]]))


def test_config_and_inputs():
    with pytest.raises(ValueError, match="action_space"):
        dsac.Config(action_space="binary")
    with pytest.raises(ValueError, match="min_alpha"):
        dsac.Config(min_alpha=3.0, max_alpha=1.0)
    p = dsac.init(0, OBS, N_ACT, nets=NETS)
    assert set(p) == {"actor", "qvalue", "target_qvalue", "log_alpha"}
    assert p["qvalue"]["layers"][-1]["weight"].shape == (2, N_ACT, H)
    with pytest.raises(ValueError, match=r"discrete_sac.loss: batch\['action'\].*one_hot"):
        dsac.loss(p, make_batch(categorical=True), nets=NETS)
    out = dsac.loss(
        p, make_batch(categorical=True), config=dsac.Config(action_space="categorical"), nets=NETS
    )
    out2 = dsac.loss(p, make_batch(), nets=NETS)
    for k in ("loss_actor", "loss_qvalue", "loss_alpha", "entropy"):
        torch.testing.assert_close(out[k], out2[k])
    # "auto" target entropy: 0.98 log n.
    g, _ = grads_of(functools.partial(dsac.loss, nets=NETS), p, ("log_alpha",), make_batch(), 0)
    assert math.isfinite(float(g["log_alpha"]))


@given(bound=st.floats(0.05, 5.0), side=st.sampled_from(["min", "max"]), log_alpha=st.floats(-4, 4))
def test_alpha_clamp(bound, side, log_alpha):
    cfg = dsac.Config(min_alpha=bound) if side == "min" else dsac.Config(max_alpha=bound)
    p = dsac.init(0, OBS, N_ACT, nets=NETS)
    p["log_alpha"] = torch.tensor(log_alpha)
    out = dsac.loss(p, make_batch(), config=cfg, nets=NETS)
    want = max(math.exp(log_alpha), bound) if side == "min" else min(math.exp(log_alpha), bound)
    assert math.isclose(float(out["alpha"]), want, rel_tol=1e-5)


def test_fixed_alpha():
    cfg = dsac.Config(fixed_alpha=True, alpha_init=0.3)
    p = dsac.init(0, OBS, N_ACT, cfg, NETS)
    g, out = grads_of(
        functools.partial(dsac.loss, config=cfg, nets=NETS), p, ("log_alpha",), make_batch(), 0
    )
    assert float(g["log_alpha"]) == 0.0 and math.isclose(float(out["alpha"]), 0.3, rel_tol=1e-6)


@given(flags=st.lists(st.sampled_from(["none", "terminated", "truncated"]), min_size=B, max_size=B))
def test_terminated_vs_truncated(flags):
    term = torch.tensor([[f == "terminated"] for f in flags])
    trunc = torch.tensor([[f == "truncated"] for f in flags])
    batch = make_batch(terminated=term, truncated=trunc)
    p = dsac.init(0, OBS, N_ACT, nets=NETS)
    cfg = dsac.Config(reduction="none")
    td = dsac.loss(p, batch, config=cfg, nets=NETS)["td_error"]
    td0 = dsac.loss(p, batch, config=dataclasses.replace(cfg, gamma=0.0), nets=NETS)["td_error"]
    t = term.squeeze(-1)
    torch.testing.assert_close(td[t], td0[t])
    assert not torch.isclose(td[~t], td0[~t]).any()


@pytest.mark.torchrl
@pytest.mark.parametrize("skip_done_states", [False, True])
@pytest.mark.parametrize("action_space", ["one-hot", "categorical"])
def test_parity_with_torchrl(action_space, skip_done_states):
    pytest.importorskip("torchrl", reason="parity needs torchrl")
    from tensordict.nn import TensorDictModule
    from torchrl.data import Categorical, OneHot
    from torchrl.modules import OneHotCategorical, ProbabilisticActor
    from torchrl.objectives import DiscreteSACLoss

    cfg = dsac.Config(
        action_space=action_space, alpha_init=0.5, max_alpha=0.8, gamma=0.95,
        skip_done_states=skip_done_states, loss_function="l2",
    )  # fmt: skip
    p = dsac.init(2, OBS, N_ACT, cfg, NETS)
    p["target_qvalue"] = tree.map(lambda x: x * 1.1, p["target_qvalue"])
    term = torch.zeros(B, 1, dtype=torch.bool)
    term[0] = True
    trunc = torch.zeros(B, 1, dtype=torch.bool)
    trunc[3] = True
    batch = make_batch(categorical=action_space == "categorical", terminated=term, truncated=trunc)
    g, out = grads_of(
        functools.partial(dsac.loss, config=cfg, nets=NETS),
        p,
        ("actor", "qvalue", "log_alpha"),
        batch,
        0,
    )

    if action_space == "one-hot":
        spec, dist_class = OneHot(N_ACT), OneHotCategorical
    else:
        from torch.distributions import Categorical as dist_class

        spec = Categorical(N_ACT)
    actor = ProbabilisticActor(
        TensorDictModule(mlp_to_torch(p["actor"]), in_keys=["observation"], out_keys=["logits"]),
        in_keys=["logits"], spec=spec, distribution_class=dist_class,
    )  # fmt: skip
    qs = [
        TensorDictModule(
            mlp_to_torch(tree.map(lambda x, i=i: x[i], p["qvalue"])),
            in_keys=["observation"],
            out_keys=["action_value"],
        )  # fmt: skip
        for i in range(2)
    ]
    ref = DiscreteSACLoss(
        actor, qs, action_space=spec, num_actions=N_ACT, alpha_init=0.5, max_alpha=0.8,
        skip_done_states=skip_done_states, loss_function="l2",
    )  # fmt: skip
    ref.make_value_estimator(gamma=0.95)
    with torch.no_grad():
        for i, lp in enumerate(p["target_qvalue"]["layers"]):
            ref.target_qvalue_network_params["module", str(2 * i), "weight"].copy_(lp["weight"])
            ref.target_qvalue_network_params["module", str(2 * i), "bias"].copy_(lp["bias"])
    td = ref(td_from_record(batch))
    sum(v for k, v in td.items() if k.startswith("loss_")).backward()
    for k in ("loss_actor", "loss_qvalue", "loss_alpha", "alpha", "entropy"):
        torch.testing.assert_close(out[k], td[k], rtol=1e-5, atol=1e-6, msg=k)
    assert_close(g["actor"], seq_grads(ref.actor_network_params, ("module", "0", "module")))
    assert_close(g["qvalue"], seq_grads(ref.qvalue_network_params, ("module",)))
    torch.testing.assert_close(g["log_alpha"], ref.log_alpha.grad)


def test_update_step_compiles_and_vmaps():
    nets = dsac.Nets(num_cells=(32, 32))
    p = dsac.init(0, OBS, N_ACT, nets=nets)
    check_compiled_and_vmapped(
        functools.partial(dsac.loss, nets=nets), p, make_batch(16, seed=1),
        ("actor", "qvalue", "log_alpha"), {"target_qvalue": "qvalue"}, samples=False,
    )  # fmt: skip
