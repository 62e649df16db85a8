"""The power-control family: the batched linear-fractional problem of real powers.

Every SINR of the power-control family is linear-fractional in the power vector ``p``
(one entry per *variable*: a user, or a user-AP pair in cell-free networks)::

    SINR_u(p) = (s_u · p) / (i_u · p + noise_u),    Σ_{v in group g} p_v <= budget_g,   p >= 0

``s_u`` (signal gains) and ``i_u`` (interference gains) are what a precoder makes of the
channels: identity and cross gains for interference channels, hardening-bound averages for
cellular massive MIMO, MRT effective gains for cell-free. Objectives and solvers are written
once against this form. Each variable belongs to exactly one budget group (a user's own budget,
a cell's or an AP's sum power), so the budgets partition the variables.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from mimo_l2o.problems.base import BatchedProblem


def group_sum(p: Tensor, group: Tensor, num_groups: int) -> Tensor:
    """Total power of each budget group over the last dimension: ``p [..., num_vars]`` →
    ``[..., num_groups]``."""
    return p.new_zeros(*p.shape[:-1], num_groups).index_add_(p.dim() - 1, group.to(p.device), p)


def even_split(budget: Tensor, group: Tensor) -> Tensor:
    """Each group's budget split evenly over its variables: ``budget [..., num_groups]`` →
    ``[..., num_vars]`` (``p_max`` per user when every user has its own budget)."""
    group = group.to(budget.device)
    count = torch.bincount(group, minlength=budget.shape[-1]).to(budget)
    return (budget / count)[..., group]


# the floor of gains_db (dB over the noise at full share): a gain of 0 (a beam that does not exist, a
# variable that does not reach a user) sits exactly here, far below any real link
GAIN_FLOOR_DB = -100.0


def project_onto_budgets(p: Tensor, group: Tensor, budget: Tensor) -> Tensor:
    """Clip negative powers, then scale each over-budget group down onto its budget.

    ``p [batch, num_vars]``, ``group [num_vars]``, ``budget [batch or 1, num_groups]`` or
    ``[num_groups]``. Feasible for a partition into groups; feasible input is returned unchanged.
    """
    p = p.clamp_min(0)
    budget = budget.to(p)
    used = group_sum(p, group, budget.shape[-1])
    # min(1, budget / used) as budget / max(used, budget): no division by a vanishing sum, so the
    # gradient stays finite when a group's powers are all (nearly) 0 (clamping used at the smallest
    # float gave 0 · inf = NaN in the backward pass for sums below ~1e-19 in float32)
    scale = budget / torch.maximum(used, budget)
    return p * scale[..., group.to(p.device)]


class FeasiblePower(nn.Module):
    """Clip negative powers and scale each over-budget group onto its budget (a partition): the
    projection of :meth:`PowerControlProblem.project` with fixed budgets, for a logged policy."""

    def __init__(self, group: Tensor, budget: Tensor):
        super().__init__()
        self.register_buffer("group", group.clone().long())
        self.register_buffer("budget", budget.clone().float())

    def forward(self, p: Tensor) -> Tensor:
        return project_onto_budgets(p, self.group, self.budget)


@dataclass
class PowerControlProblem(BatchedProblem):
    """A batch of power-control problems (the :class:`~mimo_l2o.problems.base.Problem` protocol).

    A decision is a tensor of powers ``[batch, num_vars]`` (real, the problem's precision).

    Parameters
    ----------
    signal_gain : Tensor ``[batch, num_users, num_vars]``
        ``s_u``: gain of each power variable in user ``u``'s useful signal (linear, >= 0).
    interference_gain : Tensor ``[batch, num_users, num_vars]``
        ``i_u``: gain of each power variable in user ``u``'s interference (linear, >= 0).
    noise : Tensor ``[batch, num_users]``
        Noise power at each receiver, in the unit of the powers times the gains.
    group : Tensor ``[num_vars]`` (long)
        Budget group of each variable, ``0 .. num_groups - 1``.
    budget : Tensor ``[batch, num_groups]``
        Power budget of each group (same unit as ``p``).
    weights : Tensor ``[batch, num_users]``
        Rate weights ``α_u`` (1 by default).
    prelog : float
        Pre-log factor of the rates (1 for interference channels, ``(τ_c − τ_p)/τ_c`` when pilots
        take part of the coherence block).
    owner : Tensor ``[num_vars]`` (long), optional
        The user each variable's power is meant for, ``0 .. num_users - 1`` (cell-free: the UE of a
        UE-AP pair); ``None`` means variable ``u`` is user ``u``'s (one variable per user).
    """

    signal_gain: Tensor
    interference_gain: Tensor
    noise: Tensor
    group: Tensor
    budget: Tensor
    weights: Tensor
    prelog: float = 1.0
    owner: Tensor | None = None

    family: ClassVar[str] = "power_control"
    default_baselines: ClassVar[tuple[str, ...]] = ("max_power", "random")
    # tensors that describe the variables, not the samples: shared by the whole batch
    SHARED: ClassVar[tuple[str, ...]] = ("group", "owner")

    # ---- shape ---------------------------------------------------------------------------
    @property
    def num_users(self) -> int:
        return self.signal_gain.shape[1]

    @property
    def num_vars(self) -> int:
        return self.signal_gain.shape[2]

    @property
    def num_groups(self) -> int:
        return self.budget.shape[1]

    @property
    def decision_shape(self) -> tuple[int, ...]:
        """A decision's shape per sample: ``(num_vars,)``."""
        return (self.num_vars,)

    @property
    def decision_dtype(self) -> torch.dtype:
        """Powers are real, in the problem's precision."""
        return self.dtype

    # ---- physics -------------------------------------------------------------------------
    def signal(self, p: Tensor) -> Tensor:
        """Received signal power ``s_u · p``, ``[batch, num_users]``."""
        return torch.einsum("buv,bv->bu", self.signal_gain, p)

    def interference(self, p: Tensor) -> Tensor:
        """Received interference power ``i_u · p``, ``[batch, num_users]``."""
        return torch.einsum("buv,bv->bu", self.interference_gain, p)

    def sinr(self, p: Tensor) -> Tensor:
        """SINR of every user for powers ``p`` ``[batch, num_vars]``: ``[batch, num_users]``."""
        return self.signal(p) / (self.interference(p) + self.noise)

    def rates(self, p: Tensor) -> Tensor:
        """Each user's spectral efficiency ``prelog · log2(1 + SINR)`` [bit/s/Hz], ``[batch, num_users]``."""
        return self.prelog * self.sinr(p).log1p() / 0.6931471805599453

    def direct_gain(self) -> Tensor:
        """``a [batch, num_users]``: each user's gain from its own power variable.

        For problems with one power variable per user whose ``signal_gain`` is diagonal (the
        interference channel, cellular massive MIMO); raises ``ValueError`` for any other.
        """
        _, users, num_vars = self.signal_gain.shape
        if users != num_vars:
            raise ValueError(
                f"needs one power variable per user (num_users == num_vars), got {users} users "
                f"and {num_vars} variables"
            )
        a = self.signal_gain.diagonal(dim1=1, dim2=2)
        if torch.count_nonzero(self.signal_gain) != torch.count_nonzero(a):
            raise ValueError("needs a diagonal signal_gain (user k is served by variable k only)")
        return a

    def gains_db(self) -> Tensor:
        """``[batch, num_users, num_vars, 2]``: the signal (``[..., 0]``) and interference (``[..., 1]``)
        gain of every variable at every user, times the variable's even share of its group's budget,
        over the user's noise, in dB: the SNR each variable would give alone at its share of the
        budget. Floored at :data:`GAIN_FLOOR_DB`, where a gain of 0 lies. Dimensionless: scaling the
        budgets and the noise alike changes nothing."""
        share = even_split(self.budget, self.group)  # [batch, num_vars]
        scale = share[:, None, :] / self.noise[:, :, None]
        gains = torch.stack([self.signal_gain, self.interference_gain], dim=-1) * scale[..., None]
        return 10 * torch.log10(gains.clamp_min(10 ** (GAIN_FLOOR_DB / 10)))

    def user_power(self, p: Tensor) -> Tensor:
        """Power spent on each user, ``Σ_{v: owner_v = u} p_v``, ``[batch, num_users]``."""
        if self.owner is None:
            return p
        return group_sum(p, self.owner, self.num_users)

    def group_power(self, p: Tensor) -> Tensor:
        """Total power of each budget group, ``[batch, num_groups]``."""
        return group_sum(p, self.group, self.num_groups)

    def constraint_violation(self, p: Tensor) -> Tensor:
        """Largest excess over any budget or below zero, per sample ``[batch]`` (0 when feasible)."""
        over = (self.group_power(p) - self.budget.to(p)).clamp_min(0).amax(dim=1)
        under = (-p).clamp_min(0).amax(dim=1)
        return torch.maximum(over, under)

    def full_power(self) -> Tensor:
        """Every group spends its budget, split evenly over its variables: ``[batch, num_vars]``."""
        return even_split(self.budget, self.group)

    def project(self, p: Tensor) -> Tensor:
        """Make ``p`` feasible: clip negatives, then scale each over-budget group down onto its budget."""
        return project_onto_budgets(p, self.group, self.budget)

    def feasibility(self) -> FeasiblePower:
        """:meth:`project` onto the first sample's budgets, as a module (float32 buffers)."""
        return FeasiblePower(self.group.cpu(), self.budget[0].cpu())

    @classmethod
    def interference_channel(
        cls, gains: Tensor, noise_power: float | Tensor, p_max: float | Tensor, weights: Tensor | None = None
    ) -> PowerControlProblem:
        """The scalar interference channel of Sun et al. (2018), eq. (1).

        ``gains[b, k, j] = |h_kj|²`` is the power gain from transmitter ``j`` to receiver ``k``;
        user ``k`` decodes only its own transmitter, every other one interferes, and each
        transmitter has its own budget ``p_max``.
        """
        batch, k, k2 = gains.shape
        if k != k2:
            raise ValueError(f"gains must be [batch, K, K], got {tuple(gains.shape)}")
        eye = torch.eye(k, dtype=torch.bool, device=gains.device)
        signal = gains * eye
        interference = gains.masked_fill(eye, 0)
        noise = torch.as_tensor(noise_power, dtype=gains.dtype, device=gains.device).expand(batch, k)
        budget = torch.as_tensor(p_max, dtype=gains.dtype, device=gains.device).expand(batch, k)
        if weights is None:
            weights = torch.ones(batch, k, dtype=gains.dtype, device=gains.device)
        return cls(
            signal_gain=signal,
            interference_gain=interference,
            noise=noise.contiguous(),
            group=torch.arange(k, device=gains.device),
            budget=budget.contiguous(),
            weights=weights,
        )
