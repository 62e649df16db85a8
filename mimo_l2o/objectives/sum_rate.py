"""Weighted sum rate, Sun et al. (2018) eq. (1): Σ_u α_u · prelog · log2(1 + SINR_u), written once for
every family whose problems have per-user rates (power control; beamforming, Zhang et al. 2022, eq. 3)."""

from __future__ import annotations

from torch import Tensor

from mimo_l2o.components import Objective
from mimo_l2o.problems import BEAMFORMING, POWER_CONTROL, Problem
from mimo_l2o.registry import OBJECTIVES


@OBJECTIVES.register("sum_rate")
class SumRate(Objective):
    """Weighted sum rate in bit/s/Hz, per sample ``[batch]``; float32 or float64, differentiable."""

    label = "sum rate [bit/s/Hz]"
    families = (POWER_CONTROL, BEAMFORMING)

    def __call__(self, problem: Problem, decision: Tensor) -> Tensor:
        rates = problem.rates(decision)
        return (problem.weights.to(rates) * rates).sum(dim=1)
