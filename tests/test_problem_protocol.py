"""The problem protocol, one set of tests for every family: ``project`` makes any decision feasible and
leaves feasible ones alone, ``constraint_violation`` is the largest excess over a budget, sub-batches,
``to``, ``cat`` and the cache's round trip keep every tensor, the feasibility module equals
``project``; and the beamforming family's SINRs against a loop over the users."""

from __future__ import annotations

import math

import pytest
import torch

from mimo_l2o.cache import Cache
from mimo_l2o.objectives.sum_rate import SumRate
from mimo_l2o.problems import FAMILIES, BeamformingProblem, PowerControlProblem, Problem
from mimo_l2o.problems.base import BatchedProblem


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def power_control(batch: int = 6) -> PowerControlProblem:
    """Two budget groups of three variables, one variable per user, random gains and budgets."""
    g = gen(0)
    v = 6
    return PowerControlProblem(
        signal_gain=torch.diag_embed(torch.rand(batch, v, generator=g, dtype=torch.float64) + 0.5),
        interference_gain=0.1 * torch.rand(batch, v, v, generator=g, dtype=torch.float64),
        noise=torch.full((batch, v), 0.1, dtype=torch.float64),
        group=torch.tensor([0, 0, 0, 1, 1, 1]),
        budget=1 + torch.rand(batch, 2, generator=g, dtype=torch.float64),
        weights=torch.ones(batch, v, dtype=torch.float64),
    )


def beamforming(batch: int = 6, cells: int = 2, antennas: int = 3, per_cell: int = 2) -> BeamformingProblem:
    g = gen(1)
    users = cells * per_cell
    h = torch.randn(batch, cells, users, antennas, generator=g, dtype=torch.complex128)
    return BeamformingProblem(
        channel=h,
        noise=0.5 + torch.rand(batch, users, generator=g, dtype=torch.float64),
        budget=1 + torch.rand(batch, cells, generator=g, dtype=torch.float64),
        weights=torch.ones(batch, users, dtype=torch.float64),
    )


def random_decision(problem: Problem, scale: float, seed: int) -> torch.Tensor:
    """A decision of the problem's shape and dtype, of magnitude ``scale`` (negative powers included)."""
    shape = (len(problem), *problem.decision_shape)
    x = torch.randn(shape, generator=gen(seed), dtype=problem.decision_dtype)
    return scale * x


FACTORIES = {"power_control": power_control, "beamforming": beamforming}


@pytest.fixture(params=sorted(FACTORIES))
def problem(request) -> Problem:
    return FACTORIES[request.param]()


def test_every_family_is_tested_and_speaks_the_protocol():
    assert sorted(FAMILIES) == sorted(FACTORIES)
    for name, factory in FACTORIES.items():
        made = factory()
        assert isinstance(made, Problem) and isinstance(made, BatchedProblem)
        assert made.family == name and FAMILIES[name] is type(made)


def test_decision_dtype_follows_the_precision(problem):
    assert problem.dtype == torch.float64
    assert problem.to(dtype=torch.float32).dtype == torch.float32
    single = problem.to(dtype=torch.float32).decision_dtype
    expected = torch.complex64 if problem.family == "beamforming" else torch.float32
    assert single == expected and problem.decision_dtype == (
        torch.complex128 if problem.family == "beamforming" else torch.float64
    )


def test_project_makes_any_decision_feasible_and_keeps_feasible_ones(problem):
    for scale in (0.01, 1.0, 100.0):
        x = random_decision(problem, scale, seed=int(scale * 100))
        p = problem.project(x)
        assert p.shape == x.shape and p.dtype == x.dtype
        assert float(problem.constraint_violation(p).max()) <= 1e-12
        again = problem.project(p)
        torch.testing.assert_close(again, p, rtol=1e-12, atol=1e-15)


def test_constraint_violation_is_the_largest_excess_over_a_budget(problem):
    x = random_decision(problem, 3.0, seed=7)
    violation = problem.constraint_violation(x)
    assert violation.shape == (len(problem),)
    for b in range(len(problem)):
        if problem.family == "power_control":
            over = [
                float(x[b][problem.group == g].sum() - problem.budget[b, g])
                for g in range(problem.num_groups)
            ]
            under = [float(-v) for v in x[b]]
            expected = max(0.0, *over, *under)
        else:
            power = [float((x[b, c].abs() ** 2).sum()) for c in range(problem.num_cells)]
            expected = max(0.0, *(pw - float(problem.budget[b, c]) for c, pw in enumerate(power)))
        assert float(violation[b]) == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_feasibility_module_is_the_projection_onto_the_first_samples_budgets(problem):
    same = problem[:1].to(dtype=torch.float32)
    module = same.feasibility()
    x = random_decision(same, 2.0, seed=3)
    torch.testing.assert_close(module(x), same.project(x), rtol=1e-6, atol=1e-7)


def test_slicing_to_cat_and_the_cache_round_trip_keep_every_tensor(problem, tmp_path):
    part = problem[2:5]
    assert len(part) == 3 and part.decision_shape == problem.decision_shape
    mask = torch.tensor([True, False, True, False, False, True])
    for name, t in problem.batched_tensors().items():
        assert torch.equal(getattr(part, name), t[2:5]), name
        assert torch.equal(getattr(problem[mask], name), t[mask]), name
    joined = type(problem).cat([problem[:2], problem[2:]])
    single = problem.to(dtype=torch.float32)
    for name, t in problem.batched_tensors().items():
        assert torch.equal(getattr(joined, name), t), name
        assert getattr(single, name).dtype == (torch.complex64 if t.is_complex() else torch.float32)
    # what the data stage caches: the batched tensors, put back into the structure of a template
    value, _ = Cache(tmp_path).get_or_compute("problems", {"t": problem.family}, problem.batched_tensors)
    value, _ = Cache(tmp_path).get_or_compute("problems", {"t": problem.family}, lambda: None)
    back = problem[:1].with_batched_tensors(value)
    x = problem.project(random_decision(problem, 1.0, seed=5))
    torch.testing.assert_close(back.rates(x), problem.rates(x), rtol=0, atol=0)
    torch.testing.assert_close(back.project(x), problem.project(x), rtol=0, atol=0)


def test_beamforming_sinr_against_a_loop_over_the_users():
    problem = beamforming(batch=3, cells=2, antennas=3, per_cell=2)
    W = random_decision(problem, 1.0, seed=9)
    sinr = problem.sinr(W)
    k = problem.users_per_cell
    for b in range(3):
        for u in range(problem.num_users):
            c, ku = divmod(u, k)
            signal = abs(torch.vdot(problem.channel[b, c, u], W[b, c, :, ku])) ** 2
            interference = sum(
                abs(torch.vdot(problem.channel[b, cv, u], W[b, cv, :, kv])) ** 2
                for cv in range(problem.num_cells)
                for kv in range(k)
                if (cv, kv) != (c, ku)
            )
            expected = float(signal / (interference + problem.noise[b, u]))
            assert float(sinr[b, u]) == pytest.approx(expected, rel=1e-10)
    rates = problem.rates(W)
    torch.testing.assert_close(rates, torch.log2(1 + sinr))
    # the sum rate is written once: the same objective on both families
    torch.testing.assert_close(SumRate(None)(problem, W), rates.sum(1))


def test_beamforming_projection_scales_each_bs_onto_its_budget():
    problem = beamforming(batch=4)
    W = random_decision(problem, 10.0, seed=2)
    p = problem.project(W)
    power = problem.bs_power(p)
    over = problem.bs_power(W) > problem.budget
    torch.testing.assert_close(power[over], problem.budget[over])
    # a common scale per BS: the directions, and so the SINRs without noise, are kept
    ratio = p / W
    for b in range(4):
        for c in range(problem.num_cells):
            r = ratio[b, c].flatten()
            torch.testing.assert_close(r, r[:1].expand_as(r))
            assert math.isclose(float(r[0].imag), 0.0, abs_tol=1e-12)
