"""The settings of the GNN learner (Raghunath et al. 2023): the choices of entry features and graph
as Enums, and :class:`GNNConfig`."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from mimo_l2o.errors import require
from mimo_l2o.learner import LearnerConfig, OptimizerName, Schedule, TrainConfig


class Features(str, Enum):
    gains = "gains"  # the paper's: each entry's own (normalized) log gain
    structured = "structured"  # also the transposed entry, both users' own gains and an own-entry flag

    @property
    def width(self) -> int:
        """Input features per entry (:meth:`GNNPolicy.node_features`)."""
        return 5 if self is Features.structured else 1


class Graph(str, Enum):
    complete = "complete"  # every node hears every other (the paper)
    shared_users = "shared_users"  # nodes hear each other when they serve a user in common


@dataclass
class GNNConfig(LearnerConfig):
    """Parameters
    ----------
    rounds : int
        Message-passing rounds (eq. 10).
    features : Features
        What each entry ``(u, s)`` of a node's gain matrix starts with. ``gains`` (the paper): its
        normalized log gain. ``structured``: also the transposed entry (the gain of ``u``'s own slot at
        the owner of ``s``), the own gains of ``u`` and of the owner at this node and a flag for the
        slot's own entry. A SINRnet layer's four categories are the same for every entry, so without
        them the network tells a signal entry from an interference entry only by its size, and never
        sees the reverse link; all five stay equivariant to relabelling the users and the nodes.
    graph : Graph
        ``complete`` (the paper): every node hears every other. ``shared_users``: nodes hear each
        other when they serve a user in common (user-centric cell-free: the APs that share a UE; in the
        interference channel no two links do, so no node hears another).
    hidden : int
        Features per entry between rounds.
    widths : list[int]
        Features per category of each SINRnet layer inside ``φ`` and ``γ`` (eq. 11).
    norm_shift_mean, norm_shift_std : float
        Eq. (13)'s shifted normalization ``(x − (μ − ε)) / (σ − ε')`` with ``ε = norm_shift_mean · σ``
        and ``ε' = norm_shift_std · σ`` (0, 0: plain standardization).
    kappa_step : float
        ``Δκ`` of eq. (8) (Table I: 0.001).
    kappa_window : int
        ``h`` of eq. (8): steps without regularization, and the window of the support's mean.
    samples : int
        Draws of ``u`` per training sample and step.
    separate : bool
        Two GNNs with their own weights for ``a`` and ``ℓ`` (eq. 12); off: one GNN with two read-outs,
        half the cost.
    power_scale : float
        Unit of the networks' outputs, as a fraction of each variable's even share of its budget: the
        energy-efficiency optimum spends a few per cent of the budget, so outputs of order 1 start near
        it.
    temperature : float
        Sharpness of the smooth objective trained on (``Objective.smooth``: max-min's soft minimum;
        the energy efficiency and the sum rate are their own smooth forms).
    refine_steps : int
        Projected gradient steps of the objective (:func:`~mimo_l2o.solvers.energy_efficiency.
        projected_ascent`) from the network's decision, part of the deployed policy; 0: the network's
        decision itself (the paper's method). Reported beside it as ``test/objective_ratio_raw``.
    refine_lr, refine_final_lr : float
        First and last step of the refinement, as fractions of each variable's even share.
    train : TrainConfig
        The shared loop's settings: Adam from 1e-2 decaying exponentially to 1e-4 over 9,600 steps of
        batch 32 (Table I: 1e-3 to 1e-7 over 120,000 steps of 64, the presets).
    """

    rounds: int = 2
    features: Features = Features.structured
    graph: Graph = Graph.complete
    hidden: int = 16
    widths: list[int] = field(default_factory=lambda: [8, 8])
    norm_shift_mean: float = 0.0
    norm_shift_std: float = 0.0
    kappa_step: float = 1e-3
    kappa_window: int = 50
    samples: int = 1
    separate: bool = False
    power_scale: float = 0.1
    temperature: float = 20.0
    refine_steps: int = 0
    refine_lr: float = 0.1
    refine_final_lr: float = 0.01
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(
            optimizer=OptimizerName.adam,
            lr=1e-2,
            min_lr=1e-4,
            schedule=Schedule.exponential,
            batch_size=32,
            max_epochs=30,
            max_steps=9600,
            early_stopping_patience=0,
        )
    )

    def __post_init__(self) -> None:
        require(self.rounds >= 1, "rounds", f"must be >= 1, got {self.rounds}")
        require(self.hidden >= 1, "hidden", f"must be >= 1, got {self.hidden}")
        require(all(w >= 1 for w in self.widths), "widths", f"must be >= 1, got {list(self.widths)}")
        require(
            0 <= self.norm_shift_std < 1, "norm_shift_std", f"must be in [0, 1), got {self.norm_shift_std}"
        )
        require(self.kappa_step >= 0, "kappa_step", f"must be >= 0, got {self.kappa_step}")
        require(self.kappa_window >= 1, "kappa_window", f"must be >= 1, got {self.kappa_window}")
        require(self.samples >= 1, "samples", f"must be >= 1, got {self.samples}")
        require(self.power_scale > 0, "power_scale", f"must be > 0, got {self.power_scale}")
        require(self.temperature > 0, "temperature", f"must be > 0, got {self.temperature}")
        require(self.refine_steps >= 0, "refine_steps", f"must be >= 0, got {self.refine_steps}")
        require(0 < self.refine_lr, "refine_lr", f"must be > 0, got {self.refine_lr}")
        require(
            0 < self.refine_final_lr <= self.refine_lr,
            "refine_final_lr",
            f"must be in (0, refine_lr], got {self.refine_final_lr}",
        )
