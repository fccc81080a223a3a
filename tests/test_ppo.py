"""PPO (clip / KL penalty / plain): the small equations by hand, TorchRL 0.14 parity in float64 with
weights copied (every loss value and every gradient, for each option that changes the math), the
advantages, and the on-policy trainer under torch.compile and vmap.

The rollout and TorchRL helpers at the top are shared with tests/test_a2c.py and
tests/test_reinforce.py (imported from here).
"""

from __future__ import annotations

import functools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import funcrl
from funcrl import optim, ppo, tree
from funcrl.distributions import NormalParamExtractor
from funcrl.objectives import on_policy
from funcrl.record import Record
from tests.test_sac import CatSequential, assert_close, seq_grads, td_from_record

E, T, OBS, ACT, N, H = 3, 6, 4, 2, 4, 16
F64 = torch.float64
LOW, HIGH = torch.tensor([-2.0, -1.0], dtype=F64), torch.tensor([1.0, 3.0], dtype=F64)
DISCRETE = ("categorical", "masked_categorical")


class BoxSpec:
    shape = (ACT,)
    low, high = LOW, HIGH


def action_spec(distribution: str):
    return N if distribution in DISCRETE else BoxSpec


def perturbed(params, scale=0.3, seed=1):
    g = torch.Generator().manual_seed(seed)
    return tree.map(
        lambda x: (
            x + scale * torch.randn(x.shape, generator=g, dtype=x.dtype)
            if x.is_floating_point()
            else x
        ),
        params,
    )


def make_rollout(params, nets, *, seed=0, e=E, t=T, behaviour_noise=0.3, dtype=F64):
    """An ``[E, T]`` rollout from a perturbed copy of ``params`` (so ratios differ from 1), with
    terminations and truncations inside the window."""
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(e, t, OBS, generator=g, dtype=dtype)
    mask = None
    if nets.distribution == "masked_categorical":
        mask = torch.rand(e, t, N, generator=g) > 0.4
        mask[..., 1] = True
    behaviour = perturbed(params, behaviour_noise, seed + 1)
    torch.manual_seed(seed)
    entries = on_policy.explore(behaviour, obs, nets=nets, mask=mask)
    term = torch.zeros(e, t, 1, dtype=torch.bool)
    trunc = torch.zeros(e, t, 1, dtype=torch.bool)
    term[0, 2] = True
    trunc[1, 3] = True
    data = {
        "observation": obs,
        **entries,
        ("next", "observation"): torch.randn(e, t, OBS, generator=g, dtype=dtype),
        ("next", "reward"): torch.randn(e, t, 1, generator=g, dtype=dtype),
        ("next", "terminated"): term,
        ("next", "truncated"): trunc,
        ("next", "done"): term | trunc,
    }
    if mask is not None:
        data["action_mask"] = mask
    return Record(data, batch_ndim=2)


# -- TorchRL side ----------------------------------------------------------------------------------


def mlp_to_torch(p, act=torch.nn.ReLU):
    """An ``nn.Sequential`` holding a funcrl MLP's weights exactly (built in their dtype: copying
    float64 weights into a float32 ``nn.Linear`` would round them)."""
    layers = []
    for i, lp in enumerate(p["layers"]):
        w = lp["weight"]
        lin = torch.nn.Linear(w.shape[1], w.shape[0], dtype=w.dtype)
        with torch.no_grad():
            lin.weight.copy_(w)
            lin.bias.copy_(lp["bias"])
        layers.append(lin)
        if i < len(p["layers"]) - 1:
            layers.append(act())
    return CatSequential(*layers)


class ParamExtractor(torch.nn.Module):
    def __init__(self, nets):
        super().__init__()
        self.extract = NormalParamExtractor(nets.scale_mapping, nets.scale_lb)

    def forward(self, x):
        return self.extract(x)


def torchrl_actor(p, nets):
    from tensordict.nn import TensorDictModule
    from torchrl.modules import (
        IndependentNormal,
        MaskedCategorical,
        ProbabilisticActor,
        TanhNormal,
    )

    TRCategorical = torch.distributions.Categorical

    d = nets.distribution
    if d in DISCRETE:
        net = torch.nn.Sequential(mlp_to_torch(p["actor"]))
        module = TensorDictModule(net, in_keys=["observation"], out_keys=["logits"])
        if d == "categorical":
            cls, in_keys, kw = TRCategorical, ["logits"], {}
        else:
            cls, in_keys, kw = MaskedCategorical, {"logits": "logits", "mask": "action_mask"}, {}
    else:
        # tensordict's biased softplus computes its bias in float32; use funcrl's float64
        # extractor so that the comparison is of the losses, not of that rounding.
        net = torch.nn.Sequential(mlp_to_torch(p["actor"]), ParamExtractor(nets))
        module = TensorDictModule(net, in_keys=["observation"], out_keys=["loc", "scale"])
        in_keys = ["loc", "scale"]
        if d == "normal":
            cls, kw = IndependentNormal, {}
        else:
            cls, kw = TanhNormal, {"low": LOW, "high": HIGH}
    return ProbabilisticActor(
        module,
        in_keys=in_keys,
        distribution_class=cls,
        distribution_kwargs=kw,
        return_log_prob=True,
    ).double()


def torchrl_critic(p):
    from torchrl.modules import ValueOperator

    return ValueOperator(mlp_to_torch(p["critic"]), in_keys=["observation"]).double()


def torchrl_grads(ref):
    return {
        "actor": seq_grads(ref.actor_network_params, ("module", "0", "module", "0")),
        "critic": seq_grads(ref.critic_network_params, ("module",)),
    }


def funcrl_grads(loss_fn, params, batch, seed, keys=("actor", "critic")):
    def total(p):
        torch.manual_seed(seed)
        out = loss_fn({**params, **p}, batch)
        return funcrl.training.total_loss(out), out

    return torch.func.grad(total, has_aux=True)({k: params[k] for k in keys})


def check_parity(out, g, td, ref, keys, *, grads=True, rtol=1e-7, atol=1e-9):
    for k in keys:
        torch.testing.assert_close(out[k], td[k].reshape(out[k].shape), rtol=rtol, atol=atol, msg=k)
    if grads:
        assert_close(g, torchrl_grads(ref), rtol=rtol, atol=atol)


def ppo_ref(p, nets, cfg: ppo.Config):
    from torchrl.objectives import ClipPPOLoss, KLPENPPOLoss, PPOLoss

    common = dict(
        entropy_bonus=cfg.entropy_bonus,
        samples_mc_entropy=cfg.samples_mc_entropy,
        entropy_coeff=cfg.entropy_coeff,
        critic_coeff=cfg.critic_coeff,
        loss_critic_type=cfg.loss_critic_type,
        normalize_advantage=cfg.normalize_advantage,
        normalize_advantage_exclude_dims=cfg.normalize_advantage_exclude_dims,
        clip_value=cfg.clip_value,
    )
    actor, critic = torchrl_actor(p, nets), torchrl_critic(p)
    if cfg.variant == "clip":
        ref = ClipPPOLoss(actor, critic, clip_epsilon=cfg.clip_epsilon, **common)
    elif cfg.variant == "kl":
        ref = KLPENPPOLoss(
            actor, critic, dtarg=cfg.dtarg, beta=cfg.beta, increment=cfg.increment,
            decrement=cfg.decrement, samples_mc_kl=cfg.samples_mc_kl, **common,
        )  # fmt: skip
    else:
        ref = PPOLoss(actor, critic, **common)
    ref.make_value_estimator(gamma=cfg.gamma, lmbda=cfg.lmbda)
    return exact_coefficients(ref, cfg)


def exact_coefficients(ref, cfg):
    """TorchRL keeps its coefficients in float32 buffers (0.2 becomes 0.2000000030); put the
    float64 values in them so that the comparison is float64's, not float32's."""
    eps = cfg.clip_epsilon if hasattr(cfg, "clip_epsilon") else None
    values = {
        "entropy_coeff": getattr(cfg, "entropy_coeff", None),
        "critic_coeff": getattr(cfg, "critic_coeff", None),
        "clip_value": cfg.value_clip if hasattr(cfg, "value_clip") else cfg.clip_value,
        "beta": getattr(cfg, "beta", None),
    }
    if isinstance(eps, tuple):
        values.update(clip_epsilon_low=eps[0], clip_epsilon_high=eps[1])
    elif eps is not None:
        values["clip_epsilon"] = eps
    for name, v in values.items():
        if v is not None and isinstance(getattr(ref, name, None), torch.Tensor):
            setattr(ref, name, torch.tensor(float(v), dtype=F64))
    est = ref.value_estimator
    for name in ("gamma", "lmbda"):
        if isinstance(getattr(est, name, None), torch.Tensor):
            setattr(est, name, torch.tensor(float(getattr(cfg, name)), dtype=F64))
    return ref


PPO_CASES = [
    ("tanh_normal", ppo.Config()),
    ("tanh_normal", ppo.Config(samples_mc_entropy=3, loss_critic_type="l2")),
    ("normal", ppo.Config(clip_epsilon=0.1, loss_critic_type="l1", critic_coeff=0.5)),
    ("normal", ppo.Config(clip_value=0.05, normalize_advantage=True)),
    ("normal", ppo.Config(clip_value=True)),
    ("normal", ppo.Config(normalize_advantage=True, normalize_advantage_exclude_dims=(0,))),
    ("normal", ppo.Config(clip_epsilon=(0.1, 0.3))),
    ("categorical", ppo.Config(entropy_coeff=0.05)),
    ("masked_categorical", ppo.Config(clip_value=0.1)),
    ("categorical", ppo.Config(entropy_bonus=False, gamma=0.9, lmbda=0.8)),
    ("tanh_normal", ppo.Config(variant="kl")),
    ("normal", ppo.Config(variant="kl", beta=0.3, samples_mc_entropy=2)),
    ("categorical", ppo.Config(variant="kl", dtarg=1e-6)),
    ("masked_categorical", ppo.Config(variant="kl", dtarg=10.0)),
    ("tanh_normal", ppo.Config(variant="plain", normalize_advantage=True)),
    ("categorical", ppo.Config(variant="plain", clip_value=0.1, loss_critic_type="l2")),
]


@pytest.mark.torchrl
@pytest.mark.parametrize(
    "distribution,cfg", PPO_CASES, ids=[f"{d}-{i}" for i, (d, _) in enumerate(PPO_CASES)]
)
def test_ppo_parity_with_torchrl(distribution, cfg):
    pytest.importorskip("torchrl")
    nets = ppo.Nets(distribution=distribution, num_cells=(H, H))
    p = ppo.init(0, OBS, action_spec(distribution), cfg, nets, dtype=F64)
    batch = make_rollout(p, nets)
    loss_fn = functools.partial(ppo.loss, config=cfg, nets=nets)
    g, out = funcrl_grads(loss_fn, p, batch, seed=5)
    ref = ppo_ref(p, nets, cfg)
    torch.manual_seed(5)
    td = ref(td_from_record(batch))
    keys = [k for k in td.keys() if k in out]
    assert {"loss_objective", "kl_approx"} <= set(keys)
    check_parity(out, g, td, ref, keys, grads=False)
    if cfg.variant == "kl":
        # TorchRL adapts its beta buffer in place; funcrl returns it.
        torch.testing.assert_close(out["kl_beta"], ref.beta)
        # TorchRL's in-place `beta.data *= increment` runs after the graph is built, so its
        # backward uses the adapted beta while its forward used the old one; funcrl uses the old
        # beta in both. Compare gradients with the adaptation switched off on TorchRL's side.
        ref = ppo_ref(p, nets, cfg)
        ref.increment, ref.decrement = 1.0, 1.0
        torch.manual_seed(5)
        td = ref(td_from_record(batch))
    sum(v for k, v in td.items() if k.startswith("loss_")).backward()
    assert_close(g, torchrl_grads(ref), rtol=1e-7, atol=1e-9)


@pytest.mark.torchrl
def test_ppo_advantages_match_torchrl_gae():
    pytest.importorskip("torchrl")
    nets = ppo.Nets(distribution="normal", num_cells=(H, H))
    cfg = ppo.Config(gamma=0.95, lmbda=0.9)
    p = ppo.init(0, OBS, BoxSpec, cfg, nets, dtype=F64)
    batch = make_rollout(p, nets)
    ref = ppo_ref(p, nets, cfg)
    td = td_from_record(batch)
    ref.value_estimator(td, params=ref.critic_network_params.detach())
    got = on_policy.advantages(p, batch, config=cfg, nets=nets)
    for k in ("advantage", "value_target", "state_value"):
        torch.testing.assert_close(got[k], td[k], rtol=1e-10, atol=1e-12, msg=k)


# -- the small equations by hand -------------------------------------------------------------------


def test_clipped_surrogate_by_hand():
    # r = (1.5, 0.5, 1.1, 0.7), A = (1, 1, -2, -1), eps = 0.2:
    # r A = (1.5, 0.5, -2.2, -0.7); clip(r) A = (1.2, 0.8, -2.2, -0.8); min = (1.2, 0.5, -2.2, -0.8)
    r = torch.tensor([1.5, 0.5, 1.1, 0.7], dtype=F64)
    adv = torch.tensor([1.0, 1.0, -2.0, -1.0], dtype=F64)
    gain, frac = ppo.clipped_surrogate(r.log(), adv, ppo.clip_bounds(0.2))
    torch.testing.assert_close(gain, torch.tensor([1.2, 0.5, -2.2, -0.8], dtype=F64))
    assert frac.item() == pytest.approx(3 / 4)  # 1.5, 0.5 and 0.7 lie outside [0.8, 1.2]


def test_clip_bounds_by_hand():
    assert ppo.clip_bounds(0.2) == pytest.approx((math.log(0.8), math.log(1.2)))
    assert ppo.clip_bounds((0.1, 0.3)) == pytest.approx((math.log(0.9), math.log(1.3)))


@pytest.mark.parametrize(
    "kl,expected", [(0.02, 2.0), (0.015, 1.0), (0.01, 1.0), (0.0067, 1.0), (0.006, 0.5)]
)
def test_adapt_beta_by_hand(kl, expected):
    # dtarg = 0.01: up above 0.015, down below 0.00667, unchanged between.
    beta = ppo.adapt_beta(torch.tensor(1.0), torch.tensor(kl), 0.01, 2.0, 0.5)
    assert beta.item() == pytest.approx(expected)


def test_normalize_advantage_by_hand():
    a = torch.tensor([[1.0], [2.0], [3.0], [6.0]], dtype=F64)
    # mean 3, unbiased std sqrt((4 + 1 + 0 + 9) / 3)
    std = math.sqrt(14 / 3)
    want = torch.tensor([[-2.0], [-1.0], [0.0], [3.0]], dtype=F64) / std
    torch.testing.assert_close(on_policy.normalize_advantage(a), want)
    # Excluding dim 1 of [2, 2, 1] normalises each column on its own.
    b = torch.tensor([[[1.0], [10.0]], [[3.0], [30.0]]], dtype=F64)
    got = on_policy.normalize_advantage(b, exclude_dims=(1,))
    s = math.sqrt(2.0)
    torch.testing.assert_close(got[:, 0, 0], torch.tensor([-1.0, 1.0], dtype=F64) / s)
    torch.testing.assert_close(got[:, 1, 0], torch.tensor([-10.0, 10.0], dtype=F64) / (10 * s))


@settings(max_examples=25, deadline=None)
@given(st.lists(st.floats(-5, 5), min_size=2, max_size=12), st.floats(0.01, 0.5))
def test_clipped_surrogate_is_a_pessimistic_bound(log_r, eps):
    # min(rA, clip(r)A) <= rA always, and equals rA when r is inside the clip range.
    lw = torch.tensor(log_r, dtype=F64).clamp(-3, 3)
    adv = torch.linspace(-2, 2, len(log_r), dtype=F64)
    gain, _ = ppo.clipped_surrogate(lw, adv, ppo.clip_bounds(eps))
    assert bool((gain <= lw.exp() * adv + 1e-12).all())
    inside = (lw >= math.log1p(-eps)) & (lw <= math.log1p(eps))
    torch.testing.assert_close(gain[inside], (lw.exp() * adv)[inside])


def test_loss_without_advantage_equals_loss_with_precomputed():
    nets = ppo.Nets(distribution="categorical", num_cells=(H, H))
    cfg = ppo.Config()
    p = ppo.init(0, OBS, N, cfg, nets, dtype=F64)
    batch = make_rollout(p, nets)
    with_adv = on_policy.advantages(p, batch, config=cfg, nets=nets)
    a, b = ppo.loss(p, batch, config=cfg, nets=nets), ppo.loss(p, with_adv, config=cfg, nets=nets)
    for k in ("loss_objective", "loss_critic", "loss_entropy"):
        torch.testing.assert_close(a[k], b[k])


def test_time_major_rollout_matches_batch_major():
    nets = ppo.Nets(distribution="normal", num_cells=(H, H))
    cfg_bm, cfg_tm = ppo.Config(), ppo.Config(time_dim=0)
    p = ppo.init(0, OBS, BoxSpec, cfg_bm, nets, dtype=F64)
    batch = make_rollout(p, nets)
    tm = batch.apply(lambda x: x.transpose(0, 1), batch_ndim=2)
    a = on_policy.advantages(p, batch, config=cfg_bm, nets=nets)
    b = on_policy.advantages(p, tm, config=cfg_tm, nets=nets)
    torch.testing.assert_close(a["advantage"], b["advantage"].transpose(0, 1))


def test_separate_losses_stop_the_critic_at_the_shared_trunk():
    from funcrl.nn import MLP

    trunk = MLP(OBS, H, num_cells=(H,), activation="relu", activate_last_layer=True)
    nets = ppo.Nets(distribution="categorical", trunk=trunk, num_cells=(H,))
    p = ppo.init(0, OBS, N, ppo.Config(), nets, dtype=F64)
    assert set(p) == {"trunk", "actor", "critic"}
    batch = make_rollout(p, nets)
    keys = ("trunk", "actor", "critic")

    def trunk_grad(cfg, only):
        def total(q):
            out = ppo.loss({**p, **q}, batch, config=cfg, nets=nets)
            return out[only]

        return torch.func.grad(total)({k: p[k] for k in keys})["trunk"]

    shared = trunk_grad(ppo.Config(), "loss_critic")
    separate = trunk_grad(ppo.Config(separate_losses=True), "loss_critic")
    assert any(bool(x.abs().sum() > 0) for x in tree.leaves(shared))
    assert all(bool((x == 0).all()) for x in tree.leaves(separate))


# -- the trainer -----------------------------------------------------------------------------------


def _trainer_inputs(variant="clip", distribution="categorical"):
    nets = ppo.Nets(distribution=distribution, num_cells=(H,))
    cfg = ppo.Config(variant=variant)
    train = ppo.trainer(optim.adam(1e-3), config=cfg, nets=nets, epochs=2, num_minibatches=3)
    p = ppo.init(0, OBS, action_spec(distribution), cfg, nets)
    return train, p, train.init(p), make_rollout(p, nets, dtype=torch.float32)


def test_trainer_step_updates_and_counts():
    train, p, state, rollout = _trainer_inputs("kl")
    torch.manual_seed(0)
    p1, s1, m = train.step(p, state, rollout)
    assert int(s1.step) == 1
    assert not torch.equal(p1["actor"]["layers"][0]["weight"], p["actor"]["layers"][0]["weight"])
    assert p1["kl_beta"].shape == () and not torch.equal(p1["kl_beta"], p["kl_beta"])
    assert {"loss_objective", "loss_critic", "loss_entropy", "kl_beta"} <= set(m)


@pytest.mark.parametrize("distribution", ["categorical", "tanh_normal"])
def test_host_loop_of_minibatch_steps_is_the_trainer(distribution):
    # minibatch_draws + minibatch_trainer, looped on the host (what examples/ppo.py --jit
    # compiles), is trainer.step: the same shuffles, the same loss keys (TanhNormal's Monte-Carlo
    # entropy reads them), kl_beta written back after each minibatch.
    train, p, state, rollout = _trainer_inputs("kl", distribution)
    cfg = ppo.Config(variant="kl")
    nets = ppo.Nets(distribution=distribution, num_cells=(H,))
    one = on_policy.minibatch_trainer(
        functools.partial(ppo.loss, config=cfg, nets=nets),
        optim.adam(1e-3),
        state_keys=("kl_beta",),
    )
    key = funcrl.random.key(7)
    want, want_state, _ = train.step(p, state, rollout, key)
    flat = on_policy.advantages(p, rollout, config=cfg, nets=nets).reshape(-1)
    index, keys = on_policy.minibatch_draws(key, 2, 3, flat.batch_size[0])
    assert index.shape == (6, flat.batch_size[0] // 3) and keys.shape == (6, 2)
    for e in range(2):  # each epoch's rows are a permutation of the whole rollout
        assert torch.equal(
            index[3 * e : 3 * e + 3].flatten().sort().values, torch.arange(flat.batch_size[0])
        )
    got, got_state = p, one.init(p)
    for i in range(6):
        got, got_state, _ = one.step(got, got_state, flat[index[i]], keys[i])
    assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert_close(got_state.opt, want_state.opt, rtol=1e-5, atol=1e-6)
    assert int(got_state.step) == 6 and int(want_state.step) == 1  # minibatches vs rollouts


def test_minibatch_draws_rejects_indivisible_counts():
    with pytest.raises(ValueError, match="minibatch_draws: n=10 .* num_minibatches=3"):
        on_policy.minibatch_draws(funcrl.random.key(0), 2, 3, 10)


def test_trainer_rejects_indivisible_rollout():
    train, p, state, rollout = _trainer_inputs()
    with pytest.raises(ValueError, match="on_policy.trainer.step.*num_minibatches=3"):
        train.step(p, state, rollout[:2, :4])


@pytest.mark.parametrize(
    "epochs,num_minibatches",
    [(1, 1), pytest.param(2, 3, marks=pytest.mark.slow)],  # 2 x 3: ~20 s of Dynamo tracing
)
def test_trainer_step_compiles_fullgraph(epochs, num_minibatches):
    nets = ppo.Nets(distribution="categorical", num_cells=(H,))
    cfg = ppo.Config()
    train = ppo.trainer(
        optim.adam(1e-3), config=cfg, nets=nets, epochs=epochs, num_minibatches=num_minibatches
    )
    p = ppo.init(0, OBS, N, cfg, nets)
    state, rollout = train.init(p), make_rollout(p, nets, dtype=torch.float32)
    torch.manual_seed(0)
    p1, _, m1 = train.step(p, state, rollout)
    torch._dynamo.reset()
    step = torch.compile(train.step, fullgraph=True, backend="eager")
    torch.manual_seed(0)
    p2, _, m2 = step(p, state, rollout)
    assert_close(p2, p1, rtol=1e-4, atol=1e-5)


def test_trainer_step_vmaps_over_seeds():
    # No key: the minibatch order comes from torch.randperm, so use one minibatch per epoch to
    # make the seeds comparable with their solo runs.
    nets = ppo.Nets(distribution="normal", num_cells=(H,))
    cfg = ppo.Config()
    train = ppo.trainer(optim.adam(1e-3), config=cfg, nets=nets, epochs=2, num_minibatches=1)
    params = [ppo.init(s, OBS, BoxSpec, cfg, nets) for s in (0, 1)]
    rollouts = [make_rollout(q, nets, seed=s, dtype=torch.float32) for s, q in enumerate(params)]
    states = [train.init(q) for q in params]
    solo = [train.step(q, s, r)[0] for q, s, r in zip(params, states, rollouts)]
    stacked = torch.func.vmap(train.step, randomness="different")(
        tree.stack(params), tree.stack(states), Record.stack(rollouts)
    )[0]
    for i in range(2):
        assert_close(tree.map(lambda x, i=i: x[i], stacked), solo[i], rtol=1e-4, atol=1e-5)


# -- KLAdaptiveLR ------------------------------------------------------------------------------------


@pytest.mark.torchrl
def test_kl_adaptive_lr_matches_torchrl():
    torchrl_utils = pytest.importorskip("torchrl.objectives.utils")
    kls = [0.05, 0.001, 0.0, 0.01, 1.0, 1.0, 1.0, 1.0, 0.001, 0.001, 0.02, 0.004, 0.005]
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    ref = torchrl_utils.KLAdaptiveLR(opt, 0.01, factor=2.0, min_lr=2e-4, max_lr=4e-3)
    ours = on_policy.KLAdaptiveLR(1e-3, 0.01, factor=2.0, min_lr=2e-4, max_lr=4e-3)
    state = ours.transform.init({"w": torch.zeros(1, dtype=F64)})
    for kl in kls:
        ref.step(kl)
        state = ours.adapt(state, torch.tensor(kl))
        assert state.learning_rate.item() == pytest.approx(ref.get_last_lr()[0], rel=1e-6)


def test_kl_adaptive_lr_by_hand_and_in_the_trainer():
    sched = on_policy.KLAdaptiveLR(1e-3, 0.01)  # factor 1.5
    lr = torch.tensor(1e-3)
    assert sched.new_rate(lr, torch.tensor(0.03)).item() == pytest.approx(1e-3 / 1.5)
    assert sched.new_rate(lr, torch.tensor(0.001)).item() == pytest.approx(1.5e-3)
    assert sched.new_rate(lr, torch.tensor(0.0)).item() == pytest.approx(1e-3)  # no move, no growth
    assert sched.new_rate(lr, torch.tensor(0.01)).item() == pytest.approx(1e-3)
    # The update is -lr * grads; in a chain it is found and adapted wherever it sits.
    grads = {"w": torch.tensor([2.0])}
    upd, _ = sched.transform.update(grads, sched.transform.init(grads))
    torch.testing.assert_close(upd["w"], torch.tensor([-2e-3]))
    nets = ppo.Nets(distribution="categorical", num_cells=(H,))
    opt = optim.chain(optim.clip_by_global_norm(1.0), optim.scale_by_adam(), sched.transform)
    train = ppo.trainer(opt, nets=nets, epochs=1, num_minibatches=2, kl_adaptive_lr=sched)
    p = ppo.init(0, OBS, N, nets=nets)
    state = train.init(p)
    _, s1, m = train.step(p, state, make_rollout(p, nets, dtype=torch.float32))
    lr0, lr1 = state.opt[2].learning_rate, s1.opt[2].learning_rate
    # The behaviour policy is a perturbed copy: its KL to the current one is far above 0.02.
    assert m["kl_approx"] > 0.02 and lr1.item() == pytest.approx(lr0.item() / 1.5**2)


# -- reward scaling --------------------------------------------------------------------------------


def test_reward_scaling_by_hand():
    scaler = on_policy.RewardScaling(gamma=0.5, epsilon=1e-8)
    state = scaler.init(2, dtype=F64)
    # Step 1: G = r = (1, 3); var(G) over everything seen = 1.
    state, out = scaler(state, torch.tensor([1.0, 3.0], dtype=F64), torch.tensor([False, False]))
    torch.testing.assert_close(out, torch.tensor([1.0, 3.0], dtype=F64) / math.sqrt(1 + 1e-8))
    # Step 2: env 0 terminates (its carried return is cut): G = (0 + 2, 0.5 * 3 + 2) = (2, 3.5);
    # all four returns (1, 3, 2, 3.5) have population variance 0.921875.
    state, out = scaler(state, torch.tensor([2.0, 2.0], dtype=F64), torch.tensor([True, False]))
    torch.testing.assert_close(state.discounted_return, torch.tensor([2.0, 3.5], dtype=F64))
    torch.testing.assert_close(out, torch.full((2,), 2.0, dtype=F64) / math.sqrt(0.921875 + 1e-8))


def test_reward_scaling_compiles_and_vmaps():
    scaler = on_policy.RewardScaling()
    states = tree.stack([scaler.init(3), scaler.init(3)])
    r, term = torch.randn(2, 3), torch.zeros(2, 3, dtype=torch.bool)
    solo = [scaler(scaler.init(3), r[i], term[i])[1] for i in range(2)]
    _, both = torch.func.vmap(scaler)(states, r, term)
    torch.testing.assert_close(both, torch.stack(solo))


# -- shared trunk (TorchRL's ActorValueOperator) ----------------------------------------------------


@pytest.mark.torchrl
@pytest.mark.parametrize("separate_losses", [False, True])
def test_shared_trunk_parity_with_torchrl(separate_losses):
    pytest.importorskip("torchrl")
    from tensordict.nn import TensorDictModule
    from torchrl.modules import ActorValueOperator, ProbabilisticActor, ValueOperator
    from torchrl.objectives import ClipPPOLoss

    from funcrl.nn import MLP

    trunk = MLP(OBS, H, num_cells=(), activation="relu", activate_last_layer=True)
    nets = ppo.Nets(distribution="categorical", trunk=trunk, num_cells=(H,))
    cfg = ppo.Config(separate_losses=separate_losses)
    p = ppo.init(0, OBS, N, cfg, nets, dtype=F64)
    batch = make_rollout(p, nets)
    loss_fn = functools.partial(ppo.loss, config=cfg, nets=nets)
    g, out = funcrl_grads(loss_fn, p, batch, seed=5, keys=("trunk", "actor", "critic"))

    lin = mlp_to_torch(p["trunk"])[0]
    common = TensorDictModule(
        torch.nn.Sequential(lin, torch.nn.ReLU()), in_keys=["observation"], out_keys=["hidden"]
    )
    head = TensorDictModule(mlp_to_torch(p["actor"]), in_keys=["hidden"], out_keys=["logits"])
    policy = ProbabilisticActor(
        head, in_keys=["logits"], distribution_class=torch.distributions.Categorical,
        return_log_prob=True,
    )  # fmt: skip
    value = ValueOperator(mlp_to_torch(p["critic"]), in_keys=["hidden"])
    avo = ActorValueOperator(common, policy, value)
    ref = ClipPPOLoss(
        avo.get_policy_operator(), avo.get_value_operator(), separate_losses=separate_losses
    )
    ref.make_value_estimator(gamma=cfg.gamma, lmbda=cfg.lmbda)
    exact_coefficients(ref, cfg)
    td = ref(td_from_record(batch))
    sum(v for k, v in td.items() if k.startswith("loss_")).backward()
    for k in ("loss_objective", "loss_critic", "loss_entropy", "entropy", "clip_fraction"):
        torch.testing.assert_close(out[k], td[k], rtol=1e-7, atol=1e-9, msg=k)
    # The trunk's parameters are shared: TorchRL accumulates both losses' gradients into them
    # (with separate_losses the critic's copy is detached and adds nothing).
    want = {
        "trunk": {"layers": [{"weight": lin.weight.grad, "bias": lin.bias.grad}]},
        "actor": seq_grads(ref.actor_network_params, ("module", "1", "module")),
        "critic": seq_grads(ref.critic_network_params, ("module", "1", "module")),
    }
    assert_close(g, want, rtol=1e-7, atol=1e-9)


def test_on_policy_states_round_trip_through_checkpoints(tmp_path):
    from funcrl import checkpoint

    sched = on_policy.KLAdaptiveLR(1e-3, 0.01)
    opt = optim.chain(optim.scale_by_adam(), sched.transform)
    state = {
        "opt": opt.init({"w": torch.zeros(3)}),
        "rewards": on_policy.RewardScaling().init(4),
    }
    path = str(tmp_path / "ck.pt")
    checkpoint.save(path, state)
    back = checkpoint.load(path).tree
    assert isinstance(back["opt"][1], on_policy.KLAdaptiveLRState)
    assert isinstance(back["rewards"], on_policy.RewardScaleState)
    assert_close(back, state)


def test_minibatch_draws_and_step_vmap_over_seeds_and_compile():
    # The host loop's pieces inside a training step: vmapped over seeds (each seed its own key
    # and params), and under torch.compile(fullgraph=True), they give the solo eager results.
    from funcrl import random

    _, p, _, rollout = _trainer_inputs()
    cfg, nets = ppo.Config(), ppo.Nets(distribution="categorical", num_cells=(H,))
    one = on_policy.minibatch_trainer(
        functools.partial(ppo.loss, config=cfg, nets=nets), optim.adam(1e-3)
    )
    flat = on_policy.advantages(p, rollout, config=cfg, nets=nets).reshape(-1)
    n = flat.batch_size[0]
    keys = torch.stack([random.key(0), random.key(1)])
    idx, ks = torch.func.vmap(lambda k: on_policy.minibatch_draws(k, 2, 3, n))(keys)
    for s in range(2):
        want_idx, want_ks = on_policy.minibatch_draws(keys[s], 2, 3, n)
        assert torch.equal(idx[s], want_idx) and torch.equal(ks[s], want_ks)
    compiled = torch.compile(
        lambda k: on_policy.minibatch_draws(k, 2, 3, n), fullgraph=True, backend="eager"
    )
    assert torch.equal(compiled(keys[0])[0], idx[0])

    def step(params, key):
        return one.step(params, one.init(params), flat[idx[0, 0]], key)[0]

    params = [ppo.init(s, OBS, N, cfg, nets) for s in (0, 1)]
    solo = [step(q, ks[s, 0]) for s, q in enumerate(params)]
    batched = torch.func.vmap(step)(tree.stack(params), ks[:, 0])
    assert_close(batched, tree.stack(solo), rtol=1e-5, atol=1e-6)
    torch._dynamo.reset()
    assert_close(
        torch.compile(step, fullgraph=True, backend="eager")(params[0], ks[0, 0]),
        solo[0],
        rtol=1e-5,
        atol=1e-6,
    )
