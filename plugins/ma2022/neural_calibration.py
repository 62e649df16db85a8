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
from mimo_l2o.features import feature
from mimo_l2o.learner import Learner, LearnerConfig, TrainConfig
from mimo_l2o.problems import BEAMFORMING
from mimo_l2o.scenarios.miso import dft_pilots
from mimo_l2o.solvers.beamformers import onto_budget, zero_forcing

FEATURE = "downlink_channel"
CSI = ("perfect", "implicit", "block")


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
        DFT pilots, LS, the map trained alone on the downlink channel (:func:`channel_mismatch`), ZF.
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


def mlp(width_in: int, hidden: list[int], width_out: int, batch_norm: bool, zero_last: bool) -> nn.Sequential:
    """Hidden layers of Linear (+ BN) + ReLU and a linear output layer (zero-initialized if asked)."""
    layers: list[nn.Module] = []
    width = width_in
    for out in hidden:
        layers += [nn.Linear(width, out), *([nn.BatchNorm1d(out)] if batch_norm else []), nn.ReLU()]
        width = out
    last = nn.Linear(width, width_out)
    if zero_last:
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
    return nn.Sequential(*layers, last)


def rowwise(net: nn.Module, z: Tensor) -> Tensor:
    """``net`` applied to the real and imaginary parts of each row ``z[..., i, :]`` (complex, width ``n``),
    back as complex rows: one shared MLP per row (antenna or user)."""
    x = torch.view_as_real(z.resolve_conj()).flatten(-2)
    y = net(x.reshape(-1, x.shape[-1])).reshape(*x.shape[:-1], -1)
    return torch.view_as_complex(y.unflatten(-1, (-1, 2)).contiguous())


def channel_mismatch(estimate: Tensor, channel: Tensor) -> Tensor:
    """``1 − |⟨Ĥ, H⟩|² / (‖Ĥ‖² ‖H‖²)`` per sample, over all users' channels ``[B, 1, K, M]`` at once: the
    NMSE of the estimate after the best common complex scale, which ZF on a BS's budget ignores (``cĤ``
    and ``Ĥ`` give the same beamformers), so the map is free of the links' unknown units (eq. 39's NMSE
    would need ``P_UL``)."""
    dims = tuple(range(1, channel.ndim))
    inner = (estimate.conj() * channel.to(estimate.dtype)).sum(dims).abs().square()
    norms = estimate.abs().square().sum(dims) * channel.abs().square().sum(dims).to(inner.dtype)
    return 1 - inner / norms.clamp_min(torch.finfo(inner.dtype).tiny)


def rms(x: Tensor) -> float:
    """The RMS magnitude of the complex entries of ``x [..., 2]`` (real, imaginary)."""
    return float(x.double().square().sum(-1).mean().sqrt().clamp_min(1e-30))


class Calibrator(nn.Module):
    """``φ``: each user's channel ``[..., M]`` (complex) → its calibrated channel ``[..., M]``, in units of
    ``scale``, one MLP for every user (module docstring)."""

    def __init__(self, antennas: int, hidden: list[int], batch_norm: bool, residual: bool, scale: float):
        super().__init__()
        self.net = mlp(2 * antennas, hidden, 2 * antennas, batch_norm, zero_last=residual)
        self.residual = residual
        self.register_buffer("scale", torch.tensor(float(scale)))

    def forward(self, h: Tensor) -> Tensor:
        h = h / self.scale
        y = rowwise(self.net, h)  # re, im of each antenna in, the same out
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


class NeuralCalibrationLearner(OneCellBeamformer):
    """Ma et al. (2022): ZF of the channels calibrated by a user-wise shared MLP, trained on the sum rate."""

    display_name = "NC"

    Config = NeuralCalibrationConfig
    size_free = True  # φ reads one user's channel: any K (and the ZF that follows any M >= K)

    def __init__(self, config, spec):
        super().__init__(config, spec)
        if config.csi != "perfect":  # the pilots' length and the users' slots are learned: fixed sizes
            self.inputs = (PILOT_FEATURE,)
            self.size_free = False

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
        joint = cfg.csi == "implicit"
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


# ---------------------------------------------------------------------------------------------
# Implicit channel estimation (Sec. IV-B, eq. 22)
# ---------------------------------------------------------------------------------------------
PILOT_FEATURE = "uplink_pilot_phase"


def _pilot_phase_unavailable(scenario, precoder) -> str | None:
    if "pilot_noise" not in scenario.tensors:
        return "it samples no uplink pilot noise (pilot_noise)"
    if getattr(scenario.config, "pilot_length", None) is None:
        return "scenario.pilot_length is null (perfect CSI): set the uplink pilots' length L"
    return None


@feature(PILOT_FEATURE, reads_problem=False, unavailable=_pilot_phase_unavailable)
def uplink_pilot_phase(scenario, network, problem) -> Tensor:
    """``[batch, 1, M, K + L]`` complex: the uplink channels ``H_UL`` (``M × K``, column ``k`` user ``k``'s)
    times ``√P_UL``, beside the noise ``N`` (``M × L``) of the received pilots: what a network that designs
    its own pilots needs to form ``Y_p = √P_UL H_UL X̃ + N`` (eq. 7, the pilots ``√P_UL X̃`` with
    ``‖x̃_k‖² <= L``) inside itself, the uplink transmission being part of the learned system. The users'
    power rides on the channel, so a model trained at one ``P_UL`` reads another's."""
    power = float(scenario.config.pilot_power)
    return torch.cat((network["h_ul"].transpose(-1, -2) * power**0.5, network["pilot_noise"]), -1)


def onto_pilot_power(X: Tensor) -> Tensor:
    """Each user's pilot row ``x̃_k`` of ``X [K, L]`` scaled onto ``‖x̃_k‖² <= L`` (eq. 22's constraint in
    units of ``P_UL``; a row inside stays)."""
    length = X.shape[-1]
    norm = torch.linalg.vector_norm(X, dim=-1, keepdim=True)
    return X * torch.clamp(length**0.5 / norm.clamp_min(torch.finfo(norm.dtype).tiny), max=1.0)


class ImplicitCalibratedZF(nn.Module):
    """Eq. (22): ``V = h_ZF(F ∘ H(f_LS(B(Y_p))))`` with learned pilots. Input ``[B, 1, M, K + L, 2]`` (the
    uplink channels and the pilots' noise, :func:`uplink_pilot_phase`) → ``W [B, 1, M, K]`` on the budget.

    * pilots ``X̃ [K, L]`` in units of ``√P_UL`` (learned, started at the DFT pilots), kept on
      ``‖x̃_k‖² <= L`` (:func:`onto_pilot_power`);
    * ``B``: an MLP shared by the antennas on each row of ``Y_p = H_UL X̃ + N`` (``2L`` values in and out,
      residual: it starts as the identity), antenna-wise permutation equivariant (Theorem 1);
    * ``f_LS``: ``Ĥ_UL = Ỹ X̃ᴴ (X̃ X̃ᴴ)⁻¹`` (needs ``L >= K``);
    * ``H``: the uplink→downlink map, an MLP shared by the users on each ``ĥ_UL,k`` (``2M`` in and out,
      residual: it starts as the uplink channel itself);
    * ``F``: the calibration ``φ`` (:class:`Calibrator`), then ZF scaled onto ``P_DL``.

    Without ``ls_calibrator`` and ``calibrator`` and with the pilots fixed (``learn_pilots=False``) it is
    the block-by-block baseline: LS of DFT pilots, the map, ZF.

    Signals are in units of constants fixed at construction (the received pilots' and the channels' RMS
    entries), so that the MLPs see values of order one.
    """

    def __init__(
        self,
        pilots: Tensor,
        ls_calibrator: nn.Module | None,
        mapping: nn.Module,
        calibrator: Calibrator | None,
        budget: Tensor,
        y_scale: float,
        h_scale: float,
        learn_pilots: bool = True,
    ):
        super().__init__()
        pilots = torch.view_as_real(pilots.to(torch.complex64)).clone()
        self.pilots_real = nn.Parameter(pilots, requires_grad=learn_pilots)
        self.ls_calibrator, self.mapping, self.calibrator = ls_calibrator, mapping, calibrator
        self.register_buffer("budget", budget.clone().float())
        self.register_buffer("y_scale", torch.tensor(float(y_scale)))
        self.register_buffer("h_scale", torch.tensor(float(h_scale)))

    def pilots(self) -> Tensor:
        """The learned pilots ``X̃ [K, L]`` on their power constraint."""
        return onto_pilot_power(torch.view_as_complex(self.pilots_real))

    def downlink_estimate(self, x: Tensor) -> Tensor:
        """``Ĥ_DL [B, 1, K, M]``, rows per user, in units of ``h_scale``: ``H(f_LS(B(Y_p)))``."""
        h_ul = self.uplink_estimate(x).transpose(-1, -2)
        return h_ul + rowwise(self.mapping, h_ul)  # H: the uplink→downlink map (residual)

    def uplink_estimate(self, x: Tensor) -> Tensor:
        """``Ĥ_UL [B, 1, M, K]`` (in units of ``h_scale``) from the input (the class docstring)."""
        z = torch.view_as_complex(x.contiguous())  # [B, 1, M, K + L]
        X = self.pilots()
        k = X.shape[0]
        H, N = z[..., :k], z[..., k:]
        Y = (H @ X + N) / self.y_scale  # the received pilots, eq. (7)
        if self.ls_calibrator is not None:
            Y = Y + rowwise(self.ls_calibrator, Y)  # B: antenna-wise calibration
        Xs = X / self.y_scale * self.h_scale  # LS in units of h_scale
        return torch.linalg.solve(Xs @ Xs.mH, Y @ Xs.mH, left=False)

    def forward(self, x: Tensor) -> Tensor:
        h_dl = self.downlink_estimate(x)
        if self.calibrator is not None:
            h_dl = self.calibrator(h_dl)  # F
        return zero_forcing(h_dl.transpose(-1, -2), self.budget)


# ---------------------------------------------------------------------------------------------
# The fully data-driven benchmark (Sec. V-B/C, the paper's ref. [14])
# ---------------------------------------------------------------------------------------------
DATA_INPUTS = {"perfect": FEATURE, "pilots": "uplink_channel"}


@dataclass
class DataDrivenConfig(LearnerConfig):
    """The fully data-driven beamformer (Ma et al. 2022's benchmark, from their ref. [14]).

    Parameters
    ----------
    name : str
        Registry key, ``data_driven_bf``.
    csi : str
        ``perfect``: ``H_DL → V`` (Sec. V-B); ``pilots``: the received uplink pilots (as their LS
        estimate, an invertible map of ``Y_p`` for ``L >= K`` DFT pilots) ``→ V`` (Sec. V-C's end-to-end
        benchmark; set ``scenario.pilot_length``).
    hidden : list[int]
        Hidden layers (BN + ReLU) of the network from all channels' real and imaginary parts to ``V``'s.
    train : TrainConfig
        The shared training loop's settings.
    """

    name: str = "data_driven_bf"
    csi: str = "perfect"
    hidden: list[int] = field(default_factory=lambda: [512, 512])
    train: TrainConfig = field(default_factory=_laptop_training)

    def __post_init__(self) -> None:
        require(self.csi in DATA_INPUTS, "csi", f"must be one of {', '.join(DATA_INPUTS)}, got {self.csi!r}")
        require_widths("hidden", self.hidden)


class DataDrivenNet(nn.Module):
    """Channels ``[B, 1, K, M, 2]`` → ``W [B, 1, M, K]`` (complex64) on the BS's budget: one MLP from every
    channel's real and imaginary parts (in units of ``scale``) to every beamformer's, no structure."""

    def __init__(self, users: int, antennas: int, hidden: list[int], budget: Tensor, scale: float):
        super().__init__()
        self.net = mlp(2 * users * antennas, hidden, 2 * users * antennas, batch_norm=True, zero_last=False)
        self.users, self.antennas = users, antennas
        self.register_buffer("budget", budget.clone().float())
        self.register_buffer("scale", torch.tensor(float(scale)))

    def forward(self, x: Tensor) -> Tensor:
        y = self.net(x.flatten(1) / self.scale).reshape(x.shape[0], 1, self.antennas, self.users, 2)
        return onto_budget(torch.view_as_complex(y.contiguous()), self.budget)


class DataDrivenLearner(OneCellBeamformer):
    """The fully data-driven beamformer: an MLP from the channels (or pilots) to ``V``, on the sum rate."""

    display_name = "Data-driven"

    Config = DataDrivenConfig

    def __init__(self, config, spec):
        super().__init__(config, spec)
        self.inputs = (DATA_INPUTS[config.csi],)

    @classmethod
    def refuses_setting(cls, config, scenario) -> tuple[str, str] | None:
        if config.csi == "pilots" and getattr(scenario.config, "pilot_length", None) is None:
            return (
                "csi",
                f"pilots needs uplink pilots: set scenario.pilot_length (scenario={scenario.name})",
            )
        return None

    @property
    def exportable(self) -> bool:
        return True

    def build_model(self, train_inputs: Tensor, generator: torch.Generator) -> nn.Module:
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            k, m = train_inputs.shape[-3], train_inputs.shape[-2]
            return DataDrivenNet(
                k, m, list(self.config.hidden), self.spec.problem.budget[0], rms(train_inputs)
            )


# ---------------------------------------------------------------------------------------------
# Deep-unfolded WMMSE (the paper's benchmark, ref. [14]: 20 layers)
# ---------------------------------------------------------------------------------------------
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


def wmmse_layer(H: Tensor, V: Tensor, noise: Tensor, budget: Tensor, log_scale: Tensor) -> Tensor:
    """One unfolded WMMSE iteration (Shi et al. 2011 for the MISO broadcast channel) on channels ``H [B, 1,
    M, K]`` (column ``k`` user ``k``'s) from ``V [B, 1, M, K]``: the MMSE receivers ``u_k``, the weights
    ``w_k = 1 / (1 − u_k* h_kᴴ v_k)``, then ``V = (Σ_k w_k |u_k|² h_k h_kᴴ + μ I)⁻¹ [w_k u_k h_k]`` scaled
    onto the budget, with ``μ = e^{log_scale} σ² Σ_k w_k |u_k|² / P`` (the multiplier of the power-normalized
    WMMSE, times a learned factor, instead of a bisection per iteration). The ``M × M`` inverse is taken
    as ``H (μ I + D HᴴH)⁻¹`` (``D = diag(w |u|²)``, the push-through identity): a ``K × K`` solve."""
    gain = H.mH @ V  # [B, 1, K, K]: h_kᴴ v_j
    signal = gain.diagonal(dim1=-2, dim2=-1)
    total = gain.abs().square().sum(-1) + noise.reshape(signal.shape).to(gain.real.dtype)
    u = signal / total
    w = 1 / (1 - (u.conj() * signal).real).clamp_min(1e-12)
    d = w * u.abs().square()
    mu = (
        log_scale.exp()
        * noise.reshape(signal.shape).to(d.dtype).mean(-1, keepdim=True)
        * d.sum(-1, keepdim=True)
    )
    mu = mu / budget.reshape(mu.shape).to(mu.dtype)
    k = H.shape[-1]
    eye = torch.eye(k, dtype=H.dtype, device=H.device)
    system = mu[..., None].to(H.dtype) * eye + d[..., :, None].to(H.dtype) * (H.mH @ H)
    coefficients = torch.linalg.solve(system, torch.diag_embed((w * u).to(H.dtype)))
    return onto_budget(H @ coefficients, budget.reshape(H.shape[0], -1))


class UnfoldedWMMSE(nn.Module):
    """``layers`` WMMSE iterations (:func:`wmmse_layer`), each with its learned multiplier factor, from MRT
    on the budget. Input ``[B, 1, K, M, 2]``, output ``W [B, 1, M, K]`` (complex64); the noise and budget
    are the trained setting's (:meth:`UnfoldedWMMSELearner.adapt` sets a shifted one's)."""

    def __init__(self, layers: int, budget: Tensor, noise: Tensor):
        super().__init__()
        self.log_scale = nn.Parameter(torch.zeros(layers))
        self.register_buffer("budget", budget.clone().float())
        self.register_buffer("noise", noise.clone().float())

    def forward(self, x: Tensor) -> Tensor:
        H = torch.view_as_complex(x.contiguous()).transpose(-1, -2)  # [B, 1, M, K]
        budget = self.budget.expand(H.shape[0], -1)
        noise = self.noise.expand(H.shape[0], -1)
        V = onto_budget(H, budget)  # MRT
        for t in range(self.log_scale.shape[0]):
            V = wmmse_layer(H, V, noise, budget, self.log_scale[t])
        return V


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
