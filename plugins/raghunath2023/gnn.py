"""The GNN of Raghunath, Peng & Jorswieck (2023), Section III: message passing over the APs (eq. 10)
whose message and update functions are SINRnets (eq. 11).

Every AP ``l`` is a node whose features live on the entries ``(k, j)`` of its ``K × K`` effective-gain
matrix (``G_l[k, j]``: receiving UE ``k``, beam for UE ``j``). A SINRnet layer maps each entry's
features with four sets of weights, one per category of the entry's neighbours in the SINR expression,
and averages each category:

1. the entry itself, ``(k, j)``;
2. the same row, ``(k, j')`` with ``j' ≠ j`` (for ``j = k``: the interference UE ``k`` receives);
3. the same column, ``(k', j)`` with ``k' ≠ k`` (for ``j = k``: the interference UE ``k``'s beam causes);
4. every other entry, ``(k', j')`` with ``k' ≠ k``, ``j' ≠ j``.

``F'[k, j] = concat_c mean_{(k', j') ∈ S_c(k, j)} ReLU(W_c F[k', j'] + b_c)``; relabelling the UEs
(rows and columns alike) relabels the output the same way. A round of message passing,
``x_i' = γ(x_i, mean_{j ∈ N(i)} φ(x_j))``, has each AP compute its message once and broadcast it; mean
aggregation and weights shared by all APs make it equivariant to relabelling the APs. The graph is
complete unless an adjacency mask says otherwise (user-centric association). Dense batched tensors
throughout: ``[B, L, K, K, D]``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class SINRLayer(nn.Module):
    """One SINRnet layer (eq. 11): ``[..., K, K, in] → [..., K, K, 4·width]``.

    The four categories' ``W_c, b_c`` are one linear map to ``4·width`` features; block ``c`` of
    ``z = ReLU(W f + b)`` is then averaged over category ``c``. Written as
    ``z ⊙ coef + (row sums)·c_row + (column sums)·c_col + (total)·c_total`` with per-block coefficients,
    which averages every block over its category in five passes over the entries: the layer is bound by
    memory traffic, not by its matrix product, and splitting the blocks and concatenating their means
    made a whole training step 1.6x slower. An empty category (``K = 1``) contributes 0.
    """

    def __init__(self, in_features: int, width: int):
        super().__init__()
        self.width = width
        self.linear = nn.Linear(in_features, 4 * width)  # the four categories' W_c, b_c at once
        # coefficients [4 terms (z, row sums, column sums, total), 4 blocks] = unit + a·per_row + b·per_rest,
        # a = 1/(K − 1), b = 1/(K − 1)²; with a = b = 0 (K = 1) only the entry itself remains (the other
        # categories are empty: 0). Buffers (not saved), so they follow the module's device.
        unit = torch.zeros(4, 4)
        unit[0, 0] = 1.0
        per_row = torch.tensor([[0.0, -1, -1, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]])
        per_rest = torch.tensor([[0.0, 0, 0, 1], [0, 0, 0, -1], [0, 0, 0, -1], [0, 0, 0, 1]])
        self.register_buffer("unit", unit, persistent=False)
        self.register_buffer("per_row", per_row, persistent=False)
        self.register_buffer("per_rest", per_rest, persistent=False)

    def _coefficients(self, k: int, like: Tensor) -> tuple[Tensor, ...]:
        """Per-feature coefficients ``[4·width]`` of ``z``, its row sums, column sums and total."""
        a = 1.0 / (k - 1) if k > 1 else 0.0
        coef = self.unit + a * self.per_row + (a * a) * self.per_rest
        return tuple(coef.to(like).repeat_interleave(self.width, dim=1).unbind(0))

    def forward(self, f: Tensor) -> Tensor:
        z = torch.relu(self.linear(f))
        coef, c_row, c_col, c_total = self._coefficients(z.shape[-2], z)
        row = z.sum(-2, keepdim=True)  # Σ_j' z[k, j'] → [..., K, 1, F]
        col = z.sum(-3, keepdim=True)  # Σ_k' z[k', j] → [..., 1, K, F]
        total = row.sum(-3, keepdim=True)
        return torch.addcmul(row * c_row + total * c_total, z, coef) + col * c_col


class SINRNet(nn.Module):
    """SINRnet layers, then a linear map of each entry's features to ``out_features`` (the last layer
    of eq. 11 has no aggregation)."""

    def __init__(self, in_features: int, widths: list[int], out_features: int):
        super().__init__()
        layers, size = [], in_features
        for width in widths:
            layers.append(SINRLayer(size, width))
            size = 4 * width
        self.layers = nn.ModuleList(layers)
        self.out = nn.Linear(size, out_features)

    def forward(self, f: Tensor) -> Tensor:
        for layer in self.layers:
            f = layer(f)
        return self.out(f)


def neighbour_mean(messages: Tensor, adjacency: Tensor | None) -> Tensor:
    """``messages [B, L, K, K, D]`` → for each AP ``i`` the mean of its neighbours' messages; the
    complete graph without self-loops by default, else ``adjacency [B, L, L]`` (bool, ``[b, i, j]``: ``j``
    sends to ``i``). An AP without neighbours gets 0."""
    b, nl = messages.shape[:2]
    if adjacency is None:
        if nl == 1:
            return torch.zeros_like(messages)
        return (messages.sum(1, keepdim=True) - messages) / (nl - 1)
    weight = adjacency.to(messages.dtype)
    count = weight.sum(-1).clamp_min(1)
    flat = messages.reshape(b, nl, -1)
    return (torch.bmm(weight, flat) / count[..., None]).view_as(messages)


class APGraphNet(nn.Module):
    """Rounds of eq. (10) on node features ``[B, L, K, K, in]``, then the diagonal of a final linear
    read-out: ``outputs`` values per (AP, UE), ``[B, L, K]`` (or ``[B, L, K, outputs]`` when
    ``outputs > 1``).

    Each round ``r``: ``m_j = φ_r(x_j)``, ``x_i ← γ_r(concat(x_i, mean_{j∈N(i)} m_j, x_i⁰))`` (the input
    features are fed to every round, a skip connection).
    """

    def __init__(self, in_features: int, rounds: int, hidden: int, widths: list[int], outputs: int = 1):
        super().__init__()
        self.outputs = outputs
        self.phi = nn.ModuleList()
        self.gamma = nn.ModuleList()
        size = in_features
        for _ in range(rounds):
            self.phi.append(SINRNet(size, widths, hidden))
            self.gamma.append(SINRNet(size + hidden + in_features, widths, hidden))
            size = hidden
        self.readout = nn.Linear(size, outputs)

    def forward(self, x0: Tensor, adjacency: Tensor | None = None) -> Tensor:
        x = x0
        for phi, gamma in zip(self.phi, self.gamma, strict=True):
            incoming = neighbour_mean(phi(x), adjacency)
            x = gamma(torch.cat([x, incoming, x0], dim=-1))
        out = self.readout(x).diagonal(dim1=-3, dim2=-2).transpose(-1, -2)  # [B, L, K, outputs]
        return out.squeeze(-1) if self.outputs == 1 else out
