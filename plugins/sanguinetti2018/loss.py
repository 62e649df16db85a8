"""The losses against the solver's powers: the relative MSE (:func:`relative_mse`) with its floor
(:func:`label_floor`), the labels as the networks' targets (:func:`cell_targets`), the log output's floor."""

from __future__ import annotations

import torch
from mimo_l2o_plugins.sanguinetti2018.config import RelativeMSE
from torch import Tensor

# added to the squared label (or label norm) in the relative MSE: labels are powers / budget, of
# order 1e-4 to 1, so only labels below ~1e-4 (none from the fairness solvers) are weighed less
REL_EPS = 1e-8
# smallest power / budget a log-output target takes (optimal powers are positive; this guards zeros)
LOG_FLOOR = 1e-6


def relative_mse(
    prediction: Tensor, target: Tensor, kind: RelativeMSE = RelativeMSE.element, floor: float = 0.0
) -> Tensor:
    """The relative MSE of ``[B, L, D]`` predictions, a scalar.

    ``element``: the mean over samples, cells and outputs of ``(ŷ − y)² / (max(y², f) + 1e-8)``;
    ``cell``: the mean over samples and cells of ``‖ŷ_j − y_j‖² / (max(‖y_j‖², f) + 1e-8)`` (norms over
    ``D``), with ``f`` the ``floor`` (:func:`label_floor`; 0: the paper's loss).
    """
    err = _per_term((prediction - target).square(), kind)
    return (err / (_per_term(target.square(), kind).clamp_min(floor) + REL_EPS)).mean()


def _per_term(square: Tensor, kind: RelativeMSE) -> Tensor:
    """Squares ``[B, L, D]`` → one per term of the relative MSE: summed over ``D`` for ``cell``."""
    return square.sum(-1) if RelativeMSE(kind) == RelativeMSE.cell else square


def label_floor(targets: Tensor, kind: RelativeMSE, fraction: float) -> float:
    """``fraction`` times the mean of what :func:`relative_mse` divides by (``‖y_j‖²`` per cell, or
    ``y²`` per output) over the training targets ``[B, L, D]``: a label smaller than that is weighed as
    if it were that large, so that a cell the solver switched off (``y_j = 0``, which sum-rate solvers
    do) does not weigh 1e8 times a typical one and pull every prediction to 0."""
    return fraction * float(_per_term(targets.double().square(), kind).mean())


def cell_targets(labels: Tensor, budget: Tensor, with_sum: bool) -> Tensor:
    """Labels ``[B, L·K]`` in W → ``[B, L, K(+1)]``: the powers and (``with_sum``) their sum, divided by
    each cell's budget ``[L]``."""
    y = labels.view(labels.shape[0], budget.shape[0], -1) / budget[:, None]
    return torch.cat([y, y.sum(-1, keepdim=True)], dim=-1) if with_sum else y
