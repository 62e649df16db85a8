"""Grouped layers: one set of weights per cell (or one shared), applied with batched matrix products
(:class:`GroupedLinear`, the Keras-style :class:`GroupedLSTM`), initialised as Keras does."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def glorot_uniform_(weight: Tensor, generator: torch.Generator) -> None:
    """Keras' default kernel initialiser on ``[G, in, out]``: U(±√(6 / (in + out)))."""
    fan_in, fan_out = weight.shape[-2], weight.shape[-1]
    bound = math.sqrt(6.0 / (fan_in + fan_out))
    with torch.no_grad():
        weight.copy_((torch.rand(weight.shape, generator=generator, dtype=weight.dtype) * 2 - 1) * bound)


class GroupedLinear(nn.Module):
    """``G`` dense layers at once: ``x [C, B, in] → [max(C, G), B, out]`` with weights ``[G, in, out]``
    (``C`` or ``G`` may be 1 and is then broadcast)."""

    def __init__(self, groups: int, in_features: int, out_features: int, generator: torch.Generator):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(groups, in_features, out_features))
        self.bias = nn.Parameter(torch.zeros(groups, 1, out_features))
        glorot_uniform_(self.weight, generator)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[0] == self.weight.shape[0]:
            return torch.baddbmm(self.bias, x, self.weight)
        return torch.matmul(x, self.weight) + self.bias


class GroupedLSTM(nn.Module):
    """``G`` Keras-style LSTM layers at once (gates i, f, g, o; one bias; forget bias 1; Glorot input
    kernel, orthogonal recurrent kernel): ``x [C, B, T, in] → h [max(C, G), B, T, H]``.

    Parameters per group: ``4H (in + H + 1)``, as Keras counts them.
    """

    def __init__(self, groups: int, in_features: int, hidden: int, generator: torch.Generator):
        super().__init__()
        self.hidden = hidden
        self.weight_ih = nn.Parameter(torch.empty(groups, in_features, 4 * hidden))
        self.weight_hh = nn.Parameter(torch.empty(groups, hidden, 4 * hidden))
        bias = torch.zeros(groups, 1, 4 * hidden)
        bias[..., hidden : 2 * hidden] = 1.0  # Keras' unit_forget_bias
        self.bias = nn.Parameter(bias)
        glorot_uniform_(self.weight_ih, generator)
        with torch.no_grad():
            for group in range(groups):
                self.weight_hh[group].copy_(
                    nn.init.orthogonal_(torch.empty(hidden, 4 * hidden), generator=generator)
                )

    def forward(self, x: Tensor) -> Tensor:
        cells, batch, steps, _ = x.shape
        # the input projection of every step at once: one [B·T, in] @ [in, 4H] product per cell
        proj = torch.matmul(x.reshape(cells, batch * steps, -1), self.weight_ih) + self.bias
        proj = proj.view(-1, batch, steps, proj.shape[-1])  # [G', B, T, 4H]
        h = c = None
        out = []
        for t in range(steps):
            gates = proj[:, :, t] if h is None else proj[:, :, t] + torch.matmul(h, self.weight_hh)
            i, f, g, o = gates.chunk(4, dim=-1)
            c = (
                torch.sigmoid(i) * torch.tanh(g)
                if c is None
                else torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            )
            h = torch.sigmoid(o) * torch.tanh(c)
            out.append(h)
        return torch.stack(out, dim=2)
