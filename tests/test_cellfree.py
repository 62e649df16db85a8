"""Cell-free massive MIMO (Raghunath et al. 2023): the scenario's geometry and channels, the MRT gains
against a per-sample computation, the problem's SINR and the energy efficiency against the paper's
formulas, its gradient against finite differences, the exact budget projection, and the batched
projected-gradient optimizer's feasibility and stationarity."""

from __future__ import annotations

import math

import pytest
import torch

from mimo_l2o.errors import ConfigError
from mimo_l2o.objectives.energy_efficiency import EnergyEfficiency, EnergyEfficiencyConfig
from mimo_l2o.precoders.mrt import MRT, mrt_gains
from mimo_l2o.scenarios.cellfree import CellFree, ap_grid
from mimo_l2o.solvers.baselines import MaxPower
from mimo_l2o.solvers.energy_efficiency import (
    ProjectedGradient,
    ProjectedGradientConfig,
    project_capped_simplex,
)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def sample(n: int = 8, seed: int = 0, **config):
    return CellFree(CellFree.Config(**config)).sample(n, gen(seed))


EE = EnergyEfficiency(EnergyEfficiencyConfig())


# ---------------------------------------------------------------------------------------------
# scenario
# ---------------------------------------------------------------------------------------------
def test_ap_grid_is_a_near_square_grid_of_cell_centres():
    torch.testing.assert_close(
        ap_grid(5, 100.0), torch.tensor([[10.0 + 20 * i, 50.0] for i in range(5)]).double()
    )
    grid = ap_grid(10, 100.0)  # 2 rows of 5
    assert grid.shape == (10, 2)
    assert sorted(set(grid[:, 1].tolist())) == [25.0, 75.0]
    assert sorted(set(grid[:, 0].tolist())) == [10.0, 30.0, 50.0, 70.0, 90.0]
    assert sorted(set(ap_grid(9, 90.0)[:, 0].tolist())) == [15.0, 45.0, 75.0]


def test_large_scale_gains_follow_the_path_loss_of_the_3d_distance():
    net = sample(16, shadowing_db=0.0)
    pos = net["user_positions"]  # [n, K, 2]
    assert bool(((pos >= 0) & (pos <= 100)).all())
    aps = ap_grid(5, 100.0)
    for b in range(3):
        for l in range(5):
            for k in range(10):
                d = math.sqrt(float(((aps[l] - pos[b, k]) ** 2).sum()) + 10.0**2)
                expected_db = -30.5 - 36.7 * math.log10(d)
                assert 10 * math.log10(float(net["beta"][b, l, k])) == pytest.approx(expected_db, abs=1e-9)


def test_shadowing_has_the_configured_spread_and_samples_are_prefix_stable():
    plain, shadowed = sample(400, seed=3, shadowing_db=0.0), sample(400, seed=3, shadowing_db=4.0)
    db = 10 * torch.log10(shadowed["beta"] / plain["beta"])  # the same draws: only X differs
    assert float(db.mean()) == pytest.approx(0.0, abs=0.1)  # 20,000 draws: std of the mean 0.03
    assert float(db.std()) == pytest.approx(4.0, rel=0.03)
    small = sample(5, seed=3)
    for key in ("channels", "beta", "user_positions"):
        torch.testing.assert_close(small[key], sample(400, seed=3)[key][:5], rtol=0, atol=0)


def test_channels_are_rayleigh_with_the_large_scale_gain_per_antenna():
    net = sample(2000, seed=1)
    h, beta = net["channels"], net["beta"]
    normalized = h / beta.sqrt()[..., None]
    power = normalized.abs().square()  # Exp(1): mean 1, variance 1
    assert float(power.mean()) == pytest.approx(1.0, abs=4 * (1 / power.numel()) ** 0.5)
    assert float(normalized.real.mean()) == pytest.approx(0.0, abs=4 * (0.5 / power.numel()) ** 0.5)
    assert float((normalized.real * normalized.imag).mean()) == pytest.approx(
        0.0, abs=4 * (0.25 / power.numel()) ** 0.5
    )


@pytest.mark.parametrize("threshold", [-70.0, -95.0])
def test_user_centric_association_keeps_the_strong_links_and_each_ues_strongest_ap(threshold):
    net = sample(50, seed=2, association_db=threshold)
    beta_db = 10 * torch.log10(net["beta"])
    serves = net["serves"]
    for b in range(50):
        for k in range(10):
            best = int(beta_db[b, :, k].argmax())
            for l in range(5):
                assert bool(serves[b, l, k]) == (l == best or float(beta_db[b, l, k]) >= threshold)
    assert bool(serves.any(dim=1).all())  # nobody unserved
    assert 0.2 <= float(serves.double().mean()) < 0.9  # 0.20 (-70 dB: the strongest only), 0.69 measured
    assert bool(sample(5)["serves"].all())


@pytest.mark.parametrize(
    "key,value",
    [
        ("num_aps", 0),
        ("num_antennas", 0),
        ("num_users", 0),
        ("p_max", 0.0),
        ("side", -1.0),
        ("shadowing_db", -1.0),
    ],
)
def test_bad_scenario_config_names_the_key(key, value):
    with pytest.raises(ConfigError) as err:
        CellFree.Config(**{key: value})
    assert err.value.key == key


@pytest.mark.parametrize("key", ["bandwidth", "pa_inefficiency", "circuit_power"])
def test_bad_objective_config_names_the_key(key):
    with pytest.raises(ConfigError) as err:
        EnergyEfficiencyConfig(**{key: 0.0})
    assert err.value.key == key


# ---------------------------------------------------------------------------------------------
# MRT gains and the problem
# ---------------------------------------------------------------------------------------------
def test_mrt_gains_equal_a_per_sample_computation():
    net = sample(3, seed=4)
    gains = mrt_gains(net["channels"])
    h = net["channels"]
    for b in range(3):
        for l in range(5):
            for k in range(10):
                for j in range(10):
                    w = h[b, l, j] / torch.linalg.vector_norm(h[b, l, j])  # unit MRT beam for UE j
                    expected = abs(complex(torch.vdot(h[b, l, k], w))) ** 2  # |h_lkᴴ w_lj|²
                    assert float(gains[b, l, k, j]) == pytest.approx(expected, rel=1e-10)


def sinr_by_hand(gains: torch.Tensor, serves: torch.Tensor, p: torch.Tensor, noise: float) -> torch.Tensor:
    """Eq. (1)'s SINR with ``p [n, K, L]``: signal Σ_l G_l[k,k] p_kl, interference Σ_{j≠k} Σ_l G_l[k,j] p_jl
    (a beam exists only where its AP serves its UE)."""
    n, nl, k, _ = gains.shape
    out = torch.empty(n, k, dtype=torch.float64)
    for b in range(n):
        for u in range(k):
            signal = sum(gains[b, l, u, u] * p[b, u, l] * serves[b, l, u] for l in range(nl))
            interference = sum(
                gains[b, l, u, j] * p[b, j, l] * serves[b, l, j]
                for l in range(nl)
                for j in range(k)
                if j != u
            )
            out[b, u] = signal / (interference + noise)
    return out


@pytest.mark.parametrize("association_db", [None, -75.0])
def test_problem_sinr_and_energy_efficiency_equal_the_papers_formulas(association_db):
    net = sample(4, seed=5, association_db=association_db)
    problem = MRT(None)(net)
    assert problem.num_vars == 50 and problem.num_users == 10 and problem.num_groups == 5
    p = torch.rand(4, 10, 5, generator=gen(6), dtype=torch.float64) * 0.05  # [n, K, L]
    x = p.reshape(4, 50)  # v = k·L + l
    noise = net.params["noise_power"]
    expected = sinr_by_hand(mrt_gains(net["channels"]), net["serves"], p, noise)
    torch.testing.assert_close(problem.sinr(x), expected, rtol=1e-10, atol=0)
    # budgets per AP; the power spent on each UE sums its L pairs
    torch.testing.assert_close(problem.group_power(x), p.sum(1))
    torch.testing.assert_close(problem.user_power(x), p.sum(2))
    rate = 751245.0 * torch.log2(1 + expected)  # B: pinned to Table II (EnergyEfficiencyConfig)
    ee = (rate / (1.0 * p.sum(2) + 4.0)).sum(1) / 1e6
    torch.testing.assert_close(EE(problem, x), ee, rtol=1e-12, atol=0)


def test_energy_efficiency_gradient_matches_finite_differences():
    problem = MRT(None)(sample(2, seed=7))
    p = (torch.rand(2, 50, generator=gen(8), dtype=torch.float64) * 0.02).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda q: EE(problem, q), (p,), eps=1e-9, atol=1e-6, rtol=1e-5)


# ---------------------------------------------------------------------------------------------
# projection and the batched optimizer
# ---------------------------------------------------------------------------------------------
def projection_by_bisection(x: torch.Tensor, cap: float) -> torch.Tensor:
    """argmin ‖y − x‖ over {y ≥ 0, Σ y ≤ cap} for one group: clip if within, else bisect on θ."""
    if float(x.clamp_min(0).sum()) <= cap:
        return x.clamp_min(0)
    lo, hi = 0.0, float(x.max())
    for _ in range(200):
        mid = (lo + hi) / 2
        if float((x - mid).clamp_min(0).sum()) > cap:
            lo = mid
        else:
            hi = mid
    return (x - hi).clamp_min(0)


def test_capped_simplex_projection_equals_a_bisection_reference():
    group = torch.arange(5).repeat(10)  # the MRT layout: v = k·L + l, group l
    budget = torch.tensor([[1.0, 0.5, 2.0, 1.0, 0.1]], dtype=torch.float64).expand(6, 5)
    x = torch.randn(6, 50, generator=gen(9), dtype=torch.float64) * 0.5
    x[0] = x[0].abs() * 0.01  # feasible: unchanged
    y = project_capped_simplex(x, group, budget)
    for b in range(6):
        for g in range(5):
            members = group == g
            torch.testing.assert_close(
                y[b, members], projection_by_bisection(x[b, members], float(budget[b, g]))
            )
    torch.testing.assert_close(y[0], x[0])
    torch.testing.assert_close(project_capped_simplex(y, group, budget), y)  # idempotent
    with pytest.raises(ValueError, match="equal size"):
        project_capped_simplex(x[:, :3], torch.tensor([0, 0, 1]), budget[:, :2])


@pytest.fixture(scope="module")
def optimized():
    problem = MRT(None)(sample(12, seed=10))
    solver = ProjectedGradient(ProjectedGradientConfig(steps=1500, starts=2, final_lr=1e-4))
    return problem, solver.solve(problem, EE)


def test_projected_gradient_is_feasible_and_beats_equal_power(optimized):
    problem, p = optimized
    assert bool((p >= 0).all())
    assert float(problem.constraint_violation(p).max()) <= 1e-12
    equal = MaxPower(None).solve(problem)
    assert bool((EE(problem, p) > 2 * EE(problem, equal)).all())  # 4.6x measured on average


def test_projected_gradient_ends_at_a_stationary_point(optimized):
    """KKT of max J s.t. p ≥ 0, Σ_k p_kl ≤ p_max: with no AP at its budget (the EE optimum spends a few
    per cent of it), ∂J/∂p = 0 where p > 0 and ≤ 0 where p = 0."""
    problem, p = optimized
    assert float(problem.group_power(p).max()) < 0.5 * float(problem.budget.min())
    q = p.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(EE(problem, q).sum(), q)
    scale = grad.abs().amax(dim=1, keepdim=True)  # the largest entry: a pair held at 0
    active = p > 1e-6
    assert float((grad.abs() / scale)[active].max()) < 1e-6  # 5e-10 measured
    assert float((grad / scale)[~active].max()) <= 0.0
