"""The network's layout as the position learners read it from the scenario: ``L`` cells of ``K``
users, their sites and budgets (:class:`CellLayout`), and the feature they read (``user_positions``)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from mimo_l2o.errors import require
from mimo_l2o.learner import LearnerSpec

FEATURE = "user_positions"


@dataclass(frozen=True)
class CellLayout:
    """``L`` cells with ``K`` users each, their sites and budgets, from a :class:`LearnerSpec`.

    Parameters
    ----------
    num_cells, num_users : int
        ``L`` and the users per cell ``K``; user ``l·K + k`` is UE ``k`` of cell ``l``.
    sites : Tensor ``[L, 2]``
        Each cell's BS in units of the geometry's scale.
    cell_budget : Tensor ``[L]``
        The sum of the budgets of each cell's users (the cell's one budget in cellular massive MIMO):
        what the networks' outputs are fractions of.
    wrap : bool
        Offsets wrap around the unit torus (cells on a ``√L × √L`` grid).
    scale : float
        The geometry's length (metres) that positions are divided by.
    """

    num_cells: int
    num_users: int
    sites: Tensor
    cell_budget: Tensor
    wrap: bool
    scale: float

    @classmethod
    def from_spec(cls, spec: LearnerSpec) -> CellLayout:
        geometry, problem = spec.geometry, spec.problem
        require(geometry is not None, "scenario", "the position learners need a scenario with positions")
        require(geometry.user_site is not None, "scenario", "the position learners need users in cells")
        site = geometry.user_site.cpu().long()
        nl, users = len(geometry.sites), len(site)
        require(users % nl == 0, "scenario", f"{users} users do not split into {nl} cells of equal size")
        k = users // nl
        require(
            torch.equal(site, torch.arange(nl).repeat_interleave(k)),
            "scenario",
            "users must be ordered l·K + k, K per cell",
        )
        require(
            problem.num_vars == users and problem.owner is None,
            "scenario",
            f"the position learners need one power variable per user, got {problem.num_vars} for {users}",
        )
        group = problem.group.cpu().long()
        group_cell = torch.full((problem.num_groups,), -1).scatter_reduce(0, group, site, "amax")
        require(
            torch.equal(group_cell[group], site),
            "scenario",
            "every budget group must lie within one cell",
        )
        cell_budget = torch.zeros(nl).index_add_(0, group_cell, problem.budget[0].float().cpu())
        sites = geometry.sites.double() / geometry.scale
        if geometry.wrap:
            g = math.isqrt(nl)
            idx = torch.arange(nl)
            grid = (torch.stack([idx % g, idx // g], dim=1).double() + 0.5) / g
            require(
                g * g == nl and torch.allclose(sites, grid),
                "scenario",
                "wrapped distances need the cells on a sqrt(L) x sqrt(L) grid",
            )
        shape = spec.input_shapes.get(FEATURE)
        require(shape is not None, "scenario", f"the learner needs the feature '{FEATURE}'")
        require(
            math.prod(shape) == 2 * nl * k,
            "scenario",
            f"'{FEATURE}' has shape {tuple(shape)}; expected {2 * nl * k} = 2·L·K coordinates",
        )
        return cls(nl, k, sites, cell_budget, bool(geometry.wrap), float(geometry.scale))

    @property
    def grid(self) -> int:
        return math.isqrt(self.num_cells)

    def bs_positions(self) -> Tensor:
        """``[L, 2]`` BS positions in units of the scale (cellular: cell ``l`` at column ``l % g``, row
        ``l // g`` of the unit square)."""
        return self.sites

    def cell_order(self) -> Tensor:
        """``[L, L]``: row ``j`` lists the cells as cell ``j`` sees them, ``j`` itself first. On a wrapped
        grid by their grid offset from cell ``j`` (the ``m``-th entry is the cell at
        ``(col_j + m % g, row_j + m // g)`` mod ``g``), so that every cell sees the same layout; otherwise
        the other cells in index order."""
        idx = torch.arange(self.num_cells)
        if not self.wrap:
            return torch.stack([torch.cat([idx[j : j + 1], idx[idx != j]]) for j in range(self.num_cells)])
        g = self.grid
        col, row = idx % g, idx // g
        return ((col[:, None] + col[None, :]) % g) + g * ((row[:, None] + row[None, :]) % g)
