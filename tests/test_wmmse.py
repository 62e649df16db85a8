"""WMMSE (Sun et al. 2018 Fig. 2) and the heuristic baselines: values, not just shapes.

The batched solver is checked against a per-sample NumPy transcription of Fig. 2 written here,
for monotonicity of its objective, for first-order stationarity (KKT) of its output, for early
stopping of converged samples, and against the paper's Table I.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from mimo_l2o.errors import ConfigError
from mimo_l2o.objectives.sum_rate import SumRate
from mimo_l2o.problems.power_control import PowerControlProblem
from mimo_l2o.registry import SOLVERS
from mimo_l2o.solvers.baselines import MaxPower, RandomPower
from mimo_l2o.solvers.wmmse import WMMSE, wmmse

F64 = torch.float64


# ---------------------------------------------------------------------------------------------
# instances
# ---------------------------------------------------------------------------------------------
def gaussian_gains(batch: int, k: int, seed: int) -> torch.Tensor:
    """``|h_kj|²`` with ``h_kj ~ CN(0, 1)`` (Sun et al. 2018, Gaussian IC), ``[batch, K, K]`` float64."""
    gen = torch.Generator().manual_seed(seed)
    h = torch.randn(batch, k, k, 2, generator=gen, dtype=F64)
    return h.square().sum(-1) / 2


def gaussian_ic(batch: int, k: int, seed: int, weighted: bool = False) -> PowerControlProblem:
    """Gaussian IC; ``weighted``: random weights, per-user budgets and noise powers in [0.5, 2]."""
    gains = gaussian_gains(batch, k, seed)
    if not weighted:
        return PowerControlProblem.interference_channel(gains, 1.0, 1.0)
    gen = torch.Generator().manual_seed(seed + 1000)
    weights, p_max, noise = (0.5 + 1.5 * torch.rand(batch, k, generator=gen, dtype=F64) for _ in range(3))
    problem = PowerControlProblem.interference_channel(gains, 1.0, p_max, weights=weights)
    problem.noise = noise
    return problem


def sum_rate(problem: PowerControlProblem, p: torch.Tensor) -> torch.Tensor:
    return SumRate(SumRate.Config(name="sum_rate"))(problem, p)


# ---------------------------------------------------------------------------------------------
# the reference: Fig. 2 for one sample, in NumPy, written independently of the solver
# ---------------------------------------------------------------------------------------------
def reference_wmmse(gains, noise, p_max, alpha, tol, max_iter):
    """Sun et al. (2018) Fig. 2 for one sample.

    gains[k, j] = |h_kj|², noise[k] = σ_k², p_max[k], alpha[k]: NumPy ``[K, K]`` / ``[K]``.
    Returns the powers ``v²``, the final ``Σ α_k log2(w_k)`` and the number of iterations.
    """
    h = np.sqrt(gains)  # |h_kj|
    h_kk = np.diag(h).copy()
    v = np.sqrt(p_max)  # step 1
    u = h_kk * v / (gains @ v**2 + noise)  # step 2
    w = 1 / (1 - u * h_kk * v)  # step 3
    objective = alpha @ np.log2(w)
    t = 0  # step 4
    while True:
        t += 1  # step 6
        v = alpha * w * u * h_kk / ((alpha * w * u**2) @ gains)  # step 7: Σ_j α_j w_j u_j² |h_jk|²
        v = np.minimum(np.maximum(v, 0), np.sqrt(p_max))
        u = h_kk * v / (gains @ v**2 + noise)  # step 8 (with the denominator of step 2)
        w = 1 / (1 - u * h_kk * v)  # step 9
        new_objective = alpha @ np.log2(w)
        gain, objective = new_objective - objective, new_objective
        if gain < tol or t >= max_iter:  # Section IV: obj_new - obj_old < tol, or 500 iterations
            return v**2, objective, t


def reference_batch(problem: PowerControlProblem, tol: float, max_iter: int):
    total = (problem.signal_gain + problem.interference_gain).numpy()
    noise, p_max, alpha = problem.noise.numpy(), problem.budget.numpy(), problem.weights.numpy()
    out = [reference_wmmse(total[b], noise[b], p_max[b], alpha[b], tol, max_iter) for b in range(len(total))]
    power, objective, iterations = zip(*out, strict=True)
    return np.stack(power), np.array(objective), np.array(iterations)


# ---------------------------------------------------------------------------------------------
# (b) batched == per-sample loop
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("k", [3, 10])
@pytest.mark.parametrize("weighted", [False, True])
def test_batched_equals_per_sample_loop(k, weighted):
    problem = gaussian_ic(200, k, seed=k, weighted=weighted)
    ref_power, ref_objective, ref_iterations = reference_batch(problem, tol=1e-5, max_iter=500)
    # the default working batch, one that makes samples wait and join (compactions and refills
    # interleave), and the whole batch at once: the same result
    for working_size in (None, 7, 200):
        power, trace, iterations = wmmse(
            problem, tol=1e-5, max_iter=500, history=True, working_size=working_size
        )
        assert power.dtype == F64 and power.shape == (200, k)
        np.testing.assert_array_equal(iterations.numpy(), ref_iterations)
        np.testing.assert_allclose(
            power.numpy(), ref_power, rtol=1e-9, atol=1e-12 * problem.budget.max().item()
        )
        objective = sum_rate(problem, power).numpy()
        np.testing.assert_allclose(objective, ref_objective, rtol=1e-9)
        final = trace[iterations, torch.arange(200)].numpy()  # the trace ends at the solver's objective
        np.testing.assert_allclose(final, ref_objective, rtol=1e-9)
    # the fixture is not degenerate: samples switch users off, keep some at full power, and stop at
    # different iterations
    assert (ref_power < 1e-6 * problem.budget.numpy()).any()
    assert (ref_power == problem.budget.numpy()).any()
    assert len(np.unique(ref_iterations)) > 3


def test_solver_class_matches_function_and_registry():
    problem = gaussian_ic(50, 5, seed=3)
    solver = SOLVERS.build(OmegaConf.structured(WMMSE.Config(name="wmmse", tol=1e-6, max_iter=300)))
    assert isinstance(solver, WMMSE)
    assert WMMSE.gives_labels and WMMSE.objectives == ("sum_rate",)
    objective = SumRate(SumRate.Config(name="sum_rate"))
    torch.testing.assert_close(solver.solve(problem, objective), wmmse(problem, tol=1e-6, max_iter=300))


def test_float32_problem_is_solved_in_float64():
    problem = gaussian_ic(40, 6, seed=4)
    power32 = wmmse(problem.to(dtype=torch.float32))
    power64 = wmmse(problem.to(dtype=torch.float32).to(dtype=F64))
    assert power32.dtype == F64
    torch.testing.assert_close(power32, power64, rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------
# (a) the objective never decreases
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("weighted", [False, True])
def test_objective_never_decreases(weighted):
    problem = gaussian_ic(200, 10, seed=11, weighted=weighted)
    power, trace, iterations = wmmse(problem, tol=1e-5, max_iter=500, history=True)
    # block coordinate descent on (2): after each u, w update the WMSE equals Σ α (1 - log w), so the
    # weighted sum rate cannot decrease (up to rounding)
    steps = trace.diff(dim=0)
    finite = steps.isfinite()
    assert finite.sum() == (iterations).sum()  # one step per iteration of each sample, NaN after
    assert steps[finite].min() >= -1e-12 * trace.nan_to_num().abs().max()
    # and it does increase: the solution beats the starting point (full power) and the random baseline
    start = sum_rate(problem, problem.budget)
    assert (trace[0] - start).abs().max() < 1e-12 * start.max()
    final = sum_rate(problem, power)
    assert (final >= start - 1e-12).all() and (final > start + 1e-3).float().mean() > 0.9
    random = sum_rate(problem, RandomPower(None).solve(problem, None, torch.Generator().manual_seed(0)))
    assert final.mean() > 1.2 * random.mean()


# ---------------------------------------------------------------------------------------------
# (c) first-order stationarity (KKT) of the output
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("weighted", [False, True])
def test_output_is_stationary(weighted):
    # Run to convergence. The partial derivatives of the interior powers vanish only sublinearly in
    # the objective's gains: tol = 1e-10 leaves them up to ~5e-4 (relative), tol = 1e-12 below ~5e-6.
    problem = gaussian_ic(200, 10, seed=22, weighted=weighted)
    power = wmmse(problem, tol=1e-12, max_iter=50_000)
    p = power.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(sum_rate(problem, p).sum(), p)
    # the gradient w.r.t. the normalized power x = p / p_max ∈ [0, 1], relative to its largest entry
    # in the sample
    g = grad * problem.budget
    g = g / g.abs().amax(dim=1, keepdim=True)
    x = power / problem.budget
    upper, lower = x == 1, x <= 1e-6
    interior = ~upper & ~lower
    assert upper.sum() > 100 and lower.sum() > 100 and interior.any()
    # at p_max, less power must not help: ∂R/∂x_k >= 0 (observed >= 2e-4)
    assert g[upper].min() >= -1e-6
    # strictly inside, the partial derivative vanishes (observed <= 7e-7)
    assert g[interior].abs().max() <= 1e-3
    # at (numerically) zero power, more power must not help: ∂R/∂x_k <= 0. WMMSE reaches this only
    # in the limit: v_k = 0 is a fixed point of step 7, and a user whose power collapsed to ~0 early
    # climbs back by a small factor per iteration with objective gains far below tol, so a rare one
    # stops with ∂R/∂x_k > 0 (about 1 in 1,400 near-zero powers of these fixtures)
    assert (g[lower] <= 1e-3).float().mean() >= 0.99


# ---------------------------------------------------------------------------------------------
# (d) converged samples stop early and leave the working batch
# ---------------------------------------------------------------------------------------------
def test_converged_samples_stop_early_and_leave_the_batch(monkeypatch):
    problem = gaussian_ic(200, 10, seed=31)
    rows_per_product = []  # rows of every batched matrix product: one per step 2/7/8 evaluation
    baddbmm = torch.baddbmm

    def counting_baddbmm(input, batch1, batch2, *args, **kwargs):
        rows_per_product.append(batch1.shape[0])
        return baddbmm(input, batch1, batch2, *args, **kwargs)

    monkeypatch.setattr(torch, "baddbmm", counting_baddbmm)
    power, trace, iterations = wmmse(problem, tol=1e-5, max_iter=500, history=True, working_size=200)
    monkeypatch.undo()

    assert len(np.unique(iterations.numpy())) > 10
    assert (iterations < 500).float().mean() >= 0.95
    assert iterations.min() < 10 < iterations.max()
    # the trace is NaN after each sample's last iteration
    after = torch.arange(trace.shape[0])[:, None] > iterations[None, :]
    assert trace[after].isnan().all() and trace[~after].isfinite().all()
    # step 2 once, then steps 7 and 8 in every iteration, over the rows still in the working batch:
    # it shrinks as samples stop, and the total work is about the sum of the per-sample iterations
    rows_per_product = [rows for rows in rows_per_product if rows > 0]  # (no sample joining)
    assert len(rows_per_product) == 1 + 2 * int(iterations.max())
    assert rows_per_product[0] == 200 and rows_per_product == sorted(rows_per_product, reverse=True)
    assert rows_per_product[-1] < 20
    assert sum(rows_per_product[1::2]) < 1.5 * iterations.sum()
    # with a smaller working batch, samples wait and join as others stop: same results
    again, _, iterations_again = wmmse(problem, tol=1e-5, max_iter=500, history=True, working_size=16)
    torch.testing.assert_close(again, power, rtol=1e-12, atol=0)
    assert torch.equal(iterations_again, iterations)


# ---------------------------------------------------------------------------------------------
# the paper's numbers and the input checks
# ---------------------------------------------------------------------------------------------
def test_reproduces_sun2018_table1_sum_rate():
    # Table I, Gaussian IC, K = 10, P_max = σ² = 1: WMMSE averages 2.817 bit/s/Hz over 10,000
    # samples; 2,000 samples have a standard error of ~0.015
    problem = gaussian_ic(2000, 10, seed=41)
    assert abs(sum_rate(problem, wmmse(problem)).mean().item() - 2.817) < 0.1


def test_rejects_problems_that_are_not_a_scalar_interference_channel():
    grouped = grouped_problem(4)
    with pytest.raises(ValueError, match="budget"):
        wmmse(grouped)
    problem = gaussian_ic(4, 3, seed=0)
    cross = dataclasses.replace(problem, signal_gain=problem.signal_gain + 0.1)
    with pytest.raises(ValueError, match="diagonal"):
        wmmse(cross)
    with pytest.raises(ValueError, match="tol"):
        wmmse(problem, tol=0.0)


# ---------------------------------------------------------------------------------------------
# (e) config validation
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"tol": 0.0}, "tol"),
        ({"tol": -1e-5}, "tol"),
        ({"max_iter": 0}, "max_iter"),
        ({"max_iter": -5}, "max_iter"),
    ],
)
def test_config_rejects_bad_values(overrides, key):
    with pytest.raises(ConfigError) as info:
        WMMSE.Config(name="wmmse", **overrides)
    assert info.value.key == key
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------------------------------------
# (f) baselines
# ---------------------------------------------------------------------------------------------
def grouped_problem(batch: int) -> PowerControlProblem:
    """Four variables in two budget groups {0, 1}, {2, 3}, budgets [batch, 2]."""
    gen = torch.Generator().manual_seed(5)
    gains = torch.rand(batch, 4, 4, generator=gen, dtype=F64)
    eye = torch.eye(4, dtype=torch.bool)
    return PowerControlProblem(
        signal_gain=gains * eye,
        interference_gain=gains.masked_fill(eye, 0),
        noise=torch.ones(batch, 4, dtype=F64),
        group=torch.tensor([0, 0, 1, 1]),
        budget=0.5 + torch.rand(batch, 2, generator=gen, dtype=F64),
        weights=torch.ones(batch, 4, dtype=F64),
    )


def test_max_power_is_p_max():
    problem = gaussian_ic(30, 5, seed=6, weighted=True)
    power = MaxPower(MaxPower.Config(name="max_power")).solve(problem, None)
    torch.testing.assert_close(power, problem.budget, rtol=0, atol=0)
    assert (problem.constraint_violation(power) == 0).all()
    assert not MaxPower.gives_labels and MaxPower.objectives is None


def test_random_is_uniform_within_budget_and_seeded():
    problem = gaussian_ic(500, 5, seed=7, weighted=True)
    solver = RandomPower(RandomPower.Config(name="random"))
    power = solver.solve(problem, None, torch.Generator().manual_seed(1))
    again = solver.solve(problem, None, torch.Generator().manual_seed(1))
    other = solver.solve(problem, None, torch.Generator().manual_seed(2))
    assert power.shape == problem.budget.shape and power.dtype == problem.dtype
    assert (power >= 0).all() and (power <= problem.budget).all()
    assert (problem.constraint_violation(power) == 0).all()
    torch.testing.assert_close(power, again, rtol=0, atol=0)
    assert (power != other).float().mean() > 0.99
    # uniform on [0, p_max]: the fractions have mean 1/2 and variance 1/12
    fraction = power / problem.budget
    assert abs(fraction.mean().item() - 0.5) < 0.02 and abs(fraction.var().item() - 1 / 12) < 0.01
    assert not RandomPower.gives_labels and RandomPower.objectives is None


def test_baselines_are_feasible_with_group_budgets():
    problem = grouped_problem(100)
    full = MaxPower(MaxPower.Config(name="max_power")).solve(problem, None)
    # each group spends its budget, split evenly
    torch.testing.assert_close(problem.group_power(full), problem.budget)
    torch.testing.assert_close(full[:, 0], full[:, 1])
    random = RandomPower(RandomPower.Config(name="random")).solve(
        problem, None, torch.Generator().manual_seed(3)
    )
    for power in (full, random):
        assert (problem.constraint_violation(power) <= 1e-12).all()
        assert (power >= 0).all()
    assert (problem.group_power(random) < problem.budget).all()
