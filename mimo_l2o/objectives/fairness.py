"""Fairness objectives of Sanguinetti, Zappone & Debbah (2018): max-min SE (eq. 12) and max product
SINR (eq. 13)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from mimo_l2o.components import Objective
from mimo_l2o.problems.power_control import PowerControlProblem
from mimo_l2o.registry import OBJECTIVES


@OBJECTIVES.register("max_min")
class MaxMin(Objective):
    """Smallest user SE, ``min_u prelog · log2(1 + SINR_u)`` in bit/s/Hz (eq. 12), per sample ``[batch]``.

    Unweighted (``problem.weights`` is ignored), as in the paper; differentiable (a subgradient at ties).
    """

    label = "min SE [bit/s/Hz]"

    def __call__(self, problem: PowerControlProblem, decision: Tensor) -> Tensor:
        return problem.rates(decision).amin(dim=1)

    def smooth(self, problem: PowerControlProblem, decision: Tensor, temperature: float) -> Tensor:
        """The SE at the soft minimum of the SINRs, ``prelog · log2(1 + s)`` with
        ``log s = −log Σ_u exp(−t · log SINR_u) / t``: between ``prelog · log2(1 + U^(−1/t) · SINR_min)``
        and the minimum SE (``t`` the temperature, ``U`` users), with a gradient for every user's
        SINR rather than only the smallest one's."""
        log_sinr = problem.sinr(decision).log()
        soft_min = -torch.logsumexp(-temperature * log_sinr, dim=1) / temperature
        return problem.prelog * soft_min.exp().log1p() / math.log(2)


@OBJECTIVES.register("max_prod")
class MaxProd(Objective):
    """Geometric-mean SINR ``(Π_u SINR_u)^(1/U) = exp(mean_u log SINR_u)``, per sample ``[batch]``.

    Eq. (13) maximizes ``Π_u SINR_u``; its ``U``-th root has the same maximizers and stays positive and
    finite (the product of many SINRs under- or overflows). Unweighted (``problem.weights`` is ignored);
    differentiable.
    """

    label = "geometric-mean SINR"

    def __call__(self, problem: PowerControlProblem, decision: Tensor) -> Tensor:
        return problem.sinr(decision).log().mean(dim=1).exp()
