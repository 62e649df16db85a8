"""The model-driven beamforming learner of Zhang, You, Zheng, Krikidis & Zhao (2022) (``model_driven``).

From the uplink channel information the BS has, two sub-nets learn what the structure of the optimal
downlink beamformer needs (Section IV, Fig. 1):

* **CSI-Net** (fully connected, ``tanh``, a linear output layer): the downlink channels ``Ĥ_D`` from the
  uplink ones, trained on ``L_H`` (eq. 8, the mean squared error per real entry). ``csi_sharing: joint``
  maps all ``K`` users' channels at once (2·N·K values in and out, the paper's Sec. VII-A net);
  ``per_user`` shares one net over the users (2·N values each), which the paper suggests when users'
  channels are alike; it can't learn a per-user factor (the ``c_k`` of ``miso_tdd``'s fixed mismatch).
* **Power-Net** (fully connected, batch normalization and ``ReLU``, a ``softmax`` output times ``P``):
  the downlink powers ``p`` and the virtual uplink powers ``q`` (``Σp = Σq = P``), trained on ``L_P``
  (eq. 9) against the solver's: ``p_k = ‖w_k‖²`` of its beamformers and ``q`` from uplink-downlink
  duality (:func:`~mimo_l2o.solvers.beamformers.dual_uplink_powers`).
* **beamforming recovery** (no parameters): ``w_k = √p_k (I + Σ_j q_j/σ² ĥ_j ĥ_jᴴ)⁻¹ ĥ_k / ‖·‖`` (eq. 7
  with ``q_j`` in the sum, as in ref. [23]; ``recovery: structure``), the same in the K-dimensional basis
  of eq. (23) (``reduced``), or ZF directions ``Ĥ(ĤᴴĤ)⁻¹`` with the learned powers ``p`` (``zf``:
  Sec. V-C; eq. 24 prints one common scale, here each direction gets its ``p_k``, of which a common
  scale is one choice).

The hybrid loss (eq. 10) is ``α_H L_H + α_P L_P + α_R L_R`` with ``L_R = −R_sum``, the sum rate of the
recovered beamformers: ``α_R >= 0`` multiplies ``−R_sum`` (the paper's multicell ``α_R = −1`` would
minimize the rate with that sign; its magnitude is what it means). Defaults ``α_H = α_P = α_R = 1``, not
the paper's ``α_R = 0.001``: with ``L_P`` on the powers over ``P`` (below) and ``L_H`` on unit-variance
channels, ``0.001`` leaves the rate term no effect and training becomes supervised alone, which WMMSE's
labels (users switched off at high SNR, a discontinuous map) make a worse target than the rate itself
(the measured comparison is in README.md). The paper computes ``R_sum`` on the learned channel; the
true downlink channel is available in training (``L_H`` needs it) and is what the rate is measured on,
so ``rate_channel: true`` (default) uses it and ``learned`` follows the paper's wording. ``L_H`` and
``L_P`` are in the problem's own units (channels as sampled), except that ``L_P`` is taken on the powers
over ``P`` by default (``power_unit``): the paper does not say its unit, and in the unit of ``P`` (100
at 20 dB) ``L_P`` is about 10⁴ times larger, which leaves ``α_R = 0.001`` without effect: training is
then supervised alone.

The rate's gradient does not reach the CSI-Net by default (``rate_into_csi: false``, not the paper's
joint training): the CSI-Net learns the channel, the Power-Net learns the powers for it.

In several cells (Sec. VI-C) the learner is :class:`MulticellNet`: one network at every BS, each reading
only its own uplink observations, and the SLNR structure of eq. (35); ``recovery: slnr``,
``csi_features: paths`` and ``csi_skip`` use the same per-link network in one cell, where it recovers
with eq. (7), (23), ZF or eq. (35) as ``recovery`` says.

``variant: channel_zf`` is the paper's "learned channel + ZF" benchmark: the CSI-Net alone, trained on
``L_H``, and ZF of the learned channel on the budget (eq. 24). ``channel_bf`` is its "learned channel and
beamforming" benchmark (Sec. VII): the CSI-Net on ``L_H``, and a data-driven beamforming net (the
Power-Net's layers, ``2·N·K`` values out, scaled onto the budget) that reads the learned channel and is
trained on the sum rate alone (unsupervised), its gradient kept out of the CSI-Net: the two are the
paper's separate stages, trained in one loop (single cell). Supervised-only and unsupervised-only
training are ``alpha_r=0`` and ``alpha_h=0 alpha_p=0``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import torch
from torch import Tensor, nn

from mimo_l2o.errors import require
from mimo_l2o.learner import Learner, LearnerConfig, OptimizerName, TrainConfig
from mimo_l2o.problems import BEAMFORMING
from mimo_l2o.problems.beamforming import BeamformingProblem
from mimo_l2o.solvers import beamformers as bf

FEATURE = "uplink_channel"


class Sharing(str, Enum):
    joint = "joint"  # one net maps all users' channels (2 N K in and out)
    per_user = "per_user"  # one net shared by the users (2 N in and out)


class Recovery(str, Enum):
    structure = "structure"  # eq. (7), an N x N solve per user
    reduced = "reduced"  # eq. (23), K x K
    zf = "zf"  # ZF directions with the learned powers (Sec. V-C)
    slnr = "slnr"  # eq. (35): the SLNR structure with the learned powers, one net per link (MulticellNet)


class CSIFeatures(str, Enum):
    antenna = "antenna"  # the uplink channels as they are (the paper)
    beamspace = "beamspace"  # and each path's |u| u in a 4x oversampled beamspace (eq. 40's map)
    paths = "paths"  # beamspace, and Σ |u_l| u_l a(θ_l) of the paths the matrix pencil finds (per link)


class RateChannel(str, Enum):
    true = "true"  # the rate of the training loss on the true downlink channel
    learned = "learned"  # on the CSI-Net's channel, as the paper writes it


class PowerUnit(str, Enum):
    budget = "budget"  # L_P on the powers over P (fractions of the budget)
    absolute = "absolute"  # L_P on the powers in the unit of P


class PowerNetKind(str, Enum):
    fc = "fc"  # fully connected, batch normalization, ReLU (Sec. VII-A)
    cnn = "cnn"  # two 1-D convolutions along the antennas, then 256 ReLU units (Sec. VII-B)


class Variant(str, Enum):
    hybrid = "hybrid"  # CSI-Net + Power-Net + recovery, the hybrid loss (the paper's method)
    channel_zf = "channel_zf"  # the benchmark "learned channel + ZF beamforming"
    channel_slnr = "channel_slnr"  # multicell: "learned channel + SLNR beamforming" (eq. 32 alternated)
    channel_bf = "channel_bf"  # "learned channel + beamforming": a data-driven net on the learned channel


def _laptop_training() -> TrainConfig:
    """Adam at 1e-3 and batch 100 as the paper (Sec. VII); 40 epochs, not its 200 (the presets)."""
    return TrainConfig(optimizer=OptimizerName.adam, lr=1e-3, batch_size=100, max_epochs=40)


@dataclass
class ModelDrivenConfig(LearnerConfig):
    """Parameters
    ----------
    variant : Variant
        ``hybrid`` (the paper's method); the benchmarks ``channel_zf`` (learned channel + ZF),
        ``channel_bf`` (learned channel + a data-driven beamforming net, single cell) and, in several cells,
        ``channel_slnr`` (learned channel + SLNR).
    csi_layers, csi_width : int
        Hidden layers of the CSI-Net and their width (0: ``4·N·K``, the paper's Sec. VII-A; multicell
        ``2·N·U`` for ``U`` users in all, where the paper's Sec. VII-C has ``2·N·N_c²``, a preset).
    csi_sharing : Sharing or None
        ``joint`` (all users at once) or ``per_user`` (one net shared by the users); ``None`` (default):
        ``joint`` in one cell, ``per_user`` in several (each link's map alike; measured on
        ``multicell_miso``: 0.881 of WMMSE against 0.842 joint, 8,000 samples, the same epochs).
    csi_features : CSIFeatures or None
        What the CSI-Net reads of each user's uplink column ``x``: ``antenna``, the column itself (the
        paper); ``beamspace``, also ``|b| b`` for ``b = F x`` in a 4x oversampled DFT beamspace (``4 N``
        beams): eq. (40) makes each path's downlink coefficient ``|u| u`` of its uplink one, and where
        paths fall in separate beams that is this feature (measured on ``multicell_miso``: 0.906 of
        WMMSE against 0.880, the same short training). ``paths`` (selects the per-link network): also eq.
        (40)'s map applied path by path, ``Σ_l |u_l| u_l a_U(θ_l)`` of the ``csi_paths`` plane waves the
        matrix pencil finds in the column (:func:`path_features`), which the per-link linear map of
        ``csi_skip`` carries to the downlink's array; not the paper's. ``None`` (default): ``antenna``
        in one cell, ``beamspace`` in several.
    csi_paths : int
        The number of plane waves the matrix pencil of ``csi_features: paths`` fits to each column, at
        most ``N_t // 2``; more than the channel has costs little (the extra waves get ``u ≈ 0``, and
        ``|u| u`` is smaller still). Default 8 (``miso_fdd`` has 5 paths).
    power_layers, power_width : int
        Hidden layers of the Power-Net and their width (0: as the CSI-Net's); for ``power_net: cnn`` the
        width of its fully connected layer (0: 256, the paper's).
    power_net : PowerNetKind
        ``fc`` (default, Sec. VII-A) or ``cnn``, the 1-D CNN Power-Net of Sec. VII-B (:class:`ConvPowerNet`;
        single cell, ``variant: hybrid``).
    power_filters, power_kernel : list of int, int
        The CNN's filters per convolution (the paper's "filter sizes of 16 and 8", read as counts) and
        their kernel size along the antennas (the paper states none: 3).
    recovery : Recovery
        ``structure`` (eq. 7), ``reduced`` (eq. 23), ``zf`` (ZF directions, Sec. V-C) or ``slnr``: the
        network of the multicell case (:class:`MulticellNet`: one CSI-Net per link, the SLNR structure of
        eq. 35) in one cell (the plugin's README says what it measured); the per-link network in one cell
        (``csi_features: paths``, ``csi_skip``) recovers as this says. In several cells ``structure``,
        ``reduced`` and ``slnr`` are eq. (35), ``zf`` ZF of each BS's own users with the learned powers.
    alpha_h, alpha_p, alpha_r : float
        Weights of ``L_H``, ``L_P`` and ``−R_sum`` in the loss (eq. 10).
    rate_channel : RateChannel
        The channel the loss's sum rate is computed on: ``true`` (default) or ``learned`` (the paper's
        wording).
    rate_into_csi : bool or None
        Whether the rate term's gradient reaches the CSI-Net (the paper: yes). ``false`` trains the CSI-Net
        on ``L_H`` alone and the Power-Net on ``L_P`` and the rate through the recovery of the learned
        channel: with the rate's gradient in it, the CSI-Net of ``miso_fdd`` (N_t = 32) gives up the
        channel (NMSE above 1) for a worse rate; without it, both single-cell scenarios do at least as
        well. ``None`` (default): ``false`` for the joint single-cell network, ``true`` for the per-link
        network (in one cell too, as measured in the plugin's README), where in several cells a link's
        downlink gain is confounded with its distance (eq. 42 times eq. 40's ``α²``) and the rate, not
        the channel's squared error, says which part of the channel the SLNR beamformer needs (measured:
        0.881 of WMMSE rising, against a rate that fell from 0.85 to 0.74 over five epochs on ``L_H``
        alone).
    csi_skip : bool
        A linear map per link added to the per-link CSI-Net's output (selects :class:`MulticellNet`):
        ``A x + B f(x) / ν`` of the uplink column ``x`` and its features of degree two ``f`` (the
        beamspace products, and the path features), ``ν`` the mean uplink norm of the training set, zero
        at the start. With ``csi_features: paths`` such a map is nearly all of eq. (40)'s
        (``benchmarks/fdd_channel_map.py``). Made for one cell (``miso_fdd``): in several cells the
        downlink gain is not a fixed map of the uplink one (eq. 42's exponents differ), see the README.
    power_unit : PowerUnit
        The unit of ``L_P``: ``budget`` (default: the powers over ``P``, so that ``L_P`` does not grow
        with ``P²`` and drown the other terms) or ``absolute`` (the powers in the unit of ``P``).
    """

    variant: Variant = Variant.hybrid
    csi_layers: int = 4
    csi_width: int = 0
    csi_sharing: Sharing | None = None
    csi_features: CSIFeatures | None = None
    csi_paths: int = 8
    power_layers: int = 4
    power_width: int = 0
    power_net: PowerNetKind = PowerNetKind.fc
    power_filters: list[int] = field(default_factory=lambda: [16, 8])
    power_kernel: int = 3
    recovery: Recovery = Recovery.structure
    alpha_h: float = 1.0
    alpha_p: float = 1.0
    alpha_r: float = 1.0
    rate_channel: RateChannel = RateChannel.true
    power_unit: PowerUnit = PowerUnit.budget
    rate_into_csi: bool | None = None
    csi_skip: bool = False
    train: TrainConfig = field(default_factory=_laptop_training)

    def __post_init__(self) -> None:
        for key in ("csi_layers", "power_layers", "csi_paths"):
            require(getattr(self, key) >= 1, key, f"must be an integer >= 1, got {getattr(self, key)}")
        require(
            len(self.power_filters) >= 1 and all(f >= 1 for f in self.power_filters),
            "power_filters",
            f"must be a non-empty list of integers >= 1, got {list(self.power_filters)}",
        )
        require(
            self.power_kernel >= 1 and self.power_kernel % 2 == 1,
            "power_kernel",
            f"must be an odd integer >= 1 (the padding keeps the length), got {self.power_kernel}",
        )
        for key in ("csi_width", "power_width"):
            require(getattr(self, key) >= 0, key, f"must be >= 0 (0: 4·N·K), got {getattr(self, key)}")
        for key in ("alpha_h", "alpha_p", "alpha_r"):
            require(getattr(self, key) >= 0, key, f"must be >= 0, got {getattr(self, key)}")
        require(
            self.alpha_h + self.alpha_p + self.alpha_r > 0, "alpha_r", "at least one loss weight must be > 0"
        )


def mlp(width_in: int, width: int, layers: int, width_out: int, kind: str) -> nn.Sequential:
    """``layers`` hidden layers of ``width``: ``tanh`` (CSI-Net) or batch norm + ``ReLU`` (Power-Net),
    then a linear output."""
    parts: list[nn.Module] = []
    w = width_in
    for _ in range(layers):
        parts.append(nn.Linear(w, width))
        parts += [nn.Tanh()] if kind == "tanh" else [nn.BatchNorm1d(width), nn.ReLU()]
        w = width
    parts.append(nn.Linear(w, width_out))
    return nn.Sequential(*parts)


OVERSAMPLING = 4  # beams per antenna of the beamspace features


def beamspace_grid(n: int) -> Tensor:
    """``F [4N, N]`` complex128: the ``4N``-point DFT rows over ``N`` antennas, over ``√N`` (unit-norm
    beams)."""
    beams = OVERSAMPLING * n
    a = torch.arange(beams, dtype=torch.float64)[:, None] * torch.arange(n, dtype=torch.float64)
    angle = -2 * math.pi * torch.remainder(a, beams) / beams
    return torch.complex(torch.cos(angle), torch.sin(angle)) / math.sqrt(n)


def beamspace_products(columns: Tensor, grid: Tensor) -> Tensor:
    """``|b| b √N`` for ``b = F x`` of each column ``x`` in ``columns [..., N]`` (complex): real and
    imaginary parts ``[..., 8N]``, of order one for columns of unit norm."""
    b = columns.to(grid.dtype) @ grid.T
    return torch.view_as_real(b.abs() * b * math.sqrt(grid.shape[-1])).flatten(-2)


PATH_FEATURE_BOUND = 2.0  # the path features' largest norm, in units of the column's energy ‖x‖²


def path_features(columns: Tensor, paths: int) -> Tensor:
    """``√N Σ_l |u_l| u_l z_l^m`` for each column ``x [..., N]`` (complex128) seen as ``paths`` plane waves
    ``x_m ≈ Σ_l u_l z_l^m`` (``|z_l| = 1``): the matrix pencil of the column's ``(N − P) × (P + 1)`` Hankel
    matrix (``P = N // 2``; its ``paths`` leading left singular vectors, shifted, give the ``z_l``), then
    the ``u_l`` by least squares. Exact for a column of at most ``paths`` waves without noise, whatever
    their spacing; eq. (40) makes each path's downlink coefficient ``|u_l| u_l``. Its norm is bounded by
    ``PATH_FEATURE_BOUND ‖x‖²`` (scaled down above it: under noise the pencil can split a wave into close
    ones with large opposite amplitudes, and those outliers made training diverge with pilots). Zero for a
    zero column."""
    n = columns.shape[-1]
    pencil = n // 2
    hankel = columns[..., torch.arange(n - pencil)[:, None] + torch.arange(pencil + 1)]
    left = torch.linalg.svd(hankel, full_matrices=False)[0][..., :paths]
    z = torch.linalg.eigvals(torch.linalg.pinv(left[..., :-1, :]) @ left[..., 1:, :])
    phase = (
        torch.angle(z).unsqueeze(-2)
        * torch.arange(n, dtype=columns.real.dtype, device=columns.device)[:, None]
    )
    waves = torch.polar(torch.ones_like(phase), phase)  # [..., N, paths]: z_l^m with |z_l| = 1
    u = (torch.linalg.pinv(waves) @ columns.unsqueeze(-1)).squeeze(-1)  # pinv: any device, any rank
    out = (waves @ (u.abs() * u).unsqueeze(-1)).squeeze(-1) * math.sqrt(n)
    out = torch.where(torch.isfinite(out), out, torch.zeros_like(out))
    # separated waves give ‖out‖ ≤ ‖x‖² (√N ‖Σ|u|u z^m‖ = N (Σ|u|⁴)^½ ≤ N Σ|u|²); far above it, the fit has
    # split one wave, under noise, into close ones of large opposite amplitudes: bounded at 2 ‖x‖²
    energy = columns.abs().square().sum(-1, keepdim=True)
    size = out.abs().square().sum(-1, keepdim=True).sqrt()
    return out * (PATH_FEATURE_BOUND * energy / size.clamp_min(1e-300)).clamp(max=1.0)


def per_link_reason(cells: int, cfg: ModelDrivenConfig) -> str | None:
    """Why the network is the per-link :class:`MulticellNet` (``None``: it is not): several cells, or in
    one cell ``recovery: slnr``, the SLNR benchmark, ``csi_features: paths`` or ``csi_skip``, which are
    that network's."""
    if cells > 1:
        return f"{cells} cells"
    if Recovery(cfg.recovery) == Recovery.slnr:
        return "recovery=slnr"
    if Variant(cfg.variant) == Variant.channel_slnr:
        return "variant=channel_slnr"
    if cfg.csi_features is not None and CSIFeatures(cfg.csi_features) == CSIFeatures.paths:
        return "csi_features=paths"
    if cfg.csi_skip:
        return "csi_skip=true"
    return None


def per_link(cells: int, cfg: ModelDrivenConfig) -> bool:
    """Whether the network is the per-link :class:`MulticellNet` (:func:`per_link_reason`)."""
    return per_link_reason(cells, cfg) is not None


class ConvPowerNet(nn.Module):
    """The 1-D CNN Power-Net of Sec. VII-B: the ``K`` users' uplink columns as ``2K`` input channels (real
    and imaginary parts) along the ``N`` antennas; convolutions of ``filters`` (16 and 8) with ``kernel``
    taps and the zero padding that keeps the length, each followed by batch normalization, ReLU and
    dropout 0.3; a fully connected layer of ``width`` (256) with ReLU; a linear output of ``outputs``
    values (the softmax is the caller's). Its convolutions cost ``O(N K)`` per sample (Sec. VII-B)."""

    def __init__(self, n: int, k: int, filters, kernel: int, width: int, outputs: int, dropout: float = 0.3):
        super().__init__()
        self.n, self.k = n, k
        layers: list[nn.Module] = []
        channels = 2 * k
        for count in filters:
            layers += [
                nn.Conv1d(channels, count, kernel, padding=kernel // 2),
                nn.BatchNorm1d(count),
                nn.ReLU(),
                nn.Dropout(dropout),
            ]
            channels = count
        self.conv = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(channels * n, width), nn.ReLU(), nn.Linear(width, outputs)
        )

    def antenna_channels(self, x: Tensor) -> Tensor:
        """``[B, 2·K·N]`` (user, antenna, real/imaginary order) → ``[B, 2K, N]``: the convolution's input."""
        b = x.shape[0]
        return x.reshape(b, self.k, self.n, 2).transpose(-1, -2).reshape(b, 2 * self.k, self.n)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.conv(self.antenna_channels(x)))


class ModelDrivenNet(nn.Module):
    """Uplink channels (real and imaginary parts, ``[B, 2·K·N]``) → beamformers ``[B, 1, N, K]``; the
    parts the loss needs come from :meth:`parts`."""

    def __init__(self, cfg: ModelDrivenConfig, n: int, k: int, budget: float, noise: float, scale: float):
        super().__init__()
        self.n, self.k = n, k
        self.sharing = Sharing(cfg.csi_sharing or Sharing.joint)
        self.recovery = Recovery(cfg.recovery)
        self.variant = Variant(cfg.variant)
        self.register_buffer("budget", torch.tensor(budget))
        self.register_buffer("noise", torch.tensor(noise))
        self.register_buffer("scale", torch.tensor(scale))  # RMS of an uplink entry: inputs of order 1
        full = 4 * n * k
        self.features = CSIFeatures(cfg.csi_features or CSIFeatures.antenna)
        extra = 2 * OVERSAMPLING * n if self.features == CSIFeatures.beamspace else 0
        if self.features == CSIFeatures.beamspace:
            self.register_buffer("grid", beamspace_grid(n))
        if self.sharing == Sharing.joint:
            self.csi = mlp((2 * n + extra) * k, cfg.csi_width or full, cfg.csi_layers, 2 * n * k, "tanh")
        else:
            self.csi = mlp(2 * n + extra, cfg.csi_width or full, cfg.csi_layers, 2 * n, "tanh")
        # the Power-Net (2 K powers out); for channel_bf the beamforming net (2 N K values out)
        outputs = {Variant.hybrid: 2 * k, Variant.channel_bf: 2 * n * k}.get(self.variant)
        if outputs and PowerNetKind(cfg.power_net) == PowerNetKind.cnn:
            self.power = ConvPowerNet(
                n, k, cfg.power_filters, cfg.power_kernel, cfg.power_width or 256, outputs
            )
        elif outputs:
            self.power = mlp(2 * n * k, cfg.power_width or full, cfg.power_layers, outputs, "relu")
        else:
            self.power = None

    def channel(self, x: Tensor) -> Tensor:
        """The learned downlink channels ``Ĥ [B, N, K]`` (columns ``ĥ_k``)."""
        b = x.shape[0]
        z = (x / self.scale).reshape(b, self.k, 2 * self.n)
        if self.features == CSIFeatures.beamspace:
            columns = torch.view_as_complex(z.reshape(b, self.k, self.n, 2).double().contiguous())
            # z has entries of unit variance: columns of norm about √N, scaled to about one
            products = beamspace_products(columns / math.sqrt(self.n), self.grid)
            z = torch.cat((z, products.to(z.dtype)), -1)
        if self.sharing == Sharing.joint:
            out = self.csi(z.reshape(b, -1))
        else:
            out = self.csi(z.reshape(b * self.k, -1)).reshape(b, -1)
        rows = torch.view_as_complex((out * self.scale).reshape(b, self.k, self.n, 2).contiguous())
        return rows.transpose(-1, -2)

    def parts(self, x: Tensor) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """``Ĥ [B, N, K]``, ``p̂ [B, K]`` and ``q̂ [B, K]`` (each summing to ``P``; ``None`` for
        ``channel_zf`` and ``channel_bf``)."""
        H = self.channel(x)
        if self.variant != Variant.hybrid:
            return H, None, None
        logits = self.power(x / self.scale)
        p = torch.softmax(logits[:, : self.k], dim=-1) * self.budget
        q = torch.softmax(logits[:, self.k :], dim=-1) * self.budget
        return H, p, q

    def beamformers(self, H: Tensor, p: Tensor | None, q: Tensor | None) -> Tensor:
        """The recovery module: ``W [B, 1, N, K]`` from the learned parts."""
        if self.variant == Variant.channel_zf:
            W = torch.linalg.solve(H.mH @ H, H, left=False)
            return bf.onto_budget(W.unsqueeze(1), self.budget.expand(H.shape[0], 1))
        if self.variant == Variant.channel_bf:  # the data-driven net on the learned channel
            b = H.shape[0]
            z = torch.view_as_real(H.transpose(-1, -2)).flatten(1).to(self.scale.dtype) / self.scale
            out = self.power(z).reshape(b, self.k, self.n, 2)
            W = torch.view_as_complex(out.to(torch.float32).contiguous()).transpose(-1, -2).to(H.dtype)
            return bf.onto_budget(W.unsqueeze(1), self.budget.expand(b, 1))
        noise = self.noise.expand(H.shape[0])
        if self.recovery == Recovery.structure:
            W = bf.optimal_structure(H, p, q, noise)
        elif self.recovery == Recovery.reduced:
            W = bf.reduced_structure(H, p, q, noise)
        else:
            W = bf.unit_columns(torch.linalg.solve(H.mH @ H, H, left=False)) * bf.amplitudes(p).unsqueeze(
                -2
            ).to(H.dtype)
        return W.unsqueeze(1)

    def forward(self, x: Tensor) -> Tensor:
        return self.beamformers(*self.parts(x))


class ModelDrivenLearner(Learner):
    """Zhang et al. (2022): CSI-Net + Power-Net + the optimal beamforming structure, trained on the hybrid
    loss (supervised on the channel and the solver's powers, unsupervised on the sum rate)."""

    display_name = "Model-driven"

    Config = ModelDrivenConfig
    requires_labels = True
    families = (BEAMFORMING,)
    inputs = (FEATURE,)
    paper = "zhang2022"

    @classmethod
    def refuses(cls, scenario, precoder) -> str | None:
        return None

    @classmethod
    def refuses_setting(cls, config, scenario) -> tuple[str, str] | None:
        """``variant: channel_bf`` or ``power_net: cnn`` where the per-link network runs
        (:func:`per_link_reason`), ``csi_paths`` above ``N_t // 2``, and a ZF recovery or benchmark with
        fewer antennas than users per cell."""
        cells = int(getattr(scenario.config, "num_cells", 1))
        n, k = int(scenario.config.num_antennas), int(scenario.config.num_users)
        variant, recovery = Variant(config.variant), Recovery(config.recovery)
        where = per_link_reason(cells, config)
        if where and cells > 1:
            where = f"scenario={scenario.name} has {where}"
        if PowerNetKind(config.power_net) == PowerNetKind.cnn and where:
            return (
                "power_net",
                f"cnn is the single-cell Power-Net of Sec. VII-B, not the per-link network ({where}); use fc",
            )
        if (
            where
            and CSIFeatures(config.csi_features or CSIFeatures.beamspace) == CSIFeatures.paths
            and (config.csi_paths > n // 2)
        ):
            return (
                "csi_paths",
                f"must be at most num_antennas // 2 = {n // 2} for the matrix pencil, got {config.csi_paths}",
            )
        if variant == Variant.channel_bf and where:
            return (
                "variant",
                f"channel_bf is the joint single-cell network's, not the per-link network's ({where}); "
                "use hybrid, channel_zf or channel_slnr",
            )
        if (recovery == Recovery.zf or variant == Variant.channel_zf) and n < k:
            what = "recovery=zf" if recovery == Recovery.zf else "variant=channel_zf"
            key = "recovery" if recovery == Recovery.zf else "variant"
            return (
                key,
                f"{what} needs antennas >= users per cell "
                f"(scenario.num_antennas={n} < scenario.num_users={k})",
            )
        return None

    @property
    def uses_problems(self) -> bool:
        return True  # the true downlink channel for L_H and the sum rate, the duality for q

    @property
    def exportable(self) -> bool:
        return False  # complex linear algebra in the recovery module: logged by pickle

    def prepare(self, features: dict[str, Tensor]) -> Tensor:
        """``uplink_channel [B, C, U, N]`` → real and imaginary parts ``[B, 2·K·N]`` (float32) for one cell;
        ``[B, C, U, N, 2]`` (float64: the gains span many decades) for the per-link network;
        ``[B, C, U, 2N, 2]`` with ``csi_features: paths``: each column, then its :func:`path_features`
        (computed once here, not in every epoch's forward pass)."""
        h = features[FEATURE]
        if not per_link(h.shape[1], self.config):
            return torch.view_as_real(h).flatten(1).float()
        if CSIFeatures(self.config.csi_features or CSIFeatures.beamspace) == CSIFeatures.paths:
            h = h.to(torch.complex128)
            h = torch.cat((h, path_features(h, self.config.csi_paths)), -1)
        return torch.view_as_real(h).double()

    def build_model(self, train_inputs: Tensor, generator: torch.Generator) -> nn.Module:
        problem = self.spec.problem
        scale = float(train_inputs.square().mean().sqrt().clamp_min(1e-30)) * 2**0.5
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        with torch.random.fork_rng(devices=[]):  # PyTorch's default initialization, from the run's seed
            torch.manual_seed(seed)
            if per_link(problem.num_cells, self.config):
                return MulticellNet(
                    self.config,
                    problem.num_cells,
                    problem.num_antennas,
                    problem.users_per_cell,
                    float(problem.budget[0, 0]),
                    float(problem.noise[0, 0]),
                    train_inputs,
                )
            return ModelDrivenNet(
                self.config,
                problem.num_antennas,
                problem.users_per_cell,
                float(problem.budget[0, 0]),
                float(problem.noise[0, 0]),
                scale,
            )

    def loss(self, model: nn.Module, batch: dict[str, Any]) -> Tensor:
        cfg = self.config
        problem = self.batch_problem(batch)
        if isinstance(model, MulticellNet):
            return model.loss(cfg, problem, batch, self.spec.objective)
        H_true = bf.own_channels(problem)[:, 0]  # [B, N, K]
        H, p, q = model.parts(batch["inputs"])
        loss_h = torch.view_as_real(H - H_true).square().mean()
        if model.variant == Variant.channel_zf:
            return loss_h
        if model.variant == Variant.channel_bf:  # the rate trains the beamforming net alone
            return cfg.alpha_h * loss_h - cfg.alpha_r * self._rate(
                problem, H, model.beamformers(H.detach(), None, None)
            )
        labels = batch["labels"]
        p_label = labels[:, 0].abs().square().sum(-2)
        with torch.no_grad():
            q_label = bf.dual_uplink_powers(
                problem.to(dtype=torch.float64), labels.to(torch.complex128)
            ).float()
        unit = (
            model.budget if PowerUnit(cfg.power_unit) == PowerUnit.budget else torch.ones_like(model.budget)
        )
        loss_p = 0.5 * (((p - p_label) / unit).square().mean() + ((q - q_label) / unit).square().mean())
        W = model.beamformers(H if cfg.rate_into_csi else H.detach(), p, q)  # None: not in one cell
        return cfg.alpha_h * loss_h + cfg.alpha_p * loss_p - cfg.alpha_r * self._rate(problem, H, W)

    def _rate(self, problem: BeamformingProblem, H: Tensor, W: Tensor) -> Tensor:
        """The loss's mean sum rate of ``W``: on the true downlink channel, or on the learned ``H``
        (``rate_channel: learned``)."""
        if RateChannel(self.config.rate_channel) == RateChannel.learned:
            problem = dataclasses.replace(problem, channel=H.transpose(-1, -2).unsqueeze(1))
        return self.spec.objective(problem, W).mean()

    def validation_loss(self, model: nn.Module, batch: dict[str, Any]) -> Tensor:
        """``−R_sum`` of the beamformers on the true downlink channel [bit/s/Hz]: the goal, which picks
        the best epoch (the supervised terms fall on while the rate has stopped improving, or the reverse);
        ``L_H`` for ``channel_zf``, whose only goal is the channel."""
        if model.variant in (Variant.channel_zf, Variant.channel_slnr):
            return self.loss(model, batch)
        return -self.spec.objective(self.batch_problem(batch), model(batch["inputs"])).mean()

    def test_metrics(self, model: nn.Module, inputs: Tensor, problem) -> dict[str, float]:
        """``nmse_channel``: the NMSE of the learned downlink channel, eq. (39), ``E[‖Ĥ_D − H_D‖² / ‖H_D‖²]``
        (each BS's channel matrix to every user in several cells), and the same in dB
        (``nmse_channel_db``); ``learned_channel/objective_<name>``: the mean objective, on the true
        channel, of each closed-form beamformer computed on the learned one (Sec. VII's "learned channel +"
        benchmarks): MRT, ZF (where ``N_t >= K``), RZF, and SLNR in several cells; divided by
        ``test/objective_solver`` it is comparable to the learner's ratio."""
        true = problem.to(dtype=torch.float64)
        H = model.channel(inputs).to(torch.complex128)
        if not isinstance(model, MulticellNet):  # [B, N, K] → the problem's layout [B, 1, K, N]
            H = H.transpose(-1, -2).unsqueeze(1)
        H_true = true.channel.to(torch.complex128)
        nmse = float(((H - H_true).abs().square().sum((-2, -1)) / H_true.abs().square().sum((-2, -1))).mean())
        metrics = {"nmse_channel": nmse, "nmse_channel_db": 10 * math.log10(max(nmse, 1e-300))}
        learned = dataclasses.replace(true, channel=H)
        closed_forms = {"mrt_bf": bf.mrt, "rzf_bf": bf.rzf}
        if bf.zf_refusal(true) is None:
            closed_forms["zf_bf"] = bf.zf
        if true.num_cells > 1:
            closed_forms["slnr_bf"] = bf.slnr_alternating
        for name, form in sorted(closed_forms.items()):
            objective = self.spec.objective(true, form(learned))
            metrics[f"learned_channel/objective_{name}"] = float(objective.mean())
        return metrics


class MulticellNet(nn.Module):
    """The distributed learner of Sec. VI-C: one CSI-Net and one Power-Net, the same at every BS, each BS
    reading only its own uplink information, and the SLNR structure (eq. 35) as the recovery.

    BS ``c`` sees its uplink channels (or LS estimates) to all ``U = N_c·K`` users, its own users first
    (users in the cell order ``c, c+1, …``): ``[U, N]``. The channels span many decades (a served user
    10 m away, another cell's 600 m), so each user's column enters as its direction ``x_u / ‖x_u‖`` and
    its standardized log gain ``log ‖x_u‖²``, and the CSI-Net gives the downlink column in units of
    ``‖x_u‖``. ``L_H`` is each BS's squared error over the energy it observed, ``Σ_u ‖ĥ_u − h_u‖² /
    Σ_u ‖x_u‖²`` (eq. 39 per BS): a column weighs as much as its gain, as in the paper's absolute L_H
    (eq. 8); in each column's own units the weak columns of far users, which the pilots barely see,
    took the net's capacity from the strong ones (the rate fell from 0.85 to 0.74 of WMMSE over five
    epochs while that L_H fell). The Power-Net gives the BS's ``K`` powers (softmax × P). Eq. (35):
    ``w_k = √p_k (I + p_k/σ² Σ_u ĥ_u ĥ_uᴴ)⁻¹ ĥ_k / ‖·‖`` over every user ``u``, the BS's own estimates only.
    ``variant: channel_slnr`` is the paper's benchmark: the CSI-Net alone, then SLNR alternating (eq. 32
    and the power step of eq. 31) on its channels; ``channel_zf`` ZF of the BS's own users.
    """

    def __init__(self, cfg: ModelDrivenConfig, cells: int, n: int, k: int, budget: float, noise: float, x):
        super().__init__()
        self.cells, self.n, self.k, self.users = cells, n, k, cells * k
        self.variant = Variant(cfg.variant)
        self.recovery = Recovery(cfg.recovery)
        self.zf = self.recovery == Recovery.zf
        # in one cell eq. (7) or (23) with the Power-Net's p and q; in several, eq. (35) with p alone
        self.dual = cells == 1 and self.recovery in (Recovery.structure, Recovery.reduced)
        self.register_buffer("budget", torch.tensor(budget, dtype=torch.float64))
        self.register_buffer("noise", torch.tensor(noise, dtype=torch.float64))
        # the cell order of each BS: BS c reads users (c·K + j) mod U, its own first
        order = (torch.arange(cells)[:, None] * k + torch.arange(self.users)) % self.users
        self.register_buffer("order", order)
        self.register_buffer("inverse", torch.argsort(order, dim=-1))
        self.features = CSIFeatures(cfg.csi_features or CSIFeatures.beamspace)
        log_gain = self._log_gain(self.split(x)[0])
        self.register_buffer("gain_mean", log_gain.mean())
        self.register_buffer("gain_std", log_gain.std().clamp_min(1e-6))
        full = 2 * n * self.users  # 0: 2 N_t U; the paper's 2 N_t N_c² (7 times wider) is its preset's
        self.sharing = Sharing(cfg.csi_sharing or Sharing.per_user)
        beamspace = self.features in (CSIFeatures.beamspace, CSIFeatures.paths)
        self.column_width = (
            2 * n
            + 1
            + (2 * OVERSAMPLING * n if beamspace else 0)
            + (2 * n if self.features == CSIFeatures.paths else 0)
        )
        if beamspace:
            self.register_buffer("grid", beamspace_grid(n))
        width_in = self.users * self.column_width
        if self.sharing == Sharing.joint:
            self.csi = mlp(width_in, cfg.csi_width or full, cfg.csi_layers, 2 * n * self.users, "tanh")
        else:  # one column at a time, with the user's identity (its pilot), which the BS knows
            width = cfg.csi_width or full
            self.csi = mlp(self.column_width + self.users, width, cfg.csi_layers, 2 * n, "tanh")
        self.power = (
            mlp(width_in, cfg.power_width or full, cfg.power_layers, 2 * k if self.dual else k, "relu")
            if self.variant == Variant.hybrid
            else None
        )
        # the linear part of eq. (40)'s map, one per link identity: A x + B (|Fx| Fx) in absolute units,
        # A·direction + ‖x‖ B·(|F d| F d) in the CSI-Net's (zero at the start: the MLP's output alone)
        self.skip = (
            nn.Parameter(torch.zeros(self.users, self.column_width - 1, 2 * n)) if cfg.csi_skip else None
        )
        if self.skip is not None:
            self.register_buffer("gain_scale", log_gain.mul(0.5).exp().mean())

    @staticmethod
    def _log_gain(h: Tensor) -> Tensor:
        return h.abs().square().sum(-1).clamp_min(1e-300).log()

    def split(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """Inputs ``[B, C, U, N or 2N, 2]`` → the uplink columns ``[B, C, U, N]`` (complex) and, with
        ``csi_features: paths``, their :func:`path_features` (else ``None``)."""
        h = torch.view_as_complex(x.contiguous())
        return (h[..., : self.n], h[..., self.n :]) if self.features == CSIFeatures.paths else (h, None)

    def views(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """From inputs ``[B, C, U, N, 2]``: each BS's features ``[B·C, U·w]`` (float32; per column its
        direction, log gain and, for ``beamspace``, its beamspace products: ``w = column_width``), and the
        norms ``[B, C, U]`` and directions ``[B, C, U, N]`` (complex) in its user order."""
        h, paths = self.split(x)
        b = h.shape[0]
        index = self.order[None, :, :, None].expand(b, -1, -1, self.n)
        h = h.gather(2, index)
        norm = h.abs().square().sum(-1).sqrt().clamp_min(1e-300)
        direction = h / norm.unsqueeze(-1)
        gain = (self._log_gain(h) - self.gain_mean) / self.gain_std
        parts = [torch.view_as_real(direction).flatten(-2), gain.unsqueeze(-1)]
        if self.features in (CSIFeatures.beamspace, CSIFeatures.paths):
            parts.append(beamspace_products(direction, self.grid))
        if paths is not None:  # of degree two in the column: the direction's
            parts.append(torch.view_as_real(paths.gather(2, index) / norm.square().unsqueeze(-1)).flatten(-2))
        feats = torch.cat(parts, -1)
        return feats.reshape(b * self.cells, -1).float(), norm, direction

    def relative_channel(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The CSI-Net's downlink columns in units of the observed uplink norms ``[B, C, U, N]`` (BS
        order), and those norms ``[B, C, U]``."""
        feats, norm, _ = self.views(x)
        if self.sharing == Sharing.joint:
            out = self.csi(feats)
        else:
            columns = feats.reshape(-1, self.cells, self.users, self.column_width)
            who = nn.functional.one_hot(self.order, self.users).to(columns)  # [C, U, U]
            who = who.expand(columns.shape[0], -1, -1, -1)
            out = self.csi(torch.cat((columns, who), -1).reshape(-1, self.column_width + self.users))
        out = out.double().reshape(-1, self.cells, self.users, self.n, 2)
        if self.skip is not None:
            out = out + self.linear_part(feats, norm).reshape(out.shape)
        return torch.view_as_complex(out.contiguous()), norm

    def linear_part(self, feats: Tensor, norm: Tensor) -> Tensor:
        """The skip's ``A d + (‖x‖/ν) B f(d)`` of each link ``[B, C, U, 2N]``: ``d`` the direction, ``f`` its
        features of degree two (beamspace, paths), ``ν`` the mean uplink norm of the training set; from the
        features ``[B·C, U·w]`` and norms ``[B, C, U]`` of :meth:`views`."""
        columns = feats.double().reshape(-1, self.cells, self.users, self.column_width)
        n2 = 2 * self.n
        scale = torch.ones_like(columns[..., :1]).expand(-1, -1, -1, self.column_width - 1).clone()
        scale[..., n2:] = (norm / self.gain_scale).unsqueeze(-1)
        inputs = torch.cat((columns[..., :n2], columns[..., n2 + 1 :]), -1) * scale  # without the log gain
        weight = self.skip.double()[self.order]  # [C, U, w - 1, 2N]: each link's identity
        return torch.einsum("bcui,cuio->bcuo", inputs, weight)

    def unorder(self, t: Tensor) -> Tensor:
        """``[B, C, U, ...]`` from each BS's user order back to the users' numbering."""
        index = self.inverse[None, :, :].expand(t.shape[0], -1, -1)
        return t.gather(2, index.reshape(*index.shape, *([1] * (t.dim() - 3))).expand_as(t))

    def channel(self, x: Tensor) -> Tensor:
        """The learned downlink channels ``[B, C, U, N]`` (the problem's layout, complex128)."""
        rel, norm = self.relative_channel(x)
        return self.unorder(rel * norm.unsqueeze(-1))

    def powers(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """The Power-Net's ``p [B, C, K]`` (softmax × P per BS) and, for eq. (7) or (23) in one cell, the
        virtual uplink powers ``q [B, C, K]`` (else ``None``)."""
        feats, _, _ = self.views(x)
        logits = self.power(feats).double().reshape(-1, self.cells, 2 * self.k if self.dual else self.k)
        p = torch.softmax(logits[..., : self.k], -1) * self.budget
        return p, (torch.softmax(logits[..., self.k :], -1) * self.budget if self.dual else None)

    def beamformers(self, H: Tensor, p: Tensor | None, q: Tensor | None = None) -> Tensor:
        """``W [B, C, N, K]`` from the learned channels ``H [B, C, U, N]`` (problem layout)."""
        if self.variant == Variant.channel_zf:
            return bf.zf(self._problem(H))
        if self.variant == Variant.channel_slnr:
            return bf.slnr_alternating(self._problem(H))
        own = bf.own_channels(self._problem(H))  # [B, C, N, K]
        if self.dual:  # one cell: eq. (7) or its reduced form (23), from p and q
            recover = bf.optimal_structure if self.recovery == Recovery.structure else bf.reduced_structure
            return recover(own[:, 0], p[:, 0], q[:, 0], self.noise.expand(H.shape[0])).unsqueeze(1)
        if self.zf:  # the ZF loss of Sec. V-C: ZF of the BS's own users, the learned powers
            directions = torch.linalg.solve(own.mH @ own, own, left=False)
            return bf.unit_columns(directions) * bf.amplitudes(p).unsqueeze(-2).to(H.dtype)
        G = H / self.noise.sqrt()  # σ = 1 units
        cov = G.transpose(-1, -2) @ G.conj()  # Σ_u g_u g_uᴴ [B, C, N, N]
        eye = torch.eye(self.n, dtype=H.dtype, device=H.device)
        A = eye + p.to(H.dtype)[..., None, None] * cov.unsqueeze(2)  # [B, C, K, N, N]
        d = torch.linalg.solve(A, own.transpose(-1, -2).unsqueeze(-1)).squeeze(-1)  # [B, C, K, N]
        return bf.unit_columns(d.transpose(-1, -2)) * bf.amplitudes(p).unsqueeze(-2).to(H.dtype)

    def _problem(self, H: Tensor) -> BeamformingProblem:
        b = H.shape[0]
        real = torch.float64
        return BeamformingProblem(
            channel=H,
            noise=self.noise.to(real).expand(b, self.users),
            budget=self.budget.to(real).expand(b, self.cells),
            weights=torch.ones(b, self.users, dtype=real, device=H.device),
        )

    def forward(self, x: Tensor) -> Tensor:
        H = self.channel(x)
        p, q = self.powers(x) if self.power is not None else (None, None)
        return self.beamformers(H, p, q).to(torch.complex64)  # the precision of the learners' problems

    def loss(self, cfg: ModelDrivenConfig, problem, batch: dict[str, Any], objective) -> Tensor:
        x = batch["inputs"]
        rel, norm = self.relative_channel(x)
        true = problem.channel.to(torch.complex128)
        true = true.gather(2, self.order[None, :, :, None].expand(true.shape[0], -1, -1, self.n))
        # eq. (39) per BS: the channel matrix's squared error over its energy (as observed), so that each
        # column weighs as much as its gain (the paper's L_H, eq. 8, in absolute units, does the same)
        error = (rel - true / norm.unsqueeze(-1)).abs().square().sum(-1) * norm.square()  # [B, C, U]
        loss_h = (error.sum(-1) / norm.square().sum(-1)).mean()
        if self.power is None:
            return loss_h.float()
        p, q = self.powers(x)
        labels = batch["labels"].to(torch.complex128)
        p_label = labels.abs().square().sum(-2)  # [B, C, K]
        loss_p = ((p - p_label) / self.budget).square().mean()
        if q is not None:  # eq. (7) in one cell: q from the labels by duality, as the joint network's
            with torch.no_grad():
                q_label = bf.dual_uplink_powers(problem.to(dtype=torch.float64), labels).unsqueeze(1)
            loss_p = loss_p + ((q - q_label) / self.budget).square().mean()
        loss_p = 0.5 * loss_p
        H = self.unorder(rel * norm.unsqueeze(-1))
        W = self.beamformers(H if cfg.rate_into_csi in (None, True) else H.detach(), p, q)  # None: yes here
        rate = objective(problem.to(dtype=torch.float64), W).mean()
        return (cfg.alpha_h * loss_h + cfg.alpha_p * loss_p - cfg.alpha_r * rate).float()
