"""Actor-value heads over a causal language model (TorchRL's ``LMHeadActorValueOperator``).

The LM is any function producing hidden states ``[*batch, T, H]`` from token ids: a funcrl net
(``lm(params, input_ids=..., attention_mask=...)``) or a torch module wrapped by
:class:`funcrl.nn.TorchModule` (e.g. a Hugging Face ``*LMHeadModel``'s ``.transformer``). As in
TorchRL, the operator

* runs the LM and keeps the hidden state of the **last** position, ``x = h[..., -1, :]``
  (written to ``"x"``);
* policy head: the LM head ``logits = W_lm x`` over the vocabulary (``"logits"``), then a
  categorical distribution whose sample goes to ``"action"`` and log-probability to
  ``"action_log_prob"``;
* value head: ``state_value = w_v . x`` (a bias-free linear layer, ``"state_value"``).

::

    op = LMHeadActorValueOperator(lm, hidden_size=768, vocab_size=50257)
    params = op.init(0, lm_params=pretrained)       # {"common", "policy", "value"}
    out = op(params, Record({"input_ids": ids, "attention_mask": mask}, batch_ndim=1),
             interaction="random")                  # samples the next token
    policy = op.get_policy_operator()                # common -> policy, same params

Sampling (``interaction="random"``) uses the global torch RNG; the default interaction is
``"deterministic"`` (the most likely token), TorchRL's default.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import torch

from funcrl.distributions import Categorical
from funcrl.modules.actors import ActorValueOperator, ProbabilisticActor, ValueOperator
from funcrl.modules.keyed import Keyed, read_key
from funcrl.nn.core import Linear, Module, Params, make_generator
from funcrl.record import NestedKey, Record

__all__ = ["LMHeadActorValueOperator", "LastHiddenState", "last_hidden_state"]


def last_hidden_state(output: Any) -> torch.Tensor:
    """The ``[*batch, T, H]`` hidden states in an LM's output.

    Accepts a tensor, a tuple/list (first element, as TorchRL's ``out_keys=["x", "_"]``), a
    mapping or an object with ``last_hidden_state`` (Hugging Face's ``BaseModelOutput``).
    """
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, Mapping) and "last_hidden_state" in output:
        return output["last_hidden_state"]
    if hasattr(output, "last_hidden_state"):
        return output.last_hidden_state
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise TypeError(
        f"LMHeadActorValueOperator: cannot find the hidden states in the LM's output of type "
        f"{type(output).__name__}"
    )


@dataclasses.dataclass(frozen=True, eq=False)
class LastHiddenState(Module):
    """Keyed trunk: runs ``lm`` on the token ids and writes the last position's hidden state.

    Reads ``input_ids`` ``[*batch, T]`` and, when present in the record, ``attention_mask``
    ``[*batch, T]`` (passed to ``lm`` as keyword arguments); writes ``out_key`` ``[*batch, H]``.
    Params: the LM's.
    """

    lm: Any
    hidden_size: int
    input_ids_key: NestedKey = "input_ids"
    attention_mask_key: NestedKey = "attention_mask"
    out_key: NestedKey = "x"

    @property
    def in_keys(self) -> tuple[NestedKey, ...]:
        return (self.input_ids_key, self.attention_mask_key)

    @property
    def out_keys(self) -> tuple[NestedKey, ...]:
        return (self.out_key,)

    def init(self, seed=0, *, device=None, dtype=torch.float32) -> Params:
        init = getattr(self.lm, "init", None)
        return {} if init is None else init(make_generator(seed), device=device, dtype=dtype)

    def __call__(self, params: Params, record: Record, **options: Any) -> Record:
        owner = "LMHeadActorValueOperator"
        input_ids = read_key(record, self.input_ids_key, owner)
        kwargs = {"input_ids": input_ids}
        if self.attention_mask_key in record:
            kwargs["attention_mask"] = record[self.attention_mask_key]
        hidden = last_hidden_state(self.lm(params, **kwargs))
        if hidden.shape[:-1] != input_ids.shape or hidden.shape[-1] != self.hidden_size:
            raise ValueError(
                f"{owner}: the LM must return hidden states [*batch, T, H]="
                f"{(*input_ids.shape, self.hidden_size)}, got {tuple(hidden.shape)}"
            )
        # TorchRL's `x[:, -1, :]`: the last position (left padding is assumed, as TorchRL).
        return record.set(self.out_key, hidden[..., -1, :])


class LMHeadActorValueOperator(ActorValueOperator):
    """An actor-value operator from a causal LM, an LM head and a new value head.

    Params: ``{"common": LM params, "policy": {"weight": [V, H]} (+ "bias"), "value":
    {"weight": [1, H]}}``. See the module docstring for the keys written.

    Args:
        lm: ``lm(params, input_ids=..., attention_mask=...) -> hidden [*batch, T, H]`` (or an
            output holding it, see :func:`last_hidden_state`).
        hidden_size: ``H``.
        vocab_size: ``V``.
        lm_head_bias: whether the LM head has a bias (Hugging Face's GPT-2 head has none).
    """

    def __init__(
        self, lm: Any, hidden_size: int, vocab_size: int, *, lm_head_bias: bool = False
    ) -> None:
        common = LastHiddenState(lm, hidden_size)
        policy = ProbabilisticActor(
            Keyed(Linear(hidden_size, vocab_size, bias=lm_head_bias), ["x"], ["logits"]),
            in_keys=["logits"],
            out_keys=["action"],
            distribution_class=Categorical,
            return_log_prob=True,
        )
        value = ValueOperator(Linear(hidden_size, 1, bias=False), in_keys=["x"])
        super().__init__(common, policy, value)

    def init(
        self,
        seed=0,
        *,
        device=None,
        dtype=torch.float32,
        lm_params: Params | None = None,
        lm_head_params: Params | None = None,
    ) -> Params:
        """Fresh params; pass ``lm_params`` / ``lm_head_params`` to keep pretrained weights.

        Only the heads not given are drawn from ``seed``; the value head always is.
        """
        gen = make_generator(seed)
        kw = {"device": device, "dtype": dtype}
        return {
            "common": self["common"].init(gen, **kw) if lm_params is None else lm_params,
            "policy": self["policy"].init(gen, **kw) if lm_head_params is None else lm_head_params,
            "value": self["value"].init(gen, **kw),
        }

    @classmethod
    def from_lm_head_model(
        cls, base_model: torch.nn.Module, seed: int = 0
    ) -> tuple[LMHeadActorValueOperator, Params]:
        """``(operator, params)`` from a torch model with ``.transformer`` and ``.lm_head``.

        TorchRL's constructor: the transformer becomes a :class:`funcrl.nn.TorchModule` (its
        current weights are the ``"common"`` params), the LM head's weights the ``"policy"``
        params; the value head is drawn from ``seed``.
        """
        from funcrl.nn.convert import TorchModule

        head = base_model.lm_head
        if not isinstance(head, torch.nn.Linear):
            raise TypeError(
                f"from_lm_head_model: lm_head must be a torch.nn.Linear, got {type(head).__name__}"
            )
        lm = TorchModule(base_model.transformer)
        op = cls(lm, head.in_features, head.out_features, lm_head_bias=head.bias is not None)
        head_params = {"weight": head.weight.detach().clone()}
        if head.bias is not None:
            head_params["bias"] = head.bias.detach().clone()
        dtype = head.weight.dtype
        params = op.init(
            seed,
            device=head.weight.device,
            dtype=dtype,
            lm_params=lm.init(),
            lm_head_params=head_params,
        )
        return op, params
