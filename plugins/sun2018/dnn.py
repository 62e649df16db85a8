"""The DNN of Sun et al. (2018), "Learning to optimize": a fully connected network that learns
WMMSE's power allocation from channel magnitudes (Section IV, Fig. 4).

* input: the magnitudes |h_kj| (K² values for the interference channel, N·K for the IMAC);
* hidden: three layers of 200 ReLU units;
* output: y = min(max(x, 0), P_max) (eq. 16), one power per user;
* loss: MSE to the WMMSE powers; RMSprop with decay 0.9, learning rate 1e-3 reduced when the
  validation loss stops improving, batch 1000, early stopping on the validation set;
* initial weights: truncated normal (|z| <= 2, redrawn otherwise) divided by sqrt(fan-in);
* final decision: each output rounded to {0, P_max} at P_max / 2 (Section V.C), because WMMSE's
  solutions are binary in most cases.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import torch
from torch import Tensor, nn

from mimo_l2o.errors import require
from mimo_l2o.learner import Learner, LearnerConfig, OptimizerName, TrainConfig
from mimo_l2o.problems.power_control import FeasiblePower, even_split


class InputScaling(str, Enum):
    none = "none"  # raw magnitudes, as in the paper
    standardize = "standardize"  # per-feature mean 0, std 1 (training-set statistics)
    log = "log"  # log magnitudes (dB-like), then standardized: for path-loss channels' wide range


def _paper_training() -> TrainConfig:
    return TrainConfig(optimizer=OptimizerName.rmsprop, lr=1e-3, rmsprop_alpha=0.9, batch_size=1000)


@dataclass
class DNNConfig(LearnerConfig):
    """Parameters
    ----------
    hidden : list[int]
        Widths of the hidden ReLU layers (paper: 200, 200, 200).
    round_output : bool
        Round each output to {0, p_max} at p_max / 2 for the final decision (paper: on).
    input_scaling : InputScaling
        ``none`` feeds raw magnitudes (paper); ``standardize`` scales each input feature with
        training-set statistics; ``log`` standardizes the log magnitudes (both kept inside the
        model, so the logged policy takes raw magnitudes).
    bias_init : float
        Initial value of every bias.
    """

    hidden: list[int] = field(default_factory=lambda: [200, 200, 200])
    round_output: bool = True
    input_scaling: InputScaling = InputScaling.standardize
    bias_init: float = 0.1
    train: TrainConfig = field(default_factory=_paper_training)

    def __post_init__(self) -> None:
        require(len(self.hidden) >= 1, "hidden", "needs at least one hidden layer")
        require(all(w >= 1 for w in self.hidden), "hidden", f"widths must be >= 1, got {list(self.hidden)}")


class Standardize(nn.Module):
    """``(f(x) − mean) / std`` per feature, ``f`` the identity or ``log`` (of magnitudes > 0)."""

    def __init__(self, x: Tensor, log: bool = False):
        super().__init__()
        self.log = log
        fx = self._f(x)
        self.register_buffer("mean", fx.mean(0))
        self.register_buffer("std", fx.std(0).clamp_min(1e-12))

    def _f(self, x: Tensor) -> Tensor:
        return x.clamp_min(1e-30).log() if self.log else x

    def forward(self, x: Tensor) -> Tensor:
        return (self._f(x) - self.mean) / self.std


class ClipPower(nn.Module):
    """Output activation y = min(max(x, 0), p_max) (eq. 16), one cap per output."""

    def __init__(self, cap: Tensor):
        super().__init__()
        self.register_buffer("cap", cap.float())

    def forward(self, x: Tensor) -> Tensor:
        return torch.minimum(x.clamp_min(0), self.cap)


class RoundPower(nn.Module):
    """Each power to 0 or its cap, at half the cap (Section V.C)."""

    def __init__(self, cap: Tensor):
        super().__init__()
        self.register_buffer("cap", cap.float())

    def forward(self, p: Tensor) -> Tensor:
        return torch.where(p > self.cap / 2, self.cap.expand_as(p), torch.zeros_like(p))


def truncated_normal_(weight: Tensor, generator: torch.Generator) -> None:
    """Standard normal redrawn where |z| > 2, divided by sqrt(fan-in) (Section IV, footnote 2)."""
    fan_in = weight.shape[1]
    with torch.no_grad():
        z = torch.randn(weight.shape, generator=generator, dtype=weight.dtype)
        bad = z.abs() > 2
        while bad.any():
            z[bad] = torch.randn(int(bad.sum()), generator=generator, dtype=weight.dtype)
            bad = z.abs() > 2
        weight.copy_(z / math.sqrt(fan_in))


class DNNLearner(Learner):
    """Sun et al. (2018): a fully connected DNN imitating WMMSE (supervised)."""

    Config = DNNConfig
    requires_labels = True
    inputs = ("channel_magnitudes",)

    @property
    def reports_raw(self) -> bool:
        return self.config.round_output

    def _cap(self) -> Tensor:
        return even_split(self.spec.problem.budget[0], self.spec.problem.group)

    def prepare(self, features: dict[str, Tensor]) -> Tensor:
        return features["channel_magnitudes"].flatten(1).float()

    def build_model(self, train_inputs: Tensor, generator: torch.Generator) -> nn.Module:
        cfg = self.config
        layers: list[nn.Module] = []
        if cfg.input_scaling != InputScaling.none:
            layers.append(Standardize(train_inputs, log=cfg.input_scaling == InputScaling.log))
        width = train_inputs.shape[1]
        for hidden in cfg.hidden:
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        layers += [nn.Linear(width, self.spec.problem.num_vars), ClipPower(self._cap())]
        model = nn.Sequential(*layers)
        for layer in model:
            if isinstance(layer, nn.Linear):
                truncated_normal_(layer.weight, generator)
                nn.init.constant_(layer.bias, cfg.bias_init)
        return model

    def loss(self, model: nn.Module, batch: dict[str, Any]) -> Tensor:
        return nn.functional.mse_loss(model(batch["inputs"]), batch["labels"])

    def finalize(self) -> nn.Module:
        feasible = FeasiblePower(self.spec.problem.group, self.spec.problem.budget[0])
        if self.config.round_output:
            return nn.Sequential(RoundPower(self._cap()), feasible)
        return feasible
