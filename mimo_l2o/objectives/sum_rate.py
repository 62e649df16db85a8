"""Weighted sum rate, Sun et al. (2018) eq. (1): Σ_u α_u · prelog · log2(1 + SINR_u)."""

from __future__ import annotations

from torch import Tensor

from mimo_l2o.components import Objective
from mimo_l2o.problem import PowerControlProblem
from mimo_l2o.registry import OBJECTIVES


def user_rates(problem: PowerControlProblem, p: Tensor) -> Tensor:
    """Rate of each user in bit/s/Hz, ``prelog · log2(1 + SINR_u)``: ``[batch, num_users]``."""
    return problem.prelog * problem.sinr(p).log1p() / 0.6931471805599453


@OBJECTIVES.register("sum_rate")
class SumRate(Objective):
    """Weighted sum rate in bit/s/Hz, per sample ``[batch]``; float32 or float64, differentiable."""

    label = "sum rate [bit/s/Hz]"

    def __call__(self, problem: PowerControlProblem, decision: Tensor) -> Tensor:
        return (problem.weights.to(decision) * user_rates(problem, decision)).sum(dim=1)

    def per_user(self, problem: PowerControlProblem, decision: Tensor) -> Tensor:
        return user_rates(problem, decision)
