"""Heuristic baselines of Sun et al. (2018) Section V: maximum power and random power.

Both ignore the objective and give no training labels. For the scalar interference channel they
are the paper's ``p_k = P_max`` and ``p_k ~ Uniform(0, P_max)``; with budget groups of several
variables (a cell's or an AP's sum power) the budget is split evenly over the group's variables,
which keeps both feasible.
"""

from __future__ import annotations

import torch
from torch import Tensor

from mimo_l2o.components import Objective, Solver
from mimo_l2o.problems.power_control import PowerControlProblem
from mimo_l2o.registry import SOLVERS


@SOLVERS.register("max_power")
class MaxPower(Solver):
    """Every budget group spends its whole budget, split evenly over its variables.

    ``p_k = P_max`` for the interference channel (one budget per user).
    """

    display_name = "Max power"

    gives_labels = False
    objectives = None

    def solve(
        self, problem: PowerControlProblem, objective: Objective | None = None, generator=None
    ) -> Tensor:
        """Powers ``[batch, num_vars]`` in the problem's dtype and device (``problem.full_power()``)."""
        return problem.full_power().to(problem.signal_gain)


@SOLVERS.register("random")
class RandomPower(Solver):
    """Independent uniform powers: ``p_v = u_v · full_power_v`` with ``u_v ~ U(0, 1)``.

    ``p_k ~ Uniform(0, P_max)`` for the interference channel; with budget groups each variable
    draws up to its even share of the group's budget, so every group stays within budget.
    """

    display_name = "Random power"

    gives_labels = False
    objectives = None

    def solve(
        self,
        problem: PowerControlProblem,
        objective: Objective | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Random powers ``[batch, num_vars]`` in the problem's dtype and device.

        Parameters
        ----------
        generator : torch.Generator, optional
            CPU generator the draws come from (on the CPU, then moved to the problem's device, so
            that a seed gives the same powers on any machine); the global one if ``None``.
        """
        full = problem.full_power().to(problem.signal_gain)
        device = None if generator is None else generator.device  # draw where the generator lives
        fraction = torch.rand(full.shape, generator=generator, dtype=torch.float64, device=device)
        return fraction.to(full) * full
