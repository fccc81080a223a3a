"""CrossQ: TorchRL 0.14 parity (values, every gradient and the BatchRenorm statistics, same draws),
the joint pass, alpha clamps, terminated vs truncated, the generic step under compile and vmap."""

from __future__ import annotations

import dataclasses
import functools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from test_sac import (
    ACT,
    OBS,
    B,
    assert_close,
    check_compiled_and_vmapped,
    make_batch,
    td_from_record,
)

import funcrl
from funcrl import crossq, optim, tree

H = 16
NETS = crossq.Nets(actor=crossq.RenormMLP((H, H)), qvalue=crossq.RenormMLP((H, H)))


def test_init_and_keys():
    p = crossq.init(0, OBS, ACT, nets=NETS)
    assert set(p) == {"actor", "qvalue", "log_alpha", "action_bounds", "batch_stats"}
    assert p["qvalue"]["norms"][0]["weight"].shape == (2, H)
    assert p["batch_stats"]["qvalue"][0]["running_mean"].shape == (2, H)
    assert p["batch_stats"]["actor"][1]["steps"].dtype == torch.int64
    losses, new = crossq.loss_and_state(p, make_batch(), nets=NETS)
    assert set(losses) == {
        "loss_actor",
        "loss_qvalue",
        "loss_alpha",
        "alpha",
        "entropy",
        "td_error",
    }
    # Actor statistics moved twice (next, then current states), the critics' once.
    assert int(new["batch_stats"]["actor"][0]["steps"]) == 2
    assert new["batch_stats"]["qvalue"][0]["steps"].tolist() == [1, 1]
    with pytest.raises(ValueError, match="min_alpha"):
        crossq.Config(min_alpha=1.0, max_alpha=0.5)


def test_joint_pass_shares_statistics():
    """The critics normalise current and next halves together: changing only the next
    observations changes Q(s, a) (it would not with separate passes)."""
    p = crossq.init(0, OBS, ACT, nets=NETS)
    batch = make_batch()
    other = batch.set(("next", "observation"), batch["next", "observation"] * 3 + 1)
    torch.manual_seed(0)
    td1 = crossq.loss(p, batch, config=crossq.Config(reduction="none"), nets=NETS)
    torch.manual_seed(0)
    td2 = crossq.loss(p, other, config=crossq.Config(reduction="none"), nets=NETS)
    assert not torch.allclose(td1["loss_qvalue"], td2["loss_qvalue"])


@given(
    log_alpha=st.floats(-4, 4), bound=st.floats(0.05, 20.0), side=st.sampled_from(["min", "max"])
)
def test_alpha_clamp_one_sided(log_alpha, bound, side):
    cfg = crossq.Config(min_alpha=bound) if side == "min" else crossq.Config(max_alpha=bound)
    p = crossq.init(0, OBS, ACT, nets=NETS)
    p["log_alpha"] = torch.tensor(log_alpha)
    out = crossq.loss(p, make_batch(), config=cfg, nets=NETS)
    want = max(math.exp(log_alpha), bound) if side == "min" else min(math.exp(log_alpha), bound)
    assert math.isclose(float(out["alpha"]), want, rel_tol=1e-5)


def test_fixed_alpha():
    cfg = crossq.Config(fixed_alpha=True, alpha_init=0.2)
    p = crossq.init(0, OBS, ACT, cfg, NETS)

    def f(la):
        return crossq.loss({**p, "log_alpha": la}, make_batch(), config=cfg, nets=NETS)[
            "loss_alpha"
        ]

    assert float(torch.func.grad(f)(p["log_alpha"])) == 0.0


@settings(max_examples=8)
@given(flags=st.lists(st.sampled_from(["none", "terminated", "truncated"]), min_size=B, max_size=B))
def test_terminated_vs_truncated(flags):
    term = torch.tensor([[f == "terminated"] for f in flags])
    trunc = torch.tensor([[f == "truncated"] for f in flags])
    batch = make_batch(terminated=term, truncated=trunc)
    p = crossq.init(0, OBS, ACT, nets=NETS)
    cfg = crossq.Config(reduction="none")
    torch.manual_seed(0)
    td = crossq.loss(p, batch, config=cfg, nets=NETS)["td_error"]
    torch.manual_seed(0)
    td0 = crossq.loss(p, batch, config=dataclasses.replace(cfg, gamma=0.0), nets=NETS)["td_error"]
    t = term.squeeze(-1)
    torch.testing.assert_close(td[t], td0[t])
    assert not torch.isclose(td[~t], td0[~t]).any()


def _torchrl_renorm_mlp(p, warmup):
    from torchrl.modules import MLP
    from torchrl.modules.models.batchrenorm import BatchRenorm1d

    net = MLP(
        in_features=p["layers"][0]["weight"].shape[1], out_features=p["layers"][-1]["weight"].shape[0],
        num_cells=[H, H], activation_class=torch.nn.ReLU, norm_class=BatchRenorm1d,
        norm_kwargs={"num_features": H, "warmup_steps": warmup},
    )  # fmt: skip
    lins = [m for m in net if isinstance(m, torch.nn.Linear)]
    norms = [m for m in net if isinstance(m, BatchRenorm1d)]
    with torch.no_grad():
        for m, lp in zip(lins, p["layers"]):
            m.weight.copy_(lp["weight"])
            m.bias.copy_(lp["bias"])
        for m, npar in zip(norms, p["norms"]):
            m.weight.copy_(npar["weight"])
            m.bias.copy_(npar["bias"])
    return net


def _grads_and_stats(tdp, prefix):
    """TorchRL MLP(norm_class=BatchRenorm1d) params -> funcrl layout: (grads, stats)."""
    sub = tdp
    for k in prefix:
        sub = sub[k]
    keys = sorted(int(k) for k in sub.keys())
    lins = [
        k
        for k in keys
        if "weight" in sub[str(k)].keys() and "running_mean" not in sub[str(k)].keys()
    ]
    norms = [k for k in keys if "running_mean" in sub[str(k)].keys()]
    grads = {
        "layers": [
            {"weight": sub[str(k)]["weight"].grad, "bias": sub[str(k)]["bias"].grad} for k in lins
        ],
        "norms": [
            {"weight": sub[str(k)]["weight"].grad, "bias": sub[str(k)]["bias"].grad} for k in norms
        ],
    }
    stats = [
        {"running_mean": sub[str(k)]["running_mean"], "running_var": sub[str(k)]["running_var"]}
        for k in norms
    ]
    return grads, stats


@pytest.mark.torchrl
@pytest.mark.parametrize("warmup", [10000, 0])
def test_parity_with_torchrl(warmup):
    pytest.importorskip("torchrl", reason="parity needs torchrl")
    from tensordict.nn import TensorDictModule
    from torchrl.data import Bounded
    from torchrl.modules import ProbabilisticActor, TanhNormal, ValueOperator
    from torchrl.modules.distributions import NormalParamExtractor
    from torchrl.objectives import CrossQLoss

    mlp = crossq.RenormMLP((H, H), warmup_steps=warmup)
    nets = crossq.Nets(actor=mlp, qvalue=mlp)
    cfg = crossq.Config(alpha_init=0.6, gamma=0.9, loss_function="l2")
    low, high = torch.tensor([-2.0, -1.0]), torch.tensor([1.0, 3.0])

    class Spec:
        shape = (ACT,)

    Spec.low, Spec.high = low, high
    p = crossq.init(3, OBS, Spec, cfg, nets)
    # Non-trivial affine BN params so their gradients and effects show.
    p["actor"]["norms"] = tree.map(lambda x: x + 0.1 * torch.randn_like(x), p["actor"]["norms"])
    term = torch.zeros(B, 1, dtype=torch.bool)
    term[2] = True
    batch = make_batch(terminated=term, action=torch.rand(B, ACT) * (high - low) + low)

    def total(q):
        torch.manual_seed(7)
        losses, new = crossq.loss_and_state({**p, **q}, batch, config=cfg, nets=nets)
        return funcrl.training.total_loss(losses), (losses, new)

    keys = ("actor", "qvalue", "log_alpha")
    g, (out, new) = torch.func.grad(total, has_aux=True)({k: p[k] for k in keys})

    actor_net = torch.nn.Sequential(_torchrl_renorm_mlp(p["actor"], warmup), NormalParamExtractor())
    actor = ProbabilisticActor(
        TensorDictModule(actor_net, in_keys=["observation"], out_keys=["loc", "scale"]),
        in_keys=["loc", "scale"], spec=Bounded(low, high, (ACT,)), distribution_class=TanhNormal,
        distribution_kwargs={"low": low, "high": high},
    )  # fmt: skip
    qs = [
        ValueOperator(_torchrl_renorm_mlp(tree.map(lambda x, i=i: x[i], p["qvalue"]), warmup),
                      in_keys=["observation", "action"])
        for i in range(2)
    ]  # fmt: skip
    ref = CrossQLoss(actor, qs, alpha_init=0.6, loss_function="l2")
    ref.make_value_estimator(gamma=0.9)
    torch.manual_seed(7)
    td = ref(td_from_record(batch))
    sum(v for k, v in td.items() if k.startswith("loss_")).backward()
    for k in ("loss_actor", "loss_qvalue", "loss_alpha", "alpha", "entropy"):
        torch.testing.assert_close(out[k], td[k], rtol=1e-5, atol=1e-6, msg=k)
    ga, sa = _grads_and_stats(ref.actor_network_params, ("module", "0", "module", "0"))
    gq, sq = _grads_and_stats(ref.qvalue_network_params, ("module",))
    assert_close(g["actor"], ga)
    assert_close(g["qvalue"], gq)
    torch.testing.assert_close(g["log_alpha"], ref.log_alpha.grad)
    strip = lambda s: [{k: v for k, v in d.items() if k != "steps"} for d in s]  # noqa: E731
    assert_close(strip(new["batch_stats"]["actor"]), sa)
    assert_close(strip(new["batch_stats"]["qvalue"]), sq)


def test_update_step_compiles_and_vmaps():
    nets = crossq.Nets(actor=crossq.RenormMLP((32, 32)), qvalue=crossq.RenormMLP((32, 32)))
    p = crossq.init(0, OBS, ACT, nets=nets)
    out = check_compiled_and_vmapped(
        functools.partial(crossq.loss_and_state, nets=nets), p, make_batch(16, seed=1),
        ("actor", "qvalue", "log_alpha"), {}, has_state=True,
    )  # fmt: skip
    # The statistics were written back: one joint critic pass per step.
    assert out["batch_stats"]["qvalue"][0]["steps"].tolist() == [[1, 1]] * 3


def test_update_writes_statistics():
    p = crossq.init(0, OBS, ACT, nets=NETS)
    train = funcrl.update(
        functools.partial(crossq.loss_and_state, nets=NETS), optim.adam(1e-3),
        trainable=("actor", "qvalue", "log_alpha"), has_state=True,
    )  # fmt: skip
    s = train.init(p)
    for _ in range(3):
        p, s, _ = train.step(p, s, make_batch())
    assert int(p["batch_stats"]["actor"][0]["steps"]) == 6
    assert not torch.allclose(p["batch_stats"]["qvalue"][0]["running_mean"], torch.zeros(2, H))
