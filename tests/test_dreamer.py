import math

import pytest
import torch
import torch.nn.functional as F

from funcrl import Record, tree
from funcrl.distributions import TanhNormal
from funcrl.modules import Keyed
from funcrl.modules.planners import WorldModelWrapper
from funcrl.nn import from_module
from funcrl.nn.dreamer import (
    DreamerActor,
    ObsDecoder,
    ObsEncoder,
    RSSMPosterior,
    RSSMPrior,
    RSSMRollout,
    gaussian_sample,
)

S, B, A, H, E = 3, 5, 2, 4, 6  # state, belief, action, hidden, embedding sizes (small)


def _small():
    prior = RSSMPrior(action_dim=A, hidden_dim=H, rnn_hidden_dim=B, state_dim=S)
    post = RSSMPosterior(hidden_dim=H, state_dim=S, rnn_hidden_dim=B, obs_embed_dim=E)
    return prior, post


def _decoder_params(module):
    """funcrl params of a TorchRL ObsDecoder (ConvTranspose2d layers laid out by hand)."""
    lin = module.state_to_latent[0]
    convs = [m for m in module.decoder if isinstance(m, torch.nn.ConvTranspose2d)]
    return {
        "state_to_latent": {"layers": [{"weight": lin.weight.detach(), "bias": lin.bias.detach()}]},
        "decoder": {
            "layers": [{"weight": c.weight.detach(), "bias": c.bias.detach()} for c in convs]
        },
    }


# ------------------------------------------------------------------ shapes and defaults


def test_default_sizes_chain_64px():
    enc, dec = ObsEncoder(), ObsDecoder()
    assert enc.output_features(64, 64) == 1024 == RSSMPosterior().obs_embed_dim
    assert dec.output_size() == 64
    assert dec.layer_channels == ((1024, 128), (128, 64), (64, 32), (32, 3))
    pe, pd = enc.init(0), dec.init(1)
    x = torch.rand(2, 3, 64, 64)
    assert enc(pe, x).shape == (2, 1024)
    assert enc(pe, x[0]).shape == (1024,)  # no batch dim
    y = dec(pd, torch.randn(2, 7, 30), torch.randn(2, 7, 200))
    assert y.shape == (2, 7, 3, 64, 64)


def test_prior_posterior_shapes_and_keys():
    prior, post = RSSMPrior(action_dim=6), RSSMPosterior()
    pp, pq = prior.init(0), post.init(1)
    assert set(pp) == {"rnn", "action_state_projector", "rnn_to_prior_projector"}
    assert pp["rnn"]["weight_ih"].shape == (600, 200)
    m, s, st, b = prior(pp, torch.zeros(4, 30), torch.zeros(4, 200), torch.zeros(4, 6))
    assert m.shape == s.shape == st.shape == (4, 30) and b.shape == (4, 200)
    m, s, st = post(pq, b, torch.zeros(4, 1024))
    assert m.shape == s.shape == st.shape == (4, 30)


def test_bad_shapes_raise():
    prior, post = _small()
    pp = prior.init(0)
    with pytest.raises(
        ValueError, match=r"RSSMPrior\(.*\): input action has shape \(3,\), expected \[\.\.\., 2\]"
    ):
        prior(pp, torch.zeros(S), torch.zeros(B), torch.zeros(A + 1))
    with pytest.raises(
        ValueError,
        match=r"RSSMPosterior\(.*\): input obs_embedding has shape \(8,\), expected \[\.\.\., 6\]",
    ):
        post(post.init(0), torch.zeros(B), torch.zeros(E + 2))
    with pytest.raises(ValueError, match="noise must have the shape"):
        gaussian_sample(torch.zeros(3), torch.ones(3), torch.zeros(4))
    with pytest.raises(ValueError, match="kernel_sizes"):
        ObsDecoder(num_layers=3, kernel_sizes=(5, 5))


# ------------------------------------------------------------------ hand-checked equations


def test_prior_std_is_softplus_clamped_at_scale_lb():
    prior, _ = _small()
    p = prior.init(0)
    last = p["rnn_to_prior_projector"]["layers"][-1]
    # Output = bias only: loc = first half, std = max(softplus(second half), 0.1).
    last["weight"] = torch.zeros_like(last["weight"])
    last["bias"] = torch.tensor([0.5, -1.0, 2.0, -10.0, 0.0, 1.0])
    noise = torch.tensor([1.0, -2.0, 0.5])
    m, s, st, _ = prior(p, torch.zeros(S), torch.zeros(B), torch.zeros(A), noise)
    torch.testing.assert_close(m, torch.tensor([0.5, -1.0, 2.0]))
    expected_std = torch.stack(
        [torch.tensor(0.1), F.softplus(torch.tensor(0.0)), F.softplus(torch.tensor(1.0))]
    )
    torch.testing.assert_close(s, expected_std)
    torch.testing.assert_close(st, m + noise * expected_std)


def test_prior_belief_is_gru_of_projected_state_action():
    prior, _ = _small()
    p = prior.init(3)
    s, b, a = torch.randn(S), torch.randn(B), torch.randn(A)
    lin = p["action_state_projector"]["layers"][0]
    x = F.elu(F.linear(torch.cat([s, a]), lin["weight"], lin["bias"]))
    ref = torch.nn.GRUCell(H, B)
    with torch.no_grad():
        for k, v in p["rnn"].items():
            getattr(ref, k).copy_(v)
    torch.testing.assert_close(prior.belief_step(p, s, b, a), ref(x[None], b[None])[0])


def test_actor_scale_at_zero_is_std_bias():
    actor = DreamerActor(out_features=2, in_features=S + B, depth=1, num_cells=4)
    p = actor.init(0)
    last = p["backbone"]["layers"][-1]
    last["weight"] = torch.zeros_like(last["weight"])
    last["bias"] = torch.zeros_like(last["bias"])
    loc, scale = actor(p, torch.randn(7, S), torch.randn(7, B))
    torch.testing.assert_close(loc, torch.zeros(7, 2))
    torch.testing.assert_close(scale, torch.full((7, 2), 5.0))
    # Feeds a TanhNormal as Dreamer does.
    assert TanhNormal(loc, scale).rsample().shape == (7, 2)


def test_sampling_uses_global_rng():
    prior, _ = _small()
    p = prior.init(0)
    args = (torch.zeros(2, S), torch.zeros(2, B), torch.zeros(2, A))
    torch.manual_seed(0)
    a = prior(p, *args)[2]
    torch.manual_seed(0)
    b = prior(p, *args)[2]
    torch.testing.assert_close(a, b)


# ------------------------------------------------------------------ rollout


def _rollout_record(T=4, batch=(2,)):
    g = torch.Generator().manual_seed(0)
    return Record(
        {
            "state": torch.randn(*batch, T, S, generator=g),
            "belief": torch.randn(*batch, T, B, generator=g),
            "action": torch.randn(*batch, T, A, generator=g),
            ("next", "encoded_latents"): torch.randn(*batch, T, E, generator=g),
        },
        batch_ndim=len(batch) + 1,
    )


def test_rollout_matches_step_by_step():
    prior, post = _small()
    roll = RSSMRollout(prior, post)
    params = roll.init(0)
    rec = _rollout_record()
    noise = torch.randn(2, 4, S)
    out = roll(params, rec, noise=noise)
    s, b = rec["state"][:, 0], rec["belief"][:, 0]
    for t in range(4):
        torch.testing.assert_close(out["state"][:, t], s)
        torch.testing.assert_close(out["belief"][:, t], b)
        pm, ps, _, b = prior(params["prior"], s, b, rec["action"][:, t], torch.zeros(2, S))
        qm, qs, s = post(params["posterior"], b, rec["next", "encoded_latents"][:, t], noise[:, t])
        for key, v in [("prior_mean", pm), ("prior_std", ps), ("belief", b)]:
            torch.testing.assert_close(out["next", key][:, t], v)
        for key, v in [("posterior_mean", qm), ("posterior_std", qs), ("state", s)]:
            torch.testing.assert_close(out["next", key][:, t], v)
    assert out.batch_size == (2, 4)


def test_rollout_grad_flows_to_both_nets():
    prior, post = _small()
    roll = RSSMRollout(prior, post)
    params = roll.init(0)
    rec = _rollout_record(T=3)

    def loss(p):
        out = roll(p, rec, noise=torch.zeros(2, 3, S))
        return out["next", "posterior_mean"].square().sum() + out["next", "prior_std"].sum()

    g = torch.func.grad(loss)(params)
    assert g["prior"]["rnn"]["weight_ih"].abs().sum() > 0
    assert g["posterior"]["obs_rnn_to_post_projector"]["layers"][0]["weight"].abs().sum() > 0


def test_rollout_vmap_and_compile():
    prior, post = _small()
    roll = RSSMRollout(prior, post)
    params3 = tree.stack([roll.init(i) for i in range(3)])
    rec = _rollout_record(T=3)
    noise = torch.randn(2, 3, S)
    # vmap over 3 stacked parameter sets (e.g. seeds).
    out3 = torch.func.vmap(lambda p: roll(p, rec, noise=noise)["next", "state"])(params3)
    assert out3.shape == (3, 2, 3, S)
    one = roll.init(0)
    ref = roll(one, rec, noise=noise)["next", "state"]
    torch.testing.assert_close(out3[0], ref)
    torch._dynamo.reset()
    compiled = torch.compile(
        lambda p, r, n: roll(p, r, noise=n)["next", "state"], fullgraph=True, backend="aot_eager"
    )
    torch.testing.assert_close(compiled(one, rec, noise), ref, atol=1e-5, rtol=1e-5)


def test_world_model_wrapper_keyed():
    prior, post = _small()
    enc = ObsEncoder(channels=2, num_layers=2, in_channels=1)
    e_dim = enc.output_features(14, 14)
    post = RSSMPosterior(hidden_dim=H, state_dim=S, rnn_hidden_dim=B, obs_embed_dim=e_dim)
    from funcrl.modules import Sequential
    from funcrl.nn import MLP

    transition = Sequential(
        {
            "encoder": Keyed(enc, [("next", "pixels")], [("next", "encoded_latents")]),
            "rssm": RSSMRollout(prior, post),
        }
    )
    reward = Keyed(
        lambda p, s, b: MLP(S + B, 1)(p, torch.cat([s, b], -1)),
        [("next", "state"), ("next", "belief")],
        [("next", "reward")],
    )
    wm = WorldModelWrapper(transition, reward)
    params = wm.init(0)
    params["reward_model"] = MLP(S + B, 1).init(5)
    rec = Record(
        {
            "state": torch.zeros(2, 3, S),
            "belief": torch.zeros(2, 3, B),
            "action": torch.randn(2, 3, A),
            ("next", "pixels"): torch.rand(2, 3, 1, 14, 14),
        },
        batch_ndim=2,
    )
    out = wm(params, rec)
    assert out["next", "reward"].shape == (2, 3, 1)
    assert out["next", "encoded_latents"].shape == (2, 3, e_dim)
    only_reward = wm.get_reward_operator()(params, out)
    torch.testing.assert_close(only_reward["next", "reward"], out["next", "reward"])
    assert set(wm.get_transition_model_operator().names) == {"transition_model"}


# ------------------------------------------------------------------ parity with TorchRL


torchrl_mb = pytest.importorskip(
    "torchrl.modules.models.model_based", reason="TorchRL is the parity reference"
)


def test_parity_encoder_decoder():
    torch.manual_seed(0)
    ref_enc = torchrl_mb.ObsEncoder(channels=4, num_layers=3, in_channels=2)
    enc = ObsEncoder(channels=4, num_layers=3, in_channels=2)
    x = torch.rand(2, 3, 2, 32, 32)
    torch.testing.assert_close(enc(from_module(ref_enc), x), ref_enc(x), atol=1e-5, rtol=1e-5)
    assert enc.output_features(32, 32) == ref_enc(x).shape[-1]

    for kw in [{}, {"num_layers": 3, "kernel_sizes": (4, 5, 6)}]:
        ref_dec = torchrl_mb.ObsDecoder(channels=4, latent_dim=S + B, out_channels=2, **kw)
        dec = ObsDecoder(channels=4, latent_dim=S + B, out_channels=2, **kw)
        s, b = torch.randn(2, 3, S), torch.randn(2, 3, B)
        y_ref = ref_dec(s, b)
        torch.testing.assert_close(dec(_decoder_params(ref_dec), s, b), y_ref, atol=1e-5, rtol=1e-5)
        assert y_ref.shape[-1] == dec.output_size()
        # Our init has the layout (and shapes) of TorchRL's module.
        ours = dec.init(0)
        ref_p = _decoder_params(ref_dec)
        for a, r in zip(ours["decoder"]["layers"], ref_p["decoder"]["layers"]):
            assert a["weight"].shape == r["weight"].shape


def test_parity_prior_posterior_actor():
    torch.manual_seed(0)
    from torchrl.data import Unbounded

    # TorchRL's prior projects the belief with Linear(hidden_dim, ...): it needs hidden == belief.
    ref_prior = torchrl_mb.RSSMPrior(
        Unbounded(A), hidden_dim=B, rnn_hidden_dim=B, state_dim=S, action_dim=A
    )
    ref_post = torchrl_mb.RSSMPosterior(
        hidden_dim=H, state_dim=S, rnn_hidden_dim=B, obs_embed_dim=E
    )
    prior = RSSMPrior(action_dim=A, hidden_dim=B, rnn_hidden_dim=B, state_dim=S)
    post = _small()[1]
    pp, pq = from_module(ref_prior), from_module(ref_post)
    # Our init has exactly TorchRL's layout.
    assert torch.utils._pytree.tree_structure(pp) == torch.utils._pytree.tree_structure(
        prior.init(0)
    )
    s, b, a = torch.randn(4, S), torch.randn(4, B), torch.randn(4, A)
    noise = torch.randn(4, S)
    for x, y in zip(prior(pp, s, b, a, noise), ref_prior(s, b, a, noise)):
        torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-5)
    e = torch.randn(4, E)
    for x, y in zip(post(pq, b, e, noise), ref_post(b, e, noise)):
        torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-5)

    ref_actor = torchrl_mb.DreamerActor(A, depth=2, num_cells=8)
    ref_actor(s, b)  # materialise the lazy layer
    actor = DreamerActor(A, in_features=S + B, depth=2, num_cells=8)
    for x, y in zip(actor(from_module(ref_actor), s, b), ref_actor(s, b)):
        torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-5)


def test_parity_rollout_with_torchrl():
    from tensordict import TensorDict
    from tensordict.nn import TensorDictModule
    from torchrl.data import Unbounded

    torch.manual_seed(0)
    ref_prior = torchrl_mb.RSSMPrior(
        Unbounded(A), hidden_dim=B, rnn_hidden_dim=B, state_dim=S, action_dim=A
    )
    ref_post = torchrl_mb.RSSMPosterior(
        hidden_dim=H, state_dim=S, rnn_hidden_dim=B, obs_embed_dim=E
    )
    ref = torchrl_mb.RSSMRollout(
        TensorDictModule(
            ref_prior,
            in_keys=["state", "belief", "action"],
            out_keys=[("next", "prior_mean"), ("next", "prior_std"), "_", ("next", "belief")],
        ),
        TensorDictModule(
            ref_post,
            in_keys=[("next", "belief"), ("next", "encoded_latents")],
            out_keys=[("next", "posterior_mean"), ("next", "posterior_std"), ("next", "state")],
        ),
    )
    rec = _rollout_record(T=3)
    torch.manual_seed(1)
    td = ref(TensorDict(rec.to_dict(), batch_size=[2, 3]))
    prior = RSSMPrior(action_dim=A, hidden_dim=B, rnn_hidden_dim=B, state_dim=S)
    roll = RSSMRollout(prior, _small()[1])
    params = {"prior": from_module(ref_prior), "posterior": from_module(ref_post)}
    # TorchRL draws prior noise then posterior noise at each step; recover the posterior's.
    torch.manual_seed(1)
    noise = []
    for _ in range(3):
        torch.randn(2, S)
        noise.append(torch.randn(2, S))
    out = roll(params, rec, noise=torch.stack(noise, 1))
    for key in ["prior_mean", "prior_std", "belief", "posterior_mean", "posterior_std", "state"]:
        torch.testing.assert_close(out["next", key], td["next", key], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out["state"], td["state"])
    torch.testing.assert_close(out["belief"], td["belief"])


def test_init_scales_match_torch_defaults():
    dec = ObsDecoder(channels=4, latent_dim=S + B)
    p = dec.init(0)
    w = p["decoder"]["layers"][0]["weight"]  # [128, 16, 5, 5]: fan_in = 16 * 25
    assert w.abs().max() <= 1 / math.sqrt(16 * 25)
    assert w.abs().max() > 0.5 / math.sqrt(16 * 25)
