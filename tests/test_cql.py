"""CQL: the conservative penalty by hand, TorchRL 0.14 parity (float64, values and gradients, every
option), the trainer."""

from __future__ import annotations

import dataclasses
import math
import warnings

import pytest
import torch

import funcrl
from funcrl import cql, optim, testing, tree
from funcrl.record import Record

OBS, ACT, B = 3, 2, 6
SMALL = cql.Nets(num_cells=(8, 8))


def make_batch(seed: int = 0, b: int = B, dtype=torch.float32) -> Record:
    g = torch.Generator().manual_seed(seed)
    term = torch.zeros(b, 1, dtype=torch.bool)
    term[1] = True
    return Record(
        {
            "observation": torch.randn(b, OBS, generator=g).to(dtype),
            "action": (torch.rand(b, ACT, generator=g) * 1.8 - 0.9).to(dtype),
            ("next", "observation"): torch.randn(b, OBS, generator=g).to(dtype),
            ("next", "reward"): torch.randn(b, 1, generator=g).to(dtype),
            ("next", "terminated"): term,
            ("next", "done"): term,
        },
        batch_ndim=1,
    )


def test_conservative_penalty_by_hand():
    """One critic, two states, one draw: logsumexp of three values, mean, minus w Q(s, a)."""
    qr = torch.tensor([[1.0, 2.0]])
    qn = torch.tensor([[0.0, 1.0]])
    qc = torch.tensor([[3.0, 0.0]])
    lp_n, lp_c = torch.tensor([0.5, 0.0]), torch.tensor([0.0, -1.0])
    dens = torch.tensor(math.log(0.25))
    q_data = torch.tensor([[1.0, -1.0]])
    got = cql.conservative_penalty(qr, qn, qc, dens, lp_n, lp_c, q_data, 2.0, 0.5)
    lse = [
        2.0 * math.log(sum(math.exp(v / 2) for v in (1 - dens.item(), -0.5, 3.0))),
        2.0 * math.log(sum(math.exp(v / 2) for v in (2 - dens.item(), 1.0, 1.0))),
    ]
    mean = 0.5 * (lse[0] + lse[1]) * 0.5
    torch.testing.assert_close(got, torch.tensor([[mean - 0.5, mean + 0.5]]))


def test_uniform_draws_cover_the_box():
    from funcrl.objectives.cql import _uniform

    low, high = torch.tensor([-2.0, 0.0]), torch.tensor([3.0, 0.5])
    u = _uniform(funcrl.random.key(0), (4000, 2), low, high)
    assert bool((u >= low).all()) and bool((u <= high).all())
    torch.testing.assert_close(u.mean(0), (low + high) / 2, atol=0.1, rtol=0)


# --- TorchRL parity -------------------------------------------------------------------------------

OPTIONS = [
    {},
    {"max_q_backup": True, "num_random": 3, "temperature": 2.0, "min_q_weight": 5.0},
    {"deterministic_backup": False, "with_lagrange": True, "lagrange_thresh": 5.0},
    {"fixed_alpha": True, "min_alpha": 0.8, "alpha_init": 0.5, "loss_function": "l2"},
    {"delay_qvalue": False, "target_entropy": -0.5, "num_random": 4},
]


def torchrl_cql(options):
    from tensordict.nn import NormalParamExtractor, TensorDictModule
    from torchrl.data import Bounded
    from torchrl.modules import MLP, ProbabilisticActor, TanhNormal, ValueOperator
    from torchrl.objectives import CQLLoss, ValueEstimators

    torch.manual_seed(0)
    spec = Bounded(-torch.ones(ACT), torch.ones(ACT), (ACT,))
    body = torch.nn.Sequential(
        MLP(in_features=OBS, out_features=2 * ACT, num_cells=[8, 8]), NormalParamExtractor()
    )
    actor = ProbabilisticActor(
        TensorDictModule(body, in_keys=["observation"], out_keys=["loc", "scale"]),
        in_keys=["loc", "scale"],
        spec=spec,
        distribution_class=TanhNormal,
        distribution_kwargs={"low": spec.space.low, "high": spec.space.high},
    )
    q = ValueOperator(
        MLP(in_features=OBS + ACT, out_features=1, num_cells=[8, 8]),
        in_keys=["observation", "action"],
    )
    m = CQLLoss(actor, q, **options)
    m.make_value_estimator(ValueEstimators.TD0, gamma=0.9)
    with torch.no_grad():
        if m.delay_qvalue:
            m.target_qvalue_network_params.apply_(lambda x: x.add_(0.05))
        if m.with_lagrange:
            m.log_alpha_prime.fill_(0.3)
    return m


def _grads(module, td, inner, flat):
    from funcrl.objectives.actor_critic import read_torchrl

    gtd = td.detach().clone()
    for key, g in zip(list(td.keys(True, True)), flat):
        gtd.set(key, g)
    return read_torchrl(module, gtd, inner)[1]


@pytest.mark.torchrl
@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: ",".join(o) or "default")
def test_parity_with_torchrl(options):
    pytest.importorskip("torchrl")
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    warnings.filterwarnings("ignore", message="No target network updater")
    try:
        m = torchrl_cql(options)
        config, nets, params = cql.from_torchrl(m)
        for k, v in options.items():
            assert getattr(config, k) == pytest.approx(v), k
        batch = make_batch(dtype=torch.float64)
        torch.manual_seed(11)
        td = batch.to_tensordict()
        ref = m(td)
        a_td, q_td = m.actor_network_params, m.qvalue_network_params
        a_leaves, q_leaves = list(a_td.values(True, True)), list(q_td.values(True, True))
        if m.with_lagrange:
            # funcrl applies the paper's alpha' (gap - tau) per critic (TorchRL never scales it).
            alpha_prime = m.log_alpha_prime.detach().exp()
            ref.set("loss_cql", alpha_prime * (ref["loss_cql"] - 2 * m.target_action_gap))
        total_ref = sum(
            ref[k] for k in ("loss_actor", "loss_actor_bc", "loss_qvalue", "loss_cql", "loss_alpha")
        )
        wrt = a_leaves + q_leaves + ([] if config.fixed_alpha else [m.log_alpha])
        flat = torch.autograd.grad(total_ref, wrt)
        expected = {
            "actor": _grads(
                m.actor_network, a_td, m.actor_network.module[0].module[0], flat[: len(a_leaves)]
            ),
            "qvalue": _grads(
                m.qvalue_network, q_td, m.qvalue_network.module,
                flat[len(a_leaves) : len(a_leaves) + len(q_leaves)],
            ),
            "log_alpha": flat[-1] if not config.fixed_alpha else torch.zeros(()),
        }  # fmt: skip
        trainable = ["actor", "qvalue", "log_alpha"]
        if config.with_lagrange:
            (expected["log_alpha_prime"],) = torch.autograd.grad(
                ref["loss_alpha_prime"], [m.log_alpha_prime]
            )
            trainable.append("log_alpha_prime")

        def total(p):
            out = cql.loss({**params, **p}, batch, config=config, nets=nets)
            return funcrl.training.total_loss(out), out

        torch.manual_seed(11)  # key=None: the global RNG, TorchRL's draws in TorchRL's order
        grads, out = torch.func.grad(total, has_aux=True)({k: params[k] for k in trainable})
        keys = ["loss_actor", "loss_actor_bc", "loss_qvalue", "loss_cql", "loss_alpha"]
        keys += ["alpha", "entropy"] + (["loss_alpha_prime"] if config.with_lagrange else [])
        for k in keys:
            torch.testing.assert_close(out[k], ref[k].detach(), rtol=1e-7, atol=1e-9, msg=k)
        torch.testing.assert_close(out["td_error"], td["td_error"].sqrt())
        for k in trainable:
            torch.testing.assert_close(
                tree.leaves(grads[k]), tree.leaves(expected[k]), rtol=1e-7, atol=1e-9, msg=k
            )
    finally:
        torch.set_default_dtype(old)


def test_trainer_trains_alpha_prime_and_reports_bc():
    cfg = cql.Config(with_lagrange=True, lagrange_thresh=10.0, num_random=2)
    train = cql.trainer(optim.adam(1e-2), config=cfg, nets=SMALL)
    params = cql.init(0, OBS, ACT, cfg, SMALL)
    state = train.init(params)
    new, _, metrics = train.step(params, state, make_batch(), funcrl.random.key(0))
    assert "actor_bc" in metrics and "loss_actor_bc" not in metrics
    # The gap is far below the threshold: alpha' shrinks.
    assert float(new["log_alpha_prime"]) < float(params["log_alpha_prime"])


def test_lagrangian_scales_the_penalty_on_the_critics():
    # The paper's Lagrangian reaches the critics: L_cql = sum_i alpha' (gap_i - tau), so its
    # gradient doubles with alpha' (TorchRL 0.14's is unscaled: alpha' never acts).
    cfg = cql.Config(with_lagrange=True, lagrange_thresh=3.0, num_random=2)
    params = cql.init(0, OBS, ACT, cfg, SMALL)
    batch, key = make_batch(), funcrl.random.key(1)

    def penalty(q, log_alpha_prime):
        out = cql.loss(
            {**params, "qvalue": q, "log_alpha_prime": log_alpha_prime},
            batch, config=cfg, nets=SMALL, key=key,
        )  # fmt: skip
        return out["loss_cql"]

    g1 = torch.func.grad(penalty)(params["qvalue"], torch.tensor(0.0))
    g2 = torch.func.grad(penalty)(params["qvalue"], torch.tensor(math.log(2.0)))
    testing.assert_trees_all_close(tree.scale(g1, 2.0), g2, rtol=1e-5, atol=1e-7)
    plain = cql.loss(params, batch, config=dataclasses.replace(cfg, with_lagrange=False),
                     nets=SMALL, key=key)["loss_cql"]  # fmt: skip
    # alpha' = 1: the plain penalty minus tau per critic.
    torch.testing.assert_close(penalty(params["qvalue"], torch.tensor(0.0)), plain - 2 * 3.0)
