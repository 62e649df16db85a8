"""The multicell MISO scenario (Zhang et al. 2022, Sec. VI, VII-C) and its uplink pilots: the hexagonal
layout, users in their cells, the path losses of eq. (42) with the multipath pair of eq. (40), the DFT
pilots and the LS estimate of eqs. (12)/(34), and the distributed learner: one network whose beamformers
at a BS depend on that BS's observations only, with the SLNR structure of eq. (35)."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from mimo_l2o_plugins.zhang2022.config import ModelDrivenConfig
from mimo_l2o_plugins.zhang2022.multicell import MulticellNet

from mimo_l2o.objectives.sum_rate import SumRate
from mimo_l2o.precoders.downlink import Downlink
from mimo_l2o.scenarios.miso import MISOTDD, dft_pilots, ls_estimate
from mimo_l2o.scenarios.multicell_miso import MulticellMISO, hex_centres, in_hexagon
from mimo_l2o.solvers import beamformers as bf


def sample(n=200, seed=0, **config):
    scenario = MulticellMISO(MulticellMISO.Config(**config))
    return scenario, scenario.sample(n, torch.Generator().manual_seed(seed))


def test_seven_hexagonal_cells_have_six_neighbours_sqrt3_radius_away():
    c = hex_centres(7, 200.0)
    d = torch.cdist(c, c)
    assert torch.allclose(d[0, 1:], torch.full((6,), math.sqrt(3) * 200.0, dtype=torch.float64))
    ring = d[1:, 1:] + torch.eye(6, dtype=torch.float64) * 1e9
    assert torch.allclose(ring.amin(-1), torch.full((6,), math.sqrt(3) * 200.0, dtype=torch.float64))
    c19 = hex_centres(19, 200.0)
    assert len({tuple(v) for v in c19.round(decimals=6).tolist()}) == 19
    assert (
        torch.cdist(c19, c19).add(torch.eye(19, dtype=torch.float64) * 1e9).amin() > math.sqrt(3) * 200 - 1e-6
    )


def test_users_are_uniform_in_their_hexagon_outside_the_minimum_distance():
    u = torch.rand(200_000, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    p = in_hexagon(u, 200.0, 10.0)
    r = p.norm(dim=-1)
    angle = torch.atan2(p[:, 1], p[:, 0])
    # inside a flat-topped hexagon: the distance to each pair of parallel sides is <= √3/2 R
    for k in range(3):
        normal = torch.tensor(
            [math.cos(math.pi / 6 + k * math.pi / 3), math.sin(math.pi / 6 + k * math.pi / 3)]
        )
        assert ((p @ normal.double()).abs() <= math.sqrt(3) / 2 * 200.0 + 1e-9).all()
    assert (r >= 10.0 - 1e-9).all()
    # uniform: the inner hexagon of half the radius holds a quarter of the area (minus the disc)
    area = 3 * math.sqrt(3) / 2 * 200.0**2
    inner = ((3 * math.sqrt(3) / 2 * 100.0**2) - math.pi * 10.0**2) / (area - math.pi * 10.0**2)
    scale = torch.stack(
        [
            (p @ torch.tensor([math.cos(a), math.sin(a)]).double()).abs()
            for a in (math.pi / 6, math.pi / 2, 5 * math.pi / 6)
        ]
    ).amax(0)
    assert abs(float((scale <= math.sqrt(3) / 2 * 100.0).double().mean()) - inner) < 0.01
    # and every sixth of the plane alike
    sextant = torch.floor(torch.remainder(angle, 2 * math.pi) / (math.pi / 3))
    assert torch.bincount(sextant.long(), minlength=6).double().div(len(p)).sub(1 / 6).abs().max() < 0.01


def test_single_path_links_follow_the_path_losses_of_eq_42_and_the_pair_of_eq_40():
    """With one path, ``‖h_U‖ = α √(β_U N)`` and ``‖h_D‖ = |c_u| α² √(β_D N / 2)`` (Φ unitary), so the
    downlink norm is fixed by the uplink one, the distance and the user's factor."""
    scenario, net = sample(n=50, num_paths=1)
    cfg = scenario.config
    centres = hex_centres(7, cfg.cell_radius_m)
    d = (net["user_positions"].unsqueeze(1) - centres[None, :, None]).norm(dim=-1) / 1e3  # [s, C, U]
    beta_u = 10 ** (-(127 + 30 * torch.log10(d)) / 10)
    beta_d = 10 ** (-(128.1 + 37.6 * torch.log10(d)) / 10)
    n = cfg.num_antennas
    alpha = net["h_ul"].norm(dim=-1) / (beta_u * n).sqrt()
    _, c = scenario.mismatch()
    expected = c.abs() * alpha.square() * (beta_d * n / 2).sqrt()
    torch.testing.assert_close(net["h_dl"].norm(dim=-1), expected, rtol=1e-9, atol=0)
    # each BS's own user is its nearest: within the cell
    own = d[:, torch.arange(7), torch.arange(7)]
    assert (own <= cfg.cell_radius_m / 1e3 + 1e-12).all() and (own >= cfg.min_distance_m / 1e3 - 1e-12).all()


def test_the_noise_is_the_psd_over_the_bandwidth_and_the_budget_in_watts():
    scenario, net = sample(n=2)
    assert math.isclose(net.params["noise_power"], 10 ** ((-174 + 10 * math.log10(20e6)) / 10) * 1e-3)
    assert math.isclose(net.params["p_max"], 0.01)
    problem = Downlink(None)(net)
    assert problem.num_cells == 7 and problem.users_per_cell == 1 and problem.num_antennas == 32


@pytest.mark.parametrize("users, length", [(4, 4), (4, 7), (7, 3)])
def test_dft_pilots_and_the_ls_estimate(users, length):
    X = dft_pilots(users, length, 2.0)
    torch.testing.assert_close(X.abs(), torch.full_like(X.abs(), math.sqrt(2.0)))
    if length >= users:
        torch.testing.assert_close(
            X @ X.mH, 2.0 * length * torch.eye(users, dtype=X.dtype), rtol=0, atol=1e-12
        )
    g = torch.Generator().manual_seed(1)
    h = torch.randn((3000, 2, users, 5), generator=g, dtype=torch.complex128)
    u = torch.rand(3000, 2 * 2 * 5 * length, generator=g, dtype=torch.float64)
    noiseless = ls_estimate(h, X, 1e-300, u)
    contaminated = (h.transpose(-1, -2) @ X @ X.mH / (2.0 * length)).transpose(-1, -2)  # eq. (12), L < K
    torch.testing.assert_close(noiseless, contaminated, rtol=1e-12, atol=1e-12)
    if length >= users:  # orthogonal pilots: Ỹ = H + N Xᴴ/(LP), each entry of variance σ²/(LP)
        torch.testing.assert_close(noiseless, h, rtol=1e-12, atol=1e-12)
        error = ls_estimate(h, X, 0.5, u) - h
        assert abs(float(error.abs().square().mean()) / (0.5 / (2.0 * length)) - 1) < 0.03


@pytest.mark.parametrize("pilot_power", [None, 4.0])
def test_a_scenario_with_pilots_carries_the_ls_estimate_at_the_pilot_power(pilot_power):
    """``miso_tdd`` with ``L >= K`` pilots: ``h_ul_ls − h_ul`` has the variance ``σ² / (L P_u)`` per entry,
    ``P_u`` the pilot power (``p_max`` by default); without pilots there is no estimate."""
    cfg = dict(num_antennas=4, num_users=3, p_max=100.0)
    perfect = MISOTDD(MISOTDD.Config(**cfg)).sample(5, torch.Generator().manual_seed(0))
    assert "h_ul_ls" not in perfect.tensors
    net = MISOTDD(MISOTDD.Config(pilot_length=4, pilot_power=pilot_power, **cfg)).sample(
        20_000, torch.Generator().manual_seed(0)
    )
    power = 100.0 if pilot_power is None else pilot_power
    variance = float((net["h_ul_ls"] - net["h_ul"]).abs().square().mean())
    assert abs(variance / (1.0 / (4 * power)) - 1) < 0.03


def test_the_lmmse_estimate_of_eq_17():
    """Eq. (17) from the same received pilots as LS: with ``Q = q I``, ``H̄ = 0`` and orthogonal pilots it
    is LS shrunk by ``q L P / (q L P + N σ²)`` (the closed form); on ``miso_tdd`` its error is below LS's,
    far below under contamination (``L < K``), and orthogonal to the pilots it was made from."""
    from mimo_l2o.scenarios.miso import lmmse_from_received, ls_from_received, received_pilots

    g = torch.Generator().manual_seed(2)
    users, antennas, length, power, noise, q = 3, 5, 4, 2.0, 0.7, 5.0
    X = dft_pilots(users, length, power)
    h = torch.randn((200, 1, users, antennas), generator=g, dtype=torch.complex128)
    Y = received_pilots(h, X, noise, torch.rand(200, 2 * antennas * length, generator=g, dtype=torch.float64))
    mean = torch.zeros(1, antennas, users, dtype=torch.complex128)
    gram = q * torch.eye(users, dtype=torch.complex128).unsqueeze(0)
    shrink = q * length * power / (q * length * power + antennas * noise)
    torch.testing.assert_close(
        lmmse_from_received(Y, X, noise, mean, gram), shrink * ls_from_received(Y, X), rtol=1e-12, atol=1e-12
    )
    for length in (2, 4):  # contaminated, orthogonal
        cfg = dict(num_antennas=4, num_users=4, p_max=10.0, pilot_length=length, pilot_power=0.5)
        net = MISOTDD(MISOTDD.Config(pilot_estimator="lmmse", **cfg)).sample(
            20_000, torch.Generator().manual_seed(0)
        )
        ls, lmmse = (float((net[k] - net["h_ul"]).abs().square().mean()) for k in ("h_ul_ls", "h_ul_lmmse"))
        assert lmmse < (0.6 if length == 2 else 0.9) * ls, (length, lmmse, ls)
        # the orthogonality principle: E[(Ĥ − H)ᴴ Y] = 0 (relative to E[Hᴴ Y])
        Xp = dft_pilots(4, length, 0.5)
        Yp = net["h_ul_ls"].transpose(-1, -2) @ Xp  # Ỹ X = Y Xᴴ X / (L P), a right multiple of Y
        error = (net["h_ul_lmmse"] - net["h_ul"]).transpose(-1, -2)
        cross = (error.mH @ Yp).mean(0)
        scale = (net["h_ul"].transpose(-1, -2).mH @ Yp).mean(0).abs().max()
        assert float(cross.abs().max() / scale) < 0.03
        # the feature reads the LMMSE estimate
        from mimo_l2o.features import uplink_channel

        assert torch.equal(uplink_channel(None, net, None), net["h_ul_lmmse"])


def multicell_net(scenario, net, **cfg):
    x = torch.view_as_real(net["h_ul"]).double()
    problem = Downlink(None)(net)
    torch.manual_seed(0)
    model = MulticellNet(
        ModelDrivenConfig(**cfg),
        7,
        scenario.config.num_antennas,
        scenario.config.num_users,
        float(problem.budget[0, 0]),
        float(problem.noise[0, 0]),
        x,
    ).eval()
    return model, x, problem


def test_each_bs_beamforms_from_its_own_observations_only():
    scenario, net = sample(n=8, num_antennas=8)
    model, x, _ = multicell_net(scenario, net)
    with torch.no_grad():
        W = model(x)
        other = x.clone()
        other[:, 1:] = torch.randn_like(other[:, 1:]) * other[:, 1:].abs().mean()  # every other BS's view
        W2 = model(other)
    torch.testing.assert_close(W2[:, 0], W[:, 0])
    assert not torch.allclose(W2[:, 1:], W[:, 1:])
    # the same network at every BS: BS c's view, moved to BS 0 in the roll's order, gives BS c's beams
    assert W.shape == (8, 7, 8, 1)


def test_the_recovery_is_the_slnr_structure_of_eq_35():
    scenario, net = sample(n=6, num_antennas=8, num_users=2)
    model, x, problem = multicell_net(scenario, net)
    problem = problem.to(dtype=torch.float64)
    g = torch.Generator().manual_seed(2)
    p = torch.softmax(torch.randn(6, 7, 2, generator=g, dtype=torch.float64), -1) * problem.budget[0, 0]
    W = model.beamformers(problem.channel, p)
    expected = bf.slnr_directions(problem, p) * p.sqrt().unsqueeze(-2)
    torch.testing.assert_close(W, expected.to(W.dtype), rtol=1e-9, atol=1e-12 * float(expected.abs().max()))
    # and the channel round trip: the learned channel in the problem's numbering
    with torch.no_grad():
        H = model.channel(x)
    assert H.shape == problem.channel.shape


def test_in_several_cells_the_rate_trains_the_csi_net_unless_told_not_to():
    scenario, net = sample(n=6, num_antennas=8)
    problem = Downlink(None)(net).to(dtype=torch.float64)
    labels = bf.slnr_alternating(problem)
    grads = {}
    for rate_into_csi in (None, False):
        model, x, _ = multicell_net(scenario, net, rate_into_csi=rate_into_csi)
        model.train()
        cfg = ModelDrivenConfig(rate_into_csi=rate_into_csi)
        loss = model.loss(cfg, problem, {"inputs": x, "labels": labels}, SumRate(None))
        model.zero_grad()
        loss.backward()
        grads[rate_into_csi] = [p.grad.clone() for p in model.csi.parameters()]
        # L_H alone
        model.zero_grad()
        rel, norm = model.relative_channel(x)
        true = problem.channel.gather(2, model.order[None, :, :, None].expand(6, -1, -1, 8))
        error = (rel - true / norm.unsqueeze(-1)).abs().square().sum(-1) * norm.square()
        (error.sum(-1) / norm.square().sum(-1)).mean().backward()
        grads[(rate_into_csi, "alone")] = [p.grad.clone() for p in model.csi.parameters()]
    for a, b in zip(grads[False], grads[(False, "alone")], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-9)
    assert any(not torch.allclose(a, b) for a, b in zip(grads[None], grads[(None, "alone")], strict=True))


def test_zf_recovery_nulls_a_bs_s_own_users_with_the_learned_powers():
    scenario, net = sample(n=4, num_antennas=8, num_users=2)
    model, _, problem = multicell_net(scenario, net, recovery="zf")
    problem = problem.to(dtype=torch.float64)
    p = torch.full((4, 7, 2), 0.005, dtype=torch.float64)
    W = model.beamformers(problem.channel, p)
    own = bf.own_channels(problem)  # [b, c, N, K]
    cross = (own.mH @ W).abs()  # [b, c, K (user), K (beam)]
    off = cross * (1 - torch.eye(2, dtype=torch.float64))
    assert float(off.max()) < 1e-9 * float(cross.max())
    torch.testing.assert_close(W.abs().square().sum(-2), p, rtol=1e-9, atol=0)


def test_slnr_recovery_puts_the_per_link_network_in_one_cell():
    from mimo_l2o_plugins.zhang2022.model_driven import ModelDrivenLearner

    from mimo_l2o.learner import LearnerSpec

    one = MISOTDD(MISOTDD.Config(num_antennas=4, num_users=3))
    net = one.sample(8, torch.Generator().manual_seed(0))
    problem = Downlink(None)(net)
    spec = LearnerSpec(input_shapes={}, problem=problem[:1].to("cpu", torch.float32), objective=SumRate(None))
    learner = ModelDrivenLearner(ModelDrivenConfig(name="model_driven", recovery="slnr"), spec)
    x = learner.prepare({"uplink_channel": net["h_ul"]})
    model = learner.build_model(x, torch.Generator().manual_seed(0))
    assert isinstance(model, MulticellNet) and model.cells == 1
    W = model.eval()(x)
    assert W.shape == (8, 1, 4, 3)
    torch.testing.assert_close(W.abs().square().sum((-2, -1)), torch.full((8, 1), 100.0), rtol=1e-4, atol=0)


@pytest.mark.parametrize("recovery", ["structure", "reduced", "zf"])
def test_the_per_link_network_in_one_cell_recovers_eq_7_23_or_zf_from_its_powers(recovery):
    """``csi_features: paths`` puts the per-link network in one cell with any recovery: eq. (7) and (23)
    from the Power-Net's ``p`` and ``q`` (written out here), ZF directions with ``p``; the loss's ``L_P``
    holds the ``q`` of the labels by duality (it vanishes when the net outputs exactly the labels' p, q)."""
    from mimo_l2o_plugins.zhang2022.model_driven import ModelDrivenLearner

    from mimo_l2o.learner import LearnerSpec

    one = MISOTDD(MISOTDD.Config(num_antennas=4, num_users=3))
    net = one.sample(8, torch.Generator().manual_seed(0))
    problem = Downlink(None)(net)
    spec = LearnerSpec(input_shapes={}, problem=problem[:1].to("cpu", torch.float32), objective=SumRate(None))
    cfg = ModelDrivenConfig(name="model_driven", recovery=recovery, csi_features="paths", csi_paths=2)
    learner = ModelDrivenLearner(cfg, spec)
    x = learner.prepare({"uplink_channel": net["h_ul"]})
    model = learner.build_model(x, torch.Generator().manual_seed(0)).eval()
    assert isinstance(model, MulticellNet) and model.cells == 1 and model.dual == (recovery != "zf")
    with torch.no_grad():
        H = model.channel(x)  # [B, 1, K, N]
        p, q = model.powers(x)
        W = model(x).to(torch.complex128)
    assert p.shape == (8, 1, 3) and torch.allclose(p.sum(-1), torch.full((8, 1), 100.0, dtype=torch.float64))
    Hk = H[:, 0].transpose(-1, -2)  # [B, N, K]: columns h_k
    if recovery == "zf":
        assert q is None
        D = Hk @ torch.linalg.inv(Hk.mH @ Hk)
    else:
        assert torch.allclose(q.sum(-1), torch.full((8, 1), 100.0, dtype=torch.float64))
        # eq. (7): w_k ∝ (I + Σ_j q_j/σ² h_j h_jᴴ)⁻¹ h_k, one cell's noise σ² = 1
        A = torch.eye(4, dtype=Hk.dtype) + (Hk * q[:, 0, None, :].to(Hk.dtype)) @ Hk.mH
        D = torch.linalg.solve(A, Hk)
    expected = D / D.norm(dim=-2, keepdim=True) * p[:, 0, None, :].sqrt()
    torch.testing.assert_close(W[:, 0], expected, rtol=2e-4, atol=2e-5)
    # L_P (eq. 9) on p/P and, for eq. (7) and (23), on q/P against the labels' duals, written out
    labels = bf.slnr_alternating(problem.to(dtype=torch.float64)).to(torch.complex64)
    model.train()  # the batch norm's batch statistics, as in the loss
    with torch.no_grad():
        p, q = model.powers(x)
        p_label = labels.to(torch.complex128).abs().square().sum(-2)
        expected = ((p - p_label) / 100.0).square().mean()
        if q is not None:
            q_label = bf.dual_uplink_powers(problem.to(dtype=torch.float64), labels.to(torch.complex128))
            expected = expected + ((q[:, 0] - q_label) / 100.0).square().mean()
        loss = model.loss(
            dataclasses.replace(cfg, alpha_h=0.0, alpha_r=0.0),
            problem.to(dtype=torch.float64),
            {"inputs": x, "labels": labels},
            SumRate(None),
        )
    torch.testing.assert_close(loss.double(), 0.5 * expected, rtol=1e-5, atol=0)


@pytest.mark.parametrize("features", ["beamspace", "paths"])
def test_csi_skip_is_a_linear_map_per_link_added_to_the_csi_net(features):
    from mimo_l2o_plugins.zhang2022.csi_features import beamspace_products, path_features

    scenario, net = sample(n=5, num_antennas=4)
    cfg = {"csi_features": features, "csi_paths": 2}
    plain, x, _ = multicell_net(scenario, net, **cfg)
    model, _, problem = multicell_net(scenario, net, csi_skip=True, **cfg)
    h = net["h_ul"].to(torch.complex128)  # [B, C, U, N]
    if features == "paths":  # the learner's prepare: each column, then its path features
        x = torch.view_as_real(torch.cat((h, path_features(h, 2)), -1))
    with torch.no_grad():  # zero at the start: the CSI-Net's channel alone
        torch.testing.assert_close(model.channel(x), plain.channel(x))
        g = torch.Generator().manual_seed(3)
        model.skip.copy_(torch.randn(model.skip.shape, generator=g, dtype=torch.float64).to(model.skip))
        last = model.csi[-1]
        last.weight.zero_(), last.bias.zero_()
        H = model.channel(x)
    # written out: h_u = A_u x + B_u f(x) / ν on BS c's view x of user u (absolute units), f the features
    # of degree two: |F x| F x √N, and for paths also √N Σ |u_l| u_l z_l^m
    for c in range(7):
        for u in range(7):
            xu = h[:, c, u]
            parts = [
                torch.view_as_real(xu).flatten(-2),
                beamspace_products(xu, model.grid) / model.gain_scale,
            ]
            if features == "paths":
                parts.append(torch.view_as_real(path_features(xu, 2)).flatten(-2) / model.gain_scale)
            out = torch.cat(parts, -1) @ model.skip.double()[u]
            torch.testing.assert_close(H[:, c, u], torch.view_as_complex(out.reshape(5, 4, 2).contiguous()))
    # and the loss trains it
    model.train()
    labels = bf.slnr_alternating(problem.to(dtype=torch.float64))
    loss = model.loss(
        ModelDrivenConfig(csi_skip=True, **cfg),
        problem.to(dtype=torch.float64),
        {"inputs": x, "labels": labels},
        SumRate(None),
    )
    loss.backward()
    assert float(model.skip.grad.abs().max()) > 0


def test_the_fixed_mismatch_nests_over_the_users_of_each_cell():
    """User k of cell b keeps its c whatever K: the c of the first 6 users of each cell at K = 6 equal
    those at K = 8 (cell-major), and Φ is the same."""
    phi6, c6 = MulticellMISO(MulticellMISO.Config(num_users=6)).mismatch()
    phi8, c8 = MulticellMISO(MulticellMISO.Config(num_users=8)).mismatch()
    cells = MulticellMISO.Config().num_cells
    assert c6.shape == (cells * 6,) and c8.shape == (cells * 8,)
    torch.testing.assert_close(c8.reshape(cells, 8)[:, :6], c6.reshape(cells, 6), rtol=0, atol=0)
    torch.testing.assert_close(phi8, phi6, rtol=0, atol=0)
    assert (c6.reshape(cells, 6)[0] - c6.reshape(cells, 6)[1]).abs().min() > 0  # each cell its own
