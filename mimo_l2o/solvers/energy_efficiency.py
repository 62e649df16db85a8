"""A batched local optimizer of any differentiable objective under per-group sum-power budgets.

``ee_pga``: multi-start projected gradient ascent (Adam steps, then the exact Euclidean projection onto
``{p ≥ 0, Σ_{v∈g} p_v ≤ budget_g}``), all samples and starts at once in float64; each sample keeps the
best decision any start reached. Written for the energy efficiency of Raghunath et al. (2023), whose
sum of ratios has local optima; it ascends any objective of the power-control family.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from mimo_l2o.components import Objective, Solver, SolverConfig
from mimo_l2o.errors import require
from mimo_l2o.problems.power_control import PowerControlProblem, even_split
from mimo_l2o.registry import SOLVERS


def project_capped_simplex(p: Tensor, group: Tensor, budget: Tensor) -> Tensor:
    """The Euclidean projection of ``p [batch, num_vars]`` onto ``{p ≥ 0, Σ_{v: group_v = g} p_v ≤
    budget_g}`` (``budget [batch, num_groups]``), exact, for groups of equal size.

    Per group: ``max(p, 0)`` if that is within the budget, else ``max(p − θ, 0)`` with ``θ > 0`` such
    that the group sums to its budget (the projection onto the simplex, by sorting).
    """
    batch, num_vars = p.shape
    num_groups = budget.shape[-1]
    size = num_vars // num_groups
    counts = torch.bincount(group.cpu(), minlength=num_groups)
    if not bool((counts == size).all()):
        raise ValueError("project_capped_simplex needs budget groups of equal size")
    order = torch.argsort(group.to(p.device), stable=True)
    x = p[:, order].view(batch, num_groups, size)
    cap = budget.to(p).expand(batch, num_groups)[..., None]
    clipped = x.clamp_min(0)
    over = clipped.sum(-1, keepdim=True) > cap
    # simplex projection onto {Σ = cap, ≥ 0}: θ = (Σ_{i ≤ ρ} u_i − cap) / ρ for the sorted u
    u = torch.sort(x, dim=-1, descending=True).values
    excess = u.cumsum(-1) - cap
    ranks = torch.arange(1, size + 1, dtype=p.dtype, device=p.device)
    rho = (u - excess / ranks > 0).sum(-1, keepdim=True).clamp_min(1)
    theta = excess.gather(-1, rho - 1) / rho.to(p.dtype)
    y = torch.where(over, (x - theta).clamp_min(0), clipped).view(batch, num_vars)
    out = torch.empty_like(y)
    out[:, order] = y
    return out


@dataclass
class ProjectedGradientConfig(SolverConfig):
    """Parameters
    ----------
    name : str
        Registry key, ``ee_pga``.
    starts : int
        Starts per sample: the even split of every budget, then uniform random feasible points.
    steps : int
        Adam steps per start.
    lr : float
        Initial step, as a fraction of each group's even share of its budget.
    final_lr : float
        Step at the last iteration, the same fraction (exponential decay in between).
    seed : int
        Seed of the random starts (combined with the caller's generator when it gives one).
    """

    name: str = "ee_pga"
    starts: int = 2
    steps: int = 500
    lr: float = 0.1
    final_lr: float = 1e-3
    seed: int = 0

    def __post_init__(self) -> None:
        require(self.starts >= 1, "starts", f"must be >= 1, got {self.starts}")
        require(self.steps >= 1, "steps", f"must be >= 1, got {self.steps}")
        require(0 < self.lr < math.inf, "lr", f"must be > 0, got {self.lr}")
        require(0 < self.final_lr <= self.lr, "final_lr", f"must be in (0, lr], got {self.final_lr}")


def projected_ascent(
    problem: PowerControlProblem,
    objective: Objective,
    start: Tensor,
    steps: int,
    lr: float,
    final_lr: float,
) -> tuple[Tensor, Tensor]:
    """Projected gradient ascent of ``objective`` from ``start [batch, num_vars]`` (feasible): ``steps``
    Adam steps on ``q = p / share`` (``share`` each group's budget split evenly over its variables, so
    that a step is a fraction of it: ``lr`` at the first step, decaying exponentially to ``final_lr`` at
    the last), each followed by the exact projection onto the budgets. Returns each row's best decision
    and its objective, among the start and the iterates every 10 steps and at the last.

    Runs with gradients enabled whatever the caller's mode (an ascent timed or deployed under
    ``torch.no_grad``), in ``start``'s dtype; nothing flows back to ``start``.
    """
    share = even_split(problem.budget, problem.group).to(start)
    best = start.detach().clone()
    with torch.no_grad():
        best_value = objective(problem, best)
    with torch.enable_grad():
        q = (best / share).requires_grad_(True)
        optimizer = torch.optim.Adam([q], lr=lr)
        decay = (final_lr / lr) ** (1 / max(steps - 1, 1))
        for step in range(steps):
            optimizer.zero_grad(set_to_none=True)
            (-objective(problem, q * share).sum()).backward()
            optimizer.param_groups[0]["lr"] = lr * decay**step
            optimizer.step()
            with torch.no_grad():
                p = project_capped_simplex(q * share, problem.group, problem.budget)
                q.copy_(p / share)
                if step % 10 == 9 or step == steps - 1:
                    value = objective(problem, p)
                    better = value > best_value
                    best = torch.where(better[:, None], p, best)
                    best_value = torch.where(better, value, best_value)
    return best, best_value


@SOLVERS.register("ee_pga")
class ProjectedGradient(Solver):
    """Multi-start projected gradient ascent of the objective, batched (module docstring)."""

    display_name = "PGA"

    Config = ProjectedGradientConfig
    objectives = ("energy_efficiency", "sum_rate")
    stochastic = True  # random starts, drawn per labelling chunk

    def solve(
        self,
        problem: PowerControlProblem,
        objective: Objective,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Powers ``[batch, num_vars]`` (float64, the problem's device): per sample, the best of the
        starts after ``steps`` projected Adam steps (:func:`projected_ascent`)."""
        cfg = self.config
        gen = torch.Generator().manual_seed(cfg.seed)
        if generator is not None:
            gen.manual_seed(cfg.seed + int(torch.randint(2**62, (1,), generator=generator)))
        prob = problem.to(dtype=torch.float64)
        n, s = prob.batch_size, cfg.starts
        share = even_split(prob.budget, prob.group)  # [n, V]
        starts = [share]
        for _ in range(s - 1):
            starts.append(
                share * torch.rand(share.shape, generator=gen, dtype=torch.float64).to(share.device)
            )
        many = PowerControlProblem.cat([prob] * s)  # start-major: [s·n]
        best, best_value = projected_ascent(
            many, objective, torch.cat(starts), cfg.steps, cfg.lr, cfg.final_lr
        )
        pick = best_value.view(s, n).argmax(0)
        return best.view(s, n, -1)[pick, torch.arange(n, device=best.device)]
