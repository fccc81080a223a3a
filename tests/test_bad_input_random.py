"""Bad input to funcrl.random: every error names the function and the argument."""

from __future__ import annotations

import pytest
import torch

from funcrl import random as R

K = R.key(0)


@pytest.mark.parametrize(
    "fn",
    [
        lambda k: R.split(k),
        lambda k: R.fold_in(k, 1),
        lambda k: R.bits(k, (2,)),
        lambda k: R.uniform(k, (2,)),
        lambda k: R.normal(k, (2,)),
        lambda k: R.randint(k, (2,), 0, 3),
        lambda k: R.bernoulli(k, 0.5, (2,)),
        lambda k: R.categorical(k, torch.zeros(3)),
        lambda k: R.permutation(k, 3),
        lambda k: R.gumbel(k, (2,)),
        lambda k: R.truncated_normal(k, -1.0, 1.0, (2,)),
    ],
)
@pytest.mark.parametrize(
    "bad, exc",
    [
        (torch.zeros(3, dtype=torch.int64), ValueError),  # wrong shape
        (torch.zeros(4, 2, dtype=torch.int64), ValueError),  # a batch of keys, not via vmap
        (torch.zeros(2, dtype=torch.float32), ValueError),  # wrong dtype
        (torch.zeros(2, dtype=torch.int32), ValueError),
        ([0, 1], TypeError),  # not a tensor
        (torch.tensor([0, 2**32], dtype=torch.int64), ValueError),  # word out of uint32 range
        (torch.tensor([-1, 0], dtype=torch.int64), ValueError),
    ],
)
def test_bad_key(fn, bad, exc):
    with pytest.raises(exc, match=r"funcrl\.random\.\w+: key"):
        fn(bad)


def test_key_seed():
    with pytest.raises(TypeError, match=r"funcrl\.random\.key: seed must be an int, got float"):
        R.key(1.5)
    with pytest.raises(TypeError, match=r"funcrl\.random\.key: seed"):
        R.key(True)
    with pytest.raises(TypeError, match=r"funcrl\.random\.key: seed"):
        R.key(torch.tensor(3))
    with pytest.raises(ValueError, match=r"funcrl\.random\.key: seed must be in"):
        R.key(2**63)


def test_split_num():
    with pytest.raises(ValueError, match=r"funcrl\.random\.split: num must be non-negative"):
        R.split(K, -1)
    with pytest.raises(TypeError, match=r"funcrl\.random\.split: num must"):
        R.split(K, 2.0)


def test_fold_in_data():
    with pytest.raises(
        ValueError, match=r"funcrl\.random\.fold_in: data must be in \[0, 2\*\*32\)"
    ):
        R.fold_in(K, -1)
    with pytest.raises(ValueError, match=r"funcrl\.random\.fold_in: data must be in"):
        R.fold_in(K, 2**32)
    with pytest.raises(ValueError, match=r"funcrl\.random\.fold_in: data must be in"):
        R.fold_in(K, torch.tensor(2**33))
    with pytest.raises(TypeError, match=r"funcrl\.random\.fold_in: data must be an int"):
        R.fold_in(K, 1.0)
    with pytest.raises(TypeError, match=r"funcrl\.random\.fold_in: data must be an integer tensor"):
        R.fold_in(K, torch.tensor(1.0))
    with pytest.raises(ValueError, match=r"funcrl\.random\.fold_in: data must be a 0-d tensor"):
        R.fold_in(K, torch.tensor([1, 2]))


@pytest.mark.parametrize("fn", ["bits", "uniform", "normal", "gumbel"])
def test_shape(fn):
    f = getattr(R, fn)
    with pytest.raises(ValueError, match=rf"funcrl\.random\.{fn}: shape must be non-negative"):
        f(K, (2, -1))
    with pytest.raises(TypeError, match=rf"funcrl\.random\.{fn}: shape must contain ints"):
        f(K, (2, 1.5))
    with pytest.raises(TypeError, match=rf"funcrl\.random\.{fn}: shape must be an int or"):
        f(K, "3")


def test_float_dtype_and_bounds():
    with pytest.raises(TypeError, match=r"funcrl\.random\.uniform: dtype must be one of"):
        R.uniform(K, (2,), torch.int64)
    with pytest.raises(TypeError, match=r"funcrl\.random\.normal: dtype must be one of"):
        R.normal(K, (2,), torch.complex64)
    with pytest.raises(ValueError, match=r"funcrl\.random\.uniform: minval of shape \[3\]"):
        R.uniform(K, (2,), minval=torch.zeros(3))
    with pytest.raises(ValueError, match=r"funcrl\.random\.uniform: maxval of shape \[4, 2\]"):
        R.uniform(K, (2,), maxval=torch.ones(4, 2))
    with pytest.raises(TypeError, match=r"funcrl\.random\.uniform: minval must be"):
        R.uniform(K, (2,), minval="0")
    with pytest.raises(ValueError, match=r"funcrl\.random\.truncated_normal: lower of shape"):
        R.truncated_normal(K, torch.zeros(5), 1.0, (2,))


def test_randint():
    with pytest.raises(ValueError, match=r"funcrl\.random\.randint: need low < high, got low=3"):
        R.randint(K, (2,), 3, 3)
    with pytest.raises(ValueError, match=r"funcrl\.random\.randint: high - low must be"):
        R.randint(K, (2,), 0, 2**33)
    with pytest.raises(TypeError, match=r"funcrl\.random\.randint: low must be an int"):
        R.randint(K, (2,), 0.0, 3)
    with pytest.raises(TypeError, match=r"funcrl\.random\.randint: dtype must be an integer"):
        R.randint(K, (2,), 0, 3, dtype=torch.float32)
    with pytest.raises(ValueError, match=r"funcrl\.random\.randint: \[low, high\) = \[0, 300\)"):
        R.randint(K, (2,), 0, 300, dtype=torch.int8)
    with pytest.raises(ValueError, match=r"funcrl\.random\.randint: shape must be non-negative"):
        R.randint(K, (-2,), 0, 3)


def test_bernoulli_p():
    with pytest.raises(
        ValueError, match=r"funcrl\.random\.bernoulli: p must be in \[0, 1\], got 1.5"
    ):
        R.bernoulli(K, 1.5)
    with pytest.raises(ValueError, match=r"funcrl\.random\.bernoulli: p must be in \[0, 1\]"):
        R.bernoulli(K, torch.tensor([0.2, -0.1]))
    with pytest.raises(TypeError, match=r"funcrl\.random\.bernoulli: p must be a float tensor"):
        R.bernoulli(K, torch.tensor([1, 0]))
    with pytest.raises(ValueError, match=r"funcrl\.random\.bernoulli: p of shape \[3\]"):
        R.bernoulli(K, torch.full((3,), 0.5), (2,))


def test_categorical_and_permutation():
    with pytest.raises(TypeError, match=r"funcrl\.random\.categorical: logits must be a float"):
        R.categorical(K, torch.zeros(3, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"funcrl\.random\.categorical: logits must have at least"):
        R.categorical(K, torch.tensor(0.0))
    with pytest.raises(ValueError, match=r"funcrl\.random\.categorical: axis 2 out of range"):
        R.categorical(K, torch.zeros(2, 3), axis=2)
    with pytest.raises(ValueError, match=r"funcrl\.random\.categorical: shape \[5, 3\] must end"):
        R.categorical(K, torch.zeros(2, 3), shape=(5, 3))
    with pytest.raises(ValueError, match=r"funcrl\.random\.permutation: x must be >= 0"):
        R.permutation(K, -1)
    with pytest.raises(ValueError, match=r"funcrl\.random\.permutation: x must have at least"):
        R.permutation(K, torch.tensor(1.0))
    with pytest.raises(TypeError, match=r"funcrl\.random\.permutation: x must be an int"):
        R.permutation(K, 3.0)


def test_native_threefry_rejects_bad_words():
    # funcrl::threefry2x32 (the CPU operator behind every draw): dtype and broadcasting.
    w = torch.zeros(3, dtype=torch.int64)
    with pytest.raises(RuntimeError, match=r"funcrl::threefry2x32: x1 must be int64"):
        torch.ops.funcrl.threefry2x32(w, w, w, w.int())
    with pytest.raises(
        RuntimeError, match=r"shapes do not broadcast: k0 \[3\], k1 \[3\], x0 \[2\]"
    ):
        torch.ops.funcrl.threefry2x32(w, w, torch.zeros(2, dtype=torch.int64), w)  # 2 vs 3
