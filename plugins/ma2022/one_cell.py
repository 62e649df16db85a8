"""What Ma et al.'s (2022) learners share: :class:`OneCellBeamformer` (unsupervised on one cell's
downlink sum rate, beamformers on the BS's budget), the laptop training default, the check of hidden
layers' widths and the RMS of the training inputs that sets their networks' units."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor, nn

from mimo_l2o.errors import require
from mimo_l2o.learner import Learner, TrainConfig
from mimo_l2o.problems import BEAMFORMING

FEATURE = "downlink_channel"


def _laptop_training() -> TrainConfig:
    # the paper: Adam at 1e-3, batch 1024, 200 epochs on 204,800 samples (the presets)
    return TrainConfig(batch_size=256, max_epochs=20, lr=1e-3, early_stopping_patience=8)


def require_widths(key: str, widths) -> None:
    """Hidden layers' widths: a non-empty list of integers >= 1."""
    widths = list(widths)
    require(
        len(widths) >= 1 and all(int(w) >= 1 for w in widths),
        key,
        f"must be a non-empty list of layer widths >= 1, got {widths}",
    )


def rms(x: Tensor) -> float:
    """The RMS magnitude of the complex entries of ``x [..., 2]`` (real, imaginary)."""
    return float(x.double().square().sum(-1).mean().sqrt().clamp_min(1e-30))


class OneCellBeamformer(Learner):
    """What Ma et al.'s methods and benchmarks share: unsupervised on one cell's downlink sum rate, the
    channels (the feature in ``inputs``) in as real and imaginary parts, beamformers on the BS's budget,
    which a shifted setting's model is told (:meth:`adapt`)."""

    requires_labels = False
    families = (BEAMFORMING,)
    inputs = (FEATURE,)
    paper = "ma2022"

    @classmethod
    def refuses(cls, scenario, precoder) -> str | None:
        """Several cells: these methods beamform in one."""
        cells = int(getattr(scenario.config, "num_cells", 1))
        if cells > 1:
            return (
                f"{cls.Config.name} beamforms in one cell (Ma et al. 2022); scenario={scenario.name} has "
                f"{cells} cells"
            )
        return None

    def prepare(self, features: dict[str, Tensor]) -> Tensor:
        """The feature ``[B, 1, ...]`` (complex) → ``[B, 1, ..., 2]`` (real, imaginary; float32): the
        channels ``[B, 1, K, M]``, or with ``csi: implicit`` ``uplink_pilot_phase [B, 1, M, K + L]``."""
        return torch.view_as_real(features[self.inputs[0]]).float()

    def adapt(self, model: nn.Module, finalize: nn.Module, problem) -> tuple[nn.Module, nn.Module]:
        """For a shifted setting: the beamformers scaled onto the shifted BS's budget (as ``γ`` of eq. 18
        is computed from the power at deployment), the network as trained."""
        adapted = copy.deepcopy(model)
        adapted.budget = problem.budget[0].detach().float().to(model.budget.device)
        return adapted, problem.feasibility()

    def loss(self, model: nn.Module, batch: dict[str, Any]) -> Tensor:
        """The negative mean sum rate of the batch."""
        return -self.spec.objective(self.batch_problem(batch), model(batch["inputs"])).mean()
