"""Ma, Shen, Yu, Zhang, Song & Letaief (2022): neural calibration of ZF (``neural_calibration``).

With perfect downlink CSI (Sec. IV-A, eq. 18) the beamformer is ZF of a calibrated channel,
``V = h_ZF(F(H_DL))``, ``h_ZF(X) = γ Xᴴ (X Xᴴ)⁻¹`` scaled onto ``P_DL``, and the calibration is one MLP
``φ`` shared by the users, ``F(H_DL) = [φ(h_DL,1), …, φ(h_DL,K)]``: its input and output sizes do not
depend on ``K``, and reordering the users reorders the beamformers the same way (eq. 19). Trained
unsupervised on the sum rate (eq. 18's objective), no solver labels.

Here ``φ`` reads a user's channel in units of one constant (the training channels' RMS entry, so a
channel's scale, which carries its share of the power, stays visible and the equivariance holds) as
its real and imaginary parts, ``2M`` values, through hidden layers of BN + ReLU (the paper: 512, 2048,
2048; laptop default 256, 512, 512) to ``2M`` values; ``residual: true`` (ours, the default) adds them to
the channel, the last layer starting at zero so that training starts from ZF exactly (the paper's
Theorem 2: a better calibration lies near the channel itself); ``residual: false`` is the paper's, ``φ``'s
output the calibrated channel. The arithmetic is native complex (``torch.linalg.solve`` on complex64),
not the real-block rewrite of the paper's Sec. IV-C: PyTorch differentiates complex solves, and the
rewrite doubles the matrices' size.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from mimo_l2o.errors import require
from mimo_l2o.learner import Learner, LearnerConfig, TrainConfig
from mimo_l2o.problems import BEAMFORMING
from mimo_l2o.solvers.beamformers import zero_forcing

FEATURE = "downlink_channel"


def _laptop_training() -> TrainConfig:
    # the paper: Adam at 1e-3, batch 1024, 200 epochs on 204,800 samples (the presets)
    return TrainConfig(batch_size=256, max_epochs=20, lr=1e-3, early_stopping_patience=8)


@dataclass
class NeuralCalibrationConfig(LearnerConfig):
    """Neural calibration of ZF (Ma et al. 2022, Sec. IV-A).

    Parameters
    ----------
    name : str
        Registry key, ``neural_calibration``.
    hidden : list[int]
        Hidden layers of the user-wise MLP ``φ`` (the paper: 512, 2048, 2048; its output is ``2M``).
    batch_norm : bool
        Batch normalization after each hidden layer (the paper's).
    residual : bool
        ``true``: the calibrated channel is the channel plus ``φ``'s output, which starts at zero (training
        starts from ZF); ``false``: ``φ``'s output itself (the paper's).
    train : TrainConfig
        The shared training loop's settings (laptop default: batch 256, 20 epochs, Adam 1e-3).
    """

    name: str = "neural_calibration"
    hidden: list[int] = field(default_factory=lambda: [256, 512, 512])
    batch_norm: bool = True
    residual: bool = True
    train: TrainConfig = field(default_factory=_laptop_training)

    def __post_init__(self) -> None:
        require(
            len(self.hidden) >= 1 and all(int(w) >= 1 for w in self.hidden),
            "hidden",
            f"must be a non-empty list of layer widths >= 1, got {list(self.hidden)}",
        )


class Calibrator(nn.Module):
    """``φ``: each user's channel ``[..., M]`` (complex) → its calibrated channel ``[..., M]``, in units of
    ``scale``, one MLP for every user (module docstring)."""

    def __init__(self, antennas: int, hidden: list[int], batch_norm: bool, residual: bool, scale: float):
        super().__init__()
        layers: list[nn.Module] = []
        width = 2 * antennas
        for out in hidden:
            layers += [nn.Linear(width, out), *([nn.BatchNorm1d(out)] if batch_norm else []), nn.ReLU()]
            width = out
        last = nn.Linear(width, 2 * antennas)
        if residual:
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
        self.net = nn.Sequential(*layers, last)
        self.residual = residual
        self.register_buffer("scale", torch.tensor(float(scale)))

    def forward(self, h: Tensor) -> Tensor:
        h = h / self.scale
        x = torch.view_as_real(h).flatten(-2)  # [..., 2M]: re, im of each antenna
        y = self.net(x.reshape(-1, x.shape[-1])).reshape(x.shape)
        y = torch.view_as_complex(y.unflatten(-1, (-1, 2)).contiguous())
        return h + y if self.residual else y


class CalibratedZF(nn.Module):
    """The beamformers ``h_ZF(F(H_DL))``: channels ``[B, 1, K, M, 2]`` (real, imaginary) → ``W [B, 1, M, K]``
    (complex64) on the BS's budget."""

    def __init__(self, calibrator: Calibrator, budget: Tensor):
        super().__init__()
        self.calibrator = calibrator
        self.register_buffer("budget", budget.clone().float())

    def forward(self, x: Tensor) -> Tensor:
        h = torch.view_as_complex(x.contiguous())  # [B, 1, K, M]
        return zero_forcing(self.calibrator(h).transpose(-1, -2), self.budget)


class NeuralCalibrationLearner(Learner):
    """Ma et al. (2022): ZF of the channels calibrated by a user-wise shared MLP, trained on the sum rate."""

    display_name = "NC"

    Config = NeuralCalibrationConfig
    requires_labels = False
    families = (BEAMFORMING,)
    inputs = (FEATURE,)
    paper = "ma2022"
    size_free = True  # φ reads one user's channel: any K (and the ZF that follows any M >= K)

    @classmethod
    def refuses(cls, scenario, precoder) -> str | None:
        """Several cells (the method beamforms in one), or fewer antennas than users (ZF needs ``M >= K``)."""
        cells = int(getattr(scenario.config, "num_cells", 1))
        if cells > 1:
            return (
                f"neural_calibration beamforms in one cell (Ma et al. 2022); scenario={scenario.name} has "
                f"{cells} cells"
            )
        n, k = int(scenario.config.num_antennas), int(scenario.config.num_users)
        if n < k:
            return (
                f"neural_calibration zero-forces, which needs antennas >= users "
                f"(scenario.num_antennas={n} < scenario.num_users={k})"
            )
        return None

    @property
    def exportable(self) -> bool:
        return False  # a complex solve: logged by pickle

    def adapt(self, model: nn.Module, finalize: nn.Module, problem) -> tuple[nn.Module, nn.Module]:
        """For a shifted setting: ZF scaled onto the shifted BS's budget ``P_DL`` (``γ_ZF`` of eq. 18 is
        computed from the power at deployment), the calibration as trained."""
        adapted = copy.deepcopy(model)
        adapted.budget = problem.budget[0].detach().float().to(model.budget.device)
        return adapted, problem.feasibility()

    def prepare(self, features: dict[str, Tensor]) -> Tensor:
        """``downlink_channel [B, 1, K, M]`` → ``[B, 1, K, M, 2]`` (real, imaginary; float32)."""
        return torch.view_as_real(features[FEATURE]).float()

    def build_model(self, train_inputs: Tensor, generator: torch.Generator) -> nn.Module:
        cfg = self.config
        scale = float(train_inputs.double().square().mean().mul(2).sqrt().clamp_min(1e-30))  # RMS |h_m|
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        with torch.random.fork_rng(devices=[]):  # PyTorch's default initialization, from the run's seed
            torch.manual_seed(seed)
            calibrator = Calibrator(
                train_inputs.shape[-2], list(cfg.hidden), cfg.batch_norm, cfg.residual, scale
            )
        return CalibratedZF(calibrator, self.spec.problem.budget[0])

    def loss(self, model: nn.Module, batch: dict[str, Any]) -> Tensor:
        """The negative mean sum rate of the batch (eq. 18)."""
        return -self.spec.objective(self.batch_problem(batch), model(batch["inputs"])).mean()
