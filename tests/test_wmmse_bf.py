"""The beamforming solvers and closed forms (Zhang et al. 2022; Shi et al. 2011): WMMSE against a
per-sample NumPy transcription, its monotone objective and budgets, uplink-downlink duality and the
optimal structure at its stationary points, the reduced-dimension structure, ZF's nulls, the SLNR
power step's KKT conditions and the alternation's monotone SLNR objective."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from mimo_l2o.objectives.sum_rate import SumRate
from mimo_l2o.problems.beamforming import BeamformingProblem, bs_power
from mimo_l2o.solvers import beamformers as bf
from mimo_l2o.solvers.wmmse_bf import WMMSEBeamforming, WMMSEBeamformingConfig, multipliers, start, wmmse_bf


def problem_of(
    batch=16, cells=1, antennas=4, per_cell=4, p=100.0, noise=1.0, seed=0, path_loss=False
) -> BeamformingProblem:
    g = torch.Generator().manual_seed(seed)
    users = cells * per_cell
    shape = (batch, cells, users, antennas)
    h = torch.complex(
        torch.randn(shape, generator=g, dtype=torch.float64),
        torch.randn(shape, generator=g, dtype=torch.float64),
    )
    h = h / math.sqrt(2)
    if path_loss:  # the other cells' users weaker, as in a multicell layout
        own = torch.arange(users) // per_cell
        gain = torch.where(own[None, :] == torch.arange(cells)[:, None], 1.0, 0.1).to(torch.float64)
        h = h * gain.sqrt()[None, :, :, None]
    return BeamformingProblem(
        channel=h,
        noise=torch.full((batch, users), noise, dtype=torch.float64),
        budget=torch.full((batch, cells), p, dtype=torch.float64),
        weights=torch.ones(batch, users, dtype=torch.float64),
    )


def numpy_wmmse(H: np.ndarray, noise: float, P: float, W: np.ndarray, iters: int) -> np.ndarray:
    """Shi et al. (2011), Table I, for one MISO broadcast channel, user by user: ``H [K, N]`` rows
    ``h_kᵀ``, ``W [N, K]``; ``μ`` by bisection on ``‖W(μ)‖² = P`` with a solve per trial."""
    K, N = H.shape
    for _ in range(iters):
        u, w = np.zeros(K, complex), np.zeros(K)
        for k in range(K):
            t = sum(abs(H[k].conj() @ W[:, j]) ** 2 for j in range(K)) + noise
            s = H[k].conj() @ W[:, k]
            u[k] = s / t
            w[k] = 1 / (1 - abs(s) ** 2 / t)
        A = sum(w[k] * abs(u[k]) ** 2 * np.outer(H[k], H[k].conj()) for k in range(K))
        B = np.stack([w[k] * u[k] * H[k] for k in range(K)], axis=1)

        def beams(mu, A=A, B=B):
            return np.linalg.solve(A + mu * np.eye(N), B)

        if np.linalg.cond(A) < 1e12 and np.linalg.norm(beams(0.0)) ** 2 <= P:
            W = beams(0.0)
            continue
        lo, hi = 0.0, 1.0
        while np.linalg.norm(beams(hi)) ** 2 > P:
            hi *= 2
        for _ in range(100):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if np.linalg.norm(beams(mid)) ** 2 > P else (lo, mid)
        W = beams(hi)
    return W


@pytest.mark.parametrize("antennas", [3, 7])
def test_batched_wmmse_agrees_with_a_per_sample_numpy_loop(antennas):
    """N = K, and N > K, where the batched solver iterates in the K-dimensional span of the channels
    and the loop in all N dimensions."""
    problem = problem_of(batch=6, antennas=antennas, per_cell=3, p=10.0)
    W0 = start(problem, "mrt")
    ours = wmmse_bf(problem, W0, tol=1e-300, min_iter=15, max_iter=15)  # exactly 15 iterations
    for b in range(problem.batch_size):
        ref = numpy_wmmse(problem.channel[b, 0].numpy(), 1.0, 10.0, W0[b, 0].numpy(), 15)
        np.testing.assert_allclose(ours[b, 0].numpy(), ref, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("cells", [1, 3])
def test_wmmse_objective_never_decreases_and_budgets_bind(cells):
    problem = problem_of(batch=20, cells=cells, antennas=4, per_cell=2, p=30.0, path_loss=True)
    W, trace, iterations = wmmse_bf(problem, start(problem, "mrt"), tol=1e-9, history=True)
    steps = trace.diff(dim=0)
    assert (steps[~steps.isnan()] >= -1e-9).all()
    assert (iterations >= 5).all()
    # the sum rate is increasing in every BS's power, so each ends on its budget
    torch.testing.assert_close(bs_power(W), problem.budget, rtol=1e-9, atol=0)
    rate = SumRate(None)
    for form in (bf.mrt, bf.zf, bf.rzf):
        assert (rate(problem, W) >= rate(problem, form(problem)) - 1e-9).float().mean() > 0.9
        assert rate(problem, W).mean() > rate(problem, form(problem)).mean()


def test_duality_and_the_optimal_structure_at_the_wmmse_point():
    """At WMMSE's stationary point the dual uplink powers sum to P, and eq. (7) with (p, q) returns the
    beamformers themselves (directions to 1e-6, powers exactly)."""
    problem = problem_of(batch=12, antennas=8, per_cell=4, p=10.0, seed=3)
    W = wmmse_bf(problem, start(problem, "mrt"), tol=1e-13, max_iter=5000)
    q = bf.dual_uplink_powers(problem, W)
    p = W[:, 0].abs().square().sum(-2)
    torch.testing.assert_close(q.sum(-1), problem.budget[:, 0], rtol=1e-9, atol=0)
    H = bf.own_channels(problem)[:, 0]
    rebuilt = bf.optimal_structure(H, p, q, problem.noise[:, 0])
    alignment = (bf.unit_columns(rebuilt).conj() * bf.unit_columns(W[:, 0])).sum(-2).abs()
    active = p > 1e-12 * problem.budget
    # WMMSE switches weak users off (their power decays geometrically to 0): q is 0 for them
    assert active.sum() >= 0.75 * active.numel() and (~active).any()
    assert (q[~active] == 0).all() and (q[active] > 0).all()
    torch.testing.assert_close(alignment[active], torch.ones_like(alignment[active]), rtol=0, atol=1e-6)
    torch.testing.assert_close(rebuilt.abs().square().sum(-2), p, rtol=1e-9, atol=1e-10)


def test_dual_uplink_powers_reach_the_downlink_sinrs_for_any_beamformers():
    problem = problem_of(batch=8, antennas=5, per_cell=3, p=7.0, seed=5)
    g = torch.Generator().manual_seed(1)
    W = torch.randn((8, 1, 5, 3), generator=g, dtype=torch.complex128)
    W[:4, 0, :, 1] = 0  # user 1 switched off in half the samples
    W = bf.onto_budget(W, problem.budget)
    q = bf.dual_uplink_powers(problem, W)
    assert (q[:4, 1] == 0).all() and (q[:4, [0, 2]] > 0).all() and (q[4:] > 0).all()
    U, H = bf.unit_columns(W[:, 0]), bf.own_channels(problem)[:, 0]
    cross = (U.mH @ H).abs().square()  # [b, k (receiver), j (user)] = |h_jᴴ u_k|²
    signal = q * cross.diagonal(dim1=-2, dim2=-1)
    uplink = signal / ((cross * q.unsqueeze(-2)).sum(-1) - signal + 1.0)
    torch.testing.assert_close(uplink, problem.sinr(W), rtol=1e-9, atol=0)
    torch.testing.assert_close(q.sum(-1), bs_power(W)[:, 0], rtol=1e-9, atol=0)


def test_reduced_dimension_structure_equals_the_full_one():
    problem = problem_of(batch=5, antennas=16, per_cell=4, seed=2)
    H = bf.own_channels(problem)[:, 0]
    g = torch.Generator().manual_seed(0)
    p, q = (
        torch.rand(5, 4, generator=g, dtype=torch.float64),
        torch.rand(5, 4, generator=g, dtype=torch.float64),
    )
    noise = torch.full((5,), 0.3, dtype=torch.float64)
    torch.testing.assert_close(
        bf.reduced_structure(H, p, q, noise), bf.optimal_structure(H, p, q, noise), rtol=1e-9, atol=1e-12
    )


def test_zero_forcing_nulls_the_other_users_and_uses_the_budget():
    problem = problem_of(batch=4, cells=2, antennas=6, per_cell=3, p=5.0)
    W = bf.zf(problem)
    inner = torch.einsum("bcun,bcnk->bcuk", problem.channel.conj(), W)  # [b, c, users, k]
    for c in range(2):
        own = inner[:, c, c * 3 : (c + 1) * 3]
        off = own - torch.diag_embed(own.diagonal(dim1=-2, dim2=-1))
        assert off.abs().max() < 1e-10
    torch.testing.assert_close(bs_power(W), problem.budget, rtol=1e-12, atol=0)
    assert bf.zf_refusal(problem_of(antennas=2, per_cell=3)) is not None


def test_multipliers_meet_the_budget_or_are_zero():
    g = torch.Generator().manual_seed(0)
    lam = torch.rand(50, 6, generator=g, dtype=torch.float64) + 0.05
    phi = torch.rand(50, 6, generator=g, dtype=torch.float64)
    budget = torch.rand(50, generator=g, dtype=torch.float64) * 40
    mu = multipliers(lam, phi, budget)
    power = (phi / (lam + mu.unsqueeze(-1)).square()).sum(-1)
    slack = (phi / lam.square()).sum(-1) <= budget
    assert (mu[slack] == 0).all() and (mu[~slack] > 0).all() and slack.any() and (~slack).any()
    torch.testing.assert_close(power[~slack], budget[~slack], rtol=1e-10, atol=0)


def test_a_singular_a_with_nothing_on_its_null_space_gets_a_finite_multiplier():
    """Rounding leaves a singular A's zero eigenvalue at −1e-16 with φ = 0 there (a user whose receiver
    is zero): the Newton steps start just right of 0, where 1/(λ + μ)³ overflows; μ must still be the
    root over the other terms (this case stopped a run's labelling with a NaN in eigh)."""
    lam = torch.tensor([[-1.1268e-16, 2.4394, 6.6171]], dtype=torch.float64)
    phi = torch.tensor([[0.0, 402.0027, 1478.2653]], dtype=torch.float64)
    budget = torch.tensor([100.0], dtype=torch.float64)
    mu = multipliers(lam, phi, budget)
    assert torch.isfinite(mu).all() and (mu > 0).all()
    power = (phi[:, 1:] / (lam[:, 1:] + mu.unsqueeze(-1)).square()).sum(-1)
    torch.testing.assert_close(power, budget, rtol=1e-10, atol=0)


def test_wmmse_serves_the_other_users_when_one_has_no_channel():
    """A user with an all-zero channel: its receiver is zero, so is its term of A; WMMSE still runs, stays
    on the budget and gives that user no power."""
    problem = problem_of(batch=8, antennas=3, per_cell=3)
    channel = problem.channel.clone()
    channel[:, :, 0] = 0
    silent = BeamformingProblem(channel, problem.noise, problem.budget, problem.weights)
    W = wmmse_bf(silent, start(silent, "mrt"))
    assert torch.isfinite(W).all()
    torch.testing.assert_close(bs_power(W), silent.budget, rtol=1e-9, atol=0)
    assert float(W[..., 0].abs().square().sum(-1).max()) < 1e-9 * float(silent.budget.max())


def slnr_terms(problem, W):
    """``p_k a_k / (p_k L_k + σ²)`` of eq. (30) per user ``[b, c, K]``."""
    Hall = bf.all_channels(problem)
    b, c, n, k = W.shape
    g = (W.mH @ Hall).abs().square()  # [b, c, k, users], with the powers in W
    idx = (torch.arange(c)[:, None] * k + torch.arange(k)).expand(b, c, k).unsqueeze(-1)
    own = g.gather(-1, idx).squeeze(-1)
    return own / (g.sum(-1) - own + problem.noise.reshape(b, c, k))


def test_slnr_power_step_meets_its_kkt_conditions():
    problem = problem_of(batch=6, cells=3, antennas=6, per_cell=2, p=20.0, path_loss=True)
    U = bf.slnr_directions(problem, torch.full((6, 3, 2), 10.0, dtype=torch.float64))
    p = bf.slnr_powers(problem, U)
    torch.testing.assert_close(p.sum(-1), problem.budget, rtol=1e-12, atol=0)
    # d/dp_k log(p a/(p L + σ²)) = σ²/(p (p L + σ²)) is the same multiplier for every user of a BS
    g = (U.mH @ bf.all_channels(problem)).abs().square()
    idx = (torch.arange(3)[:, None] * 2 + torch.arange(2)).expand(6, 3, 2).unsqueeze(-1)
    leak = g.sum(-1) - g.gather(-1, idx).squeeze(-1)
    derivative = 1.0 / (p * (p * leak + 1.0))
    torch.testing.assert_close(derivative, derivative[..., :1].expand_as(derivative), rtol=1e-8, atol=0)


def test_slnr_alternation_does_not_decrease_the_slnr_objective():
    problem = problem_of(batch=6, cells=3, antennas=6, per_cell=2, p=20.0, path_loss=True)
    values = [
        slnr_terms(problem, bf.slnr_alternating(problem, iters=i)).log().sum((-2, -1)) for i in (1, 2, 4, 8)
    ]
    for before, after in zip(values, values[1:], strict=False):
        assert (after >= before - 1e-9).all()


def test_solver_best_of_starts_is_no_worse_and_refuses_zf_start_with_too_few_antennas():
    problem = problem_of(batch=10, antennas=3, per_cell=3, p=100.0, seed=9)
    rate = SumRate(None)
    one = WMMSEBeamforming(WMMSEBeamformingConfig(name="wmmse_bf"))
    four = WMMSEBeamforming(WMMSEBeamformingConfig(name="wmmse_bf", starts=4))
    assert not one.stochastic and four.stochastic
    best = four.solve(problem, rate, torch.Generator().manual_seed(0))
    assert (rate(problem, best) >= rate(problem, one.solve(problem, rate)) - 1e-12).all()
    zf_start = WMMSEBeamforming(WMMSEBeamformingConfig(name="wmmse_bf", init="zf"))
    assert "antennas >= users per cell" in zf_start.refuses(problem_of(antennas=2, per_cell=3))
    assert zf_start.refuses(problem) is None


def load_benchmark():
    path = Path(__file__).resolve().parent.parent / "benchmarks" / "wmmse_bf.py"
    spec = importlib.util.spec_from_file_location("wmmse_bf_benchmark", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("antennas, users", [(4, 4), (12, 3)])
def test_batched_wmmse_ends_where_the_benchmark_loops_do(antennas, users):
    """The Done-when check of ``benchmarks/wmmse_bf.py``: same start, same stop rule, the sum rates to
    1e-9 and the same iteration counts, with μ by Brent's method and by bisection with solves."""
    bench = load_benchmark()
    problem = bench.rayleigh(antennas, users, 6, 20.0, seed=antennas)
    W0 = start(problem, "mrt")
    W, _, iterations = wmmse_bf(problem, W0, history=True)
    ours = SumRate(None)(problem, W).numpy()
    for name, multiplier in bench.LOOPS.items():
        for b in range(problem.batch_size):
            H, budget = problem.channel[b, 0].numpy(), float(problem.budget[b, 0])
            Wl, steps = bench.loop(H, W0[b, 0].numpy(), 1.0, budget, multiplier)
            assert steps == int(iterations[b]), name
            assert abs(bench.sum_rate(H, Wl, 1.0) - ours[b]) < 1e-9, name
