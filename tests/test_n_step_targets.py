"""n-step transitions (``steps_to_next_obs``) are discounted by ``gamma ** n`` in every TD(0)
target, as TorchRL's TD(0) estimator does."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import funcrl
from funcrl import dqn, sac, specs, td3
from funcrl.record import Record

B = 6


def _batch(action: torch.Tensor, steps: torch.Tensor | None) -> Record:
    gen = torch.Generator().manual_seed(0)
    data = {
        "observation": torch.randn(B, 3, generator=gen),
        "action": action,
        "next": {
            "observation": torch.randn(B, 3, generator=gen),
            "reward": torch.randn(B, 1, generator=gen),
            "done": torch.zeros(B, 1, dtype=torch.bool),
            "terminated": torch.tensor([[False], [True]] * (B // 2)),
        },
    }
    if steps is not None:
        data["steps_to_next_obs"] = steps
    return Record(data, batch_ndim=1)


CONTINUOUS = (specs.Unbounded(shape=(3,)), specs.Bounded(-1.0, 1.0, shape=(2,)))


@pytest.mark.parametrize("module", [sac, td3])
def test_continuous_targets_use_gamma_to_the_n(module):
    params = module.init(0, *CONTINUOUS)
    action = torch.rand(B, 2) * 2 - 1
    n = 3
    steps = torch.full((B, 1), n)
    key = funcrl.random.key(0)
    got = module.loss(params, _batch(action, steps), key=key)
    want = module.loss(params, _batch(action, None), config=module.Config(gamma=0.99**n), key=key)
    for k in ("loss_qvalue", "td_error"):
        torch.testing.assert_close(got[k], want[k])
    one = module.loss(params, _batch(action, torch.ones(B, 1, dtype=torch.int64)), key=key)
    plain = module.loss(params, _batch(action, None), key=key)
    torch.testing.assert_close(one["loss_qvalue"], plain["loss_qvalue"])


def test_dqn_target_uses_gamma_to_the_n_per_row():
    cfg = dqn.Config(action_space="categorical")
    params = dqn.init(0, 3, specs.Categorical(4), config=cfg)
    action = torch.randint(0, 4, (B,))
    steps = torch.tensor([[1], [2], [3], [1], [2], [3]])
    got = dqn.loss(params, _batch(action, steps), config=cfg)
    for n in (1, 2, 3):
        rows = (steps.squeeze(-1) == n).nonzero().squeeze(-1)
        want = dqn.loss(
            params, _batch(action, None), config=dataclasses.replace(cfg, gamma=0.99**n)
        )
        torch.testing.assert_close(got["td_error"][rows], want["td_error"][rows])


def test_bad_steps_shape():
    params = sac.init(0, *CONTINUOUS)
    batch = _batch(torch.zeros(B, 2), torch.ones(B, 2))
    with pytest.raises(ValueError, match=r"sac.loss: batch\['steps_to_next_obs'\] has shape"):
        sac.loss(params, batch)
