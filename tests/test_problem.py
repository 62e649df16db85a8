"""PowerControlProblem and SumRate: values against per-sample Python loops written here, gradients
against finite differences and the closed form, and the budget helpers against their definitions."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from mimo_l2o.objectives.sum_rate import SumRate
from mimo_l2o.problems.power_control import PowerControlProblem
from mimo_l2o.registry import OBJECTIVES

F64 = torch.float64
LN2 = math.log(2)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def uniform(shape, seed: int, low: float = 0.0, high: float = 1.0, dtype=F64) -> torch.Tensor:
    return low + (high - low) * torch.rand(shape, generator=gen(seed), dtype=dtype)


def ic_instance(batch: int, k: int, seed: int):
    """Random gains (Exp(1)-like spread), per-user noise, powers and weights, float64."""
    gains = -torch.log(uniform((batch, k, k), seed, 1e-3, 1.0))  # Exp(1) truncated, > 0
    noise = uniform((k,), seed + 1, 0.2, 2.0)
    p = uniform((batch, k), seed + 2, 0.0, 1.5)
    weights = uniform((batch, k), seed + 3, 0.3, 2.0)
    return gains, noise, p, weights


def ic_sinr_loop(gains, noise, p) -> list[list[float]]:
    """|h_kk|² p_k / (Σ_{j≠k} |h_kj|² p_j + σ_k²), one sample and one user at a time."""
    batch, k, _ = gains.shape
    out = []
    for b in range(batch):
        row = []
        for u in range(k):
            interference = sum(float(gains[b, u, j]) * float(p[b, j]) for j in range(k) if j != u)
            row.append(float(gains[b, u, u]) * float(p[b, u]) / (interference + float(noise[u])))
        out.append(row)
    return out


def general_instance(batch: int, seed: int, group: list[int]):
    """3 users with 2 power variables each (variable v serves user v // 2), cell-free-like: every
    variable leaks into every other user's interference, and a user's own variables add to its
    interference too (non-coherent part of the beamforming gain)."""
    users, num_vars = 3, 6
    owner = torch.arange(num_vars) // 2
    own = owner[None, :] == torch.arange(users)[:, None]  # [users, vars]
    signal = uniform((batch, users, num_vars), seed, 0.5, 3.0) * own
    interference = uniform((batch, users, num_vars), seed + 1, 0.0, 0.8)
    noise = uniform((batch, users), seed + 2, 0.1, 1.0)
    num_groups = max(group) + 1
    budget = uniform((batch, num_groups), seed + 3, 0.5, 2.0)
    weights = uniform((batch, users), seed + 4, 0.5, 1.5)
    problem = PowerControlProblem(
        signal_gain=signal,
        interference_gain=interference,
        noise=noise,
        group=torch.tensor(group),
        budget=budget,
        weights=weights,
        prelog=0.75,
    )
    p = uniform((batch, num_vars), seed + 5, 0.0, 1.0)
    return problem, p


def general_sinr_loop(problem: PowerControlProblem, p) -> list[list[float]]:
    out = []
    for b in range(problem.batch_size):
        row = []
        for u in range(problem.num_users):
            s = sum(float(problem.signal_gain[b, u, v]) * float(p[b, v]) for v in range(problem.num_vars))
            i = sum(
                float(problem.interference_gain[b, u, v]) * float(p[b, v]) for v in range(problem.num_vars)
            )
            row.append(s / (i + float(problem.noise[b, u])))
        out.append(row)
    return out


def sum_rate_loop(sinr: list[list[float]], weights, prelog: float = 1.0) -> list[float]:
    return [
        sum(float(weights[b, u]) * prelog * math.log2(1 + s) for u, s in enumerate(row))
        for b, row in enumerate(sinr)
    ]


def assert_rel(actual: torch.Tensor, expected, rel: float) -> None:
    expected = torch.tensor(expected, dtype=F64)
    assert actual.shape == expected.shape
    err = ((actual.to(F64) - expected).abs() / expected.abs().clamp_min(1e-300)).max().item()
    assert err <= rel, err


# ---------------------------------------------------------------------------------------------
# (a) interference channel SINR
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("batch,k,seed", [(7, 1, 0), (11, 3, 1), (5, 8, 2)])
def test_interference_channel_sinr_matches_loop(batch, k, seed):
    gains, noise, p, _ = ic_instance(batch, k, seed)
    problem = PowerControlProblem.interference_channel(gains, noise, p_max=1.5)
    assert (problem.batch_size, problem.num_users, problem.num_vars, problem.num_groups) == (batch, k, k, k)
    sinr = problem.sinr(p)
    assert sinr.dtype == F64
    assert_rel(sinr, ic_sinr_loop(gains, noise, p), 1e-12)


def test_interference_channel_fields():
    gains, _, _, weights = ic_instance(4, 3, 5)
    problem = PowerControlProblem.interference_channel(gains, 0.5, p_max=2.0)
    eye = torch.eye(3, dtype=torch.bool)
    # the direct gains are the signal, the cross gains the interference: together the gains
    assert torch.equal(problem.signal_gain + problem.interference_gain, gains)
    assert torch.equal(problem.signal_gain[:, ~eye], torch.zeros(4, 6, dtype=F64))
    assert torch.equal(problem.interference_gain[:, eye], torch.zeros(4, 3, dtype=F64))
    assert torch.equal(problem.noise, torch.full((4, 3), 0.5, dtype=F64))
    assert torch.equal(problem.budget, torch.full((4, 3), 2.0, dtype=F64))
    assert torch.equal(problem.weights, torch.ones(4, 3, dtype=F64))
    assert torch.equal(problem.group, torch.arange(3))
    assert problem.prelog == 1.0
    weighted = PowerControlProblem.interference_channel(gains, 0.5, 2.0, weights=weights)
    assert torch.equal(weighted.weights, weights)
    with pytest.raises(ValueError, match="K, K"):
        PowerControlProblem.interference_channel(torch.ones(2, 3, 4, dtype=F64), 1.0, 1.0)


def test_zero_power_gives_zero_sinr_and_only_own_power_gives_snr():
    gains, noise, _, _ = ic_instance(3, 4, 9)
    problem = PowerControlProblem.interference_channel(gains, noise, 1.0)
    assert torch.equal(problem.sinr(torch.zeros(3, 4, dtype=F64)), torch.zeros(3, 4, dtype=F64))
    p = torch.zeros(3, 4, dtype=F64)
    p[:, 2] = 0.7
    expected = torch.zeros(3, 4, dtype=F64)
    expected[:, 2] = gains[:, 2, 2] * 0.7 / noise[2]  # no interference: the SNR
    torch.testing.assert_close(problem.sinr(p), expected, rtol=1e-14, atol=0)


# ---------------------------------------------------------------------------------------------
# (b) sum rate
# ---------------------------------------------------------------------------------------------
def test_sum_rate_registered():
    assert OBJECTIVES.get("sum_rate") is SumRate


@pytest.mark.parametrize("batch,k,seed", [(6, 2, 10), (9, 5, 11)])
def test_sum_rate_matches_loop_with_random_weights(batch, k, seed):
    gains, noise, p, weights = ic_instance(batch, k, seed)
    problem = PowerControlProblem.interference_channel(gains, noise, 1.5, weights=weights)
    objective = SumRate(SumRate.Config(name="sum_rate"))
    value = objective(problem, p)
    assert value.shape == (batch,) and value.dtype == F64
    expected = sum_rate_loop(ic_sinr_loop(gains, noise, p), weights)
    assert_rel(value, expected, 1e-12)
    # per-user rates, unweighted
    rates = problem.rates(p)
    sinr = ic_sinr_loop(gains, noise, p)
    assert_rel(rates, [[math.log2(1 + s) for s in row] for row in sinr], 1e-12)


def test_sum_rate_float32_and_float64():
    gains, noise, p, weights = ic_instance(8, 4, 20)
    problem = PowerControlProblem.interference_channel(gains, noise, 1.5, weights=weights)
    objective = SumRate(SumRate.Config(name="sum_rate"))
    expected = sum_rate_loop(ic_sinr_loop(gains, noise, p), weights)
    v64 = objective(problem, p)
    v32 = objective(problem.to(dtype=torch.float32), p.float())
    assert v64.dtype == F64 and v32.dtype == torch.float32
    assert_rel(v64, expected, 1e-12)
    assert_rel(v32, expected, 1e-5)


def test_sum_rate_prelog_and_weights_scale_linearly():
    problem, p = general_instance(5, 30, [0, 0, 1, 1, 2, 2])
    objective = SumRate(SumRate.Config(name="sum_rate"))
    base = objective(problem, p)
    expected = sum_rate_loop(general_sinr_loop(problem, p), problem.weights, prelog=0.75)
    assert_rel(base, expected, 1e-12)
    doubled = dataclasses.replace(problem, prelog=1.5, weights=problem.weights * 2)
    torch.testing.assert_close(objective(doubled, p), 4 * base, rtol=1e-14, atol=0)


# ---------------------------------------------------------------------------------------------
# (c) gradient
# ---------------------------------------------------------------------------------------------
def ic_gradient_closed_form(gains, noise, p, weights) -> torch.Tensor:
    """∂/∂p_j Σ_k α_k log2(1 + SINR_k) = 1/ln 2 · Σ_k α_k (g_kj / T_k − [j≠k] g_kj / (I_k + σ_k²)),
    with T_k = Σ_j g_kj p_j + σ_k² (all received power) and I_k = Σ_{j≠k} g_kj p_j."""
    batch, k, _ = gains.shape
    grad = torch.zeros(batch, k, dtype=F64)
    for b in range(batch):
        for j in range(k):
            total = 0.0
            for u in range(k):
                interference = sum(float(gains[b, u, i] * p[b, i]) for i in range(k) if i != u)
                received = interference + float(gains[b, u, u] * p[b, u]) + float(noise[u])
                term = float(gains[b, u, j]) / received
                if j != u:
                    term -= float(gains[b, u, j]) / (interference + float(noise[u]))
                total += float(weights[b, u]) * term
            grad[b, j] = total / LN2
    return grad


def test_sum_rate_gradient_matches_finite_differences_and_closed_form():
    gains, noise, p, weights = ic_instance(4, 4, 40)
    p = p + 0.1  # away from zero, so the central differences stay inside p >= 0
    problem = PowerControlProblem.interference_channel(gains, noise, 2.0, weights=weights)
    objective = SumRate(SumRate.Config(name="sum_rate"))
    x = p.clone().requires_grad_(True)
    objective(problem, x).sum().backward()
    grad = x.grad
    # central finite differences, one coordinate at a time (samples are independent)
    eps = 1e-6
    fd = torch.zeros_like(p)
    for j in range(p.shape[1]):
        step = torch.zeros_like(p)
        step[:, j] = eps
        fd[:, j] = (objective(problem, p + step) - objective(problem, p - step)) / (2 * eps)
    torch.testing.assert_close(grad, fd, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(
        grad, ic_gradient_closed_form(gains, noise, p, weights), rtol=1e-10, atol=1e-13
    )
    # at p = 0 the interference terms cancel: ∂/∂p_j = α_j |h_jj|² / (σ_j² ln 2)
    zero = torch.zeros_like(p, requires_grad=True)
    objective(problem, zero).sum().backward()
    expected = weights * gains.diagonal(dim1=1, dim2=2) / (noise * LN2)
    torch.testing.assert_close(zero.grad, expected, rtol=1e-14, atol=0)


def test_general_problem_gradient_matches_closed_form():
    problem, p = general_instance(3, 50, [0, 1, 0, 1, 0, 1])
    p = p + 0.05
    objective = SumRate(SumRate.Config(name="sum_rate"))
    x = p.clone().requires_grad_(True)
    objective(problem, x).sum().backward()
    s, i, n, a = problem.signal_gain, problem.interference_gain, problem.noise, problem.weights
    expected = torch.zeros_like(p)
    for b in range(problem.batch_size):
        for v in range(problem.num_vars):
            total = 0.0
            for u in range(problem.num_users):
                sig = sum(float(s[b, u, w] * p[b, w]) for w in range(problem.num_vars))
                intf = sum(float(i[b, u, w] * p[b, w]) for w in range(problem.num_vars)) + float(n[b, u])
                # log(1 + S/I') = log(S + I') − log(I')
                total += float(a[b, u]) * (
                    float(s[b, u, v] + i[b, u, v]) / (sig + intf) - float(i[b, u, v]) / intf
                )
            expected[b, v] = problem.prelog * total / LN2
    torch.testing.assert_close(x.grad, expected, rtol=1e-10, atol=1e-13)


# ---------------------------------------------------------------------------------------------
# (d) general problem: non-diagonal signal, several variables per user
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("group", [[0, 0, 1, 1, 2, 2], [0, 1, 0, 1, 0, 1]], ids=["per-user", "per-AP"])
def test_general_problem_sinr_matches_loop(group):
    problem, p = general_instance(6, 60, group)
    assert (problem.num_users, problem.num_vars, problem.num_groups) == (3, 6, max(group) + 1)
    assert_rel(problem.sinr(p), general_sinr_loop(problem, p), 1e-12)
    objective = SumRate(SumRate.Config(name="sum_rate"))
    expected = sum_rate_loop(general_sinr_loop(problem, p), problem.weights, prelog=0.75)
    assert_rel(objective(problem, p), expected, 1e-12)


# ---------------------------------------------------------------------------------------------
# (e) budgets and batch plumbing
# ---------------------------------------------------------------------------------------------
GROUP = [0, 2, 0, 1, 2, 0]  # unequal groups (3, 1, 2 variables), not contiguous


def budget_problem(batch: int = 5, seed: int = 70) -> PowerControlProblem:
    problem, _ = general_instance(batch, seed, GROUP)
    return problem


def group_power_loop(problem, p) -> torch.Tensor:
    out = torch.zeros(p.shape[0], problem.num_groups, dtype=p.dtype)
    for b in range(p.shape[0]):
        for v, g in enumerate(GROUP):
            out[b, g] += p[b, v]
    return out


def test_group_power():
    problem = budget_problem()
    p = uniform((5, 6), 71, -0.5, 1.0)
    torch.testing.assert_close(problem.group_power(p), group_power_loop(problem, p), rtol=1e-15, atol=1e-15)


def test_constraint_violation():
    problem = budget_problem()
    p = uniform((5, 6), 72, 0.0, 1.0) * 0.01  # well inside every budget (>= 0.5)
    assert torch.equal(problem.constraint_violation(p), torch.zeros(5, dtype=F64))
    # sample 1: group 0 over budget by 0.3; sample 2: a negative power -0.4; sample 3: both,
    # the larger counts; sample 4: exactly on the budget is feasible
    p = p.clone()
    p[1, 0] += problem.budget[1, 0] - group_power_loop(problem, p)[1, 0] + 0.3
    p[2, 3] = -0.4
    p[3, 1] += problem.budget[3, 2] - group_power_loop(problem, p)[3, 2] + 0.7
    p[3, 5] = -0.2
    p[4, 3] = problem.budget[4, 1]
    violation = problem.constraint_violation(p)
    expected = torch.zeros(5, dtype=F64)
    for b in range(5):
        excess = (group_power_loop(problem, p)[b] - problem.budget[b]).clamp_min(0).max()
        expected[b] = max(float(excess), float((-p[b]).clamp_min(0).max()))
    torch.testing.assert_close(violation, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(violation, torch.tensor([0, 0.3, 0.4, 0.7, 0], dtype=F64), rtol=0, atol=1e-12)


def test_full_power_splits_each_budget_evenly():
    problem = budget_problem()
    full = problem.full_power()
    count = [GROUP.count(g) for g in range(3)]
    expected = torch.stack([problem.budget[:, g] / count[g] for g in GROUP], dim=1)
    torch.testing.assert_close(full, expected, rtol=1e-15, atol=0)
    torch.testing.assert_close(problem.group_power(full), problem.budget, rtol=1e-14, atol=0)
    assert torch.equal(problem.constraint_violation(full) <= 1e-14, torch.ones(5, dtype=torch.bool))
    # the interference channel: every user at p_max
    ic = PowerControlProblem.interference_channel(torch.rand(2, 3, 3, dtype=F64), 1.0, 1.7)
    assert torch.equal(ic.full_power(), torch.full((2, 3), 1.7, dtype=F64))


def test_project_feasible_unchanged_and_infeasible_made_feasible():
    problem = budget_problem()
    inside = problem.full_power() * uniform((5, 6), 73, 0.0, 1.0)
    assert torch.equal(problem.project(inside), inside)
    assert torch.equal(problem.project(torch.zeros(5, 6, dtype=F64)), torch.zeros(5, 6, dtype=F64))
    wild = uniform((5, 6), 74, -2.0, 3.0)
    projected = problem.project(wild)
    assert (projected >= 0).all()
    assert (problem.group_power(projected) <= problem.budget * (1 + 1e-12)).all()
    assert (problem.constraint_violation(projected) <= 1e-12).all()
    # idempotent
    torch.testing.assert_close(problem.project(projected), projected, rtol=1e-14, atol=0)


@pytest.mark.parametrize("dtype,nearly_nothing", [(torch.float32, 1e-30), (F64, 1e-200), (F64, 0.0)])
def test_project_passes_the_identity_gradient_when_a_group_spends_nearly_nothing(dtype, nearly_nothing):
    """A group whose powers are all (nearly) 0, as a learner's softplus outputs become when it switches
    an AP off, is within its budget: the gradient is the identity, not 0 · inf = NaN (which dividing
    by the squared group sum gave, and which trained weights to NaN)."""
    problem = budget_problem().to(dtype=dtype)
    p = (problem.full_power() * 0.5).clone()
    p[:, [i for i, g in enumerate(GROUP) if g == 0]] = nearly_nothing
    p.requires_grad_(True)
    weight = uniform((5, 6), 75, 0.5, 1.5).to(dtype)
    (problem.project(p) * weight).sum().backward()
    inside = p.detach() > 0
    torch.testing.assert_close(p.grad[inside], weight[inside], rtol=0, atol=0)
    assert bool(p.grad.isfinite().all())


def test_project_single_over_budget_group_is_scaled_onto_budget():
    problem = budget_problem()
    p = problem.full_power() * 0.5  # every group at half its budget
    p[:, [0, 2, 5]] *= torch.tensor([4.0, 3.0, 5.0], dtype=F64)  # group 0 now at 2x its budget
    projected = problem.project(p)
    scale = problem.budget[:, 0] / group_power_loop(problem, p)[:, 0]
    expected = p.clone()
    expected[:, [0, 2, 5]] = p[:, [0, 2, 5]] * scale[:, None]
    torch.testing.assert_close(projected, expected, rtol=1e-14, atol=0)
    torch.testing.assert_close(problem.group_power(projected)[:, 0], problem.budget[:, 0], rtol=1e-14, atol=0)
    # the other groups are left exactly as they were
    assert torch.equal(projected[:, [1, 3, 4]], p[:, [1, 3, 4]])
    # negatives are clipped first: they neither count towards the budget nor survive
    q = p.clone()
    q[:, 2] = -10.0
    projected = problem.project(q)
    kept = [0, 5]
    scale = (problem.budget[:, 0] / q[:, kept].sum(1)).clamp(max=1)
    torch.testing.assert_close(projected[:, kept], q[:, kept] * scale[:, None], rtol=1e-14, atol=0)
    assert torch.equal(projected[:, 2], torch.zeros(5, dtype=F64))


def assert_problems_equal(a: PowerControlProblem, b: PowerControlProblem) -> None:
    for name in ("signal_gain", "interference_gain", "noise", "group", "budget", "weights"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype, name
        assert torch.equal(x, y), name
    assert a.prelog == b.prelog


def test_getitem_to_and_cat():
    problem = budget_problem(batch=7)
    p = uniform((7, 6), 75, 0.0, 1.0)
    # slice, index tensor and boolean mask pick the same samples from every batched field
    for index in (slice(2, 5), torch.tensor([6, 0, 3]), torch.tensor([True, False, True] + [False] * 4)):
        sub = problem[index]
        assert sub.batch_size == p[index].shape[0]
        assert torch.equal(sub.group, problem.group)  # shared, not indexed
        assert sub.prelog == problem.prelog
        assert torch.equal(sub.sinr(p[index]), problem.sinr(p)[index])
        for name in ("signal_gain", "interference_gain", "noise", "budget", "weights"):
            assert torch.equal(getattr(sub, name), getattr(problem, name)[index]), name
    # cat of the pieces is the whole
    assert_problems_equal(PowerControlProblem.cat([problem[:3], problem[3:4], problem[4:]]), problem)
    # dtype: floats converted, the group stays long; float32 and back loses only rounding
    p32 = problem.to(dtype=torch.float32)
    assert p32.dtype == torch.float32 and p32.group.dtype == torch.long
    for name in ("signal_gain", "interference_gain", "noise", "budget", "weights"):
        assert getattr(p32, name).dtype == torch.float32, name
        assert torch.equal(getattr(p32, name), getattr(problem, name).float()), name
    back = p32.to(dtype=F64)
    assert back.dtype == F64
    torch.testing.assert_close(back.signal_gain, problem.signal_gain, rtol=1e-7, atol=0)
    assert_problems_equal(problem.to(dtype=F64), problem)
    assert_problems_equal(problem.to("cpu"), problem)
    assert problem.to("cpu").device == torch.device("cpu")
