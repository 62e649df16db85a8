"""The GNN of Raghunath, Peng & Jorswieck (2023), Section III: message passing over the transmitters
(eq. 10) whose message and update functions are SINRnets (eq. 11).

Every node ``g`` (a budget group: an AP in cell-free, a BS in cellular, a link in the interference
channel) has features on the entries ``(u, s)`` of its ``U × S`` gain matrix: the gain of its slot
``s`` (the power variable of one user) at receiving user ``u``; in cell-free this is AP ``l``'s
``K × K`` matrix ``G_l[k, j]`` (receiving UE ``k``, beam for UE ``j``). A SINRnet layer maps each
entry's features with four sets of weights, one per category of the entry's neighbours in the SINR
expression, and averages each category:

1. the entry itself, ``(u, s)``;
2. the same row, ``(u, s')`` with ``s' ≠ s`` (for ``u``'s own slot: the interference ``u`` receives
   from this node);
3. the same column, ``(u', s)`` with ``u' ≠ u`` (for the owner's row: the interference the slot's beam
   causes);
4. every other entry, ``(u', s')`` with ``u' ≠ u``, ``s' ≠ s``.

``F'[u, s] = concat_c mean_{(u', s') ∈ S_c(u, s)} ReLU(W_c F[u', s'] + b_c)``; relabelling the users
(rows, and the slots they own, alike) relabels the output the same way. A round of message passing,
``x_i' = γ(x_i, mean_{j ∈ N(i)} φ(x_j))``, has each node compute its message once and broadcast it; mean
aggregation and weights shared by all nodes make it equivariant to relabelling the nodes. The graph is
complete unless an adjacency mask says otherwise. Dense batched tensors throughout: ``[B, G, U, S, D]``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class SINRLayer(nn.Module):
    """One SINRnet layer (eq. 11): ``[..., U, S, in] → [..., U, S, 4·width]``.

    The four categories' ``W_c, b_c`` are one linear map to ``4·width`` features; block ``c`` of
    ``z = ReLU(W f + b)`` is then averaged over category ``c``. Written as
    ``z ⊙ coef + (row sums)·c_row + (column sums)·c_col + (total)·c_total`` with per-block coefficients,
    which averages every block over its category in five passes over the entries: the layer is bound by
    memory traffic, not by its matrix product, and splitting the blocks and concatenating their means
    made a whole training step 1.6x slower. An empty category (one slot, or one user) contributes 0.
    """

    def __init__(self, in_features: int, width: int):
        super().__init__()
        self.width = width
        self.linear = nn.Linear(in_features, 4 * width)  # the four categories' W_c, b_c at once
        # coefficients [4 terms (z, row sums, column sums, total), 4 blocks]
        # = unit + r·per_row + c·per_column + r·c·per_rest, r = 1/(S − 1), c = 1/(U − 1); with r = 0 (one
        # slot) or c = 0 (one user) the empty categories contribute 0. Buffers (not saved), so they
        # follow the module's device.
        unit = torch.zeros(4, 4)
        unit[0, 0] = 1.0
        per_row = torch.tensor([[0.0, -1, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
        per_column = torch.tensor([[0.0, 0, -1, 0], [0, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]])
        per_rest = torch.tensor([[0.0, 0, 0, 1], [0, 0, 0, -1], [0, 0, 0, -1], [0, 0, 0, 1]])
        self.register_buffer("unit", unit, persistent=False)
        self.register_buffer("per_row", per_row, persistent=False)
        self.register_buffer("per_column", per_column, persistent=False)
        self.register_buffer("per_rest", per_rest, persistent=False)
        self._memo: dict[tuple, tuple[Tensor, ...]] = {}  # coefficients by shape, dtype and device

    def _coefficients(self, rows: int, columns: int, like: Tensor) -> tuple[Tensor, ...]:
        """Per-feature coefficients ``[4·width]`` of ``z``, its row sums, column sums and total, for a
        ``rows × columns`` matrix of entries (computed once per shape: a training step would otherwise
        spend 3 % of its time on them)."""
        key = (rows, columns, like.dtype, like.device)
        if key not in self._memo:
            r = 1.0 / (columns - 1) if columns > 1 else 0.0  # a row's other entries
            c = 1.0 / (rows - 1) if rows > 1 else 0.0  # a column's other entries
            coef = self.unit + r * self.per_row + c * self.per_column + (r * c) * self.per_rest
            self._memo[key] = tuple(coef.to(like).repeat_interleave(self.width, dim=1).unbind(0))
        return self._memo[key]

    def forward(self, f: Tensor) -> Tensor:
        z = torch.relu(self.linear(f))
        coef, c_row, c_col, c_total = self._coefficients(z.shape[-3], z.shape[-2], z)
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
    """``messages [B, G, U, S, D]`` → for each node ``i`` the mean of its neighbours' messages; the
    complete graph without self-loops by default, else ``adjacency [B, G, G]`` (bool, ``[b, i, j]``: ``j``
    sends to ``i``). A node without neighbours gets 0."""
    b, nl = messages.shape[:2]
    if adjacency is None:
        if nl == 1:
            return torch.zeros_like(messages)
        return (messages.sum(1, keepdim=True) - messages) / (nl - 1)
    weight = adjacency.to(messages.dtype)
    count = weight.sum(-1).clamp_min(1)
    flat = messages.reshape(b, nl, -1)
    return (torch.bmm(weight, flat) / count[..., None]).view_as(messages)


class GroupGraphNet(nn.Module):
    """Rounds of eq. (10) on node features ``[B, G, U, S, in]``, then a final linear read-out at each
    slot's own entry ``(rows[g, s], s)`` (the row of the user the slot's power is for): ``outputs``
    values per (node, slot), ``[B, G, S]`` (or ``[B, G, S, outputs]`` when ``outputs > 1``).

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

    def forward(self, x0: Tensor, rows: Tensor, adjacency: Tensor | None = None) -> Tensor:
        """``x0 [B, G, U, S, in]``, ``rows [G, S]`` (long): the row of each slot's own entry."""
        x = x0
        for phi, gamma in zip(self.phi, self.gamma, strict=True):
            incoming = neighbour_mean(phi(x), adjacency)
            x = gamma(torch.cat([x, incoming, x0], dim=-1))
        out = self.readout(x)  # [B, G, U, S, outputs]
        b, g, _, s, d = out.shape
        index = rows[None, :, None, :, None].expand(b, g, 1, s, d)
        out = out.gather(2, index).squeeze(2)  # [B, G, S, outputs]
        return out.squeeze(-1) if self.outputs == 1 else out
