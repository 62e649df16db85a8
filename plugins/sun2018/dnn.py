"""The DNN of Sun et al. (2018), "Learning to optimize": a fully connected network that learns a
solver's power allocation from the channel gains (Section IV, Fig. 4).

* input: the magnitude of every entry of the problem's gains, ``√((s_uv + i_uv) · share_v / σ²_u)``
  for user ``u`` and power variable ``v`` (the ``problem_gains`` feature): the paper's ``|h_kj|`` for the
  interference channel (``P_max = σ² = 1``), K² values; U·V on any power-control problem (the IMAC's
  K × K gains repeat each BS's row for every user it serves, where the paper feeds the N·K distinct
  ones; cellular and cell-free gains are the precoder's effective gains);
* hidden: three layers of 200 ReLU units;
* output: y = min(max(x, 0), P_max) (eq. 16), one power per variable, capped at its group's budget;
* loss: MSE to the solver's powers; RMSprop with decay 0.9, learning rate 1e-3 reduced when the
  validation loss stops improving, batch 1000, early stopping on the validation set;
* initial weights: truncated normal (|z| <= 2, redrawn otherwise) divided by sqrt(fan-in);
* final decision: each output rounded to {0, P_max} at P_max / 2 (Section V.C), because WMMSE's
  sum-rate solutions are binary in most cases; by default only when that scores better on the
  validation set (``rounding: validated``), since the optima of other objectives (max-min, max-product,
  energy efficiency) are not binary.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import torch
from torch import Tensor, nn

from mimo_l2o.errors import require
from mimo_l2o.features import total_gain_db
from mimo_l2o.learner import Learner, LearnerConfig, OptimizerName, TrainConfig
from mimo_l2o.problems import BEAMFORMING, POWER_CONTROL
from mimo_l2o.problems.beamforming import bs_power
from mimo_l2o.problems.power_control import FeasiblePower

FEATURE = "problem_gains"


class Rounding(str, Enum):
    validated = "validated"  # round when the rounded decisions score better on the validation set
    always = "always"  # the paper (Section V.C)
    never = "never"  # the clipped outputs, made feasible


class OutputUnit(str, Enum):
    labels = "labels"  # each output in units of its variable's mean training label (MSE in those units)
    budget = "budget"  # the paper: outputs and MSE in W (the budget's unit)


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
    rounding : Rounding
        Round each output to {0, cap} at cap / 2 for the final decision: ``always`` (the paper),
        ``never``, or ``validated`` (when that scores better on the validation set).
    input_scaling : InputScaling
        ``none`` feeds raw magnitudes (paper); ``standardize`` scales each input feature with
        training-set statistics; ``log`` standardizes the log magnitudes (both kept inside the
        model, so the logged policy takes raw magnitudes).
    bias_init : float
        Initial value of every bias.
    output_unit : OutputUnit
        ``labels`` (default): each output is a multiple of its variable's mean training label and the
        MSE is taken in those units, so powers of any scale are learnt alike (the energy-efficient
        powers of cell-free networks are a thousandth of an AP's budget); ``budget`` (the paper, the
        presets): outputs and MSE in W.
    """

    hidden: list[int] = field(default_factory=lambda: [200, 200, 200])
    rounding: Rounding = Rounding.validated
    input_scaling: InputScaling = InputScaling.standardize
    bias_init: float = 0.1
    output_unit: OutputUnit = OutputUnit.labels
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


class Scale(nn.Module):
    """``x · unit``, one unit per output (the outputs' unit in W)."""

    def __init__(self, unit: Tensor):
        super().__init__()
        self.register_buffer("unit", unit.float())

    def forward(self, x: Tensor) -> Tensor:
        return x * self.unit


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


def relu_layers(width: int, hidden: list[int]) -> tuple[list[nn.Module], int]:
    """The hidden ReLU layers from ``width`` inputs, and the width they end at."""
    layers: list[nn.Module] = []
    for size in hidden:
        layers += [nn.Linear(width, size), nn.ReLU()]
        width = size
    return layers, width


def paper_init_(model: nn.Sequential, generator: torch.Generator, bias: float) -> nn.Sequential:
    """Every linear layer's weights by :func:`truncated_normal_`, its biases ``bias`` (Section IV)."""
    for layer in model:
        if isinstance(layer, nn.Linear):
            truncated_normal_(layer.weight, generator)
            nn.init.constant_(layer.bias, bias)
    return model


# Sun et al. (2018): DNN ÷ WMMSE sum rate on 10,000 test samples, Table I (Gaussian IC, by K) and
# Table II (IMAC, by (N, K), at r = 0)
TABLE_I = {10: 98.33, 20: 92.04, 30: 84.29}
TABLE_II = {(3, 12): 98.30, (3, 18): 97.45, (3, 24): 96.82, (7, 28): 94.53, (20, 80): 90.36}
# the IMAC setting of Table II: R = 100 m, users from r = 0 (not the scenario's default r, 0.2 of the
# hexagon's radius), the authors' path loss (200/d)^3 and 8 dB shadowing
IMAC_SETTING = {
    "scenario.cell_radius": 100.0,
    "scenario.min_distance": 0.0,
    "scenario.path_loss_exponent": 3.0,
    "scenario.reference_distance": 200.0,
    "scenario.shadowing_db": 8.0,
}


def _equal(params: dict[str, str], setting: dict[str, float]) -> bool:
    """Whether the run's params (strings) hold each key of ``setting`` at its value."""
    for key, value in setting.items():
        try:
            if not math.isclose(float(params.get(key, "nan")), value, rel_tol=1e-9, abs_tol=1e-12):
                return False
        except ValueError:  # None, or no number
            return False
    return True


class DNNLearner(Learner):
    """Sun et al. (2018): a fully connected DNN imitating a solver (supervised). On beamforming problems
    it is :class:`BeamformingDNN` (the same network on the uplink channels' real and imaginary parts)."""

    display_name = "DNN"

    Config = DNNConfig
    requires_labels = True
    families = (POWER_CONTROL, BEAMFORMING)
    inputs = (FEATURE,)
    paper = "sun2018"

    @classmethod
    def for_family(cls, family: str) -> type[Learner]:
        return BeamformingDNN if family == BEAMFORMING else cls

    @classmethod
    def published(cls, params: dict[str, str]) -> str | None:
        """Tables I and II: the DNN's sum rate ÷ WMMSE's, on the Gaussian IC (by K) and the IMAC (by
        N and K), for sum-rate runs against WMMSE in the paper's setting only (Sec. V: ``P_max`` and the
        noise 1; the IMAC's R = 100 m, r = 0, the authors' path loss ``(200/d)³`` and 8 dB shadowing)."""
        if (params.get("objective.name"), params.get("solver.name")) != ("sum_rate", "wmmse"):
            return None
        if not _equal(params, {"scenario.p_max": 1.0, "scenario.noise_power": 1.0}):
            return None
        users = int(params.get("scenario.num_users", 0))
        scenario = params.get("scenario.name")
        if scenario == "gaussian_ic" and users in TABLE_I:
            return f"{TABLE_I[users]:.2f} % of WMMSE (Table I)"
        cells = int(params.get("scenario.num_cells", 0) or 0)
        if scenario == "imac" and (cells, users) in TABLE_II and _equal(params, IMAC_SETTING):
            return f"{TABLE_II[cells, users]:.2f} % of WMMSE (Table II, r = 0)"
        return None

    def __init__(self, config, spec):
        super().__init__(config, spec)
        self.rounded = Rounding(config.rounding) != Rounding.never
        self.unit = torch.ones(spec.problem.num_vars)

    def observe_labels(self, labels: Tensor) -> None:
        """With ``output_unit: labels``, each output's unit: its variable's mean training label (at least
        1e-3 of the largest such mean, for variables the labels rarely use)."""
        if OutputUnit(self.config.output_unit) == OutputUnit.labels:
            mean = labels.abs().float().mean(0).cpu()
            self.unit = mean.clamp_min(1e-3 * float(mean.max()) if float(mean.max()) > 0 else 1.0)

    @property
    def reports_raw(self) -> bool:
        return Rounding(self.config.rounding) != Rounding.never

    def _cap(self) -> Tensor:
        """Each variable's largest power: its group's budget."""
        problem = self.spec.problem
        return problem.budget[0][problem.group]

    def prepare(self, features: dict[str, Tensor]) -> Tensor:
        """``problem_gains [B, U, V, 2]`` → the magnitudes of the total gains, ``[B, U·V]`` (user-major)."""
        return (10 ** (total_gain_db(features[FEATURE]) / 20)).flatten(1).float()

    def build_model(self, train_inputs: Tensor, generator: torch.Generator) -> nn.Module:
        cfg = self.config
        layers: list[nn.Module] = []
        if cfg.input_scaling != InputScaling.none:
            layers.append(Standardize(train_inputs, log=cfg.input_scaling == InputScaling.log))
        hidden, width = relu_layers(train_inputs.shape[1], cfg.hidden)
        layers += [*hidden, nn.Linear(width, self.spec.problem.num_vars)]
        if OutputUnit(cfg.output_unit) == OutputUnit.labels:
            layers.append(Scale(self.unit))
        layers.append(ClipPower(self._cap()))
        return paper_init_(nn.Sequential(*layers), generator, cfg.bias_init)

    def loss(self, model: nn.Module, batch: dict[str, Any]) -> Tensor:
        """The MSE to the labels, in the outputs' unit (W with ``output_unit: budget``)."""
        unit = self.unit.to(batch["labels"])
        return nn.functional.mse_loss(model(batch["inputs"]) / unit, batch["labels"] / unit)

    def finalize(self, score=None) -> nn.Module:
        """The clipped outputs made feasible, rounded first if ``rounding`` says so; ``validated`` rounds
        when ``score`` (the validation ratio) is higher with rounding, or, without a score, as the paper."""
        feasible = FeasiblePower(self.spec.problem.group, self.spec.problem.budget[0])
        rounded = nn.Sequential(RoundPower(self._cap()), feasible)
        mode = Rounding(self.config.rounding)
        if mode == Rounding.validated and score is not None:
            self.rounded = score(rounded) > score(feasible)
        else:
            self.rounded = mode != Rounding.never
        return rounded if self.rounded else feasible

    def summary(self) -> dict[str, float]:
        """``train/rounded``: 1 when the final decision rounds the outputs."""
        return {"rounded": float(self.rounded)}


# ---------------------------------------------------------------------------------------------
# The same DNN on the beamforming family
# ---------------------------------------------------------------------------------------------
BEAMFORMING_FEATURE = "uplink_channel"


class ToBeamformers(nn.Module):
    """Real outputs ``[B, 2·C·N·K]`` → beamformers ``W [B, C, N, K]`` (complex64) with each BS exactly on
    its budget (the sum rate grows with every BS's power, so the budget binds at the optimum)."""

    def __init__(self, shape: tuple[int, ...], budget: Tensor):
        super().__init__()
        self.shape = tuple(shape)
        self.register_buffer("budget", budget.clone().float())

    def forward(self, x: Tensor) -> Tensor:
        W = torch.view_as_complex(x.reshape(x.shape[0], *self.shape, 2).contiguous())
        scale = (self.budget / bs_power(W).clamp_min(1e-30)).sqrt()
        return W * scale[..., None, None]


def canonical_phase(W: Tensor) -> Tensor:
    """Each beamformer rotated so that its first antenna's entry is real and >= 0: rates do not change
    with a beam's phase, so the MSE between canonical forms is the distance between what matters."""
    first = W[..., :1, :]
    return W * (first.conj() / first.abs().clamp_min(1e-30))


class BeamformingDNN(DNNLearner):
    """Sun et al.'s DNN on beamforming problems: the real and imaginary parts of every BS's uplink
    channels (``uplink_channel``, 2·C·U·N values) in, the same hidden ReLU layers, 2·C·N·K values out as
    the beamformers, each BS scaled onto its budget; MSE to the solver's beamformers with each beam's
    phase made canonical (:func:`canonical_phase`), in units of each BS's √budget. The power-control
    settings ``rounding`` and ``output_unit`` have no meaning here and are not used."""

    inputs = (BEAMFORMING_FEATURE,)

    @classmethod
    def published(cls, params: dict[str, str]) -> str | None:
        return None

    def __init__(self, config, spec):
        Learner.__init__(self, config, spec)
        self.rounded = False

    def observe_labels(self, labels: Tensor) -> None:
        """Nothing to learn from the labels' scale: the outputs are put on the budget."""

    @property
    def reports_raw(self) -> bool:
        return False

    def prepare(self, features: dict[str, Tensor]) -> Tensor:
        """``uplink_channel [B, C, U, N]`` → its real and imaginary parts, ``[B, 2·C·U·N]`` (float32)."""
        return torch.view_as_real(features[BEAMFORMING_FEATURE]).flatten(1).float()

    def build_model(self, train_inputs: Tensor, generator: torch.Generator) -> nn.Module:
        cfg = self.config
        layers: list[nn.Module] = []
        if cfg.input_scaling == InputScaling.standardize:
            layers.append(Standardize(train_inputs))
        hidden, width = relu_layers(train_inputs.shape[1], cfg.hidden)
        shape = self.spec.problem.decision_shape
        layers += [
            *hidden,
            nn.Linear(width, 2 * math.prod(shape)),
            ToBeamformers(shape, self.spec.problem.budget[0]),
        ]
        return paper_init_(nn.Sequential(*layers), generator, cfg.bias_init)

    def loss(self, model: nn.Module, batch: dict[str, Any]) -> Tensor:
        unit = self.spec.problem.budget[0].to(batch["inputs"]).sqrt()[:, None, None]
        ours = canonical_phase(model(batch["inputs"])) / unit
        theirs = canonical_phase(batch["labels"].to(ours.dtype)) / unit
        return torch.view_as_real(ours - theirs).square().mean()

    def finalize(self, score=None) -> nn.Module:
        """The beamformers as they come (already on the budget), through the family's projection."""
        return self.spec.problem.feasibility()

    def summary(self) -> dict[str, float]:
        return {}
