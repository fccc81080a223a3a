"""Bad input around explicit keys: each error names the function and the argument."""

from __future__ import annotations

import pytest
import torch

from funcrl import buffers
from funcrl import random as fr
from funcrl.record import Record


def _buffer(prioritized: bool = False) -> buffers.ReplayState:
    r = torch.arange(4.0).view(4, 1)
    rec = Record({"observation": r, ("next", "reward"): r}, batch_ndim=1)
    return buffers.add(buffers.init(8, rec, prioritized=prioritized), rec)


@pytest.mark.parametrize("prioritized", [False, True])
def test_sample_key_and_generator_together(prioritized):
    with pytest.raises(ValueError, match=r"buffers\.sample: pass either key= .* or generator="):
        buffers.sample(
            _buffer(prioritized), 2, key=fr.key(0), generator=torch.Generator().manual_seed(0)
        )


@pytest.mark.parametrize(
    "bad, exc, match",
    [
        (3, TypeError, r"buffers\.sample: key must be a key .* got int"),
        (torch.tensor([0, 1], dtype=torch.int32), ValueError, r"buffers\.sample: key .*int32"),
        (torch.zeros(3, dtype=torch.int64), ValueError, r"buffers\.sample: key .*shape \[3\]"),
        (fr.split(fr.key(0), 2), ValueError, r"buffers\.sample: key .*shape \[2, 2\]"),
        (torch.tensor([0, 2**32]), ValueError, r"buffers\.sample: key words must be in"),
        (torch.tensor([-1, 0]), ValueError, r"buffers\.sample: key words must be in"),
    ],
)
def test_sample_bad_key(bad, exc, match):
    with pytest.raises(exc, match=match):
        buffers.sample(_buffer(), 2, key=bad)


def test_sample_key_checked_before_empty_buffer_and_batch_size():
    empty = buffers.init(4, Record({"observation": torch.zeros(1, 1)}, batch_ndim=1))
    with pytest.raises(TypeError, match=r"buffers\.sample: key"):
        buffers.sample(empty, 2, key="0")
    with pytest.raises(ValueError, match=r"buffers\.sample: batch_size"):
        buffers.sample(_buffer(), True, key=fr.key(0))


def test_sample_generator_is_keyword_only():
    with pytest.raises(TypeError):
        buffers.sample(_buffer(), 2, torch.Generator())


def test_sample_key_on_another_device():
    key = torch.zeros(2, dtype=torch.int64, device="meta")
    with pytest.raises(ValueError, match=r"buffers\.sample: key is on meta, the buffer on cpu"):
        buffers.sample(_buffer(), 2, key=key)
