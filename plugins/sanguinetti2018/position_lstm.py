"""The max-min learner ``position_lstm`` (Sanguinetti et al. 2018, Table IV): per-cell LSTM networks
from the UE positions to each cell's powers."""

from __future__ import annotations

from typing import Any

import torch
from mimo_l2o_plugins.sanguinetti2018.config import (
    InputFeatures,
    LSTMSequence,
    PositionLSTMConfig,
    PowerOutput,
)
from mimo_l2o_plugins.sanguinetti2018.loss import LOG_FLOOR
from mimo_l2o_plugins.sanguinetti2018.networks import PositionLSTM
from mimo_l2o_plugins.sanguinetti2018.position import _PositionLearner
from torch import Tensor, nn


class PositionLSTMLearner(_PositionLearner):
    """Sanguinetti et al. (2018), Table IV: per-cell LSTM networks from UE positions to powers."""

    display_name = "LSTM (positions)"

    Config = PositionLSTMConfig

    @property
    def reports_raw(self) -> bool:
        """With pilot averaging, ``test/objective_ratio_raw`` reports the network alone."""
        return min(self.config.pilot_shifts, self.layout.num_users) > 1

    def raw_output(self, model: nn.Module, inputs: Tensor) -> Tensor:
        return model.network(inputs)

    def build_model(self, train_inputs: Tensor, generator: torch.Generator) -> nn.Module:
        cfg = self.config
        self.start(generator)
        return PositionLSTM(
            self.layout,
            self.layout.cell_budget,
            list(cfg.lstm),
            list(cfg.dense),
            LSTMSequence(cfg.sequence) == LSTMSequence.single,
            cfg.shared,
            generator,
            train_inputs if cfg.standardize else None,
            log_output=PowerOutput(cfg.output) == PowerOutput.log,
            features=InputFeatures(cfg.features),
            pilot_shifts=cfg.pilot_shifts,
        )

    def label_loss(self, model: nn.Module, batch: dict[str, Any]) -> Tensor:
        if PowerOutput(self.config.output) == PowerOutput.log:
            target = self.targets(batch["labels"]).clamp_min(LOG_FLOOR).log()
            return (model.outputs(batch["inputs"]) - target).square().mean()
        return super().label_loss(model, batch)
