"""Sum energy efficiency of Raghunath, Peng & Jorswieck (2023), eq. (1)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import Tensor

from mimo_l2o.components import Objective, ObjectiveConfig
from mimo_l2o.errors import require
from mimo_l2o.problems.power_control import PowerControlProblem
from mimo_l2o.registry import OBJECTIVES


@dataclass
class EnergyEfficiencyConfig(ObjectiveConfig):
    """Parameters
    ----------
    name : str
        Registry key, ``energy_efficiency``.
    bandwidth : float
        Bandwidth ``B`` in Hz. The paper states none; 751,245 Hz makes SCA's mean energy efficiency on
        ``scenario=cellfree``'s test set (5 APs x 10 UEs, 512 samples) Table II's 4.79 Mbit/J, by
        construction (1.084 MHz if eq. (1)'s ``log`` is natural). ``B`` scales the objective and leaves its
        maximizer unchanged, so it sets the absolute numbers only, never a ratio.
    pa_inefficiency : float
        ``μ``: power drawn per watt transmitted (the paper: 1).
    circuit_power : float
        ``P_c``: static power in W in every UE's denominator (the paper: 4 W).
    """

    name: str = "energy_efficiency"
    bandwidth: float = 751245.0
    pa_inefficiency: float = 1.0
    circuit_power: float = 4.0

    def __post_init__(self) -> None:
        require(0 < self.bandwidth < math.inf, "bandwidth", f"must be > 0 and finite, got {self.bandwidth}")
        require(
            0 < self.pa_inefficiency < math.inf,
            "pa_inefficiency",
            f"must be > 0 and finite, got {self.pa_inefficiency}",
        )
        require(
            0 < self.circuit_power < math.inf,
            "circuit_power",
            f"must be > 0 and finite, got {self.circuit_power}",
        )


@OBJECTIVES.register("energy_efficiency")
class EnergyEfficiency(Objective):
    """``Σ_k B · log2(1 + SINR_k) / (μ · Σ_l p_kl + P_c)`` in Mbit/J, per sample ``[batch]`` (eq. 1): the
    sum over UEs of each UE's rate over the power spent on it (``problem.user_power``) plus the static
    power. Unweighted; float32 or float64, differentiable."""

    Config = EnergyEfficiencyConfig
    label = "energy efficiency [Mbit/J]"

    def __call__(self, problem: PowerControlProblem, decision: Tensor) -> Tensor:
        cfg = self.config
        rate = cfg.bandwidth * 1e-6 * problem.rates(decision)  # Mbit/s
        spent = cfg.pa_inefficiency * problem.user_power(decision) + cfg.circuit_power
        return (rate / spent).sum(dim=1)
