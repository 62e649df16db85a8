"""Scenarios: the sampled statistics match Sun et al. (2018), Section V.A, Model 1 and Model 2."""

from __future__ import annotations

import math

import pytest
import torch

from mimo_l2o.errors import ConfigError
from mimo_l2o.precoders.none import NoPrecoder, link_gains
from mimo_l2o.registry import SCENARIOS
from mimo_l2o.scenarios.gaussian_ic import GaussianIC
from mimo_l2o.scenarios.imac import IMAC, hex_bs_positions

# 10·log10 of an Exp(1) variate (|g|² of g ~ CN(0, 1)): a Gumbel law with
# mean -10·γ/ln 10 and standard deviation 10/ln 10 · π/√6.
EULER_GAMMA = 0.5772156649015329
LOG_EXP_MEAN_DB = -10 * EULER_GAMMA / math.log(10)  # ≈ -2.507 dB
LOG_EXP_STD_DB = 10 / math.log(10) * math.pi / math.sqrt(6)  # ≈ 5.57 dB


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def imac(**overrides) -> IMAC:
    return IMAC(IMAC.Config(**overrides))


# ---------------------------------------------------------------------------------------------
# Model 1: Gaussian IC
# ---------------------------------------------------------------------------------------------
def test_gaussian_ic_registered_and_shapes():
    assert SCENARIOS.get("gaussian_ic") is GaussianIC
    scenario = GaussianIC(GaussianIC.Config(num_users=7, p_max=2.0, noise_power=0.5))
    net = scenario.sample(5, gen(0))
    assert net["gains"].shape == (5, 7, 7)
    assert net["gains"].dtype == torch.float64
    assert net.params == {"noise_power": 0.5, "p_max": 2.0}
    assert len(net) == 5
    assert scenario.geometry() is None  # no positions
    with pytest.raises(NotImplementedError, match="no positions"):
        scenario.user_positions(net)


def test_gaussian_ic_gains_are_unit_mean_exponential():
    gains = GaussianIC(GaussianIC.Config(num_users=10)).sample(20000, gen(1))["gains"].flatten()
    m = gains.numel()
    assert (gains >= 0).all() and gains.isfinite().all()
    # |h|² of h ~ CN(0, 1) is Exp(1): mean 1 and variance 1 (the estimator of the variance has
    # variance (μ4 - σ⁴)/m = (9 - 1)/m)
    assert abs(gains.mean().item() - 1) < 5 / math.sqrt(m)
    assert abs(gains.var().item() - 1) < 5 * math.sqrt(8 / m)
    for t in (0.1, 1.0, 3.0):
        p = math.exp(-t)
        assert abs((gains > t).double().mean().item() - p) < 5 * math.sqrt(p * (1 - p) / m)


def test_gaussian_ic_reproducible():
    scenario = GaussianIC(GaussianIC.Config(num_users=6))
    a = scenario.sample(100, gen(7))["gains"]
    assert torch.equal(a, scenario.sample(100, gen(7))["gains"])
    assert not torch.equal(a, scenario.sample(100, gen(8))["gains"])
    # the first 100 of 200 samples are the 100 samples, bit for bit: sizes of data sets do not
    # change them
    assert torch.equal(a, scenario.sample(200, gen(7))["gains"][:100])
    for k, n in [(10, 1), (10, 37), (13, 1000)]:
        big = GaussianIC(GaussianIC.Config(num_users=k)).sample(n + 123, gen(7))["gains"]
        assert torch.equal(GaussianIC(GaussianIC.Config(num_users=k)).sample(n, gen(7))["gains"], big[:n])


def test_gaussian_ic_feeds_precoder_none():
    net = GaussianIC(GaussianIC.Config(num_users=4, p_max=3.0, noise_power=0.25)).sample(8, gen(2))
    problem = NoPrecoder(None)(net)
    eye = torch.eye(4, dtype=torch.bool)
    torch.testing.assert_close(problem.signal_gain, net["gains"] * eye)
    torch.testing.assert_close(problem.interference_gain, net["gains"].masked_fill(eye, 0))
    assert (problem.budget == 3.0).all() and (problem.noise == 0.25).all()


# ---------------------------------------------------------------------------------------------
# Model 2: IMAC, layout
# ---------------------------------------------------------------------------------------------
def layout_m(num_cells: int, rcell: float) -> torch.Tensor:
    """BS positions by the formulas of the authors' Layout.m (N <= 37), Rcell = 2R/√3."""
    deg = math.pi / 3
    ring1 = [(math.sqrt(3) * rcell, i * deg) for i in range(6)]
    ring2 = []
    for i in range(6):
        ring2 += [(3 * rcell, -math.pi / 6 + i * deg), (2 * math.sqrt(3) * rcell, i * deg)]
    ring3 = []
    for i in range(6):
        ring3 += [
            (math.sqrt(21) * rcell, -math.asin(3 / math.sqrt(21)) + i * deg),
            (math.sqrt(21) * rcell, -math.asin(3 / 2 / math.sqrt(21)) + i * deg),
            (3 * math.sqrt(3) * rcell, i * deg),
        ]
    polar = [(0.0, 0.0)] + ring1 + ring2 + ring3
    xy = [(d * math.cos(a), d * math.sin(a)) for d, a in polar[:num_cells]]
    return torch.tensor(xy, dtype=torch.float64)


def test_hex_layout_matches_authors_layout():
    r = 100.0
    torch.testing.assert_close(
        hex_bs_positions(3, 2 * r),
        torch.tensor([[0.0, 0.0], [2 * r, 0.0], [r, math.sqrt(3) * r]], dtype=torch.float64),
    )
    torch.testing.assert_close(hex_bs_positions(37, 2 * r), layout_m(37, 2 * r / math.sqrt(3)))
    # a smaller layout is a prefix of a larger one
    torch.testing.assert_close(hex_bs_positions(20, 2 * r), hex_bs_positions(61, 2 * r)[:20])


@pytest.mark.parametrize("num_cells", [1, 2, 3, 7, 19, 20, 61, 62])
@pytest.mark.parametrize("cell_radius", [100.0, 250.0])
def test_hex_layout_spacing(num_cells, cell_radius):
    bs = hex_bs_positions(num_cells, 2 * cell_radius)
    assert bs.shape == (num_cells, 2) and bs.dtype == torch.float64
    assert torch.equal(bs[0], torch.zeros(2, dtype=torch.float64))
    if num_cells == 1:
        return
    dist = torch.cdist(bs, bs) + torch.diag(torch.full((num_cells,), math.inf, dtype=torch.float64))
    nearest = dist.amin(dim=1)
    # no duplicates, and every BS has a neighbour at exactly 2R (the layout is connected)
    torch.testing.assert_close(nearest, torch.full_like(nearest, 2 * cell_radius), rtol=1e-12, atol=1e-9)
    # sites fill the rings in order: at most one ring is partly filled
    hops = bs.norm(dim=1) / (2 * cell_radius)
    assert (hops[1:] >= 1 - 1e-12).all()


# ---------------------------------------------------------------------------------------------
# Model 2: IMAC, users
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("overrides", "r_min"),
    [
        ({}, 0.2 * 200 / math.sqrt(3)),
        ({"cell_radius": 250.0, "min_distance": 50.0}, 50.0),
        ({"min_distance": 0.0}, 0.0),
        ({"min_distance": 99.0}, 99.0),
        ({"num_cells": 7, "num_users": 28, "cell_radius": 300.0}, 0.2 * 600 / math.sqrt(3)),
    ],
)
def test_imac_users_in_own_cell_annulus(overrides, r_min):
    scenario = imac(**overrides)
    cfg = scenario.config
    r_max = 2 * cfg.cell_radius / math.sqrt(3)
    assert scenario.config.inner_radius == pytest.approx(r_min)
    net = scenario.sample(4000, gen(3))
    k, n_cells = cfg.num_users, cfg.num_cells
    # recompute from the positions: user k belongs to cell k // (K/N)
    bs = torch.tensor(net.params["bs_positions"], dtype=torch.float64)
    cell = torch.arange(k) // (k // n_cells)
    d_own = (net["user_positions"] - bs[cell]).norm(dim=-1)  # [n, K]
    assert (d_own >= r_min - 1e-9).all() and (d_own <= r_max + 1e-9).all()
    torch.testing.assert_close(net["distances"][:, cell, torch.arange(k)], d_own)
    assert (net["distances"][:, cell, torch.arange(k)] >= r_min).all()
    assert (net["distances"][:, cell, torch.arange(k)] <= r_max).all()
    # uniform in area of the annulus: half the users inside the radius that halves its area
    half = math.sqrt((r_min**2 + r_max**2) / 2)
    m = d_own.numel()
    assert abs((d_own < half).double().mean().item() - 0.5) < 5 * math.sqrt(0.25 / m)
    # angles uniform: as many users right of their BS as left
    dx = (net["user_positions"] - bs[cell])[..., 0]
    assert abs((dx > 0).double().mean().item() - 0.5) < 5 * math.sqrt(0.25 / m)
    # distances to all BSs agree with the positions
    torch.testing.assert_close(
        net["distances"], (net["user_positions"][:, None] - bs[None, :, None]).norm(dim=-1)
    )


def test_imac_interference_channel_of_colocated_receivers():
    scenario = imac(num_cells=3, num_users=12)
    net = scenario.sample(50, gen(4))
    cell = torch.arange(12) // 4
    assert "gains" not in net.tensors  # built by the precoder, not stored
    assert net.params["serving_cell"] == cell.tolist()
    gains = link_gains(net)
    for k in range(12):
        assert torch.equal(gains[:, k, :], net["bs_gains"][:, cell[k], :])
    problem = NoPrecoder(None)(net)
    own = net["bs_gains"][:, cell, torch.arange(12)]  # user k at its own BS
    torch.testing.assert_close(problem.signal_gain.diagonal(dim1=1, dim2=2), own)
    # users of the same cell share a receiver: their rows of the interference matrix coincide
    # outside the two users' own columns
    torch.testing.assert_close(problem.interference_gain[:, 0, 2:], problem.interference_gain[:, 1, 2:])


# ---------------------------------------------------------------------------------------------
# Model 2: IMAC, channel statistics
# ---------------------------------------------------------------------------------------------
def excess_db(net, cfg) -> tuple[torch.Tensor, torch.Tensor]:
    """(10log10 d, 10log10 gain - 10log10 (d0/d)^α) over all links, flattened."""
    d, g = net["distances"].flatten(), net["bs_gains"].flatten()
    x = 10 * torch.log10(d)
    return x, 10 * torch.log10(g) - cfg.path_loss_exponent * (10 * math.log10(cfg.reference_distance) - x)


def test_imac_shadowing_and_fading_statistics():
    scenario = imac(num_cells=3, num_users=12)
    net = scenario.sample(5000, gen(5))
    _, e = excess_db(net, scenario.config)
    m = e.numel()
    # 10log10 of 10^(s/10)|g|² is s + 10log10 Exp(1): independent N(0, 8²) and Gumbel parts
    var_s, var_f = 8.0**2, LOG_EXP_STD_DB**2
    std = math.sqrt(var_s + var_f)
    assert abs(e.mean().item() - LOG_EXP_MEAN_DB) < 5 * std / math.sqrt(m)
    # std of the sample std ≈ sqrt((μ4 - σ⁴)/m) / (2σ); μ4 = 3 var_s² + 6 var_s var_f + 5.4 var_f²
    mu4 = 3 * var_s**2 + 6 * var_s * var_f + 5.4 * var_f**2
    assert abs(e.std().item() - std) < 5 * math.sqrt((mu4 - std**4) / m) / (2 * std)


def test_imac_fading_without_shadowing_is_exponential():
    scenario = imac(num_cells=3, num_users=12, shadowing_db=0.0)
    net = scenario.sample(5000, gen(6))
    cfg = scenario.config
    fading = net["bs_gains"] / (cfg.reference_distance / net["distances"]) ** cfg.path_loss_exponent
    m = fading.numel()
    assert abs(fading.mean().item() - 1) < 5 / math.sqrt(m)
    p = math.exp(-1)
    assert abs((fading > 1).double().mean().item() - p) < 5 * math.sqrt(p * (1 - p) / m)
    _, e = excess_db(net, cfg)
    assert abs(e.std().item() - LOG_EXP_STD_DB) < 0.05


def test_imac_path_loss_slope_and_intercept():
    scenario = imac(num_cells=7, num_users=28)
    net = scenario.sample(2000, gen(8))
    x = 10 * torch.log10(net["distances"].flatten())
    y = 10 * torch.log10(net["bs_gains"].flatten())
    xc = x - x.mean()
    slope = (xc * (y - y.mean())).sum() / (xc**2).sum()
    intercept = y.mean() - slope * x.mean()
    residual = y - intercept - slope * x
    m = x.numel()
    se_slope = residual.std() / (xc.norm())
    se_intercept = residual.std() * torch.sqrt(1 / m + x.mean() ** 2 / (xc**2).sum())
    # (200/d)^3: slope -3 in dB per dB, intercept 30 log10(200) plus the mean of 10log10 Exp(1)
    assert abs(slope.item() + 3) < 5 * se_slope.item() and se_slope.item() < 0.01
    expected = 30 * math.log10(200) + LOG_EXP_MEAN_DB
    assert abs(intercept.item() - expected) < 5 * se_intercept.item() and se_intercept.item() < 0.3


# ---------------------------------------------------------------------------------------------
# Model 2: IMAC, shapes, reproducibility, config
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("n_cells", "k"), [(3, 12), (3, 18), (3, 24), (7, 28), (20, 80)])
def test_imac_paper_sizes(n_cells, k):
    scenario = imac(num_cells=n_cells, num_users=k)
    net = scenario.sample(6, gen(9))
    assert link_gains(net).shape == (6, k, k)
    assert net["bs_gains"].shape == (6, n_cells, k)
    assert net["user_positions"].shape == (6, k, 2)
    assert net["distances"].shape == (6, n_cells, k)
    for t in net.tensors.values():
        assert t.dtype == torch.float64 and t.isfinite().all()
    assert (net["bs_gains"] > 0).all()
    geometry = scenario.geometry()  # the hexagonal cells: each user in the cell of its serving BS
    torch.testing.assert_close(geometry.sites, hex_bs_positions(n_cells, 200.0))
    assert torch.equal(geometry.user_site, torch.tensor(net.params["serving_cell"]))
    assert geometry.scale == 200.0 and not geometry.wrap
    assert torch.equal(scenario.user_positions(net), net["user_positions"])
    own = net["distances"][:, geometry.user_site, torch.arange(k)]
    torch.testing.assert_close(
        torch.linalg.vector_norm(net["user_positions"] - geometry.sites[geometry.user_site], dim=-1), own
    )
    assert net.params["num_cells"] == n_cells
    assert len(net.params["bs_positions"]) == n_cells
    assert net.params["p_max"] == 1.0 and net.params["noise_power"] == 1.0
    assert SCENARIOS.get("imac") is IMAC


@pytest.mark.parametrize(("n_cells", "k"), [(7, 14), (20, 80)])
def test_imac_reproducible(n_cells, k):
    scenario = imac(num_cells=n_cells, num_users=k)
    a = scenario.sample(100, gen(11))
    b = scenario.sample(200, gen(11))
    for name, t in a.tensors.items():
        assert torch.equal(t, scenario.sample(100, gen(11))[name])
        # bit for bit: the first 100 of 200 samples are the 100 samples
        assert torch.equal(t, b[name][:100]), name
        assert torch.equal(t[:37], scenario.sample(37, gen(11))[name]), name
    assert not torch.equal(a["bs_gains"], scenario.sample(100, gen(12))["bs_gains"])


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"num_users": 10}, "num_users"),
        ({"num_users": 0}, "num_users"),
        ({"num_users": -3}, "num_users"),
        ({"p_max": 0.0}, "p_max"),
        ({"p_max": -1.0}, "p_max"),
        ({"noise_power": 0.0}, "noise_power"),
        ({"num_cells": 0}, "num_cells"),
        ({"cell_radius": 0.0}, "cell_radius"),
        ({"cell_radius": -5.0}, "cell_radius"),
        ({"min_distance": 200 / math.sqrt(3)}, "min_distance"),
        ({"min_distance": 150.0}, "min_distance"),
        ({"cell_radius": 50.0, "min_distance": 60.0}, "min_distance"),
        ({"min_distance": -1.0}, "min_distance"),
        ({"shadowing_db": -1.0}, "shadowing_db"),
    ],
)
def test_imac_config_validation(overrides, key):
    with pytest.raises(ConfigError) as info:
        IMAC.Config(**overrides)
    assert info.value.key == key


def test_config_messages():
    with pytest.raises(ConfigError, match=r"^num_users: must be a multiple of num_cells=3, got 10$"):
        IMAC.Config(num_users=10)
    with pytest.raises(ConfigError, match=r"^num_users: .*>= 1"):
        GaussianIC.Config(num_users=0)
    with pytest.raises(ConfigError, match=r"^noise_power: "):
        GaussianIC.Config(noise_power=-1.0)
    IMAC.Config(num_cells=20, num_users=80, cell_radius=500.0, min_distance=99.0)  # the paper's extremes
