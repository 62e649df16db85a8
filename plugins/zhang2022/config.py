"""The settings of the model-driven learner (Zhang et al. 2022): the choices of network, features,
recovery and loss as Enums, :class:`ModelDrivenConfig`, and which network a setting selects
(:func:`per_link_reason`: the joint single-cell one or the per-link :class:`MulticellNet`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from mimo_l2o.errors import require
from mimo_l2o.learner import LearnerConfig, OptimizerName, TrainConfig


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
