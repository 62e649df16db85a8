"""Weighted sum rate, Sun et al. (2018) eq. (1): Σ_u α_u · prelog · log2(1 + SINR_u)."""

from __future__ import annotations

from torch import Tensor

from mimo_l2o.components import Objective
from mimo_l2o.problem import PowerControlProblem
from mimo_l2o.registry import OBJECTIVES


@OBJECTIVES.register("sum_rate")
class SumRate(Objective):
    """Weighted sum rate in bit/s/Hz, per sample ``[batch]``; float32 or float64, differentiable."""

    label = "sum rate [bit/s/Hz]"

    def __call__(self, problem: PowerControlProblem, decision: Tensor) -> Tensor:
        return (problem.weights.to(decision) * problem.rates(decision)).sum(dim=1)
