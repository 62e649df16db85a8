"""Deep-unfolded WMMSE, the benchmark of Ma et al. (2022) (the paper's ref. [14]: 20 layers): WMMSE
iterations whose multipliers are learned on the sum rate (``unfolded_wmmse``)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from mimo_l2o_plugins.ma2022.networks import UnfoldedWMMSE
from mimo_l2o_plugins.ma2022.one_cell import OneCellBeamformer
from torch import Tensor, nn

from mimo_l2o.errors import require
from mimo_l2o.learner import LearnerConfig, TrainConfig


def _unfolded_training() -> TrainConfig:
    return TrainConfig(batch_size=256, max_epochs=10, lr=1e-2, early_stopping_patience=4)


@dataclass
class UnfoldedWMMSEConfig(LearnerConfig):
    """Deep-unfolded WMMSE for the MISO downlink (Ma et al. 2022's benchmark, their ref. [14]).

    Parameters
    ----------
    name : str
        Registry key, ``unfolded_wmmse``.
    layers : int
        Unfolded iterations (the paper: 20).
    train : TrainConfig
        The shared training loop's settings.
    """

    name: str = "unfolded_wmmse"
    layers: int = 20
    train: TrainConfig = field(default_factory=_unfolded_training)

    def __post_init__(self) -> None:
        require(self.layers >= 1, "layers", f"must be an integer >= 1, got {self.layers}")


class UnfoldedWMMSELearner(OneCellBeamformer):
    """Deep-unfolded WMMSE: WMMSE iterations whose multipliers are learned on the sum rate."""

    display_name = "Deep unfolding"

    Config = UnfoldedWMMSEConfig
    size_free = True  # one factor per layer, whatever M and K

    @property
    def exportable(self) -> bool:
        return False  # complex solves: logged by pickle

    def build_model(self, train_inputs: Tensor, generator: torch.Generator) -> nn.Module:
        problem = self.spec.problem
        return UnfoldedWMMSE(self.config.layers, problem.budget[0], problem.noise[0])

    def adapt(self, model: nn.Module, finalize: nn.Module, problem) -> tuple[nn.Module, nn.Module]:
        """For a shifted setting: the iterations on the shifted budget and noise (WMMSE reads both)."""
        adapted, final = super().adapt(model, finalize, problem)
        adapted.noise = problem.noise[0].detach().float().to(model.noise.device)
        return adapted, final
