"""The beamforming family: downlink beamforming matrices under per-BS power budgets.

``C`` base stations (cells) with ``N`` antennas each serve ``K`` single-antenna users each; user ``u``
(``u = c·K + k``: user ``k`` of cell ``c``) is served by BS ``c`` only and hears every BS::

    y_u = Σ_c h_{c,u}ᴴ W_c s_c + n_u,      SINR_u = |h_{c(u),u}ᴴ w_u|² / (Σ_{v ≠ u} |h_{c(v),u}ᴴ w_v|² + σ²_u)

with ``w_u`` column ``k`` of ``W_c`` and ``‖W_c‖_F² <= P_c``. One cell (``C = 1``) is the MISO broadcast
channel of Zhang et al. (2022), eq. (2); several are its interfering broadcast channel, eq. (26), with
intra- and inter-cell interference.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from mimo_l2o.problems.base import BatchedProblem, complex_dtype


def bs_power(W: Tensor) -> Tensor:
    """``‖W_c‖_F²`` of beamformers ``W [batch, cells, antennas, users per cell]``: ``[batch, cells]``."""
    return W.abs().square().sum(dim=(-2, -1))


def scale_onto_budgets(W: Tensor, budget: Tensor) -> Tensor:
    """Scale each BS's beamformers down onto its budget (``budget [batch or 1, cells]`` or ``[cells]``);
    feasible input is returned unchanged. ``√(P / max(‖W‖², P))``: no division by a vanishing power;
    an over-budget BS lands inside its budget by the rounding error of its power's sum (``2 (N K + 2)``
    ulps), so that recomputing the power finds no violation."""
    budget = budget.to(device=W.device, dtype=W.real.dtype)
    power = bs_power(W)
    margin = 1.0 - 2 * (W.shape[-2] * W.shape[-1] + 2) * torch.finfo(power.dtype).eps
    scale = torch.where(
        power > budget, torch.sqrt(budget / power.clamp_min(torch.finfo(power.dtype).tiny)) * margin, 1.0
    )
    return W * scale[..., None, None].to(W.dtype)


class FeasibleBeamformers(nn.Module):
    """:func:`scale_onto_budgets` with fixed budgets, for a logged policy."""

    def __init__(self, budget: Tensor):
        super().__init__()
        self.register_buffer("budget", budget.clone().float())

    def forward(self, W: Tensor) -> Tensor:
        return scale_onto_budgets(W, self.budget)


@dataclass
class BeamformingProblem(BatchedProblem):
    """A batch of downlink beamforming problems (the :class:`~mimo_l2o.problems.base.Problem` protocol).

    A decision is ``W [batch, cells, antennas, users per cell]`` (complex, the problem's precision):
    column ``k`` of ``W[:, c]`` is the beamformer of BS ``c`` for its user ``k``.

    Parameters
    ----------
    channel : Tensor ``[batch, cells, users, antennas]`` (complex)
        ``h_{c,u}``: the downlink channel from BS ``c`` to user ``u`` (all users, so that inter-cell
        interference is in it), power-gain units (noise in the same unit).
    noise : Tensor ``[batch, users]``
        Noise power ``σ²_u`` at each user.
    budget : Tensor ``[batch, cells]``
        Power budget ``P_c`` of each BS.
    weights : Tensor ``[batch, users]``
        Rate weights ``α_u`` (1 by default).
    prelog : float
        Pre-log factor of the rates.
    """

    channel: Tensor
    noise: Tensor
    budget: Tensor
    weights: Tensor
    prelog: float = 1.0

    family: ClassVar[str] = "beamforming"
    default_baselines: ClassVar[tuple[str, ...]] = ("mrt_bf", "zf_bf", "rzf_bf")

    # ---- shape ---------------------------------------------------------------------------
    @property
    def num_cells(self) -> int:
        return self.channel.shape[1]

    @property
    def num_users(self) -> int:
        return self.channel.shape[2]

    @property
    def users_per_cell(self) -> int:
        return self.num_users // self.num_cells

    @property
    def num_antennas(self) -> int:
        return self.channel.shape[3]

    @property
    def decision_shape(self) -> tuple[int, ...]:
        """``(cells, antennas, users per cell)``."""
        return (self.num_cells, self.num_antennas, self.users_per_cell)

    @property
    def decision_dtype(self) -> torch.dtype:
        """Beamformers are complex, in the problem's precision."""
        return complex_dtype(self.dtype)

    # ---- physics -------------------------------------------------------------------------
    def received(self, W: Tensor) -> Tensor:
        """``g [batch, users (receiving), users (beam)]``: ``|h_{c(v),u}ᴴ w_v|²``, the power user ``u``
        receives from the beam of user ``v``."""
        b, c, n, k = W.shape
        # h_{c,u}ᴴ W_c for every BS c and receiving user u: [b, c, users, k], beams v = c·K + k
        inner = torch.einsum("bcun,bcnk->buck", self.channel.conj(), W)
        return inner.abs().square().reshape(b, self.num_users, c * k)

    def sinr(self, W: Tensor) -> Tensor:
        """SINR of every user ``[batch, users]`` (module docstring)."""
        g = self.received(W)
        signal = g.diagonal(dim1=1, dim2=2)
        return signal / (g.sum(-1) - signal + self.noise.to(signal))

    def rates(self, W: Tensor) -> Tensor:
        """Each user's spectral efficiency ``prelog · log2(1 + SINR)`` [bit/s/Hz], ``[batch, users]``."""
        return self.prelog * self.sinr(W).log1p() / 0.6931471805599453

    def bs_power(self, W: Tensor) -> Tensor:
        """Power of each BS, ``[batch, cells]``."""
        return bs_power(W)

    # ---- feasibility ---------------------------------------------------------------------
    def constraint_violation(self, W: Tensor) -> Tensor:
        """Largest excess of any BS's power over its budget, per sample ``[batch]`` (0 when feasible)."""
        return (bs_power(W) - self.budget.to(W.real.dtype)).clamp_min(0).amax(dim=1)

    def project(self, W: Tensor) -> Tensor:
        """Make ``W`` feasible: scale each over-budget BS's beamformers down onto its budget."""
        return scale_onto_budgets(W, self.budget)

    def feasibility(self) -> FeasibleBeamformers:
        """:meth:`project` onto the first sample's budgets, as a module."""
        return FeasibleBeamformers(self.budget[0].cpu())
