"""Cellular massive MIMO (Sanguinetti et al. 2018, Section II): geometry, correlation matrices, MMSE
estimation and the MR / M-MMSE hardening-bound gains."""

from __future__ import annotations

import math

import pytest
import torch

from mimo_l2o.components import Network
from mimo_l2o.errors import ConfigError
from mimo_l2o.precoders import massive_mimo
from mimo_l2o.scenarios import cellular as cellular_module


@pytest.fixture(scope="module")
def mods():
    return cellular_module, massive_mimo


def small(mods, **kw):
    cellular, _ = mods
    cfg = cellular.Cellular.Config(**{"num_antennas": 8, "num_users": 3, **kw})
    return cellular.Cellular(cfg)


def test_correlation_hermitian_psd_toeplitz_with_diagonal_beta(mods):
    scenario = small(mods, num_antennas=12)
    net = scenario.sample(3, torch.Generator().manual_seed(1))
    R, beta = mods[0].correlation_matrices(net), net["beta"]
    assert R.shape == (3, 4, 4, 3, 12, 12) and R.dtype == torch.complex128
    torch.testing.assert_close(R, R.mH, rtol=0, atol=0)
    diagonal = R.diagonal(dim1=-2, dim2=-1)
    torch.testing.assert_close(diagonal.real, beta[..., None].expand(*beta.shape, 12), rtol=1e-12, atol=0)
    assert (diagonal.imag == 0).all()
    assert torch.equal(R[..., 1:, 1:], R[..., :-1, :-1])  # Toeplitz
    eig = torch.linalg.eigvalsh(R)
    assert (eig >= -1e-12 * beta[..., None]).all()


def test_first_n_of_2n_samples_are_the_n_samples(mods):
    scenario = small(mods, shadowing_db=4.0)
    a = scenario.sample(3, torch.Generator().manual_seed(5))
    b = scenario.sample(6, torch.Generator().manual_seed(5))
    for key in a.tensors:
        torch.testing.assert_close(a[key], b[key][:3], rtol=0, atol=0)


def test_geometry_wraparound_and_min_distance(mods):
    scenario = small(mods, num_cells=9, min_distance=200.0)
    cfg = scenario.config
    net = scenario.sample(50, torch.Generator().manual_seed(2))
    pos, bs = net["user_positions"], scenario.bs_positions()
    # each UE in its own square, at >= min_distance from its BS
    off = pos - bs[None, :, None, :]
    assert (off.abs() <= cfg.cell_side / 2).all()
    assert (torch.linalg.vector_norm(off, dim=-1) >= cfg.min_distance - 1e-9).all()
    plain = torch.linalg.vector_norm(pos[:, None] - bs[None, :, None, None, :], dim=-1)  # [n, BS, L, K]
    wrapped = torch.linalg.vector_norm(scenario.wrapped_offsets(pos), dim=-1)
    assert (wrapped <= plain + 1e-9).all()
    assert (wrapped <= cfg.area_side / math.sqrt(2) + 1e-9).all()
    own = torch.arange(9)
    torch.testing.assert_close(wrapped[:, own, own], plain[:, own, own])
    gain_db = -35.3 - 37.6 * torch.log10(wrapped)
    torch.testing.assert_close(10 * torch.log10(net["beta"]), gain_db)
    positions = scenario.user_positions(net)  # UE k of cell l in row l·K + k
    assert positions.shape == (50, 9 * 3, 2) and torch.equal(positions.view(50, 9, 3, 2), pos)
    geometry = scenario.geometry()
    assert geometry.wrap and geometry.scale == cfg.area_side
    assert torch.equal(geometry.sites, bs) and torch.equal(geometry.user_site, own.repeat_interleave(3))


@pytest.mark.parametrize(
    "kw",
    [
        {"num_antennas": 0},
        {"num_users": 201},
        {"num_cells": 3},
        {"asd_deg": 0.0},
        {"min_distance": 250.0},
        {"p_max": 0.0},
    ],
)
def test_config_checks(mods, kw):
    cellular, _ = mods
    with pytest.raises(ConfigError):
        cellular.Cellular.Config(**kw)


def test_precoder_config_check(mods):
    _, massive = mods
    with pytest.raises(ConfigError):
        massive.MR.Config(num_realizations=0)


def test_mmse_estimate_and_error_uncorrelated_covariances_add(mods):
    _, massive = mods
    net = small(mods, num_antennas=6, num_users=2).sample(1, torch.Generator().manual_seed(3))
    R = mods[0].correlation_matrices(net)
    n = 20000
    g = torch.Generator().manual_seed(0)
    w, noise = massive.draw_normals(1, n, 4, 2, 6, g)
    H = massive.draw_channels(R, w)
    est, Phi = massive.mmse_estimates(R, H, noise, net.params["pilot_power"], net.params["noise_power"])
    err = H - est

    def cov(x, y):  # sample E{x yᴴ}: [L, L, K, M, M]
        return torch.einsum("ljkmn,ljkin->ljkmi", x[0], y[0].conj()) / n

    scale = R.diagonal(dim1=-2, dim2=-1).real[0]  # [L, L, K, M]
    tol = 6 * (scale[..., :, None] * scale[..., None, :]).sqrt() / math.sqrt(n)
    assert ((cov(est, est) - Phi[0]).abs() <= tol).all()
    assert ((cov(err, err) - (R - Phi)[0]).abs() <= tol).all()
    assert (cov(est, err).abs() <= tol).all()
    torch.testing.assert_close(cov(H, H), R[0], rtol=0, atol=float(tol.max()))


@pytest.mark.parametrize("estimator", ["plain", "conditional"])
def test_mr_single_user_closed_form(mods, estimator):
    """L = K = 1 and R = βI: ĥ ~ CN(0, φI), φ = β²/(β + σ²/p), so a = φ (Γ(M+½)/Γ(M))² and
    b = E|wᴴh|² = Mφ + β − φ; tolerances are 6 standard errors of the plain Monte-Carlo means. The
    conditional estimator has b exactly (|wᴴĥ|² = ‖ĥ‖² is its own control variate, and
    tr((R − Φ) wwᴴ) = β − φ for every unit w)."""
    _, massive = mods
    m, beta, p, sigma2, n = 8, 2.0, 1.0, 1.0, 20000
    R = (beta * torch.eye(m, dtype=torch.complex128)).expand(1, 1, 1, 1, m, m).clone()
    params = {"pilot_power": p, "noise_power": sigma2, "p_max": 1.0, "coherence": 10}
    net = Network({"R": R}, params)
    problem = massive.MR(massive.MR.Config(name="mr", num_realizations=n, estimator=estimator))(net)
    phi = beta**2 / (beta + sigma2 / p)
    ratio = math.exp(math.lgamma(m + 0.5) - math.lgamma(m))  # E‖ĥ‖ / √φ
    a_true = phi * ratio**2
    a = problem.signal_gain[0, 0, 0].item()
    se_norm = math.sqrt(phi * (m - ratio**2) / n)  # std error of the mean of ‖ĥ‖
    assert abs(math.sqrt(a) - math.sqrt(a_true)) <= 6 * se_norm
    s = beta - phi
    b_true = m * phi + s
    var_b = phi**2 * m + 2 * m * phi * s + s**2
    b = problem.interference_gain[0, 0, 0].item() + a  # the precoder took a off the diagonal
    assert abs(b - b_true) <= 6 * math.sqrt(var_b / n)
    if estimator == "conditional":
        assert b == pytest.approx(b_true, rel=1e-5)
    assert problem.prelog == pytest.approx(0.9)
    assert problem.budget.tolist() == [[1.0]] and problem.noise.tolist() == [[1.0]]


@pytest.mark.parametrize("name", ["mr", "mmmse", "rzf"])
def test_conditional_estimator_agrees_with_plain_monte_carlo_and_is_less_noisy(mods, name):
    """Both estimators average the same expectations. Over independent seeds, each entry of a and b of
    the conditional estimator lies within the plain one's sampling error of it (the mean squared
    z-score is near 1 where both are unbiased; 3 allows for the estimated deviations), and its
    seed-to-seed spread is at most half the plain one's."""
    _, massive = mods
    net = small(mods, num_antennas=6, num_users=2).sample(2, torch.Generator().manual_seed(12))
    cls = {"mr": massive.MR, "mmmse": massive.MMMSE, "rzf": massive.RZF}[name]

    def draws(estimator, seeds):
        runs = [
            cls(cls.Config(name=name, num_realizations=500, seed=s, estimator=estimator)).gains(net)
            for s in seeds
        ]
        return [torch.stack([r[i].flatten() for r in runs]) for i in range(2)]  # a, b: [seeds, entries]

    plain, cond = draws("plain", range(8)), draws("conditional", range(100, 104))
    for p, c in zip(plain, cond, strict=True):
        err = (p.var(0) / len(p) + c.var(0) / len(c)).sqrt()
        z = (c.mean(0) - p.mean(0)) / err
        assert (z**2).mean() <= 3, float((z**2).mean())
        assert c.std(0).norm() <= 0.5 * p.std(0).norm()


def test_control_variate_mean_of_a_nonnegative_quantity_stays_nonnegative(mods):
    """Against the regression estimator written out: with ``nonneg`` the corrected mean is kept where it
    is >= 0 and replaced by the plain mean where the correction takes it below zero."""
    _, massive = mods
    g = torch.Generator().manual_seed(3)
    c = torch.rand(400, 3, generator=g, dtype=torch.float64) * 4  # 400 entries, 3 draws each
    x = c * torch.rand(400, 3, generator=g, dtype=torch.float64)  # >= 0, correlated with c
    mean_c = torch.full((400,), 0.5, dtype=torch.float64)  # far below c̄: large corrections
    xc, cc = x - x.mean(1, keepdim=True), c - c.mean(1, keepdim=True)
    corrected = x.mean(1) - (xc * cc).mean(1) / (cc * cc).mean(1) * (c.mean(1) - mean_c)
    assert (corrected < 0).sum() >= 20  # the case exists in this draw
    got = massive.control_variate_mean(x, c, mean_c, dim=1, nonneg=True)
    want = torch.where(corrected < 0, x.mean(1), corrected)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=0)
    torch.testing.assert_close(
        massive.control_variate_mean(x, c, mean_c, dim=1), corrected, rtol=1e-12, atol=0
    )


@pytest.mark.parametrize("name", ["mr", "mmmse"])
def test_conditional_gains_are_nonnegative_at_few_realizations(mods, name):
    """At 2 realizations the regression correction alone made most setups' interference gains negative
    (2,000 default cellular setups: 99 % M-MMSE, 68 % MR); every gain is now >= 0 and the SINRs finite."""
    _, massive = mods
    cls = {"mr": massive.MR, "mmmse": massive.MMMSE}[name]
    net = small(mods, num_antennas=8, num_users=3).sample(40, torch.Generator().manual_seed(8))
    problem = cls(cls.Config(name=name, num_realizations=2))(net)
    assert (problem.interference_gain >= 0).all() and (problem.signal_gain >= 0).all()
    assert torch.isfinite(problem.sinr(problem.full_power())).all()


def test_mmmse_beats_mr_and_problem_shape(mods):
    _, massive = mods
    scenario = small(mods, num_antennas=16, num_users=3)
    net = scenario.sample(3, torch.Generator().manual_seed(4))
    se = {}
    for cls in (massive.MR, massive.RZF, massive.MMMSE):
        problem = cls(cls.Config(name=cls.name, num_realizations=200))(net)
        assert problem.signal_gain.shape == (3, 12, 12) and problem.interference_gain.shape == (3, 12, 12)
        assert (problem.interference_gain >= 0).all()
        assert problem.group.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
        assert problem.prelog == pytest.approx((200 - 3) / 200)
        p = problem.full_power()
        se[cls.name] = (problem.prelog * torch.log2(1 + problem.sinr(p))).mean(1)
    assert (se["mmmse"] >= se["mr"]).all()
    assert (se["mmmse"] >= se["rzf"]).all()


def test_precoder_chunking_does_not_change_the_result(mods, monkeypatch):
    _, massive = mods
    net = small(mods).sample(3, torch.Generator().manual_seed(6))
    pre = massive.MMMSE(massive.MMMSE.Config(name="mmmse", num_realizations=10, precision="double"))
    whole = pre(net)
    monkeypatch.setattr(massive, "CHUNK_BYTES", 1)
    chunked = pre(net)
    assert whole.signal_gain.abs().max() < 1e-6  # the gains are tiny: compare relatively
    torch.testing.assert_close(whole.interference_gain, chunked.interference_gain, rtol=1e-9, atol=0)
    torch.testing.assert_close(whole.signal_gain, chunked.signal_gain, rtol=1e-9, atol=0)


def test_integral_correlation_matches_the_closed_form_at_small_spread(mods):
    """The small-angle closed form is the exact integral's limit (error ∝ σ²: ~1e-3 of β at 0.5°, 1e-2 at 2°),
    and the exact matrices are Hermitian Toeplitz with diagonal β too."""
    cellular, _ = mods
    beta = torch.tensor([1.0, 2e-9], dtype=torch.float64)
    theta = torch.tensor([0.3, -2.0], dtype=torch.float64)
    for asd_deg, tol in ((0.5, 2e-3), (2.0, 3e-2)):
        asd = math.radians(asd_deg)
        exact = cellular.local_scattering_integral(beta, theta, 16, asd)
        approx = cellular.local_scattering_correlation(beta, theta, 16, asd)
        torch.testing.assert_close(exact, exact.mH, rtol=0, atol=0)
        torch.testing.assert_close(exact.diagonal(dim1=-2, dim2=-1).real, beta[:, None].expand(2, 16))
        assert torch.equal(exact[..., 1:, 1:], exact[..., :-1, :-1])
        err = ((exact - approx).abs() / beta[:, None, None]).max()
        assert err <= tol, (asd_deg, float(err))
    # a reference for one entry: the same integral by scipy's adaptive quadrature
    from scipy.integrate import quad

    asd, th, lag = math.radians(10.0), 0.3, 5

    def density(d):
        return math.exp(-0.5 * (d / asd) ** 2) / (math.sqrt(2 * math.pi) * asd)

    def part(f):
        return quad(
            lambda d: f(math.pi * lag * math.sin(th + d)) * density(d), -20 * asd, 20 * asd, limit=200
        )

    re, im = part(math.cos), part(math.sin)
    entry = cellular.local_scattering_integral(beta[:1], theta[:1], 8, asd)[0, 0, lag]
    assert abs(complex(entry) - complex(re[0], im[0])) < 1e-9


def test_shadowing_keeps_the_own_bs_strongest(mods):
    scenario = small(mods, shadowing_db=10.0)
    net = scenario.sample(200, torch.Generator().manual_seed(8))
    beta = net["beta"]  # [n, BS, cell, K]
    own = beta[:, torch.arange(4), torch.arange(4)]  # [n, cell, K]
    assert (own >= beta.amax(dim=1) * (1 - 1e-12)).all()
    # and the shadowing is there: gains at a fixed distance spread by about 10 dB
    free = small(mods).sample(200, torch.Generator().manual_seed(8))["beta"]
    spread_db = (10 * torch.log10(beta / free)).std()
    assert 7 < float(spread_db) < 11


def test_single_precision_gains_equal_double_on_the_same_draws(mods, monkeypatch):
    """Single precision only rounds: with the same draws (drawn in complex128, then rounded) the
    gains agree with double precision to ~1e-4, far inside the Monte-Carlo error."""
    _, massive = mods
    draw = massive.complex_normal
    monkeypatch.setattr(
        massive, "complex_normal", lambda shape, gen, dtype=torch.complex128: draw(shape, gen).to(dtype)
    )
    net = small(mods, num_antennas=8, num_users=2).sample(2, torch.Generator().manual_seed(9))
    problems = {}
    for precision in ("single", "double"):
        pre = massive.MMMSE(massive.MMMSE.Config(name="mmmse", num_realizations=200, precision=precision))
        problems[precision] = pre(net)
        assert problems[precision].signal_gain.dtype == torch.float64
    single, double = problems["single"], problems["double"]
    torch.testing.assert_close(single.signal_gain, double.signal_gain, rtol=1e-4, atol=0)
    scale = double.interference_gain.amax(dim=(1, 2), keepdim=True)
    assert ((single.interference_gain - double.interference_gain).abs() <= 1e-4 * scale).all()


def test_a_samples_problem_does_not_depend_on_its_position_in_the_batch(mods):
    """Per-sample generators: the gains of sample 2 of a batch equal those of sample 2 alone, and two
    samples never share their Monte-Carlo draws."""
    _, massive = mods
    net = small(mods).sample(4, torch.Generator().manual_seed(11))
    pre = massive.MR(massive.MR.Config(name="mr", num_realizations=10, precision="double"))
    whole, alone = pre(net), pre(net.select(slice(2, 3)))
    torch.testing.assert_close(alone.signal_gain[0], whole.signal_gain[2], rtol=1e-12, atol=0)
    torch.testing.assert_close(alone.interference_gain[0], whole.interference_gain[2], rtol=1e-12, atol=0)
    w, _ = massive.draw_normals(4, 3, 4, 3, 8, massive.sample_generators(net, 0))
    assert not torch.equal(w[0], w[1])
