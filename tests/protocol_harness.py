"""The objective conformance checks, shared by ``tests/test_protocol_*.py``.

Each family's test file lists :class:`Case` s (an objective module, its specs and a batch maker)
and runs every ``check_*`` below on each; a new objective adds a case and passes them all.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from types import ModuleType
from typing import Any

import torch

import funcrl
from funcrl import optim, tree
from funcrl.objectives import protocol
from funcrl.record import Record


@dataclasses.dataclass(frozen=True)
class Case:
    """One objective under test.

    Attributes:
        name: test id.
        module: the objective module (``funcrl.sac``, ...).
        observation_spec, action_spec: what ``init`` gets.
        make_batch: ``(seed, batch_size) -> Record`` of valid transitions for ``module.loss``.
        config: the ``Config`` to test (``module.Config()`` when ``None``).
        nets: the ``Nets`` to test (``module.Nets()`` when ``None``).
        stochastic_loss: the loss draws random numbers (so ``key`` changes it).
        act_kwargs: extra arguments for ``act`` (e.g. ``epsilon``).
    """

    name: str
    module: ModuleType
    observation_spec: Any
    action_spec: Any
    make_batch: Callable[[int, int], Record]
    config: Any = None
    nets: Any = None
    stochastic_loss: bool = True
    act_kwargs: tuple[tuple[str, Any], ...] = ()

    @property
    def cfg(self) -> Any:
        return self.module.Config() if self.config is None else self.config

    @property
    def nts(self) -> Any:
        return self.module.Nets() if self.nets is None else self.nets

    def init(self, seed: Any = 0) -> dict[str, Any]:
        return self.module.init(
            seed, self.observation_spec, self.action_spec, config=self.cfg, nets=self.nts
        )

    def loss(self, params, batch, key=None) -> dict[str, torch.Tensor]:
        return self.module.loss(params, batch, config=self.cfg, nets=self.nts, key=key)

    def act(self, params, observation, mode, key=None):
        return self.module.act(
            params,
            observation,
            config=self.cfg,
            nets=self.nts,
            mode=mode,
            key=key,
            **dict(self.act_kwargs),
        )

    def trainer(self):
        return self.module.trainer(optim.adam(1e-3), config=self.cfg, nets=self.nts)


def _loss_terms(losses: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in losses.items() if k == "loss" or k.startswith("loss_")}


def check_names(case: Case) -> None:
    assert protocol.check(case.module) == []


def check_init(case: Case) -> None:
    before = torch.get_rng_state()
    p0 = case.init(0)
    assert torch.equal(torch.get_rng_state(), before), "init touched the global RNG"
    assert isinstance(p0, dict)
    for seed in (0, torch.Generator().manual_seed(0), funcrl.random.key(0)):
        p = case.init(seed)
        assert tree.structure(p) == tree.structure(p0)
    assert all(torch.equal(a, b) for a, b in zip(tree.leaves(case.init(0)), tree.leaves(p0)))
    k = funcrl.random.key(3)
    assert all(
        torch.equal(a, b) for a, b in zip(tree.leaves(case.init(k)), tree.leaves(case.init(k)))
    )
    for name in p0:
        if name.startswith("target_"):
            online = name[len("target_") :]
            assert online in p0, f"{name} has no online params {online!r}"


def check_loss(case: Case, batch_size: int = 8) -> None:
    params = case.init(0)
    batch = case.make_batch(0, batch_size)
    losses = case.loss(params, batch, key=funcrl.random.key(0))
    terms = _loss_terms(losses)
    assert terms, f"{case.name}: no loss terms in {sorted(losses)}"
    for k, v in terms.items():
        assert v.shape == (), f"{case.name}: {k} has shape {tuple(v.shape)}"
        assert torch.isfinite(v), f"{case.name}: {k} = {v}"
    td = losses["td_error"]
    assert td.shape == batch.batch_size, f"td_error {tuple(td.shape)} vs batch {batch.batch_size}"
    assert not td.requires_grad and bool((td >= 0).all())


def check_key(case: Case) -> None:
    params, batch = case.init(0), case.make_batch(0, 8)
    a = case.loss(params, batch, key=funcrl.random.key(1))
    b = case.loss(params, batch, key=funcrl.random.key(1))
    for k in a:
        assert torch.equal(a[k], b[k]), f"{case.name}: {k} differs under the same key"
    if case.stochastic_loss:
        c = case.loss(params, batch, key=funcrl.random.key(2))
        assert any(not torch.equal(a[k], c[k]) for k in _loss_terms(a)), "key ignored"


def check_priority(case: Case) -> None:
    params, batch = case.init(0), case.make_batch(0, 8)
    key = funcrl.random.key(0)
    plain = case.loss(params, batch, key=key)
    w = torch.linspace(0.1, 2.0, batch.batch_size.numel()).reshape(batch.batch_size)
    weighted = case.loss(params, batch.set("priority_weight", w), key=key)
    assert any(not torch.allclose(plain[k], weighted[k]) for k in _loss_terms(plain)), (
        f"{case.name}: priority_weight ignored"
    )
    off = dataclasses.replace(
        case, config=dataclasses.replace(case.cfg, use_prioritized_weights=False)
    )
    ignored = off.loss(params, batch.set("priority_weight", w), key=key)
    for k in _loss_terms(plain):
        torch.testing.assert_close(ignored[k], plain[k])


def check_rank0_batch(case: Case) -> None:
    params, batch = case.init(0), case.make_batch(0, 1)
    single = batch[(0,) * batch.batch_ndim]  # every batch dim gone (a trajectory batch has two)
    try:
        case.loss(params, single, key=funcrl.random.key(0))
    except ValueError as e:
        assert "batch" in str(e)
    else:
        raise AssertionError(f"{case.name}: a batch without batch dims was accepted")


def check_act(case: Case) -> None:
    params, batch = case.init(0), case.make_batch(0, 8)
    obs = batch["observation"]
    det = case.act(params, obs, "deterministic")
    assert torch.equal(det, case.act(params, obs, "deterministic"))
    assert det.shape == batch["action"].shape, (
        f"{tuple(det.shape)} vs {tuple(batch['action'].shape)}"
    )
    k = funcrl.random.key(0)
    r1, r2 = case.act(params, obs, "random", key=k), case.act(params, obs, "random", key=k)
    assert torch.equal(r1, r2)
    assert r1.shape == batch["action"].shape


def _step_inputs(case: Case):
    train = case.trainer()
    params = case.init(0)
    state = train.init(params)
    return train, params, state, case.make_batch(0, 8)


def check_trainer_compiled(case: Case) -> None:
    train, params, state, batch = _step_inputs(case)
    key = funcrl.random.key(0)
    p1, s1, m1 = train.step(params, state, batch, key)
    for k, v in m1.items():
        if k == "loss" or k.startswith("loss_"):
            assert torch.isfinite(v).all(), f"{case.name}: {k}"
    torch._dynamo.reset()
    step = torch.compile(train.step, fullgraph=True, backend="eager")
    p2, s2, m2 = step(params, state, batch, key)
    torch.testing.assert_close(tree.leaves(p2), tree.leaves(p1), rtol=1e-4, atol=1e-5)


def check_trainer_vmapped(case: Case) -> None:
    train = case.trainer()
    seeds = [0, 1]
    params = [case.init(s) for s in seeds]
    states = [train.init(p) for p in params]
    batches = [case.make_batch(s, 8) for s in seeds]
    keys = funcrl.random.split(funcrl.random.key(0), len(seeds))
    solo = [train.step(p, s, b, k)[0] for p, s, b, k in zip(params, states, batches, keys)]
    stacked = torch.func.vmap(train.step, randomness="different")(
        tree.stack(params), tree.stack(states), Record.stack(batches), keys
    )[0]
    for i in range(len(seeds)):
        got = tree.map(lambda x, i=i: x[i], stacked)
        torch.testing.assert_close(tree.leaves(got), tree.leaves(solo[i]), rtol=1e-4, atol=1e-5)


ALL_CHECKS = (
    check_names,
    check_init,
    check_loss,
    check_key,
    check_priority,
    check_rank0_batch,
    check_act,
    check_trainer_compiled,
    check_trainer_vmapped,
)
