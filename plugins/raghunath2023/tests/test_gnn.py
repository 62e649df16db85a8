"""The SINRnet layer against a brute-force loop over its four categories (square and rectangular gain
matrices), the message passing against a loop over the graph, and the permutation equivariance of the
graph network in users and in nodes."""

from __future__ import annotations

import pytest
import torch
from mimo_l2o_plugins.raghunath2023.gnn import GroupGraphNet, SINRLayer, neighbour_mean


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("rows,cols", [(1, 1), (2, 2), (3, 3), (5, 5), (4, 1), (4, 2), (2, 5)])
def test_sinr_layer_averages_one_weight_set_per_category(rows, cols):
    """Eq. (11) by brute force: for every entry (i, j), category c's mean of ReLU(W_c f + b_c) over its
    members (0 for an empty category)."""
    torch.manual_seed(0)
    layer = SINRLayer(2, 3).double()
    f = torch.randn(2, rows, cols, 2, generator=gen(1), dtype=torch.float64)
    out = layer(f)
    w, b = layer.linear.weight, layer.linear.bias
    for n in range(2):
        for i in range(rows):
            for j in range(cols):
                parts = []
                for c, members in enumerate(
                    [
                        [(i, j)],
                        [(i, jj) for jj in range(cols) if jj != j],
                        [(ii, j) for ii in range(rows) if ii != i],
                        [(ii, jj) for ii in range(rows) for jj in range(cols) if ii != i and jj != j],
                    ]
                ):
                    wc, bc = w[3 * c : 3 * c + 3], b[3 * c : 3 * c + 3]
                    values = [torch.relu(wc @ f[n, a, e] + bc) for a, e in members]
                    parts.append(torch.stack(values).mean(0) if values else torch.zeros(3, dtype=f.dtype))
                torch.testing.assert_close(out[n, i, j], torch.cat(parts))


def test_neighbour_mean_equals_a_loop_over_the_graph():
    m = torch.randn(2, 4, 2, 2, 3, generator=gen(2), dtype=torch.float64)
    complete = neighbour_mean(m, None)
    adjacency = torch.rand(2, 4, 4, generator=gen(3)) > 0.4
    adjacency[:, 0] = False  # node 0 hears nobody
    sparse = neighbour_mean(m, adjacency)
    for b in range(2):
        for i in range(4):
            others = [m[b, j] for j in range(4) if j != i]
            torch.testing.assert_close(complete[b, i], torch.stack(others).mean(0))
            heard = [m[b, j] for j in range(4) if adjacency[b, i, j]]
            expected = torch.stack(heard).mean(0) if heard else torch.zeros_like(m[b, i])
            torch.testing.assert_close(sparse[b, i], expected)


@pytest.fixture(scope="module")
def net_and_input():
    torch.manual_seed(4)
    net = GroupGraphNet(in_features=1, rounds=2, hidden=8, widths=[6, 6]).double()
    x = torch.randn(3, 5, 6, 6, 1, generator=gen(5), dtype=torch.float64)  # 5 nodes, 6 users, 6 slots
    rows = torch.arange(6).expand(5, 6)  # slot s is user s's (cell-free: every AP has one per UE)
    return net, x, rows


def test_the_read_out_is_at_each_slots_own_row():
    torch.manual_seed(4)
    net = GroupGraphNet(in_features=1, rounds=1, hidden=4, widths=[3]).double()
    x = torch.randn(2, 3, 4, 2, 1, generator=gen(9), dtype=torch.float64)  # 3 nodes, 4 users, 2 slots
    rows = torch.tensor([[0, 1], [2, 3], [3, 0]])
    out = net(x, rows)
    h = x
    for phi, gamma in zip(net.phi, net.gamma, strict=True):
        h = gamma(torch.cat([h, neighbour_mean(phi(h), None), x], dim=-1))
    full = net.readout(h).squeeze(-1)  # [B, G, U, S]
    for g in range(3):
        for s in range(2):
            torch.testing.assert_close(out[:, g, s], full[:, g, rows[g, s], s])


def test_permuting_users_permutes_the_output(net_and_input):
    net, x, rows = net_and_input
    out = net(x, rows)  # [B, G, S]
    perm = torch.randperm(6, generator=gen(6))
    permuted = x[:, :, perm][:, :, :, perm]  # relabel users: the rows and the slots they own
    torch.testing.assert_close(net(permuted, rows), out[:, :, perm], rtol=0, atol=1e-10)
    assert not torch.allclose(out[:, :, perm], out)  # a real permutation of distinct outputs


def test_permuting_nodes_permutes_the_output(net_and_input):
    net, x, rows = net_and_input
    out = net(x, rows)
    perm = torch.randperm(5, generator=gen(7))
    torch.testing.assert_close(net(x[:, perm], rows), out[:, perm], rtol=0, atol=1e-10)
    # with an adjacency, relabelled on both axes
    adjacency = torch.rand(3, 5, 5, generator=gen(8)) > 0.3
    sparse = net(x, rows, adjacency)
    torch.testing.assert_close(
        net(x[:, perm], rows, adjacency[:, perm][:, :, perm]), sparse[:, perm], rtol=0, atol=1e-10
    )
