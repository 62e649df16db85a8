"""Max-min and max-product power control (Sanguinetti et al. 2018, eqs. 12-13): the batched solvers
against cvxpy references, their optimality conditions, and the objectives against hand loops."""

from __future__ import annotations

import math

import pytest
import torch

from mimo_l2o.objectives import fairness as fair_objectives
from mimo_l2o.problems.power_control import PowerControlProblem
from mimo_l2o.registry import OBJECTIVES, SOLVERS
from mimo_l2o.solvers import fairness as fair_solvers


@pytest.fixture(scope="module")
def fair():
    """The objective and solver modules."""
    return fair_objectives, fair_solvers


def make_problem(batch: int = 20, cells: int = 4, users: int = 3, seed: int = 0) -> PowerControlProblem:
    """Massive-MIMO-like instances: large a (array gain), small b (with self-interference), σ² ~ 1."""
    g = torch.Generator().manual_seed(seed)
    n = cells * users
    a = 100 * (1 + 9 * torch.rand(batch, n, generator=g, dtype=torch.float64))
    b = torch.rand(batch, n, n, generator=g, dtype=torch.float64)
    noise = 0.5 + torch.rand(batch, n, generator=g, dtype=torch.float64)
    budget = 0.5 + torch.rand(batch, cells, generator=g, dtype=torch.float64)
    return PowerControlProblem(
        signal_gain=torch.diag_embed(a),
        interference_gain=b,
        noise=noise,
        group=torch.arange(cells).repeat_interleave(users),
        budget=budget,
        weights=torch.ones(batch, n, dtype=torch.float64),
        prelog=0.8,
    )


def hand_sinr(problem: PowerControlProblem, p: torch.Tensor, i: int, k: int) -> float:
    a = problem.signal_gain[i, k, k].item()
    interference = sum(problem.interference_gain[i, k, j].item() * p[i, j].item() for j in range(p.shape[1]))
    return a * p[i, k].item() / (interference + problem.noise[i, k].item())


def kkt_residuals(problem: PowerControlProblem, p: torch.Tensor) -> tuple[float, float, float]:
    """Dimensionless KKT residuals of max Σ log SINR s.t. group sums <= P_g at ``p > 0``:
    stationarity ``max |∂_k − λ_g| p_k``, dual feasibility ``max(−λ_g P_g)``, complementary slackness
    ``max |λ_g (P_g − S_g)|``, with ``λ_g = Σ_{k∈g} p_k ∂_k / S_g`` (``∂_k`` by autograd)."""
    p = p.clone().requires_grad_(True)
    problem.sinr(p).log().sum().backward()
    grad, p = p.grad, p.detach()
    used = problem.group_power(p)
    lam = problem.group_power(p * grad) / used
    stationarity = ((grad - lam[:, problem.group]) * p).abs().amax().item()
    dual = (-lam * problem.budget).clamp_min(0).amax().item()
    slackness = (lam * (problem.budget - used)).abs().amax().item()
    return stationarity, dual, slackness


def test_max_min_pf_equal_sinrs_and_a_full_group(fair):
    _, solvers = fair
    problem = make_problem()
    p, t = solvers.max_min_power(problem)
    sinr = problem.sinr(p)
    assert ((sinr - t[:, None]).abs() / t[:, None]).max() <= 1e-6
    assert problem.constraint_violation(p).max() <= 1e-12
    ratio = problem.group_power(p) / problem.budget
    assert ((ratio.amax(dim=1) - 1).abs() <= 1e-12).all()
    assert p.dtype == torch.float64 and p.shape == (20, 12)


@pytest.mark.parametrize("seed", [1, 2])
def test_max_min_pf_equals_cvxpy_bisection(fair, seed):
    _, solvers = fair
    problem = make_problem(batch=2, seed=seed)
    _, t = solvers.max_min_power(problem)
    for i in range(2):
        p_ref, (lo, hi) = solvers.max_min_bisection_cvxpy(problem[i : i + 1], tol=1e-7)
        assert abs(lo - t[i].item()) <= 1e-6 * t[i].item()
        assert abs(hi - t[i].item()) <= 1e-6 * t[i].item()
        assert problem[i : i + 1].constraint_violation(p_ref[None]).item() <= 1e-6


def test_max_min_objective_is_min_rate(fair):
    objectives, solvers = fair
    problem = make_problem(batch=3)
    p = solvers.EqualPower(solvers.EqualPower.Config(name="equal")).solve(problem)
    got = objectives.MaxMin(None)(problem, p)
    for i in range(3):
        rates = [problem.prelog * math.log2(1 + hand_sinr(problem, p, i, k)) for k in range(12)]
        assert got[i].item() == pytest.approx(min(rates), rel=1e-12)


def test_max_prod_objective_is_geometric_mean_sinr(fair):
    objectives, _ = fair
    problem = make_problem(batch=3)
    p = torch.rand(3, 12, generator=torch.Generator().manual_seed(5), dtype=torch.float64) + 0.01
    got = objectives.MaxProd(None)(problem, p)
    for i in range(3):
        log_prod = sum(math.log(hand_sinr(problem, p, i, k)) for k in range(12))
        assert got[i].item() == pytest.approx(math.exp(log_prod / 12), rel=1e-12)
    q = p.clone().requires_grad_(True)
    objectives.MaxProd(None)(problem, q).sum().backward()  # differentiable
    assert torch.isfinite(q.grad).all()


def test_max_min_smooth_objective_is_a_soft_minimum_within_its_bounds(fair):
    objectives, _ = fair
    problem = make_problem(batch=4)
    p = torch.rand(4, 12, generator=torch.Generator().manual_seed(6), dtype=torch.float64) + 0.01
    objective = objectives.MaxMin(None)
    exact = objective(problem, p)
    for t in (1.0, 20.0, 200.0):
        got = objective.smooth(problem, p, t)
        for i in range(4):
            sinrs = [hand_sinr(problem, p, i, k) for k in range(12)]
            soft = sum(s ** (-t) for s in sinrs) ** (-1 / t)  # exp(-logsumexp(-t log s) / t)
            assert got[i].item() == pytest.approx(problem.prelog * math.log2(1 + soft), rel=1e-10)
            lower = problem.prelog * math.log2(1 + 12 ** (-1 / t) * min(sinrs))
            assert lower - 1e-12 <= got[i].item() <= exact[i].item() + 1e-12
    assert torch.allclose(objective.smooth(problem, p, 1e4), exact, rtol=1e-3)
    q = p.clone().requires_grad_(True)
    objective.smooth(problem, q, 20.0).sum().backward()
    assert bool((q.grad != 0).all())  # every power moves the soft minimum, not only the argmin's
    # the other objectives train on themselves
    torch.testing.assert_close(
        objectives.MaxProd(None).smooth(problem, p, 20.0), objectives.MaxProd(None)(problem, p)
    )


def test_max_prod_newton_satisfies_kkt(fair):
    _, solvers = fair
    problem = make_problem(batch=40, cells=4, users=5, seed=3)
    p = solvers.max_prod_power(problem)
    stationarity, dual, slackness = kkt_residuals(problem, p)
    assert stationarity <= 1e-8 and dual <= 1e-8 and slackness <= 1e-8
    assert problem.constraint_violation(p).max() == 0
    # some groups stay below budget: the solver must not assume that every cell spends it all
    assert ((problem.group_power(p) / problem.budget) < 0.999).any()


def test_max_prod_newton_equals_cvxpy(fair):
    objectives, solvers = fair
    problem = make_problem(batch=4, seed=4)
    p = solvers.max_prod_power(problem)
    ref = torch.stack([solvers.max_prod_cvxpy(problem[i : i + 1]) for i in range(4)])
    ours, theirs = objectives.MaxProd(None)(problem, p), objectives.MaxProd(None)(problem, ref)
    assert ((ours - theirs).abs() / theirs).max() <= 1e-6


def test_equal_power_is_feasible_and_below_optima(fair):
    objectives, solvers = fair
    problem = make_problem(seed=6)
    equal = solvers.EqualPower(solvers.EqualPower.Config(name="equal")).solve(problem)
    assert problem.constraint_violation(equal).max() <= 1e-12
    max_min, max_prod = objectives.MaxMin(None), objectives.MaxProd(None)
    pf = solvers.MaxMinPF(solvers.MaxMinPF.Config(name="max_min_pf")).solve(problem, max_min)
    newton = solvers.MaxProdNewton(solvers.MaxProdNewtonConfig(name="max_prod_newton"))
    prod = newton.solve(problem, max_prod)
    assert (max_min(problem, equal) <= max_min(problem, pf) * (1 + 1e-12)).all()
    assert (max_prod(problem, equal) <= max_prod(problem, prod) * (1 + 1e-12)).all()
    # each optimum beats the other's solution on its own objective
    assert (max_min(problem, prod) <= max_min(problem, pf) * (1 + 1e-12)).all()
    assert (max_prod(problem, pf) <= max_prod(problem, prod) * (1 + 1e-12)).all()


def test_registered_with_checked_configs(fair):
    _, solvers = fair
    assert SOLVERS.get("max_min_pf") is solvers.MaxMinPF and OBJECTIVES.get("max_prod") is not None
    assert SOLVERS.get("max_min_pf").objectives == ("max_min",) and SOLVERS.get("equal").gives_labels is False
    from mimo_l2o.errors import ConfigError

    with pytest.raises(ConfigError, match="tol"):
        solvers.MaxProdNewtonConfig(name="max_prod_newton", tol=0)
    with pytest.raises(ConfigError, match="max_iter"):
        solvers.MaxProdNewtonConfig(name="max_prod_newton", max_iter=0)
    with pytest.raises(ConfigError, match="tol"):
        solvers.MaxMinCvxpyConfig(name="max_min_cvxpy", tol=1.5)


def test_solvers_reject_non_diagonal_signal(fair):
    _, solvers = fair
    problem = make_problem(batch=2)
    bad = PowerControlProblem(
        signal_gain=problem.signal_gain + 1.0,
        interference_gain=problem.interference_gain,
        noise=problem.noise,
        group=problem.group,
        budget=problem.budget,
        weights=problem.weights,
    )
    with pytest.raises(ValueError, match="diagonal"):
        solvers.max_min_power(bad)
    with pytest.raises(ValueError, match="diagonal"):
        solvers.max_prod_power(bad)
    negative = problem.interference_gain.clone()
    negative[1, 0, 2] = -1e-3  # one negative gain in the second sample
    bad = PowerControlProblem(
        signal_gain=problem.signal_gain,
        interference_gain=negative,
        noise=problem.noise,
        group=problem.group,
        budget=problem.budget,
        weights=problem.weights,
    )
    for solve in (solvers.max_min_power, solvers.max_prod_power, solvers.max_prod_cvxpy):
        with pytest.raises(
            ValueError, match="interference gains and noise >= 0, got a minimum gain of -0.001"
        ):
            solve(bad if solve is not solvers.max_prod_cvxpy else bad[1:])


# ---- max product: the fast path (minorize-maximize, then Newton on the KKT conditions), its fallback
@pytest.fixture(scope="module")
def cellular():
    """A few realistic problems (gains ~1e-9..1e-13 W⁻¹, noise ~4e-13 W, 0.5 W per cell): MR and
    M-MMSE precoding of the same cellular networks, 4 cells of 5 users."""
    from mimo_l2o.precoders.massive_mimo import MMMSE, MR
    from mimo_l2o.scenarios.cellular import Cellular

    network = Cellular(Cellular.Config()).sample(4, torch.Generator().manual_seed(7))
    return {
        "mr": MR(MR.Config(num_realizations=5))(network),
        "mmmse": MMMSE(MMMSE.Config(num_realizations=5))(network),
    }


def rel_diff(objective, problem, p, q) -> float:
    ours, theirs = objective(problem, p), objective(problem, q)
    return ((ours - theirs).abs() / theirs).max().item()


def test_max_min_cvxpy_bisection_on_realistic_scales(fair, cellular):
    """Gains ~1e-12 and noise ~4e-13 W: the LPs must be posed in scaled units to mean anything."""
    _, solvers = fair
    problem = cellular["mmmse"][:2]
    _, t = solvers.max_min_power(problem)
    for i in range(2):
        p_ref, (lo, hi) = solvers.max_min_bisection_cvxpy(problem[i : i + 1], tol=1e-7)
        assert abs(lo - t[i].item()) <= 1e-6 * t[i].item() and abs(hi - t[i].item()) <= 1e-6 * t[i].item()
        assert problem[i : i + 1].sinr(p_ref[None]).min().item() >= lo * (1 - 1e-6)


@pytest.fixture
def barrier_spy(fair, monkeypatch):
    """Counts the samples that reach the barrier fallback of ``max_prod_power``."""
    _, solvers = fair
    calls = []
    barrier = solvers._max_prod_barrier

    def spy(interference, *args):
        calls.append(interference.shape[0])
        return barrier(interference, *args)

    monkeypatch.setattr(solvers, "_max_prod_barrier", spy)
    return calls


@pytest.mark.filterwarnings("ignore:Solution may be inaccurate")  # Clarabel, well within 1e-6
@pytest.mark.parametrize("kind", ["random", "mr", "mmmse"])
def test_max_prod_fast_path_matches_fallback_and_cvxpy(fair, cellular, barrier_spy, kind):
    objectives, solvers = fair
    problem = make_problem(batch=4, cells=4, users=5, seed=8) if kind == "random" else cellular[kind]
    fast = solvers.max_prod_power(problem)
    assert barrier_spy == []  # no sample needed the fallback
    barrier = solvers.max_prod_power(problem, newton_steps=0)  # every sample through the fallback
    assert barrier_spy == [problem.batch_size]
    ref = torch.stack([solvers.max_prod_cvxpy(problem[i : i + 1]) for i in range(problem.batch_size)])
    geo_mean = objectives.MaxProd(None)
    assert rel_diff(geo_mean, problem, fast, barrier) <= 1e-8
    assert rel_diff(geo_mean, problem, fast, ref) <= 1e-6
    assert max(kkt_residuals(problem, fast)) <= 1e-8
    assert max(kkt_residuals(problem, barrier)) <= 1e-8
    for p in (fast, barrier):
        assert problem.constraint_violation(p).max() == 0 and (p > 0).all()
        assert p.dtype == torch.float64 and p.shape == (problem.batch_size, problem.num_vars)


def test_max_prod_fallback_takes_only_unconverged_samples(fair, cellular, barrier_spy):
    objectives, solvers = fair
    hard, easy = cellular["mmmse"], make_problem(batch=4, cells=4, users=5, seed=9)
    # after 5 minorant steps one Newton step solves the random samples, not (all) the cellular ones
    solvers.max_prod_power(easy, mm_steps=5, newton_steps=1)
    assert barrier_spy == []
    solvers.max_prod_power(hard, mm_steps=5, newton_steps=1)
    assert len(barrier_spy) == 1 and 1 <= barrier_spy[0] <= hard.batch_size
    unconverged = barrier_spy.pop()
    # together, the fallback takes exactly the cellular samples that need it
    problem = PowerControlProblem.cat([hard, easy])
    p = solvers.max_prod_power(problem, mm_steps=5, newton_steps=1)
    assert barrier_spy == [unconverged]
    exact = solvers.max_prod_power(problem)
    assert rel_diff(objectives.MaxProd(None), problem, p, exact) <= 1e-8
    assert max(kkt_residuals(problem, p)) <= 1e-8


def test_max_prod_is_scale_invariant(fair, cellular):
    _, solvers = fair
    problem = cellular["mr"]
    p = solvers.max_prod_power(problem)
    # powers in mW and gains per mW, noise in pW: the same SINRs, the powers scale by 1000
    scaled = PowerControlProblem(
        signal_gain=problem.signal_gain * 1e9,
        interference_gain=problem.interference_gain * 1e9,
        noise=problem.noise * 1e12,
        group=problem.group,
        budget=problem.budget * 1e3,
        weights=problem.weights,
    )
    q = solvers.max_prod_power(scaled)
    assert ((q / 1e3 - p).abs() / p).max() <= 1e-8


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_max_prod_on_cuda(fair, cellular):
    _, solvers = fair
    problem = PowerControlProblem.cat([cellular["mmmse"], make_problem(batch=4, cells=4, users=5, seed=10)])
    p = solvers.max_prod_power(problem.to("cuda"))
    assert p.device.type == "cuda"
    assert ((p.cpu() - solvers.max_prod_power(problem)).abs() / p.cpu()).max() <= 1e-8
