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

This file holds the learner and its config, and the block-by-block baseline's loss (:func:`channel_mismatch`);
the networks are in ``networks.py``, the pilots' feature in ``pilots.py``, what Ma et al.'s learners share in
``one_cell.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from mimo_l2o_plugins.ma2022.networks import CalibratedZF, Calibrator, ImplicitCalibratedZF, mlp
from mimo_l2o_plugins.ma2022.one_cell import OneCellBeamformer, _laptop_training, require_widths, rms
from mimo_l2o_plugins.ma2022.pilots import PILOT_FEATURE, _pilot_phase_unavailable
from torch import Tensor, nn

from mimo_l2o.errors import require
from mimo_l2o.learner import LearnerConfig, TrainConfig
from mimo_l2o.scenarios.miso import dft_pilots

CSI = ("perfect", "implicit", "block", "uplink")


@dataclass
class NeuralCalibrationConfig(LearnerConfig):
    """Neural calibration of ZF (Ma et al. 2022, Sec. IV-A).

    Parameters
    ----------
    name : str
        Registry key, ``neural_calibration``.
    csi : str
        ``perfect``: ZF calibrated from the downlink channels (eq. 18); ``implicit``: from the uplink
        pilots, learned end to end with the pilots, the LS calibrator and the uplink→downlink map (eq.
        22; the scenario's ``pilot_length`` sets ``L``); ``block``: the paper's block-by-block baseline,
        DFT pilots, LS, the map trained alone on the downlink channel (:func:`channel_mismatch`), ZF;
        ``uplink``: the implicit network on noise-free pilots (the pilots' noise left out, the
        uplink known perfectly), what the learned uplink→downlink map reaches without pilot noise
        (a baseline that separates the implicit method's gap into the map's and the noise's).
    hidden : list[int]
        Hidden layers of the user-wise MLP ``φ`` (the paper: 512, 2048, 2048; its output is ``2M``).
    ls_hidden : list[int]
        With ``csi: implicit``: hidden layers of the antenna-wise LS calibrator ``B`` (the paper: 128,
        512, 512; its output is ``2L``).
    mapping_hidden : list[int]
        With ``csi: implicit``: hidden layers of the user-wise uplink→downlink map ``H`` (the paper's
        ref. [27]; not given in the paper).
    batch_norm : bool
        Batch normalization after each hidden layer (the paper's).
    residual : bool
        ``true``: the calibrated channel is the channel plus ``φ``'s output, which starts at zero (training
        starts from ZF); ``false``: ``φ``'s output itself (the paper's).
    train : TrainConfig
        The shared training loop's settings (laptop default: batch 256, 20 epochs, Adam 1e-3).
    """

    name: str = "neural_calibration"
    csi: str = "perfect"
    hidden: list[int] = field(default_factory=lambda: [256, 512, 512])
    ls_hidden: list[int] = field(default_factory=lambda: [64, 128, 128])
    mapping_hidden: list[int] = field(default_factory=lambda: [256, 256])
    batch_norm: bool = True
    residual: bool = True
    train: TrainConfig = field(default_factory=_laptop_training)

    def __post_init__(self) -> None:
        require(self.csi in CSI, "csi", f"must be one of {', '.join(CSI)}, got {self.csi!r}")
        for key in ("hidden", "ls_hidden", "mapping_hidden"):
            require_widths(key, getattr(self, key))


def channel_mismatch(estimate: Tensor, channel: Tensor) -> Tensor:
    """``1 − |⟨Ĥ, H⟩|² / (‖Ĥ‖² ‖H‖²)`` per sample, over all users' channels ``[B, 1, K, M]`` at once: the
    NMSE of the estimate after the best common complex scale, which ZF on a BS's budget ignores (``cĤ``
    and ``Ĥ`` give the same beamformers), so the map is free of the links' unknown units (eq. 39's NMSE
    would need ``P_UL``)."""
    dims = tuple(range(1, channel.ndim))
    inner = (estimate.conj() * channel.to(estimate.dtype)).sum(dims).abs().square()
    norms = estimate.abs().square().sum(dims) * channel.abs().square().sum(dims).to(inner.dtype)
    return 1 - inner / norms.clamp_min(torch.finfo(inner.dtype).tiny)


class NeuralCalibrationLearner(OneCellBeamformer):
    """Ma et al. (2022): ZF of the channels calibrated by a user-wise shared MLP, trained on the sum rate."""

    display_name = "NC"

    Config = NeuralCalibrationConfig
    size_free = True  # φ reads one user's channel: any K (its M antennas are φ's input size)

    def __init__(self, config, spec):
        super().__init__(config, spec)
        if config.csi != "perfect":  # the pilots' length and the users' slots are learned: fixed sizes
            self.inputs = (PILOT_FEATURE,)
            self.size_free = False

    def shift_refusal(self, trained: tuple[int, ...], shifted: tuple[int, ...]) -> str | None:
        """Any number of users; not another number of antennas, φ's input (``[1, K, M, 2]``)."""
        if self.size_free and trained[-2] != shifted[-2]:
            return (
                f"{self.name}'s φ reads each user's {trained[-2]} antennas (its input size): this setting "
                f"has {shifted[-2]}"
            )
        return super().shift_refusal(trained, shifted)

    @classmethod
    def refuses_setting(cls, config, scenario) -> tuple[str, str] | None:
        """``csi: implicit`` without uplink pilots, or with fewer pilot symbols than users (LS needs
        ``L >= K``)."""
        if config.csi == "perfect":
            return None
        why = _pilot_phase_unavailable(scenario, None)
        if why:
            return ("csi", f"{config.csi} needs uplink pilots, but scenario={scenario.name}: {why}")
        length, k = int(scenario.config.pilot_length), int(scenario.config.num_users)
        if length < k:
            return (
                "csi",
                f"{config.csi} estimates by LS, which needs scenario.pilot_length >= num_users "
                f"(got L={length} < K={k}; the paper: L = K)",
            )
        return None

    @classmethod
    def refuses(cls, scenario, precoder) -> str | None:
        """Several cells (the method beamforms in one), or fewer antennas than users (ZF needs ``M >= K``)."""
        why = super().refuses(scenario, precoder)
        n, k = int(scenario.config.num_antennas), int(scenario.config.num_users)
        if why is None and n < k:
            return (
                f"neural_calibration zero-forces, which needs antennas >= users "
                f"(scenario.num_antennas={n} < scenario.num_users={k})"
            )
        return why

    def prepare(self, features: dict[str, Tensor]) -> Tensor:
        """The pilots' phase ``[n, 1, M, K + L, 2]``; with ``csi: uplink`` without its noise (the last
        ``L`` columns zero)."""
        inputs = super().prepare(features)
        if self.config.csi == "uplink":
            inputs[..., self.spec.problem.users_per_cell :, :] = 0
        return inputs

    @property
    def exportable(self) -> bool:
        return False  # a complex solve: logged by pickle

    def build_model(self, train_inputs: Tensor, generator: torch.Generator) -> nn.Module:
        cfg = self.config
        budget = self.spec.problem.budget[0]
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        with torch.random.fork_rng(devices=[]):  # PyTorch's default initialization, from the run's seed
            torch.manual_seed(seed)
            if cfg.csi != "perfect":
                return self._implicit_model(train_inputs)
            scale = rms(train_inputs)
            calibrator = Calibrator(
                train_inputs.shape[-2], list(cfg.hidden), cfg.batch_norm, cfg.residual, scale
            )
        return CalibratedZF(calibrator, budget)

    def _implicit_model(self, train_inputs: Tensor) -> ImplicitCalibratedZF:
        """Eq. (22)'s network for the training inputs ``[n, 1, M, K + L, 2]`` (their scales set the units)."""
        cfg = self.config
        k, antennas = self.spec.problem.users_per_cell, train_inputs.shape[-3]
        length = train_inputs.shape[-2] - k
        h, noise = train_inputs[..., :k, :], train_inputs[..., k:, :]
        h_scale = rms(h)  # √P_UL |h|: one pilot symbol of unit power's received amplitude
        y_scale = (h_scale**2 * k + rms(noise) ** 2) ** 0.5  # Y's entries under unit-power pilots
        joint = cfg.csi in ("implicit", "uplink")
        return ImplicitCalibratedZF(
            dft_pilots(k, length, 1.0),
            mlp(2 * length, list(cfg.ls_hidden), 2 * length, cfg.batch_norm, zero_last=True)
            if joint
            else None,
            mlp(2 * antennas, list(cfg.mapping_hidden), 2 * antennas, cfg.batch_norm, zero_last=True),
            Calibrator(antennas, list(cfg.hidden), cfg.batch_norm, cfg.residual, 1.0) if joint else None,
            self.spec.problem.budget[0],
            y_scale,
            h_scale,
            learn_pilots=joint,
        )

    def loss(self, model: nn.Module, batch: dict[str, Any]) -> Tensor:
        """The negative mean sum rate of the batch (eq. 18, 22); the block-by-block baseline's map trains
        on the downlink channel alone (:func:`channel_mismatch`)."""
        if self.config.csi == "block":
            channel = self.batch_problem(batch).channel
            return channel_mismatch(model.downlink_estimate(batch["inputs"]), channel).mean()
        return super().loss(model, batch)
