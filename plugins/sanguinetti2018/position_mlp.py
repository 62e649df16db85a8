"""The max-prod learner ``position_mlp`` (Sanguinetti et al. 2018, Tables II-III): per-cell MLPs from
the UE positions to each cell's powers and their sum."""

from __future__ import annotations

import torch
from mimo_l2o_plugins.sanguinetti2018.config import InputFeatures, PositionMLPConfig
from mimo_l2o_plugins.sanguinetti2018.networks import PositionMLP
from mimo_l2o_plugins.sanguinetti2018.position import _PositionLearner
from torch import Tensor, nn


class PositionMLPLearner(_PositionLearner):
    """Sanguinetti et al. (2018), Tables II-III: per-cell MLPs from UE positions to powers and their sum."""

    display_name = "NN (positions)"

    Config = PositionMLPConfig
    with_sum = True

    def build_model(self, train_inputs: Tensor, generator: torch.Generator) -> nn.Module:
        cfg = self.config
        self.start(generator)
        return PositionMLP(
            self.layout,
            self.layout.cell_budget,
            list(cfg.hidden),
            cfg.k_layer,
            cfg.shared,
            cfg.use_sum,
            generator,
            train_inputs if cfg.standardize else None,
            features=InputFeatures(cfg.features),
        )
