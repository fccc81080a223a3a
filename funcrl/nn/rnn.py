"""Recurrent cells and multi-step scans with the hidden state as an explicit input and output.

Cells use ``torch.nn.GRUCell`` / ``LSTMCell``'s parameter layout; :class:`GRU` / :class:`LSTM` scan
them over a time dim (batch-first, TorchRL's layout) and reset the state where ``is_init`` is set.
:class:`GRUModule` / :class:`LSTMModule` read and write the state in a :class:`funcrl.Record` under
TorchRL's keys (``"recurrent_state"``, ``"recurrent_state_h"``/``"_c"``, ``"is_init"``), with
``recurrent_mode`` a static argument instead of TorchRL's global ``set_recurrent_mode``::

    gru = GRUModule(input_size=4, hidden_size=8, in_key="embed", out_key="features")
    params = gru.init(0)
    rec = gru(params, rec)       # adds "features" and ("next", "recurrent_state")
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
import torch.nn.functional as F

from funcrl.nn.core import Module, Params, Seed, _uniform, check_input, make_generator, net_name
from funcrl.record import Record

__all__ = [
    "GRUCell",
    "LSTMCell",
    "GRU",
    "LSTM",
    "GRUModule",
    "LSTMModule",
    "gru_cell",
    "lstm_cell",
]


def gru_cell(params: Params, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """One GRU step (``torch.nn.GRUCell``'s equations, gates ordered ``r, z, n``).

    ``r = sigma(W_ir x + b_ir + W_hr h + b_hr)``, ``z = sigma(W_iz x + b_iz + W_hz h + b_hz)``,
    ``n = tanh(W_in x + b_in + r * (W_hn h + b_hn))``, ``h' = (1 - z) * n + z * h``.

    Shapes: ``x: [*batch, I]``, ``h: [*batch, H]`` -> ``[*batch, H]``.
    """
    gi = F.linear(x, params["weight_ih"], params.get("bias_ih"))
    gh = F.linear(h, params["weight_hh"], params.get("bias_hh"))
    i_r, i_z, i_n = gi.chunk(3, -1)
    h_r, h_z, h_n = gh.chunk(3, -1)
    r = torch.sigmoid(i_r + h_r)
    z = torch.sigmoid(i_z + h_z)
    n = torch.tanh(i_n + r * h_n)
    return (1 - z) * n + z * h


def lstm_cell(
    params: Params, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """One LSTM step (``torch.nn.LSTMCell``'s equations, gates ordered ``i, f, g, o``).

    ``c' = f * c + i * g``, ``h' = o * tanh(c')``.

    Shapes: ``x: [*batch, I]``, ``state = (h, c)`` each ``[*batch, H]``.
    """
    h, c = state
    gates = F.linear(x, params["weight_ih"], params.get("bias_ih")) + F.linear(
        h, params["weight_hh"], params.get("bias_hh")
    )
    i, f, g, o = gates.chunk(4, -1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    h = torch.sigmoid(o) * torch.tanh(c)
    return h, c


def _cell_params(
    n_gates: int, input_size: int, hidden_size: int, bias: bool, gen, device, dtype
) -> Params:
    # torch.nn.RNNBase's init: every weight U(-1/sqrt(H), 1/sqrt(H)).
    bound = 1.0 / math.sqrt(hidden_size)
    g = n_gates * hidden_size
    params = {
        "weight_ih": _uniform((g, input_size), bound, gen, device, dtype),
        "weight_hh": _uniform((g, hidden_size), bound, gen, device, dtype),
    }
    if bias:
        params["bias_ih"] = _uniform((g,), bound, gen, device, dtype)
        params["bias_hh"] = _uniform((g,), bound, gen, device, dtype)
    return params


@dataclasses.dataclass(frozen=True)
class GRUCell(Module):
    """``torch.nn.GRUCell`` as a pure function; params ``{"weight_ih": [3H, I], "weight_hh":
    [3H, H], "bias_ih": [3H], "bias_hh": [3H]}``.

    Shapes: ``(x [*batch, I], h [*batch, H]) -> h' [*batch, H]``.
    """

    input_size: int
    hidden_size: int
    bias: bool = True

    def init(self, seed: Seed = 0, *, device=None, dtype=torch.float32) -> Params:
        gen = make_generator(seed)
        return _cell_params(3, self.input_size, self.hidden_size, self.bias, gen, device, dtype)

    def __call__(self, params: Params, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        self.check_params(params)
        check_input(self, "x", x, self.input_size, params["weight_ih"])
        check_input(self, "h", h, self.hidden_size, params["weight_hh"])
        return gru_cell(params, x, h)


@dataclasses.dataclass(frozen=True)
class LSTMCell(Module):
    """``torch.nn.LSTMCell`` as a pure function; params as :class:`GRUCell` with ``4H`` rows.

    Shapes: ``(x [*batch, I], (h, c) [*batch, H]) -> (h', c')``.
    """

    input_size: int
    hidden_size: int
    bias: bool = True

    def init(self, seed: Seed = 0, *, device=None, dtype=torch.float32) -> Params:
        gen = make_generator(seed)
        return _cell_params(4, self.input_size, self.hidden_size, self.bias, gen, device, dtype)

    def __call__(
        self, params: Params, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        self.check_params(params)
        check_input(self, "x", x, self.input_size, params["weight_ih"])
        check_input(self, "state[0] (h)", state[0], self.hidden_size, params["weight_hh"])
        check_input(self, "state[1] (c)", state[1], self.hidden_size, params["weight_hh"])
        return lstm_cell(params, x, state)


def _reset(
    state: torch.Tensor, is_init_t: torch.Tensor | None, value: torch.Tensor | None
) -> torch.Tensor:
    """``state`` where ``is_init_t`` is False, ``value`` (default zeros) where it is True.

    ``is_init_t: [*batch, 1]`` broadcasts over ``state: [*batch, L, H]``.
    """
    if is_init_t is None:
        return state
    fill = torch.zeros_like(state) if value is None else value
    return torch.where(is_init_t.unsqueeze(-1), fill, state)


@dataclasses.dataclass(frozen=True)
class _Recurrent(Module):
    input_size: int
    hidden_size: int
    num_layers: int = 1
    bias: bool = True

    n_gates = 3

    def __post_init__(self) -> None:
        if min(self.input_size, self.hidden_size, self.num_layers) <= 0:
            raise ValueError(
                f"{type(self).__name__}: input_size, hidden_size and num_layers must be positive"
            )

    def init(self, seed: Seed = 0, *, device=None, dtype=torch.float32) -> Params:
        gen = make_generator(seed)
        sizes = [self.input_size] + [self.hidden_size] * (self.num_layers - 1)
        return {
            "layers": [
                _cell_params(self.n_gates, i, self.hidden_size, self.bias, gen, device, dtype)
                for i in sizes
            ]
        }

    def _check(
        self, params: Params, x: torch.Tensor, is_init: torch.Tensor | None, states: dict
    ) -> None:
        """Checks params, ``x: [*batch, T, I]``, ``is_init`` and the given ``[*, L, H]`` states."""
        self.check_params(params)
        like = params["layers"][0]["weight_ih"]
        check_input(self, "x", x, (None, self.input_size), like)
        for what, state in states.items():
            if state is not None:
                check_input(self, what, state, (self.num_layers, self.hidden_size), like)
        if is_init is not None and (
            is_init.shape != (*x.shape[:-1], 1) or is_init.dtype != torch.bool
        ):
            raise ValueError(
                f"{net_name(self)}: is_init must be a bool tensor of shape {(*x.shape[:-1], 1)} "
                f"([*batch, T, 1]), got {is_init.dtype} {tuple(is_init.shape)}"
            )

    def _zeros(self, x: torch.Tensor) -> torch.Tensor:
        return x.new_zeros(*x.shape[:-2], self.num_layers, self.hidden_size)


@dataclasses.dataclass(frozen=True)
class GRU(_Recurrent):
    """A multi-layer GRU over ``[*batch, T, I]`` inputs (``batch_first``), as a pure scan.

    Params: ``{"layers": [GRUCell params per layer]}`` (``torch.nn.GRU``'s ``*_l{k}`` tensors).

    Call ``(params, x, h0=None, is_init=None, reset=None) -> (y, h_T, h_all)``:
        x: ``[*batch, T, I]``; h0: ``[*batch, L, H]`` (zeros when ``None``);
        is_init: bool ``[*batch, T, 1]``: before step ``t`` the state is replaced by zeros, or by
        ``reset[..., t, :, :]`` (``[*batch, T, L, H]``) when given (TorchRL's recurrent mode).
        Returns the top layer's outputs ``y: [*batch, T, H]``, the final state ``[*batch, L, H]``
        and the state after every step ``[*batch, T, L, H]``.
    """

    n_gates = 3

    def __call__(
        self,
        params: Params,
        x: torch.Tensor,
        h0: torch.Tensor | None = None,
        is_init: torch.Tensor | None = None,
        reset: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        self._check(params, x, is_init, {"h0": h0})
        h = self._zeros(x) if h0 is None else h0
        outs, states = [], []
        for t in range(x.shape[-2]):
            init_t = None if is_init is None else is_init[..., t, :]
            h = _reset(h, init_t, None if reset is None else reset[..., t, :, :])
            inp, new = x[..., t, :], []
            for k, p in enumerate(params["layers"]):
                inp = gru_cell(p, inp, h[..., k, :])
                new.append(inp)
            h = torch.stack(new, -2)
            outs.append(inp)
            states.append(h)
        return torch.stack(outs, -2), h, torch.stack(states, -3)


@dataclasses.dataclass(frozen=True)
class LSTM(_Recurrent):
    """A multi-layer LSTM over ``[*batch, T, I]`` inputs; as :class:`GRU` with a state ``(h, c)``.

    Call ``(params, x, state0=None, is_init=None, reset=None) -> (y, (h_T, c_T), (h_all, c_all))``
    with ``state0``/``reset`` pairs of ``[*batch, L, H]`` / ``[*batch, T, L, H]`` tensors.
    """

    n_gates = 4

    def __call__(
        self,
        params: Params,
        x: torch.Tensor,
        state0: tuple[torch.Tensor, torch.Tensor] | None = None,
        is_init: torch.Tensor | None = None,
        reset: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
        states = {} if state0 is None else {"state0[0] (h)": state0[0], "state0[1] (c)": state0[1]}
        self._check(params, x, is_init, states)
        h, c = (self._zeros(x), self._zeros(x)) if state0 is None else state0
        outs, hs, cs = [], [], []
        for t in range(x.shape[-2]):
            init_t = None if is_init is None else is_init[..., t, :]
            h = _reset(h, init_t, None if reset is None else reset[0][..., t, :, :])
            c = _reset(c, init_t, None if reset is None else reset[1][..., t, :, :])
            inp, new_h, new_c = x[..., t, :], [], []
            for k, p in enumerate(params["layers"]):
                inp, ck = lstm_cell(p, inp, (h[..., k, :], c[..., k, :]))
                new_h.append(inp)
                new_c.append(ck)
            h, c = torch.stack(new_h, -2), torch.stack(new_c, -2)
            outs.append(inp)
            hs.append(h)
            cs.append(c)
        return torch.stack(outs, -2), (h, c), (torch.stack(hs, -3), torch.stack(cs, -3))


def _key(k: Any) -> Any:
    return tuple(k) if isinstance(k, list) else k


@dataclasses.dataclass(frozen=True)
class GRUModule(Module):
    """A GRU reading and writing a :class:`funcrl.Record` with TorchRL ``GRUModule``'s keys.

    Reads ``in_key`` (``[*batch, I]``; ``[*batch, T, I]`` in recurrent mode), ``hidden_key``
    (``[*batch, L, H]`` / ``[*batch, T, L, H]``, zeros when absent) and ``"is_init"``
    (``[*batch, 1]`` / ``[*batch, T, 1]``, optional); writes ``out_key`` and ``next_hidden_key``.

    - ``recurrent_mode=False`` (collection): one step; the incoming state is zeroed where
      ``is_init`` is set.
    - ``recurrent_mode=True`` (training on ``[*batch, T]`` records): a scan from the first step's
      stored state; where ``is_init[t]`` is set the state restarts from the stored state at ``t``
      (TorchRL's scan backend). Unlike TorchRL, which writes zeros as placeholders except at
      trajectory ends, ``next_hidden_key`` holds the true state after every step.

    Params: ``{"gru": GRU params}`` (TorchRL's ``GRUModule.gru`` attribute name).
    """

    input_size: int
    hidden_size: int
    num_layers: int = 1
    bias: bool = True
    in_key: Any = "embed"
    out_key: Any = "intermediate"
    hidden_key: Any = "recurrent_state"
    next_hidden_key: Any = ("next", "recurrent_state")
    recurrent_mode: bool = False

    def __post_init__(self) -> None:
        for f in ("in_key", "out_key", "hidden_key", "next_hidden_key"):
            object.__setattr__(self, f, _key(getattr(self, f)))

    @property
    def gru(self) -> GRU:
        return GRU(self.input_size, self.hidden_size, self.num_layers, self.bias)

    def init(self, seed: Seed = 0, *, device=None, dtype=torch.float32) -> Params:
        return {"gru": self.gru.init(seed, device=device, dtype=dtype)}

    def __call__(self, params: Params, rec: Record) -> Record:
        self.check_params(params)
        x = rec[self.in_key]
        hidden = rec.get(self.hidden_key)
        is_init = rec.get("is_init")
        if self.recurrent_mode:
            if hidden is None:
                hidden = x.new_zeros(*x.shape[:-1], self.num_layers, self.hidden_size)
            y, _, h_all = self.gru(params["gru"], x, hidden[..., 0, :, :], is_init, hidden)
            return rec.set(self.out_key, y).set(self.next_hidden_key, h_all)
        x = x.unsqueeze(-2)
        init = None if is_init is None else is_init.unsqueeze(-2)
        y, h, _ = self.gru(params["gru"], x, hidden, init)
        return rec.set(self.out_key, y.squeeze(-2)).set(self.next_hidden_key, h)


@dataclasses.dataclass(frozen=True)
class LSTMModule(Module):
    """An LSTM reading and writing a :class:`funcrl.Record` with TorchRL ``LSTMModule``'s keys.

    As :class:`GRUModule` with two state keys, ``"recurrent_state_h"`` and
    ``"recurrent_state_c"`` (written to ``("next", ...)``). Params: ``{"lstm": LSTM params}``.
    """

    input_size: int
    hidden_size: int
    num_layers: int = 1
    bias: bool = True
    in_key: Any = "embed"
    out_key: Any = "intermediate"
    hidden_keys: tuple[Any, Any] = ("recurrent_state_h", "recurrent_state_c")
    next_hidden_keys: tuple[Any, Any] = (
        ("next", "recurrent_state_h"),
        ("next", "recurrent_state_c"),
    )
    recurrent_mode: bool = False

    def __post_init__(self) -> None:
        for f in ("in_key", "out_key"):
            object.__setattr__(self, f, _key(getattr(self, f)))
        for f in ("hidden_keys", "next_hidden_keys"):
            object.__setattr__(self, f, tuple(_key(k) for k in getattr(self, f)))

    @property
    def lstm(self) -> LSTM:
        return LSTM(self.input_size, self.hidden_size, self.num_layers, self.bias)

    def init(self, seed: Seed = 0, *, device=None, dtype=torch.float32) -> Params:
        return {"lstm": self.lstm.init(seed, device=device, dtype=dtype)}

    def __call__(self, params: Params, rec: Record) -> Record:
        self.check_params(params)
        x = rec[self.in_key]
        h, c = (rec.get(k) for k in self.hidden_keys)
        if (h is None) != (c is None):
            raise KeyError(f"LSTMModule: need both or neither of {self.hidden_keys} in the record")
        is_init = rec.get("is_init")
        kh, kc = self.next_hidden_keys
        if self.recurrent_mode:
            if h is None:
                h = x.new_zeros(*x.shape[:-1], self.num_layers, self.hidden_size)
                c = torch.zeros_like(h)
            state0 = (h[..., 0, :, :], c[..., 0, :, :])
            y, _, (h_all, c_all) = self.lstm(params["lstm"], x, state0, is_init, (h, c))
            return rec.set(self.out_key, y).set(kh, h_all).set(kc, c_all)
        init = None if is_init is None else is_init.unsqueeze(-2)
        state0 = None if h is None else (h, c)
        y, (h, c), _ = self.lstm(params["lstm"], x.unsqueeze(-2), state0, init)
        return rec.set(self.out_key, y.squeeze(-2)).set(kh, h).set(kc, c)
