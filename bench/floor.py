"""The plain-torch floor: SAC, TD3 and DQN update steps written by hand, with no library.

What no library overhead costs. Each ``make_*`` returns ``(state, step)`` where ``state`` is a tuple
of tensor lists and ``step(state, batch) -> (state, loss)`` is one full update (loss, gradients,
Adam, Polyak) written with ``torch.func.grad`` over lists of tensors, ``F.linear`` and
``torch._foreach_*`` Adam. The maths follows TorchRL's defaults (SAC and TD3: twin Q with a smooth-L1
critic loss summed over the ensemble; DQN: squared TD error), so all three implementations in
``bench/update_step.py`` do the same work.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["make_sac", "make_td3", "make_dqn"]


def _mlp_init(sizes, gen):
    params = []
    for i, o in zip(sizes[:-1], sizes[1:]):
        b = 1 / math.sqrt(i)
        params.append((torch.rand(o, i, generator=gen) * 2 - 1) * b)
        params.append((torch.rand(o, generator=gen) * 2 - 1) * b)
    return params


def _mlp(params, x):
    n = len(params) // 2
    for i in range(n):
        x = F.linear(x, params[2 * i], params[2 * i + 1])
        if i < n - 1:
            x = torch.relu(x)
    return x


def _adam(params, grads, m, v, t, lr, b1=0.9, b2=0.999, eps=1e-8):
    # Pure Adam (torch.optim.Adam's arithmetic) over lists; t is the new step count (a tensor).
    m = torch._foreach_lerp(m, grads, 1 - b1)
    v = torch._foreach_add(
        torch._foreach_mul(v, b2), torch._foreach_mul(torch._foreach_mul(grads, grads), 1 - b2)
    )
    bc1 = 1 - b1**t
    bc2 = torch.sqrt(1 - b2**t)
    denom = torch._foreach_add(torch._foreach_div(torch._foreach_sqrt(v), bc2), eps)
    upd = torch._foreach_div(m, denom)
    params = torch._foreach_sub(params, torch._foreach_mul(upd, lr / bc1))
    return params, m, v


def make_sac(obs_dim, act_dim, hidden=(256, 256), lr=3e-4, gamma=0.99, tau=0.005, seed=0):
    """SAC v2 floor: twin Q (stacked, vmapped), TanhNormal actor, learned alpha, Polyak targets."""
    gen = torch.Generator().manual_seed(seed)
    actor = _mlp_init([obs_dim, *hidden, 2 * act_dim], gen)
    qs = [_mlp_init([obs_dim + act_dim, *hidden, 1], gen) for _ in range(2)]
    q = [torch.stack(ts) for ts in zip(*qs)]
    target_q = [t.clone() for t in q]
    log_alpha = [torch.zeros(())]
    trainable = actor + q + log_alpha
    na, nq = len(actor), len(q)
    target_entropy = -float(act_dim)
    zeros = [torch.zeros_like(p) for p in trainable]
    state = (trainable, target_q, zeros, [z.clone() for z in zeros], torch.zeros(()))

    def policy(actor_p, obs):
        out = _mlp(actor_p, obs)
        loc, s = out.chunk(2, -1)
        scale = F.softplus(s + 0.5413248546129181).clamp_min(1e-4)  # biased softplus, bias 1
        eps = torch.randn_like(loc)
        u = loc + scale * eps
        a = torch.tanh(u)
        logp = (-0.5 * eps.pow(2) - scale.log() - 0.5 * math.log(2 * math.pi)).sum(-1)
        logp = logp - (2 * (math.log(2) - u - F.softplus(-2 * u))).sum(-1)
        return a, logp

    def qvals(q_p, obs, act):
        x = torch.cat([obs, act], -1)
        return torch.func.vmap(_mlp, in_dims=(0, None))(q_p, x).squeeze(-1)

    def loss_fn(p, tq, batch):
        obs, act, rew, nobs, term = batch
        actor_p, q_p, la = p[:na], p[na : na + nq], p[-1]
        alpha = la.exp()
        with torch.no_grad():
            na_, nlogp = policy(actor_p, nobs)
            tqv = qvals(tq, nobs, na_).min(0).values - alpha * nlogp
            target = rew.squeeze(-1) + gamma * (1 - term.squeeze(-1).float()) * tqv
        qv = qvals(q_p, obs, act)
        loss_q = F.smooth_l1_loss(qv, target.expand_as(qv), reduction="none").sum(0).mean()
        a, logp = policy(actor_p, obs)
        qa = qvals([t.detach() for t in q_p], obs, a).min(0).values
        loss_actor = (alpha.detach() * logp - qa).mean()
        loss_alpha = -(la * (logp.detach() + target_entropy)).mean()
        return loss_q + loss_actor + loss_alpha

    def step(state, batch):
        p, tq, m, v, t = state
        grads, loss = torch.func.grad_and_value(loss_fn)(p, tq, batch)
        t = t + 1
        p, m, v = _adam(p, grads, m, v, t, lr)
        tq = torch._foreach_lerp(tq, p[na : na + nq], tau)
        return (p, tq, m, v, t), loss

    return state, step


def make_td3(
    obs_dim,
    act_dim,
    hidden=(256, 256),
    lr=3e-4,
    gamma=0.99,
    tau=0.005,
    seed=0,
    policy_noise=0.2,
    noise_clip=0.5,
):
    """TD3 floor: twin Q, target policy smoothing, actor and critics updated every step."""
    gen = torch.Generator().manual_seed(seed)
    actor = _mlp_init([obs_dim, *hidden, act_dim], gen)
    qs = [_mlp_init([obs_dim + act_dim, *hidden, 1], gen) for _ in range(2)]
    q = [torch.stack(ts) for ts in zip(*qs)]
    trainable = actor + q
    targets = [t.clone() for t in trainable]
    na = len(actor)
    zeros = [torch.zeros_like(p) for p in trainable]
    state = (trainable, targets, zeros, [z.clone() for z in zeros], torch.zeros(()))

    def qvals(q_p, obs, act):
        x = torch.cat([obs, act], -1)
        return torch.func.vmap(_mlp, in_dims=(0, None))(q_p, x).squeeze(-1)

    def loss_fn(p, tp, batch):
        obs, act, rew, nobs, term = batch
        actor_p, q_p = p[:na], p[na:]
        with torch.no_grad():
            noise = (torch.randn_like(act) * policy_noise).clamp(-noise_clip, noise_clip)
            na_ = (torch.tanh(_mlp(tp[:na], nobs)) + noise).clamp(-1, 1)
            tqv = qvals(tp[na:], nobs, na_).min(0).values
            target = rew.squeeze(-1) + gamma * (1 - term.squeeze(-1).float()) * tqv
        qv = qvals(q_p, obs, act)
        loss_q = F.smooth_l1_loss(qv, target.expand_as(qv), reduction="none").sum(0).mean()
        a = torch.tanh(_mlp(actor_p, obs))
        loss_actor = -qvals([t.detach() for t in q_p], obs, a)[0].mean()
        return loss_q + loss_actor

    def step(state, batch):
        p, tp, m, v, t = state
        grads, loss = torch.func.grad_and_value(loss_fn)(p, tp, batch)
        t = t + 1
        p, m, v = _adam(p, grads, m, v, t, lr)
        tp = torch._foreach_lerp(tp, p, tau)
        return (p, tp, m, v, t), loss

    return state, step


def make_dqn(obs_dim, num_actions, hidden=(256, 256), lr=3e-4, gamma=0.99, tau=0.005, seed=0):
    """DQN floor: one-hot actions, squared TD error, Polyak target."""
    gen = torch.Generator().manual_seed(seed)
    qnet = _mlp_init([obs_dim, *hidden, num_actions], gen)
    target = [t.clone() for t in qnet]
    zeros = [torch.zeros_like(p) for p in qnet]
    state = (qnet, target, zeros, [z.clone() for z in zeros], torch.zeros(()))

    def loss_fn(p, tp, batch):
        obs, act, rew, nobs, term = batch
        qv = (_mlp(p, obs) * act).sum(-1)
        with torch.no_grad():
            nq = _mlp(tp, nobs).max(-1).values
            target = rew.squeeze(-1) + gamma * (1 - term.squeeze(-1).float()) * nq
        return (qv - target).pow(2).mean()

    def step(state, batch):
        p, tp, m, v, t = state
        grads, loss = torch.func.grad_and_value(loss_fn)(p, tp, batch)
        t = t + 1
        p, m, v = _adam(p, grads, m, v, t, lr)
        tp = torch._foreach_lerp(tp, p, tau)
        return (p, tp, m, v, t), loss

    return state, step
