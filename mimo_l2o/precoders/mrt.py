"""Maximum-ratio transmission in a cell-free network: Raghunath, Peng & Jorswieck (2023), eq. (2).

AP ``l`` beams to UE ``j`` along ``w_lj = h_lj / ‖h_lj‖`` with power ``p_jl``. UE ``k`` then receives the
effective power gain ``G_l[k, j] = |h_lkᴴ h_lj|² / ‖h_lj‖²`` from AP ``l``'s beam for ``j``
(``G_l[k, k] = ‖h_lk‖²``). With non-coherent joint transmission UE ``k``'s signal is
``Σ_l G_l[k, k] p_kl`` and its interference ``Σ_{j≠k} Σ_l G_l[k, j] p_jl``: the power-control problem
with one variable per (UE, AP) pair, ``v = k·L + l``, and one budget per AP.
"""

from __future__ import annotations

import torch
from torch import Tensor

from mimo_l2o.components import Network, Precoder
from mimo_l2o.problems.power_control import PowerControlProblem
from mimo_l2o.registry import PRECODERS


def mrt_gains(channels: Tensor) -> Tensor:
    """``channels [n, L, K, N]`` → ``G [n, L, K, K]``, ``G[b, l, k, j] = |h_lkᴴ h_lj|² / ‖h_lj‖²``
    (receiving UE ``k``, beam for UE ``j``); 0 for a beam to a UE that AP ``l`` does not serve
    (``h_lj = 0``)."""
    inner = torch.einsum("blkn,bljn->blkj", channels.conj(), channels)  # h_lkᴴ h_lj
    norm2 = channels.abs().square().sum(-1)  # ‖h_lj‖² [n, L, K]
    safe = torch.where(norm2 > 0, norm2, torch.ones_like(norm2))
    return torch.where(norm2[:, :, None, :] > 0, inner.abs().square() / safe[:, :, None, :], 0.0)


def cellfree_problem(gains: Tensor, serves: Tensor, noise_power: float, p_max: float) -> PowerControlProblem:
    """The problem of MRT gains ``G [n, L, K, K]``: variables ``v = k·L + l`` (power of AP ``l`` for UE
    ``k``), budget group ``l``, owner ``k``. A pair that AP ``l`` does not serve (``serves [n, L, K]``
    false) has all its gains 0, so its power does nothing but cost energy."""
    n, nl, k, _ = gains.shape
    g = gains * serves[:, :, None, :]  # a beam that does not exist reaches nobody
    by_var = g.permute(0, 2, 3, 1).reshape(n, k, k * nl)  # [n, receiving k, (j, l)]
    owner = torch.arange(k, device=gains.device).repeat_interleave(nl)  # v → j
    mine = owner[None, None, :] == torch.arange(k, device=gains.device)[None, :, None]  # [1, K, V]
    zero = torch.zeros((), dtype=g.dtype, device=g.device)
    return PowerControlProblem(
        signal_gain=torch.where(mine, by_var, zero),
        interference_gain=torch.where(mine, zero, by_var),
        noise=torch.full((n, k), noise_power, dtype=g.dtype, device=g.device),
        group=torch.arange(nl, device=g.device).repeat(k),
        budget=torch.full((n, nl), p_max, dtype=g.dtype, device=g.device),
        weights=torch.ones(n, k, dtype=g.dtype, device=g.device),
        owner=owner,
    )


@PRECODERS.register("mrt")
class MRT(Precoder):
    """Maximum-ratio transmission from every serving AP (non-coherent joint transmission)."""

    requires = ("channels", "serves")

    def __call__(self, network: Network) -> PowerControlProblem:
        gains = mrt_gains(network["channels"])
        return cellfree_problem(
            gains, network["serves"], network.params["noise_power"], network.params["p_max"]
        )
