"""The position-based learners of Sanguinetti et al. (2018), Section IV and Tables II-IV: layouts and
parameter counts, the relative MSE loss, the predicted-sum decoding, the shared network's per-cell
frames (equivariance under translations of the layout by whole cells on the torus), feasibility of
the final decision, and training with the shared loop."""

from __future__ import annotations

import math

import pytest
import torch
from mimo_l2o_plugins.sanguinetti2018.config import (
    InputFeatures,
    LSTMSequence,
    PositionLSTMConfig,
    PositionMLPConfig,
    PowerOutput,
    RelativeMSE,
)
from mimo_l2o_plugins.sanguinetti2018.layers import GroupedLinear, GroupedLSTM
from mimo_l2o_plugins.sanguinetti2018.layout import CellLayout
from mimo_l2o_plugins.sanguinetti2018.loss import label_floor, relative_mse
from mimo_l2o_plugins.sanguinetti2018.networks import scale_to_sum
from mimo_l2o_plugins.sanguinetti2018.position import permute_users
from mimo_l2o_plugins.sanguinetti2018.position_features import CellFrames
from mimo_l2o_plugins.sanguinetti2018.position_lstm import PositionLSTMLearner
from mimo_l2o_plugins.sanguinetti2018.position_mlp import PositionMLPLearner

from mimo_l2o.components import Geometry
from mimo_l2o.errors import ConfigError
from mimo_l2o.learner import LearnerSpec, OptimizerName, TrainConfig
from mimo_l2o.problems.power_control import FeasiblePower, PowerControlProblem
from mimo_l2o.registry import LEARNERS
from mimo_l2o.scenarios.cellular import Cellular
from mimo_l2o.training import fit

L, K = 4, 5
P_MAX = 0.5
CPU = torch.device("cpu")
TABLE_II = [2624, 2080, 1056, 528, 85, 36]
TABLE_III = [20992, 131328, 32896, 16512, 645, 36]
# Table IV prints 204,128 for layer 1, but its total of 509,829 needs 304,128 = 4·256·(40 + 256 + 1)
TABLE_IV = [304128, 197120, 8256, 325]


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def grid_geometry(num_cells: int = L, num_users: int = K) -> Geometry:
    """The cellular layout in area units (scale 1): BS ``l`` at the centre of cell ``l`` of the unit
    torus (column ``l % g``, row ``l // g``), UE ``l·K + k`` in cell ``l``."""
    g = math.isqrt(num_cells)
    idx = torch.arange(num_cells)
    sites = (torch.stack([idx % g, idx // g], dim=1).double() + 0.5) / g
    return Geometry(sites, idx.repeat_interleave(num_users), scale=1.0, wrap=True)


def spec(num_cells: int = L, num_users: int = K, p_max: float = P_MAX, geometry=None) -> LearnerSpec:
    n = num_cells * num_users
    template = PowerControlProblem(
        signal_gain=torch.zeros(1, n, n),
        interference_gain=torch.zeros(1, n, n),
        noise=torch.ones(1, n),
        group=torch.arange(num_cells).repeat_interleave(num_users),
        budget=torch.full((1, num_cells), p_max),
        weights=torch.ones(1, n),
    )
    geometry = grid_geometry(num_cells, num_users) if geometry is None else geometry
    return LearnerSpec({"user_positions": (n, 2)}, template, geometry=geometry)


def layout_of(num_cells: int = L, num_users: int = K) -> CellLayout:
    return CellLayout.from_spec(spec(num_cells, num_users))


# Table IV's network as the paper trains it (the learner's defaults are the tuned ones)
PAPER_LSTM = dict(
    shared=False,
    features=InputFeatures.coordinates,
    output=PowerOutput.relu,
    pilot_shifts=1,
    train_on="labels",
    permute_users=False,
)


def mlp(num_cells: int = L, num_users: int = K, **config) -> PositionMLPLearner:
    return PositionMLPLearner(PositionMLPConfig(name="position_mlp", **config), spec(num_cells, num_users))


def lstm(num_cells: int = L, num_users: int = K, **config) -> PositionLSTMLearner:
    cfg = PositionLSTMConfig(name="position_lstm", **{**PAPER_LSTM, **config})
    return PositionLSTMLearner(cfg, spec(num_cells, num_users))


def positions(n: int, seed: int, num_cells: int = L, num_users: int = K) -> torch.Tensor:
    """UE coordinates as the cellular scenario gives them: uniform in each UE's own square cell,
    ``[n, L·K·2]`` in area units (cell ``l`` at column ``l % g``, row ``l // g``)."""
    g = math.isqrt(num_cells)
    idx = torch.arange(num_cells)
    corner = torch.stack([idx % g, idx // g], dim=1).float() / g  # [L, 2]
    u = torch.rand(n, num_cells, num_users, 2, generator=gen(seed))
    return (corner[None, :, None, :] + u / g).flatten(1)


def per_cell_parameters(layer: torch.nn.Module) -> int:
    """Parameters of one cell's copy of a grouped layer."""
    return sum(p[0].numel() for p in layer.parameters())


def test_registered_as_supervised_learners_of_user_positions():
    assert LEARNERS.get("position_mlp") is PositionMLPLearner
    assert LEARNERS.get("position_lstm") is PositionLSTMLearner
    for cls in (PositionMLPLearner, PositionLSTMLearner):
        assert cls.requires_labels
        assert cls.inputs == ("user_positions",)
    raw = torch.rand(3, L * K, 2, dtype=torch.float64, generator=gen(0))
    x = mlp().prepare({"user_positions": raw})
    assert x.dtype == torch.float32 and x.shape == (3, 2 * L * K)
    assert torch.equal(x[1].view(L * K, 2), raw[1].float())
    # positions in metres are divided by the geometry's scale
    s = spec(
        geometry=Geometry(grid_geometry().sites * 500, grid_geometry().user_site, scale=500.0, wrap=True)
    )
    scaled = PositionMLPLearner(PositionMLPConfig(name="position_mlp"), s).prepare(
        {"user_positions": 500 * raw}
    )
    torch.testing.assert_close(scaled, x)


# ---------------------------------------------------------------------------------------------
# layouts (Tables II-IV)
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize(
    "hidden,table", [([64, 32, 32, 16], TABLE_II), ([512, 256, 128, 128], TABLE_III)], ids=["II", "III"]
)
def test_mlp_parameter_counts_equal_the_tables(hidden, table, shared):
    model = mlp(hidden=hidden, shared=shared).build_model(positions(8, 0), gen(0))
    layers = list(model.layers)
    assert all(isinstance(layer, GroupedLinear) for layer in layers)
    assert [per_cell_parameters(layer) for layer in layers] == table
    widths = [(layer.weight.shape[1], layer.weight.shape[2]) for layer in layers]
    assert widths[0][0] == 2 * K * L and widths[-2][1] == K and widths[-1][1] == K + 1
    # one network per cell, or one for all
    assert sum(p.numel() for p in model.parameters()) == (1 if shared else L) * sum(table)
    # the tables' printed totals (6,373 and 202,373) leave out the output layer's 36
    assert sum(table) - 36 in (6373, 202373)


def test_mlp_activations_are_elu_and_the_output_linear():
    assert PositionMLPConfig(name="position_mlp").loss == RelativeMSE.cell
    model = mlp().build_model(positions(8, 0), gen(0))
    x = positions(6, 1)
    h = model.frames(x)
    for layer in model.layers[:-1]:
        h = torch.nn.functional.elu(layer(h))
    expected = model.layers[-1](h).transpose(0, 1)
    with torch.no_grad():
        assert torch.equal(model.outputs(x), expected)
    assert model.outputs(x).shape == (6, L, K + 1)
    # without the K-unit layer the hidden list is all there is
    model = mlp(hidden=[7], k_layer=False).build_model(positions(8, 0), gen(0))
    assert [tuple(layer.weight.shape) for layer in model.layers] == [(L, 2 * K * L, 7), (L, 7, K + 1)]


@pytest.mark.parametrize("shared", [False, True])
def test_lstm_parameter_counts_equal_table_iv(shared):
    model = lstm(shared=shared).build_model(positions(8, 0), gen(0))
    layers = [*model.recurrent, *model.dense]
    assert [type(layer) for layer in layers] == [GroupedLSTM, GroupedLSTM, GroupedLinear, GroupedLinear]
    assert [per_cell_parameters(layer) for layer in layers] == TABLE_IV
    assert sum(TABLE_IV) == 509829  # Table IV's total
    assert sum(p.numel() for p in model.parameters()) == (1 if shared else L) * 509829
    # the sequence of UE positions: 2 features per step
    model = lstm(sequence=LSTMSequence.positions).build_model(positions(8, 0), gen(0))
    assert per_cell_parameters(model.recurrent[0]) == 4 * 256 * (2 + 256 + 1)
    with torch.no_grad():
        out = model.outputs(positions(3, 1))
    assert out.shape == (3, L, K) and (out >= 0).all()


def test_lstm_layer_is_a_keras_lstm():
    layer = GroupedLSTM(2, 3, 4, gen(0))
    x = torch.randn(2, 5, 6, 3, generator=gen(1))  # [cells, batch, steps, features]
    with torch.no_grad():
        out = layer(x)
        for cell in range(2):
            w_ih, w_hh, b = layer.weight_ih[cell], layer.weight_hh[cell], layer.bias[cell, 0]
            h = c = torch.zeros(5, 4)
            for t in range(6):
                i, f, g, o = (x[cell, :, t] @ w_ih + h @ w_hh + b).chunk(4, dim=-1)
                c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                h = torch.sigmoid(o) * torch.tanh(c)
                torch.testing.assert_close(out[cell, :, t], h, rtol=1e-5, atol=1e-6)
    # Keras' initial forget-gate bias of 1, zeros elsewhere
    assert torch.equal(layer.bias[0, 0], torch.tensor([0.0] * 4 + [1.0] * 4 + [0.0] * 8))


def test_initialisation_follows_the_generator():
    x = positions(8, 0)
    a, b = mlp().build_model(x, gen(3)), mlp().build_model(x, gen(3))
    c = mlp().build_model(x, gen(4))
    for (name, va), vb, vc in zip(
        a.state_dict().items(), b.state_dict().values(), c.state_dict().values(), strict=True
    ):
        assert torch.equal(va, vb), name
        if name.endswith("weight"):
            assert not torch.equal(va, vc), name
            # Glorot uniform: |w| <= sqrt(6 / (fan_in + fan_out)), spread over that range
            bound = math.sqrt(6 / (va.shape[1] + va.shape[2]))
            assert va.abs().max() <= bound and va.abs().max() > 0.9 * bound
    # the cells' networks differ from each other
    assert not torch.equal(a.layers[0].weight[0], a.layers[0].weight[1])


# ---------------------------------------------------------------------------------------------
# loss and decoding
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", [RelativeMSE.cell, RelativeMSE.element])
def test_relative_mse_against_a_hand_computation(kind):
    learner = mlp(loss=kind)
    model = learner.build_model(positions(8, 0), gen(0))
    x = positions(7, 1)
    labels = torch.rand(7, L * K, generator=gen(2)) * P_MAX / K
    labels[0, :K] = 0.0  # a cell that spends nothing
    loss = learner.loss(model, {"inputs": x, "labels": labels})
    with torch.no_grad():
        out = model.outputs(x)
    total, count = 0.0, 0
    for b in range(7):
        for j in range(L):
            y = [float(labels[b, j * K + k]) / P_MAX for k in range(K)]
            y.append(sum(y))
            errors = [(float(out[b, j, d]) - y[d]) ** 2 for d in range(K + 1)]
            if kind == RelativeMSE.cell:
                total += sum(errors) / (sum(v * v for v in y) + 1e-8)
                count += 1
            else:
                total += sum(e / (v * v + 1e-8) for e, v in zip(errors, y, strict=True))
                count += K + 1
    assert loss.dim() == 0
    assert loss.item() == pytest.approx(total / count, rel=1e-5)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    # the function itself
    pred, target = torch.tensor([[[1.0, 2.0]]]), torch.tensor([[[1.5, 1.0]]])
    expected = (0.25 + 1.0) / (2.25 + 1.0) if kind == RelativeMSE.cell else (0.25 / 2.25 + 1.0) / 2
    assert relative_mse(pred, target, kind).item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("kind", [RelativeMSE.cell, RelativeMSE.element])
def test_relative_mse_floor_from_the_training_labels(kind):
    # a sum-rate solver's labels: some cells switched off entirely
    labels = torch.rand(40, L * K, generator=gen(3), dtype=torch.float64) * P_MAX / K
    labels[::4, :K] = 0.0
    learner = mlp(loss=kind, relative_floor=0.1)
    learner.observe_labels(labels)
    y = labels.view(40, L, K) / P_MAX
    y = torch.cat([y, y.sum(-1, keepdim=True)], -1)  # the MLP predicts the powers and their sum
    square = y.square().sum(-1) if kind == RelativeMSE.cell else y.square()
    assert learner.floor == pytest.approx(0.1 * float(square.mean()), rel=1e-6)
    assert label_floor(y, kind, 0.0) == 0.0
    model = learner.build_model(positions(8, 0), gen(0))
    x = positions(40, 1)
    with torch.no_grad():
        out = model.outputs(x).double()
        loss = learner.loss(model, {"inputs": x, "labels": labels})
    err = (out - y).square()
    err = err.sum(-1) if kind == RelativeMSE.cell else err
    expected = (err / (square.clamp_min(learner.floor) + 1e-8)).mean()
    assert loss.item() == pytest.approx(float(expected), rel=1e-5)
    # an off cell weighs 1 / floor, not 1e8; a cell above the floor exactly as in the paper's loss
    paper = (err / (square + 1e-8)).mean()
    assert float(paper) > 1e4 * float(expected)
    above = square > learner.floor
    torch.testing.assert_close(
        (err / (square.clamp_min(learner.floor) + 1e-8))[above], (err / (square + 1e-8))[above]
    )
    with pytest.raises(ConfigError, match="relative_floor"):
        mlp(relative_floor=float("nan"))


def test_lstm_losses_compare_the_k_powers():
    x = positions(7, 1)
    labels = torch.rand(7, L * K, generator=gen(2)) * P_MAX / K + 1e-3
    y = labels.view(7, L, K) / P_MAX
    # ReLU powers: the relative MSE on the K powers / budget (no sum output)
    learner = lstm(lstm=[16, 8], dense=[8], loss=RelativeMSE.cell)
    model = learner.build_model(positions(8, 0), gen(0))
    with torch.no_grad():
        out = model.outputs(x)
        loss = learner.loss(model, {"inputs": x, "labels": labels})
        assert torch.equal(model(x), (out * P_MAX).flatten(1))
    by_hand = ((out - y) ** 2).sum(-1) / ((y**2).sum(-1) + 1e-8)
    assert loss.item() == pytest.approx(by_hand.mean().item(), rel=1e-5)
    # log output: the MSE of log(power / budget); the decision is exp(min(output, 0)) · budget
    learner = lstm(lstm=[16, 8], dense=[8], output=PowerOutput.log)
    model = learner.build_model(positions(8, 0), gen(0))
    with torch.no_grad():
        out = model.outputs(x)
        loss = learner.loss(model, {"inputs": x, "labels": labels})
        torch.testing.assert_close(model(x), (out.clamp(max=0).exp() * P_MAX).flatten(1))
    assert (out < 0).any() and (out > -20).all()  # linear, not ReLU
    assert loss.item() == pytest.approx(((out - y.log()) ** 2).mean().item(), rel=1e-5)


def test_scale_to_sum_against_a_hand_computation():
    out = torch.tensor(
        [
            [0.2, -0.1, 0.3, 0.0, 0.5, 0.6],  # powers add up to 1.0 → scaled to 0.6
            [0.1, 0.1, 0.1, 0.1, 0.1, 1.7],  # the sum is clamped to the budget
            [-1.0, -2.0, 0.0, -0.5, 0.0, 0.5],  # no positive power: an even split of the sum
            [0.3, 0.2, 0.1, 0.0, 0.4, -0.2],  # a negative sum: nothing
        ]
    )
    expected = torch.tensor(
        [
            [0.12, 0.0, 0.18, 0.0, 0.3],
            [0.2, 0.2, 0.2, 0.2, 0.2],
            [0.1, 0.1, 0.1, 0.1, 0.1],
            [0.0, 0.0, 0.0, 0.0, 0.0],
        ]
    )
    torch.testing.assert_close(scale_to_sum(out), expected)


@pytest.mark.parametrize("use_sum", [True, False])
def test_model_returns_powers_in_watts(use_sum):
    learner = mlp(use_sum=use_sum)
    model = learner.build_model(positions(8, 0), gen(0))
    x = positions(9, 1)
    with torch.no_grad():
        out, p = model.outputs(x), model(x)
    assert p.shape == (9, L * K)
    cells = p.view(9, L, K)
    if use_sum:
        torch.testing.assert_close(cells, P_MAX * scale_to_sum(out))
        # each cell spends exactly its predicted sum, clamped to [0, p_max]
        torch.testing.assert_close(cells.sum(-1), P_MAX * out[..., K].clamp(0, 1))
    else:
        torch.testing.assert_close(cells, P_MAX * out[..., :K])


# ---------------------------------------------------------------------------------------------
# per-cell frames of the shared network
# ---------------------------------------------------------------------------------------------
def test_cell_frames_put_the_own_bs_at_the_origin_and_the_own_cell_first():
    layout = layout_of()
    assert torch.equal(
        layout.cell_order(), torch.tensor([[0, 1, 2, 3], [1, 0, 3, 2], [2, 3, 0, 1], [3, 2, 1, 0]])
    )
    x = positions(5, 0)
    frames = CellFrames(layout, shared=True)(x)  # [L, B, 2KL]
    assert frames.shape == (L, 5, 2 * K * L)
    pos = x.view(5, L, K, 2)
    bs = layout.bs_positions().float()
    for j in range(L):
        own = frames[j, :, : 2 * K].view(5, K, 2)
        torch.testing.assert_close(own, pos[:, j] - bs[j])  # no wrapping needed inside the own cell
        assert (own.abs() <= 0.25).all()
        assert (frames[j].abs() <= 0.5).all()
    # without sharing: the raw coordinates
    assert torch.equal(CellFrames(layout, shared=False)(x), x[None])


@pytest.mark.parametrize("num_cells", [4, 9])
@pytest.mark.parametrize("shared", [False, True])
def test_polar_features_are_the_scenarios_distances_and_angles(num_cells, shared):
    """Against the scenario's own geometry (nearest of the 9 wrapped copies): log distance in area
    units and the sine of the angle at which the UE is seen from each BS, in the frame's cell order."""
    k = 3
    scenario = Cellular(Cellular.Config(num_cells=num_cells, num_users=k))
    network = scenario.sample(6, gen(3))
    side = scenario.config.area_side
    x = scenario.user_positions(network).flatten(1).float() / side
    distance = torch.linalg.vector_norm(scenario.wrapped_offsets(network["user_positions"]), dim=-1)
    theta = network["theta"]  # [n, L(BS), L, K]
    expected = torch.stack([torch.log(distance / side), theta.sin()], dim=-1)
    expected = expected.permute(0, 2, 3, 1, 4)  # [n, L(cell), K, L(BS), 2]
    layout = layout_of(num_cells, k)
    frames = CellFrames(layout, shared, InputFeatures.polar)
    got = frames(x)
    assert got.shape == (num_cells if shared else 1, 6, frames.width)
    assert frames.width == 2 * num_cells * num_cells * k and frames.step_width == 2 * num_cells
    orders = layout.cell_order() if shared else torch.arange(num_cells)[None]
    for j, order in enumerate(orders):
        want = expected[:, order][:, :, :, order].flatten(1).float()  # cells and BSs in frame j's order
        torch.testing.assert_close(got[j], want, rtol=0, atol=2e-5)


def translated(x: torch.Tensor, num_cells: int, num_users: int, dx: int, dy: int):
    """The layout moved by ``(dx, dy)`` cells on the torus, cells relabelled: returns the new features
    and ``sigma`` with ``sigma[l]`` the new label of old cell ``l``."""
    g = math.isqrt(num_cells)
    idx = torch.arange(num_cells)
    sigma = (idx % g + dx) % g + g * ((idx // g + dy) % g)
    pos = x.view(x.shape[0], num_cells, num_users, 2)
    moved = torch.remainder(pos + torch.tensor([dx / g, dy / g]), 1.0)
    new = torch.empty_like(pos)
    new[:, sigma] = moved
    return new.flatten(1), sigma


@pytest.mark.parametrize("features", list(InputFeatures))
@pytest.mark.parametrize("kind", ["mlp", "lstm", "lstm_positions"])
@pytest.mark.parametrize("num_cells,dx,dy", [(4, 1, 0), (4, 0, 1), (4, 1, 1), (9, 1, 0), (9, 2, 1)])
def test_shared_network_is_equivariant_to_translations_by_whole_cells(kind, num_cells, dx, dy, features):
    k = 3
    if kind == "mlp":
        learner = mlp(num_cells, k, shared=True, features=features)
    else:
        seq = LSTMSequence.positions if kind == "lstm_positions" else LSTMSequence.single
        learner = lstm(num_cells, k, shared=True, lstm=[16, 8], dense=[8], sequence=seq, features=features)
    model = learner.build_model(positions(8, 0, num_cells, k), gen(0))
    x = positions(20, 1, num_cells, k)
    x2, sigma = translated(x, num_cells, k, dx, dy)
    with torch.no_grad():
        out, out2 = model.outputs(x), model.outputs(x2)
        p, p2 = model(x).view(20, num_cells, k), model(x2).view(20, num_cells, k)
    assert (out.abs() > 1e-3).any()
    torch.testing.assert_close(out2[:, sigma], out, rtol=0, atol=1e-5)
    torch.testing.assert_close(p2[:, sigma], p, rtol=0, atol=1e-5)
    if kind == "mlp":
        # a network per cell has no such symmetry
        model = mlp(num_cells, k, shared=False, features=features).build_model(x, gen(0))
        with torch.no_grad():
            assert (model.outputs(x2)[:, sigma] - model.outputs(x)).abs().max() > 1e-3


# ---------------------------------------------------------------------------------------------
# averaging over pilot relabelings
# ---------------------------------------------------------------------------------------------
def relabeled(x: torch.Tensor, s: int) -> torch.Tensor:
    """The layout with the pilots renamed: new UE ``u`` of every cell is old UE ``(u + s) mod K``."""
    return x.view(x.shape[0], L, K, 2).roll(-s, dims=2).flatten(1)


@pytest.mark.parametrize("shifts", [1, 3, K, K + 2])
def test_pilot_shifts_average_the_networks_answers_over_relabelings(shifts):
    learner = lstm(lstm=[16], dense=[8], shared=True, output=PowerOutput.log, pilot_shifts=shifts)
    model = learner.build_model(positions(8, 0), gen(0))
    x = positions(7, 1)
    with torch.no_grad():
        model.train()
        alone = model(x)
        model.eval()
        policy = model(x)
        # reference: the network on each relabeled layout, its answers renamed back, averaged (log powers)
        answers = [model.outputs(relabeled(x, s)).roll(s, dims=-1) for s in range(min(shifts, K))]
        mean = torch.stack(answers).mean(0)
        torch.testing.assert_close(policy, (mean.clamp(max=0).exp() * P_MAX).flatten(1), rtol=1e-5, atol=1e-7)
        # training mode, and model.network in any mode (raw_output: the objective loss): the network alone
        torch.testing.assert_close(alone, (model.outputs(x).clamp(max=0).exp() * P_MAX).flatten(1))
        torch.testing.assert_close(model.network(x), alone)
        # test/objective_ratio_raw reports the network alone whenever the policy averages
        assert learner.reports_raw == (min(shifts, K) > 1)
        torch.testing.assert_close(learner.raw_output(model, x), alone)
        if shifts >= K:  # all K relabelings: renaming the pilots renames the decision
            again = model(relabeled(x, 1)).view(7, L, K).roll(1, dims=-1).flatten(1)
            torch.testing.assert_close(again, policy, rtol=1e-5, atol=1e-7)
        if shifts == 1:
            assert torch.equal(policy, alone)
        else:
            assert (policy - alone).abs().max() > 1e-6


# ---------------------------------------------------------------------------------------------
# feasibility
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "make",
    [
        lambda: mlp(use_sum=True),
        lambda: mlp(use_sum=False),
        lambda: mlp(shared=True),
        lambda: lstm(lstm=[16, 8], dense=[8]),
        lambda: lstm(lstm=[16, 8], dense=[8], output=PowerOutput.log),
        lambda: lstm(lstm=[16], dense=[8], output=PowerOutput.log, features="polar", pilot_shifts=3),
    ],
    ids=["mlp_sum", "mlp_raw", "mlp_shared", "lstm", "lstm_log", "lstm_polar_shifts"],
)
def test_final_decision_is_feasible(make):
    learner = make()
    final = learner.finalize()
    assert isinstance(final, FeasiblePower)
    model = learner.build_model(positions(8, 0), gen(0)).eval()  # the deployed policy
    x = torch.cat([positions(50, 1), torch.rand(20, 2 * K * L, generator=gen(2)) * 10 - 5])
    for scale in (1.0, 1e3, -1e3, 1e6):
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(scale)
            p = final(model(x))
            for q in model.parameters():
                q.div_(scale)
        assert p.isfinite().all(), scale
        assert (p >= 0).all(), scale
        # within the budget in float32 itself, not only up to a rounding
        assert (p.view(-1, L, K).sum(-1) <= P_MAX).all(), scale
    # a feasible decision is left as it is, up to the margin of 1e-5 under the budget
    ok = torch.rand(30, L, K, generator=gen(3))
    ok = (P_MAX * ok / ok.sum(-1, keepdim=True) * torch.rand(30, L, 1, generator=gen(4))).flatten(1)
    torch.testing.assert_close(final(ok), ok, rtol=1.1e-5, atol=0)
    assert torch.equal(final(0.9 * ok), 0.9 * ok)
    # cells at exactly the budget in float32: the case where a plain projection can end one ulp above
    full = torch.rand(2000, L, K, generator=gen(5))
    full = (P_MAX * full / full.sum(-1, keepdim=True)).flatten(1)
    assert (final(full).view(-1, L, K).sum(-1) <= P_MAX).all()


# ---------------------------------------------------------------------------------------------
# training on the objective, UE renumbering
# ---------------------------------------------------------------------------------------------
def problems(n: int, seed: int, num_cells: int = L, num_users: int = K) -> PowerControlProblem:
    """Cellular-like problems: diagonal signal gains, dense interference, per-cell budgets (float32)."""
    g, v = gen(seed), num_cells * num_users
    a = 10 * (1 + torch.rand(n, v, generator=g))
    return PowerControlProblem(
        signal_gain=torch.diag_embed(a),
        interference_gain=torch.rand(n, v, v, generator=g),
        noise=0.5 + torch.rand(n, v, generator=g),
        group=torch.arange(num_cells).repeat_interleave(num_users),
        budget=torch.full((n, num_cells), P_MAX),
        weights=torch.ones(n, v),
        prelog=0.9,
    )


def with_problems(learner, x: torch.Tensor, labels: torch.Tensor, problem: PowerControlProblem) -> dict:
    return {"inputs": x, "labels": labels, **learner.problem_tensors(problem)}


def test_permute_users_renumbers_the_pilots_alike_in_every_cell():
    n = 6
    x, problem = positions(n, 1), problems(n, 2)
    labels = torch.rand(n, L * K, generator=gen(3))
    learner = lstm(lstm=[8], dense=[8])
    batch = with_problems(learner, x, labels, problem)
    out = permute_users(batch, learner.layout, gen(4))
    # each sample's UEs are renumbered within their cells, and not all in the identity order
    perm = torch.stack(
        [torch.stack([(labels[i] == y).nonzero()[0, 0] for y in out["labels"][i]]) for i in range(n)]
    )
    assert torch.equal(perm // K, torch.arange(L).repeat_interleave(K).expand(n, -1))
    assert not torch.equal(perm, torch.arange(L * K).expand(n, -1))
    # by one permutation of the pilots, the same in every cell: UEs sharing a pilot still share an index
    within = (perm % K).view(n, L, K)
    assert torch.equal(within, within[:, :1].expand(n, L, K))
    assert len({tuple(row) for row in within[:, 0].tolist()}) > 1  # drawn per sample
    for i in range(n):
        for u in range(L * K):
            assert torch.equal(out["inputs"][i].view(-1, 2)[u], x[i].view(-1, 2)[perm[i, u]])
    # the permuted problem at the permuted powers gives the permuted SINRs (the same network)
    renumbered = problem.with_batched_tensors({k[8:]: v for k, v in out.items() if k.startswith("problem.")})
    p = torch.rand(n, L * K, generator=gen(5)) * P_MAX / K
    p_perm = p.gather(1, perm)
    torch.testing.assert_close(renumbered.sinr(p_perm), problem.sinr(p).gather(1, perm))
    torch.testing.assert_close(renumbered.budget, problem.budget)


def test_objective_training_switches_from_labels_to_the_smooth_objective():
    from mimo_l2o.objectives.fairness import MaxMin
    from mimo_l2o.solvers.fairness import MaxMinPF

    n = 16
    x, problem = positions(n, 1), problems(n, 2)
    labels = torch.rand(n, L * K, generator=gen(3)) * P_MAX / K + 1e-3
    s = spec()
    s.problem, s.objective = problem[:1], MaxMin(None)
    learner = PositionLSTMLearner(
        PositionLSTMConfig(
            name="position_lstm",
            **{
                **PAPER_LSTM,
                "lstm": [8],
                "dense": [8],
                "output": PowerOutput.log,
                "train_on": "objective",
                "pretrain_epochs": 2,
                "temperature": 5.0,
            },
        ),
        s,
    )
    assert learner.uses_problems and not lstm().uses_problems
    model = learner.build_model(x, gen(0))
    batch = with_problems(learner, x, labels, problem)
    with torch.no_grad():
        target = (labels.view(n, L, K) / P_MAX).log()
        label_loss = (model.outputs(x) - target).square().mean()
        p = model(x)
        p = p * (P_MAX / p.view(n, L, K).sum(-1).clamp_min(P_MAX)).repeat_interleave(K, dim=1)  # onto budgets
        sinr = problem.sinr(p)
        soft = sinr.pow(-5.0).sum(-1).pow(-1 / 5.0)
        objective_loss = -(0.9 * torch.log2(1 + soft)).log().mean()
    model.train()
    assert learner.loss(model, batch).item() == pytest.approx(label_loss.item(), rel=1e-5)  # pretraining
    model.eval()
    assert learner.loss(model, batch).item() == pytest.approx(objective_loss.item(), rel=1e-5)  # validation
    learner.on_epoch_end(1, {})  # two epochs done: the objective from now on
    model.train()
    assert learner.loss(model, batch).item() == pytest.approx(objective_loss.item(), rel=1e-5)
    # a few Adam steps on the objective raise the exact minimum SE of the feasible decisions
    before = MaxMin(None)(problem, learner.finalize()(model(x))).mean()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(30):
        opt.zero_grad()
        learner.loss(model, batch).backward()
        opt.step()
    after = MaxMin(None)(problem, learner.finalize()(model(x))).mean()
    # better (about 10 % measured), and never above the exact optimum
    exact = problem.to(dtype=torch.float64)
    optimum = MaxMin(None)(exact, MaxMinPF(MaxMinPF.Config(name="max_min_pf")).solve(exact, MaxMin(None)))
    assert 1.05 * before < after <= optimum.float().mean()


def test_objective_training_needs_an_objective():
    with pytest.raises(ConfigError, match="objective"):
        lstm(train_on="objective")


# ---------------------------------------------------------------------------------------------
# configuration and specification checks
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "make,key",
    [
        (lambda: PositionMLPConfig(name="position_mlp", hidden=[64, 0]), "hidden"),
        (lambda: PositionMLPConfig(name="position_mlp", hidden=[], k_layer=False), "hidden"),
        (lambda: PositionLSTMConfig(name="position_lstm", lstm=[]), "lstm"),
        (lambda: PositionLSTMConfig(name="position_lstm", dense=[-1]), "dense"),
        (lambda: PositionLSTMConfig(name="position_lstm", temperature=0.0), "temperature"),
        (lambda: PositionMLPConfig(name="position_mlp", pretrain_epochs=-1), "pretrain_epochs"),
        (lambda: PositionLSTMConfig(name="position_lstm", pilot_shifts=0), "pilot_shifts"),
    ],
)
def test_bad_config_raises_naming_the_key(make, key):
    with pytest.raises(ConfigError) as err:
        make()
    assert err.value.key == key and "\n" not in str(err.value)


def test_specs_that_are_not_cells_of_users_are_refused():
    make = PositionMLPLearner
    config = PositionMLPConfig(name="position_mlp")
    # wrapped distances need a grid of cells
    g = grid_geometry()
    three = Geometry(g.sites[:3], torch.arange(3).repeat_interleave(K), scale=1.0, wrap=True)
    with pytest.raises(ConfigError, match="sqrt.L. x sqrt.L. grid"):
        make(config, spec(num_cells=3, geometry=three))
    # without wrap-around any layout of cells will do (the IMAC's hexagons)
    make(config, spec(num_cells=3, geometry=Geometry(three.sites, three.user_site, scale=1.0)))
    bad = spec()
    bad.problem.group = torch.arange(L * K) % L  # budget groups across cells
    with pytest.raises(ConfigError, match="within one cell"):
        make(config, bad)
    bad = spec(geometry=Geometry(g.sites, g.user_site.flip(0), scale=1.0, wrap=True))
    with pytest.raises(ConfigError, match="ordered l·K"):
        make(config, bad)
    with pytest.raises(ConfigError, match="users in cells"):
        make(config, spec(geometry=Geometry(g.sites, None, scale=1.0)))
    bad = spec()
    bad.input_shapes = {"user_positions": (2 * L * K + 2,)}
    with pytest.raises(ConfigError, match="2·L·K"):
        PositionLSTMLearner(PositionLSTMConfig(name="position_lstm"), bad)


# ---------------------------------------------------------------------------------------------
# training with the shared loop
# ---------------------------------------------------------------------------------------------
def smooth_labels(x: torch.Tensor) -> torch.Tensor:
    """Powers [W] that are a smooth function of the positions: with ``r`` a UE's offset from its BS in
    cell sides (in ``[−½, ½]²``), cell ``j`` spends ``(0.75 + 0.4 · mean_k r_x) p_max``, split in
    proportion to ``exp(2 r_x + r_y)``."""
    layout = layout_of()
    r = (x.view(-1, L, K, 2) - layout.bs_positions().float()[None, :, None, :]) * math.isqrt(L)
    share = torch.softmax(2 * r[..., 0] + r[..., 1], dim=-1)
    spend = 0.75 + 0.4 * r[..., 0].mean(-1, keepdim=True)
    return (P_MAX * spend * share).flatten(1)


def test_adam_training_learns_a_smooth_map_of_the_positions():
    def dataset(n: int, seed: int) -> dict[str, torch.Tensor]:
        x = positions(n, seed)
        return {"inputs": x, "labels": smooth_labels(x)}

    train, val = dataset(1000, 11), dataset(500, 12)
    cfg = TrainConfig(
        optimizer=OptimizerName.adam, lr=1e-2, batch_size=10, max_epochs=15, early_stopping_patience=5
    )
    learner = mlp(train=cfg)
    model = learner.build_model(train["inputs"], gen(0))
    with torch.no_grad():
        initial = learner.loss(model, val).item()
    summary = fit(learner, model, train, val, CPU, gen(1))
    assert initial > 0.5
    assert summary["best_val_loss"] < 5e-3  # about 0.002 measured: a 500-fold decrease
    with torch.no_grad():
        assert learner.loss(model, val).item() == pytest.approx(summary["best_val_loss"], rel=1e-5)
        p = model(val["inputs"])
    # the decoded powers are close to the labels, in W (the relative MSE weighs the sum, the largest
    # target, most: about 8 % mean absolute error on single powers measured)
    error = ((p - val["labels"]).abs().mean() / val["labels"].mean()).item()
    assert error < 0.15, error


def test_imac_cells_with_a_budget_per_user():
    """The IMAC's geometry: hexagonal cells (no wrap-around), users ``k // (K/N)`` in cell ``k // (K/N)``,
    each with its own budget. Each cell's outputs are fractions of its users' budgets together, and the
    final decision clips every user to its own budget."""
    from mimo_l2o.scenarios.imac import IMAC

    scenario = IMAC(IMAC.Config(num_cells=3, num_users=6))
    net = scenario.sample(8, gen(1))
    from mimo_l2o.precoders.none import NoPrecoder

    problem = NoPrecoder(None)(net).to(dtype=torch.float32)
    s = LearnerSpec({"user_positions": (6, 2)}, problem[:1], geometry=scenario.geometry())
    learner = PositionMLPLearner(PositionMLPConfig(name="position_mlp", shared=True), s)
    layout = learner.layout
    assert (layout.num_cells, layout.num_users, layout.wrap) == (3, 2, False)
    assert torch.equal(layout.cell_budget, torch.full((3,), 2.0))  # two users of p_max = 1 per cell
    assert torch.equal(layout.cell_order(), torch.tensor([[0, 1, 2], [1, 0, 2], [2, 0, 1]]))
    x = learner.prepare({"user_positions": scenario.user_positions(net)})
    torch.testing.assert_close(x, net["user_positions"].flatten(1).float() / 200.0)
    # labels are fractions of the cell's budget: a user at full power is half of it
    labels = torch.ones(8, 6)
    assert torch.equal(learner.targets(labels)[..., :2], torch.full((8, 3, 2), 0.5))
    model = learner.build_model(x, gen(0))
    with torch.no_grad():
        p = learner.finalize()(3 * model(x) + 1)
    assert float(problem.constraint_violation(p).max()) <= 0 and bool((p <= 1.0).all())
    # no wrap-around: the polar features are the plain distances to every BS
    frames = CellFrames(layout, shared=True, features=InputFeatures.polar)(x)
    bs = scenario.bs_positions() / 200.0
    r = torch.linalg.vector_norm(x.view(8, 6, 1, 2).double() - bs, dim=-1)  # [n, users, BS]
    own_first = frames[0].view(8, 3, 2, 3, 2)  # frame of cell 0: cells and BSs in index order
    torch.testing.assert_close(own_first[..., 0].flatten(1), r.log().float().flatten(1), rtol=1e-5, atol=1e-5)


def test_the_paper_option_is_table_iv_trained_on_the_labels():
    """``learner=position_lstm/paper``: the literal Table IV network and training (per cell, coordinates,
    ReLU powers, the labels' relative MSE without a floor, no pilot renaming or averaging)."""
    from mimo_l2o.__main__ import composed

    overrides = ["scenario=cellular", "precoder=mr", "objective=max_min", "learner=position_lstm/paper"]
    config = composed(*overrides).learner
    assert isinstance(config, PositionLSTMConfig)
    for key, value in {**PAPER_LSTM, "permute_users": False, "relative_floor": 0.0}.items():
        assert getattr(config, key) == value, key
    model = PositionLSTMLearner(config, spec(L, K)).build_model(positions(8, 0), gen(0))
    assert sum(p.numel() for p in model.parameters()) == L * 509829  # Table IV's total, per cell
